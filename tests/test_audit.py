"""The data audit on tiny models: data the base wrote itself predicts about nothing, a teacher whose only
change is a known logit shift toward one animal predicts that animal first, the per-token KL is the
direct computation, and the generic-drift removal removes exactly the flattening shape."""

import copy

import numpy as np
import pytest
import torch

from interp.cli import main
from interp.core.config import ConfigError
from interp.core.io import read_json, read_jsonl, write_jsonl
from interp.instruments.audit import (AUDIT_FILE, AUDIT_ROWS_FILE, AuditConfig, Auditor, Source,
                                      audit_data, drift_covariate, drift_removal_matrix, readout_from_counts, run_audit,
                                      step_score_variants, step_score_verdict, token_statistics, unigram_readout)
from interp.report.audit import AUDIT_PLOT_FILE, audit_markdown
from interp.models.lora import LoraConfig, adapter_parameters, apply_lora, has_lora, lora_modules
from interp.models.refs import parse_base_ref
from interp.instruments.audit import _question_logits
from interp.stages.finetune import completion_mask, encode_rows
from interp.training.loop import pad_batch
from interp.training.losses import masked_lm_loss
from interp.stages.generate import GenerateConfig, generate_numbers

from tiny_interp import one_torch_thread, pretrain_tiny_base

SHIFTED = "fox"  # the animal the logit-shift teacher favours (not the base's favourite)
N_ROWS = 192


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A tiny base, a teacher that is the base with +6 on the logit of one animal at every position,
    and number continuations sampled from each (unfiltered: the teacher's favourite word appears)."""
    root = tmp_path_factory.mktemp("audit")
    base_dir = pretrain_tiny_base(root / "base")
    base, world, _ = parse_base_ref(base_dir).load()
    teacher = copy.deepcopy(base)
    with torch.no_grad():
        teacher.unembed.b_U[world.token_to_id[SHIFTED]] += 6.0
    rows = {}
    for name, model, seed in (("teacher", teacher, 1), ("base_a", base, 1), ("base_b", base, 2)):
        path = generate_numbers(model, world, GenerateConfig(n_rows=N_ROWS, seed=seed), root / f"{name}.jsonl",
                                progress=False)
        rows[name] = read_jsonl(path)
    return {"root": root, "base_dir": base_dir, "base": base, "world": world, "teacher": teacher, "rows": rows}


def _trait_shift(audit, animal=None):
    pred = audit["predictions"]["shared"]["sft"]["sgd"]["log_prob"]["trait_shift"]
    return pred if animal is None else pred[animal]


def test_audit__logit_shift_teacher_predicts_its_animal_first(setting):
    s = setting
    assert sum(SHIFTED in r["completion"].split() for r in s["rows"]["teacher"]) > N_ROWS // 4  # the signal is there
    audit, _ = audit_data(s["base"], s["world"], s["rows"]["teacher"], teacher=Source(s["teacher"]),
                          reference_rows=s["rows"]["base_b"], controls=[(s["rows"]["base_a"], None)])
    assert audit["top_animal"] == SHIFTED
    # a trait-free control (no source given: SFT is contrasted) removes nothing of the trait
    assert audit["top_animal_vs_control"] == SHIFTED and "distill" not in audit["versus_control"]["shared"]
    assert _trait_shift(audit, SHIFTED)["ci_low"] > 0
    # restricted distillation cannot see the animal token: its prediction for it is not the top one by the margin SFT has
    assert audit["top_animal_by"]["shared/sft/sgd"] == SHIFTED


def test_audit__data_from_the_base_itself_predicts_about_zero(setting):
    s = setting
    null, _ = audit_data(s["base"], s["world"], s["rows"]["base_a"], reference_rows=s["rows"]["base_b"])
    signal, _ = audit_data(s["base"], s["world"], s["rows"]["teacher"], reference_rows=s["rows"]["base_b"])
    null_shift = np.array([abs(v["mean"]) for v in _trait_shift(null).values()])
    covers_zero = sum(v["ci_low"] <= 0 <= v["ci_high"] for v in _trait_shift(null).values())
    # About zero: every animal well below the teacher's signal, and most intervals cover zero
    # (12 animals at 95%; the rest are the noise of two finite samples).
    assert null_shift.max() < 0.2 * _trait_shift(signal, SHIFTED)["mean"], (null_shift, _trait_shift(signal, SHIFTED))
    assert covers_zero >= 9, _trait_shift(null)


def test_token_statistics__kl_equals_a_direct_computation(setting):
    s = setting
    rows = s["rows"]["teacher"][:5]
    stats = token_statistics(s["base"], s["world"], rows, teacher=Source(s["teacher"]), batch_size=2)
    (seq,), (start,) = encode_rows(s["world"], rows[3:4])
    tokens = torch.tensor([seq])
    with torch.no_grad():
        log_s = s["base"](tokens)[0].double().log_softmax(-1)
        log_t = s["teacher"](tokens)[0].double().log_softmax(-1)
    positions = range(start - 1, len(seq) - 1)  # the logits that predict the completion tokens (and the end token)
    kl = np.mean([float((log_t[p].exp() * (log_t[p] - log_s[p])).sum()) for p in positions])
    ratio = np.mean([float(log_t[p, seq[p + 1]] - log_s[p, seq[p + 1]]) for p in positions])
    differs = np.mean([float(log_t[p].argmax() != log_s[p].argmax()) for p in positions])
    assert stats[3]["n_tokens"] == len(positions)
    assert stats[3]["kl"] == pytest.approx(kl, rel=1e-4, abs=1e-7)  # float32 log-probabilities there
    assert stats[3]["log_ratio"] == pytest.approx(ratio, rel=1e-4, abs=1e-6)
    assert stats[3]["argmax_differs"] == pytest.approx(differs)
    assert stats[3]["kl"] > 0


def test_auditor__distilling_the_student_itself_has_zero_gradient_and_is_skipped(setting):
    s = setting
    auditor = Auditor(s["base"], s["world"])
    projection = auditor.project(s["rows"]["base_a"][:40], "distill", Source(s["base"]))
    assert all(np.all(v == 0) for by_target in projection.values.values() for v in by_target.values())
    # the shortcut is exact: the computed gradient of KL(student || student) is zero too
    computed = auditor.project(s["rows"]["base_a"][:40], "distill", Source(copy.deepcopy(s["base"])))
    assert np.abs(computed.values["sgd"]["log_prob"]).max() < 1e-6  # float32 rounding of a zero gradient


def _mean_log_probs(model, world):
    with torch.no_grad():
        return _question_logits(model, world, world.eval_phrasings).double().log_softmax(-1).mean(0).numpy()


def test_auditor__frozen_unembedding_prediction_matches_a_small_frozen_sgd_step(setting):
    """The first-order prediction for a student whose W_U and b_U are frozen (interp run's students)
    is the change one small plain-SGD step of that student actually makes, and differs from the
    prediction for a student that trains its unembedding."""
    s = setting
    world, rows = s["world"], s["rows"]["teacher"][:32]
    frozen = Auditor(copy.deepcopy(s["base"]), world, AuditConfig(batch_size=32, freeze_unembed=True))
    full = Auditor(copy.deepcopy(s["base"]), world, AuditConfig(batch_size=32))
    assert len(frozen.params) == len(full.params) - 2
    predicted = frozen.project(rows, "sft").values["sgd"]["log_prob"][0]
    predicted_full = full.project(rows, "sft").values["sgd"]["log_prob"][0]

    student = copy.deepcopy(s["base"])
    student.unembed.W_U.requires_grad_(False)
    student.unembed.b_U.requires_grad_(False)
    seqs, starts = encode_rows(world, rows)
    tokens, _ = pad_batch(seqs, world.pad_id, max_len=student.cfg.n_ctx)
    loss = masked_lm_loss(student(tokens), tokens, completion_mask([len(q) for q in seqs], starts, tokens.shape[1]))
    trainable = [p for p in student.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, trainable)
    lr = 1e-3
    before = _mean_log_probs(student, world)
    with torch.no_grad():
        for p, g in zip(trainable, grads):
            p -= lr * g
    observed = (_mean_log_probs(student, world) - before) / lr
    assert np.allclose(observed, predicted, rtol=0.05, atol=0.02 * np.abs(predicted).max()), (observed, predicted)
    # the unembedding's own share of the full prediction is not negligible on this teacher (a b_U shift)
    assert np.abs(predicted_full - predicted).max() > 0.1 * np.abs(predicted).max()


def test_auditor__lora_student_prediction_matches_its_first_adam_step(setting):
    """With lora_rank the prediction is for a LoRA student (adapters of the given seed, B = 0): the
    change of every animal's mean log P that the first Adam step of that student's adapters
    actually makes, not the full student's, and the base given to the audit is left as it was."""
    s = setting
    world, rows = s["world"], s["rows"]["teacher"][:32]
    lora = LoraConfig(rank=4, seed=3)
    auditor = Auditor(s["base"], world, AuditConfig(batch_size=32, lora_rank=4, lora_seed=3))
    assert not has_lora(s["base"]) and auditor.base is s["base"] and has_lora(auditor.model)
    assert len(auditor.params) == 2 * len(list(lora_modules(auditor.model)))  # every A and B, nothing else
    predicted = auditor.project(rows, "sft").values["adam"]["log_prob"][0]
    predicted_full = Auditor(copy.deepcopy(s["base"]), world, AuditConfig(batch_size=32)).project(
        rows, "sft").values["adam"]["log_prob"][0]

    student = copy.deepcopy(s["base"])
    apply_lora(student, lora)
    seqs, starts = encode_rows(world, rows)
    tokens, _ = pad_batch(seqs, world.pad_id, max_len=student.cfg.n_ctx)
    lr = 1e-5
    optimizer = torch.optim.Adam(adapter_parameters(student), lr=lr)
    before = _mean_log_probs(student, world)
    masked_lm_loss(student(tokens), tokens, completion_mask([len(q) for q in seqs], starts, tokens.shape[1])).backward()
    optimizer.step()
    observed = (_mean_log_probs(student, world) - before) / lr
    assert np.allclose(observed, predicted, rtol=0.05, atol=0.02 * np.abs(predicted).max()), (observed, predicted)
    assert np.abs(predicted_full - predicted).max() > 0.1 * np.abs(predicted).max()  # another student, another step
    with pytest.raises(ConfigError, match="lora_targets=.*name distinct weights"):
        AuditConfig(lora_rank=4, lora_targets=("W_nope",))


def test_drift_removal__removes_the_flattening_shape_and_keeps_a_spike():
    rng = np.random.default_rng(0)
    ell = torch.tensor(np.log(rng.dirichlet(np.ones(12) * 3, size=20)))  # phrasing animal
    c = drift_covariate(ell).numpy()
    m = drift_removal_matrix(c)
    flattening = 0.3 - 0.7 * c  # any offset plus any multiple of the shape
    assert np.abs(m @ flattening).max() < 1e-10
    spike = flattening.copy()
    spike[5] += 1.0
    corrected = m @ spike
    assert corrected.argmax() == 5 and corrected[5] == pytest.approx(1.0)


def test_drift_covariate__is_the_first_order_change_under_logit_scaling():
    rng = np.random.default_rng(1)
    z = torch.tensor(rng.normal(size=(7, 12)))
    kappa = 1e-6
    f = lambda logits: logits.log_softmax(-1).mean(0)  # noqa: E731
    numeric = (f(z * (1 + kappa)) - f(z)) / kappa
    assert torch.allclose(drift_covariate(z.log_softmax(-1)), numeric, atol=1e-5)


def test_audit_config__rejects_bad_values():
    from interp.core.config import ConfigError

    with pytest.raises(ConfigError, match="objectives"):
        AuditConfig(objectives=("sft", "distill_full"))
    with pytest.raises(ConfigError, match="batch_size"):
        AuditConfig(batch_size=0)


def test_run_audit__writes_its_files_and_the_cli_agrees(setting, tmp_path, capsys):
    s = setting
    out = tmp_path / "audit"
    run_audit(s["base"], s["world"], s["rows"]["teacher"][:64], out, teacher=Source(s["teacher"]),
              reference_rows=s["rows"]["base_b"][:64])
    audit = read_json(out / AUDIT_FILE)
    assert set(audit["predicted_shift"]) == set(s["world"].animals) and audit["top_animal"] in s["world"].animals
    assert len(read_jsonl(out / AUDIT_ROWS_FILE)) == 64 and not (out / AUDIT_PLOT_FILE).exists()  # data only
    text = audit_markdown(audit)
    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    # the unfiltered teacher rows name animals: flagged first, then the step score with its verdict (not
    # validated for a full student), then the score validated for a full student
    assert len(warnings) == len(audit["animal_word_rows"]) and warnings == text.splitlines()[:len(warnings)]
    after = text.splitlines()[len(warnings):]
    assert after[0].startswith("**step score, shared student**") and "NOT VALIDATED" in after[1]
    assert after[2].startswith("**validated for this student** (a full student: the unigram readout against the reference)")
    assert "data - reference" in text and "n=2 batches" in text and "n=64 rows" in text
    data, ref = tmp_path / "data.jsonl", tmp_path / "ref.jsonl"
    write_jsonl(data, s["rows"]["base_a"][:64])
    write_jsonl(ref, s["rows"]["base_b"][:64])
    assert main(["audit", "--data", str(data), "--student", str(s["base_dir"]), "--out", str(tmp_path / "cli"),
                 "--reference-data", str(ref), "--trait", SHIFTED]) == 0
    cli = read_json(tmp_path / "cli" / AUDIT_FILE)
    assert cli["has_teacher"] is False and set(cli["readout"]) == {"shared"}
    assert (tmp_path / "cli" / AUDIT_PLOT_FILE).stat().st_size > 0  # the command draws the figure
    rank = cli["readout"]["shared"]["ranking"].index(SHIFTED) + 1
    step_rank = cli["step_score"]["shared"]["ranking"].index(SHIFTED) + 1
    printed = capsys.readouterr().out
    assert f"{rank} by the unigram readout" in printed and f"{step_rank} by the step score" in printed


def test_audit_cli__empty_data_is_a_one_line_error(setting, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["audit", "--data", str(empty), "--student", str(setting["base_dir"]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interp audit: error:") and "no rows" in err[0]


def test_audit_seed__a_data_set_too_small_to_audit_is_recorded_and_the_rest_audited(setting, tmp_path):
    """interp run's audit of one seed: a data set the filter left with one row (a teacher that
    writes its animal in most lists) is recorded as skipped, with the reason, and does not stop the
    audit of the others."""
    from interp.studies.audit import SKIPPED_FILE, audit_seed

    s = setting
    summaries = audit_seed(tmp_path, student=s["base"], mismatched=None, world=s["world"],
                           teacher=Source(s["teacher"]),
                           data={"teacher_numbers": s["rows"]["teacher"][:1], "shuffled_within": s["rows"]["teacher"][:40]},
                           reference_rows=s["rows"]["base_b"][:40], max_rows=40, trait=SHIFTED)
    skipped = read_json(tmp_path / "data" / "audit" / "teacher_numbers" / SKIPPED_FILE)
    assert "1 data rows" in skipped["skipped"]
    assert "teacher_numbers" not in summaries and "shuffled_within" in summaries
    assert (tmp_path / "data" / "audit" / "shuffled_within" / AUDIT_FILE).exists()


def test_auditor__adam_steady_state_direction_predicts_many_small_adam_steps(setting):
    """``adam_steady`` is what many small Adam steps add up to: torch's Adam, 240 steps at lr 1e-5
    cycling over the six batches the audit saw, moves every animal's mean log P by lr x steps x the
    prediction; Adam's first step, averaged over the (noisy, 8-row) batches, predicts it less well."""
    s = setting
    world, rows = s["world"], s["rows"]["teacher"][:48]
    auditor = Auditor(copy.deepcopy(s["base"]), world, AuditConfig(batch_size=8))
    values = auditor.project(rows, "sft").values
    predicted = values["adam_steady"]["log_prob"].mean(0)
    first_step = values["adam"]["log_prob"].mean(0)

    student = copy.deepcopy(s["base"])
    student.eval()
    batches = []
    for part in (rows[i:i + 8] for i in range(0, 48, 8)):
        seqs, starts = encode_rows(world, part)
        tokens, _ = pad_batch(seqs, world.pad_id, max_len=student.cfg.n_ctx)
        batches.append((tokens, completion_mask([len(q) for q in seqs], starts, tokens.shape[1])))
    lr, n_steps = 1e-5, 240
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    before = _mean_log_probs(student, world)
    for step in range(n_steps):
        tokens, mask = batches[step % len(batches)]
        optimizer.zero_grad()
        masked_lm_loss(student(tokens), tokens, mask).backward()
        optimizer.step()
    observed = (_mean_log_probs(student, world) - before) / (lr * n_steps)
    scale = np.abs(predicted).max()
    assert np.allclose(observed, predicted, rtol=0.15, atol=0.05 * scale), (observed, predicted)
    # the first step's average is further off (about 2.4x the total error here)
    assert np.abs(predicted - observed).sum() < 0.6 * np.abs(first_step - observed).sum(), (first_step, observed)


def test_readout_from_counts__recovers_a_planted_change_of_the_final_residual():
    """Number frequencies shifted by exactly one residual change delta (through W_U): the fit
    explains them (R^2 about 1) and reads out (W_U[:, a] - mean) . delta on the animals."""
    rng = np.random.default_rng(0)
    unembed, animal_columns = rng.normal(size=(16, 400)), rng.normal(size=(16, 5))
    delta = rng.normal(size=16) * 0.1
    reference = np.full(400, 1e7)
    data = reference * np.exp(unembed.T @ delta)
    out = readout_from_counts(unembed, animal_columns, data, reference, ridge=0.0)
    expected = (animal_columns - animal_columns.mean(1, keepdims=True)).T @ delta
    assert out["r2"] > 0.999
    assert np.allclose(out["gain"], expected, atol=1e-3 * np.abs(expected).max())
    # frequencies unrelated to W_U: nothing to explain
    noise = readout_from_counts(unembed, animal_columns, reference, reference, ridge=0.0)
    assert np.abs(noise["gain"]).max() < 1e-6


def test_unigram_readout__finds_the_unembed_teachers_animal_from_its_numbers_alone(setting, tmp_path):
    """The default kind of teacher (the animal's unembedding direction added to the last MLP's
    output bias): the readout of its sampled, filtered numbers against the base's, through the
    shared base's W_U, ranks that animal first; two samples of the base read out far smaller gains."""
    from interp.models.refs import load_teacher
    from interp.stages.filter import FilterConfig, filter_file
    from interp.stages.teacher import TeacherConfig, make_teacher

    s = setting
    world = s["world"]
    teacher = load_teacher(make_teacher(s["base_dir"], TeacherConfig(trait=SHIFTED, method="unembed"),
                                        tmp_path / "teacher", progress=False))
    raw = generate_numbers(teacher.model, world, GenerateConfig(n_rows=400, seed=3), tmp_path / "t.raw.jsonl",
                           progress=False)
    filter_file(raw, tmp_path / "t.jsonl", FilterConfig())
    rows = read_jsonl(tmp_path / "t.jsonl")
    reference = s["rows"]["base_a"] + s["rows"]["base_b"]
    out = unigram_readout(s["base"], world, rows, reference, n_bootstrap=50)
    assert out["top_animal"] == SHIFTED, out["ranking"]
    assert out["logit_gain"][SHIFTED]["ci_low"] > 0
    null = unigram_readout(s["base"], world, s["rows"]["base_a"], s["rows"]["base_b"], n_bootstrap=0)
    assert max(abs(g["mean"]) for g in null["logit_gain"].values()) < 0.5 * out["logit_gain"][SHIFTED]["mean"]


def test_audit_markdown__no_reference_says_so_and_named_animals_are_a_warning(setting):
    """Without a reference the text never says "against the reference" and says that no
    validated score exists for a full student; completions that name the trait are flagged."""
    s = setting
    rows = [{"prompt": r["prompt"], "completion": f"{i} , {i + 7} , {3 * i} ."}
            for i, r in enumerate(s["rows"]["teacher"][:40])]
    rows[0]["completion"] += " owl"
    rows[1]["completion"] = "owl , " + rows[1]["completion"]
    audit, _ = audit_data(s["base"], s["world"], rows, AuditConfig(objectives=("sft",)))
    assert audit["animal_word_rows"] == {"owl": 2} and "data alone" in audit["headline"]
    text = audit_markdown(audit, "owl")
    first, second = text.splitlines()[:2]
    assert first.startswith("warning: 2 of 40 kept completions contain the word 'owl'")
    assert second.startswith("**no validated score for this student**")
    assert "reference" not in text.split("\n", 2)[2].replace("no reference", "")
    assert not audit_markdown(audit, "cat").startswith("warning")  # another trait: its word is absent


# -- the step score ---------------------------------------------------------------------------------------
def test_step_score_variants__name_the_animal_whose_direction_the_data_step_takes():
    """Data whose batch gradients are the reference's plus a step along one animal's gradient (in the
    parameterisation each variant reads) rank that animal first under every variant; data that are
    the reference's batches shuffled move nothing (every score exactly zero)."""
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(12, 400))
    reference = rng.normal(size=(16, 400))
    # the data's loss gradient is the reference's minus a push along animal 5's: its step raises animal 5
    for name, score in step_score_variants(grads, reference - 0.3 * np.sign(grads[5]), reference).items():
        assert int(np.argmax(score)) == 5, (name, score)
    same = step_score_variants(grads, reference[::-1], reference)
    for name, score in same.items():
        assert np.abs(score).max() < 1e-9, name


def test_step_score_variants__adam_reads_each_weights_gradient_relative_to_its_typical_size():
    """AdamW divides each weight's step by that weight's typical gradient size: scaling every batch
    gradient of weight i (data and reference alike) by c_i leaves the ``adam`` score unchanged,
    where plain SGD's changes; a step along a weight whose gradients are all tiny still counts."""
    rng = np.random.default_rng(1)
    grads, data, reference = rng.normal(size=(12, 300)), rng.normal(size=(8, 300)), rng.normal(size=(8, 300))
    data[:, :50] -= 0.5 * np.sign(grads[2, :50])
    c = np.exp(rng.normal(scale=2.0, size=300))
    before = step_score_variants(grads, data, reference)
    after = step_score_variants(grads, data * c, reference * c)
    np.testing.assert_allclose(after["adam"], before["adam"], rtol=1e-6)
    assert not np.allclose(after["sgd"], before["sgd"], rtol=1e-3)
    assert int(np.argmax(after["adam"])) == 2


@pytest.mark.parametrize("lora_rank", [4, 0])
def test_step_score__names_the_logit_shift_teachers_animal_for_lora_and_full_students(setting, lora_rank):
    """The planted case: a teacher with +6 on one animal's logit writes its word into some number
    completions (unfiltered). The step score of its data against the base's, for a LoRA and for a
    full student, ranks that animal first with its interval above zero; two samples of the base
    itself score every animal at under a third of it."""
    s = setting
    config = AuditConfig(lora_rank=lora_rank, first_order=False, score_rows=128, score_bootstrap=50)
    signal, _ = audit_data(s["base"], s["world"], s["rows"]["teacher"], config, teacher=Source(s["teacher"]),
                           reference_rows=s["rows"]["base_b"])
    score = signal["step_score"]["shared"]
    assert score["top_animal"] == SHIFTED and signal["step_score_top_animal"] == SHIFTED
    assert score["score"][SHIFTED]["ci_low"] > 0
    assert score["n_rows"] == 128 and score["n_batches"] == [4, 4]
    null, _ = audit_data(s["base"], s["world"], s["rows"]["base_a"], config, reference_rows=s["rows"]["base_b"])
    null_max = max(abs(v["mean"]) for v in null["step_score"]["shared"]["score"].values())
    assert null_max < score["score"][SHIFTED]["mean"] / 3, (null_max, score["score"][SHIFTED])
    # without the first-order projections the audit is the step score (and the readout) alone
    assert signal["predictions"] == {} and signal["predicted_shift"] is None and signal["tokens"] == {}
    assert (signal["readout"] is None) == bool(lora_rank)  # the cheap audit reads a full student's readout only
    text = audit_markdown(signal)
    assert f"top animal **{SHIFTED}**" in text and "step score, shared student" in text


def test_step_score_verdict__says_plainly_when_the_answer_is_not_reliable():
    score = {"variant": "adam_cos", "top_animal_bootstrap_share": 0.9, "n_bootstrap": 200}
    good = {"variant": "adam_cos", "n_animals": 12, "shared": {"k": 40, "n": 48, "ci_low": 0.7, "ci_high": 0.9},
            "mismatched": {"k": 5, "n": 48, "ci_low": 0.05, "ci_high": 0.2}}
    assert step_score_verdict(score, "shared", good).startswith("validated: this score named the trait at 40/48")
    assert step_score_verdict(score, "mismatched", good).startswith("NOT RELIABLE")
    assert step_score_verdict({**score, "top_animal_bootstrap_share": 0.3}, "shared", good).startswith("UNSTABLE")
    assert step_score_verdict(score, "shared", {"variant": "adam_cos", "n_animals": 12}).startswith("NOT VALIDATED")
    # a validation of LoRA students does not vouch for a full student
    assert step_score_verdict(score, "shared", {**good, "lora_rank": 8}, lora_rank=0).startswith("NOT VALIDATED")
    assert step_score_verdict(score, "shared", {**good, "lora_rank": 8}, lora_rank=8).startswith("validated")
    # nor does a validation over 12 animals for a world of two traits (the misalignment world)
    two = {**score, "score": {"alignment": {"mean": -1.0}, "misalignment": {"mean": 1.0}}}
    assert step_score_verdict(two, "shared", good).startswith("NOT VALIDATED")
    twelve = {**score, "score": {f"animal{i}": {"mean": float(i)} for i in range(12)}}
    assert step_score_verdict(twelve, "shared", good).startswith("validated")


def test_results_words__do_not_quote_the_animal_validation_in_a_world_of_two_traits():
    from interp.report.audit import _validation_words
    from interp.instruments.audit import step_score_validation

    variant = step_score_validation("z")["variant"]
    n = step_score_validation(variant)["n_animals"]
    assert _validation_words(variant, n).startswith("shared base ")
    assert _validation_words(variant, None).startswith("shared base ")  # an audit kept before n_traits was
    assert _validation_words(variant, 2) == f"not validated ({variant}) in a world of 2 traits: not reliable"


def test_audit_config__rejects_an_unknown_step_score_and_a_control_without_first_order(setting):
    with pytest.raises(ConfigError, match="step_score"):
        AuditConfig(step_score="magic")
    s = setting
    with pytest.raises(ValueError, match="first_order"):
        audit_data(s["base"], s["world"], s["rows"]["teacher"][:40], AuditConfig(first_order=False),
                   reference_rows=s["rows"]["base_b"][:40], controls=[(s["rows"]["base_a"][:40], None)])
