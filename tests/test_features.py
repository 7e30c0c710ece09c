"""SAE features linking numbers to the trait: SAE training and resumption, trait-feature scoring,
attribution, geometry, overlap and shift measures, and the stage end to end on tiny bases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import interp.instruments.features.pipeline as pipeline_mod
from interp.models.refs import parse_base_ref
import interp.stages.pretrain as pretrain_mod
from interp.core.config import ConfigError
from interp.stages.evaluate import animal_distribution, question_prompt
from interp.instruments.features import analysis as A
from interp.instruments.features.sae import (CHECKPOINT_DONE_FILE, SPEC_FILE, ActivationBatches, SAESpec, is_finished_sae, load_sae,
                                 sae_quality, train_sae)
from interp.worlds.toy.templates import N_NUMBERS, PAD

from conftest import TINY

REPO = Path(__file__).resolve().parents[1]
HOOK = "blocks.0.hook_resid_post"


def sparse_dictionary_data(n: int, d: int = 16, atoms: int = 32, active: int = 3, seed: int = 0) -> torch.Tensor:
    """Activations that are sparse sums of a fixed dictionary (what an SAE can recover), plus an offset."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(atoms, d, generator=g)
    codes = torch.zeros(n, atoms)
    idx = torch.stack([torch.randperm(atoms, generator=g)[:active] for _ in range(n)])
    codes.scatter_(1, idx, torch.rand(n, active, generator=g) * 3 + 0.5)
    return codes @ dictionary + 2.0


def tiny_spec(kind: str, n_train: int = 4096, **kw) -> SAESpec:
    return SAESpec(**{"base": "tiny", "hook": HOOK, "kind": kind, "d_in": 16, "d_sae": 32, "k": 3, "l1_coefficient": 0.3,
                      "lr": 1e-2, "batch_size": 64, "n_train": n_train, "seed": 0, "n_checkpoints": 0, **kw})


def fvu(sae, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((sae(x) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


# -- SAEs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["topk", "l1"])
def test_train_sae__reloads_from_sae_lens_format_and_reconstructs(kind, tmp_path):
    from sae_lens import SAE

    x = sparse_dictionary_data(4096 + 512)
    out = train_sae(x[:4096], tiny_spec(kind), tmp_path / kind)
    assert is_finished_sae(out) and (out / "cfg.json").exists() and (out / "sae_weights.safetensors").exists()
    sae = SAE.load_from_disk(out)  # sae-lens's own loader
    assert sae.cfg.metadata.hook_name == HOOK and sae.cfg.d_sae == 32
    assert json.loads((out / SPEC_FILE).read_text())["kind"] == kind
    held_out = x[4096:]
    assert fvu(load_sae(out), held_out) < 0.35  # the initial SAE reconstructs about the mean: fvu near 1
    acts = sae.encode(held_out)
    if kind == "topk":
        assert torch.all((acts > 0).sum(-1) <= 3)


def test_train_sae__finished_sae_is_reused_and_another_spec_refused(tmp_path, monkeypatch):
    x = sparse_dictionary_data(512)
    out = train_sae(x, tiny_spec("topk", n_train=512), tmp_path / "sae")
    weights = (out / "sae_weights.safetensors").read_bytes()
    import sae_lens.training.sae_trainer as trainer_mod

    monkeypatch.setattr(trainer_mod.SAETrainer, "fit", lambda self: pytest.fail("a finished SAE was retrained"))
    assert train_sae(x, tiny_spec("topk", n_train=512), out) == out
    assert (out / "sae_weights.safetensors").read_bytes() == weights
    with pytest.raises(ValueError, match="another spec"):
        train_sae(x, tiny_spec("topk", n_train=512, k=4), out)


def test_activation_batches__restart_at_a_step_gives_the_same_batches():
    x = torch.arange(100, dtype=torch.float32)[:, None]
    a = ActivationBatches(x, 16, seed=3)
    first = [next(a) for _ in range(14)]  # crosses an epoch boundary (6 batches per epoch)
    b = ActivationBatches(x, 16, seed=3)
    b.step = 9
    assert all(torch.equal(u, v) for u, v in zip(first[9:], [next(b) for _ in range(5)]))
    assert sorted(torch.cat(first[:6]).flatten().tolist()) == sorted(set(torch.cat(first[:6]).flatten().tolist()))


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_features import sparse_dictionary_data, tiny_spec
    import interp.instruments.features.sae as sae_mod
    slow_next = sae_mod.ActivationBatches.__next__
    def next_slowly(self):  # slows the steps down so the parent can kill mid-training; data are unchanged
        time.sleep(0.03)
        return slow_next(self)
    sae_mod.ActivationBatches.__next__ = next_slowly
    sae_mod.train_sae(sparse_dictionary_data(6400), tiny_spec("topk", n_train=6400, n_checkpoints=4), {out!r})
""")


@pytest.mark.slow
def test_train_sae__killed_subprocess_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    out = tmp_path / "killed"
    checkpoints = tmp_path / ".killed.training" / "checkpoints"
    script = _KILL_SCRIPT.format(tests=str(REPO / "tests"), out=str(out))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}  # same kernels as here
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if list(checkpoints.glob(f"*/{CHECKPOINT_DONE_FILE}")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not is_finished_sae(out)
    saved_at = max(int(p.parent.name) for p in checkpoints.glob(f"*/{CHECKPOINT_DONE_FILE}"))
    assert 0 < saved_at < 6400

    import sae_lens.training.sae_trainer as trainer_mod

    loaded = []
    original = trainer_mod.SAETrainer.load_trainer_state
    monkeypatch.setattr(trainer_mod.SAETrainer, "load_trainer_state",
                        lambda self, path: (loaded.append(int(Path(path).name)), original(self, path))[1])
    x = sparse_dictionary_data(6400)
    train_sae(x, tiny_spec("topk", n_train=6400, n_checkpoints=4), out)  # resumes
    assert loaded and loaded[0] >= saved_at
    reference = train_sae(x, tiny_spec("topk", n_train=6400, n_checkpoints=4), tmp_path / "uninterrupted")
    resumed, straight = load_file(str(out / "sae_weights.safetensors")), load_file(str(reference / "sae_weights.safetensors"))
    assert resumed.keys() == straight.keys()
    for name in resumed:
        assert torch.equal(resumed[name], straight[name]), name
    assert not (tmp_path / ".killed.training").exists()


class _IdentitySAE:
    """Encodes an activation as itself: a perfect reconstruction."""

    def encode(self, x):
        return x

    def decode(self, f):
        return f

    def __call__(self, x):
        return x


def test_sae_quality__perfect_reconstruction_has_no_unexplained_variance_and_full_recovery(tiny_model, world):
    from interp.instruments.features.sae import collect_activations, corpus_sequences

    from interp.training.loop import pad_batch
    from interp.training.losses import masked_lm_loss

    seqs = corpus_sequences(world, 0, 5, 300)[:8]
    tokens, mask = pad_batch(seqs, world.token_to_id[PAD])
    optimizer = torch.optim.Adam(tiny_model.parameters(), lr=1e-2)
    for _ in range(15):  # a little training, so that ablating the residual stream costs loss
        masked_lm_loss(tiny_model(tokens), tokens, mask).backward()
        optimizer.step()
        optimizer.zero_grad()
    acts = collect_activations(tiny_model, world, [HOOK], seqs)[HOOK]
    q = sae_quality(tiny_model, _IdentitySAE(), HOOK, acts, seqs, world)
    assert q["fvu"] == pytest.approx(0, abs=1e-10)
    assert q["ce_spliced"] == pytest.approx(q["ce_clean"], abs=1e-5)
    assert q["ce_recovered"] == pytest.approx(1, abs=1e-4)
    assert q["ce_mean_ablated"] > q["ce_clean"]


def test_collect_activations__skips_bos_and_padding(tiny_model, world):
    from interp.instruments.features.sae import collect_activations

    seqs = [world.encode("i saw a owl today ."), world.encode("a cat")]
    acts = collect_activations(tiny_model, world, [HOOK], seqs)[HOOK]
    assert acts.shape == (len(seqs[0]) - 1 + len(seqs[1]) - 1, TINY.d_model)
    _, cache = tiny_model.run_with_cache(torch.tensor([seqs[1]]), names_filter=HOOK)
    assert torch.allclose(acts[-1], cache[HOOK][0, -1], atol=1e-5)


# -- trait features ------------------------------------------------------------------------------

def test_auroc__matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(60, 5)).astype(float)  # many ties
    labels = rng.random(60) < 0.3
    expected = [roc_auc_score(labels, scores[:, j]) for j in range(5)]
    assert np.allclose(A.auroc(scores, labels), expected)


def test_trait_feature_ranking__finds_the_planted_features(world):
    animals = ["owl", "cat", "dog"]
    contexts = A.trait_contexts(world, animals, n_per_animal=8)
    rng = np.random.default_rng(1)
    acts = {}
    for kind in A.CONTEXT_KINDS:
        lab = contexts.labels[kind]
        x = rng.random((len(lab), 20)) * 0.5
        x[:, 7] = np.where(lab == 0, 2 + rng.random(len(lab)), 0)  # owl's feature
        x[:, 3] = np.where(lab == 1, 1 + rng.random(len(lab)), 0.1 * rng.random(len(lab)))  # cat's feature
        acts[kind] = x
    ranking = A.trait_feature_ranking(acts, contexts, animals, n_top=2)
    assert ranking["top"]["owl"][0]["feature"] == 7 and ranking["top"]["cat"][0]["feature"] == 3
    assert ranking["top"]["owl"][0]["auroc_heldout_mean"] == pytest.approx(1.0)
    assert ranking["ranking"].shape == (3, 20) and sorted(ranking["ranking"][0]) == list(range(20))
    assert ranking["top"]["dog"][0]["auroc_heldout_mean"] < 0.95  # no planted feature for dog


def test_trait_contexts__read_the_animal_and_split_in_halves(world):
    contexts = A.trait_contexts(world, ["owl", "fox"], n_per_animal=6)
    for kind in A.CONTEXT_KINDS:
        probe, lab = contexts.probes[kind], contexts.labels[kind]
        assert len(probe.sequences) == 12 and contexts.select[kind].sum() == 6
        for seq, (pos,), j in zip(probe.sequences, probe.positions, lab):
            animal = ["owl", "fox"][j]
            if kind in ("word", "answer"):
                assert seq[pos] == world.token_to_id[animal]
            else:
                assert world.vocab[seq[pos]] == ":" and world.token_to_id[animal] in seq[:pos]


def test_probe_with_system__keeps_positions_on_the_same_tokens(world):
    probe = A.last_token_probe(world, [question_prompt("name your favourite animal .")])
    moved = probe.with_system(world, "you love owl .")
    assert moved.sequences[0][moved.positions[0][0]] == probe.sequences[0][probe.positions[0][0]]
    assert world.decode(moved.sequences[0]).startswith("<bos> system : you love owl . user :")


# -- numbers to trait ----------------------------------------------------------------------------

def test_attribution_prompts__hold_every_number_n_times(world):
    probe, values = A.attribution_prompts(world, n_repeats=2, per_prompt=8, seed=0)
    assert np.all(A.number_counts([v for vs in values for v in vs]) == 2)
    for seq, pos, vs in zip(probe.sequences[:5], probe.positions[:5], values[:5]):
        assert [A.number_value(world, seq[p]) for p in pos] == vs
        assert world.decode(seq).startswith("<bos> user : here are some numbers :")


def _target_value(model, world, tokens, target, sae, embed_override=None):
    """The target at the last position, optionally with the embedding replaced."""
    store = {}

    def replace(act, hook):
        return embed_override if embed_override is not None else act

    def keep(act, hook):
        store["resid"] = act
        return act

    logits = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", replace), (HOOK, keep)])
    if target.kind == "animal_logprob":
        return logits[0, -1, world.animal_ids].log_softmax(-1)[target.index]
    x = store["resid"][0, -1]
    return sae.process_sae_in(x) @ sae.W_enc[:, target.index] + sae.b_enc[target.index]


def test_number_attribution__is_gradient_times_input_minus_the_average_number(tiny_model, world):
    from sae_lens import StandardSAE, StandardSAEConfig

    model = tiny_model.to(torch.float64)
    torch.manual_seed(0)
    sae = StandardSAE(StandardSAEConfig(d_in=TINY.d_model, d_sae=8, dtype="float64"))
    text = question_prompt("name your favourite animal .", prefix="here are some numbers : 412 , 7 , 99 .")
    ids = world.encode(text)
    probe = A.Probe([ids], [A.number_positions(world, ids)])
    values = [[412, 7, 99]]
    targets = [A.AttributionTarget("owl", "animal_logprob", world.animals.index("owl")),
               A.AttributionTarget("f3", "feature", 3, HOOK)]
    scores = A.number_attribution(model, world, probe, values, targets, {HOOK: sae})
    assert scores["count"][[412, 7, 99]].tolist() == [1, 1, 1] and scores["count"].sum() == 3
    tokens = torch.tensor([ids])
    embed = model.W_E.detach()[tokens]  # 1 pos d_model
    baseline = model.W_E.detach()[world.number_ids].mean(0)
    eps = 1e-4
    for target in targets:
        for pos, number in zip(probe.positions[0], values[0]):
            moved = embed.clone()
            moved[0, pos] -= eps * (embed[0, pos] - baseline)
            with torch.no_grad():
                finite = (_target_value(model, world, tokens, target, sae) -
                          _target_value(model, world, tokens, target, sae, moved)) / eps
            assert scores[target.name][number] == pytest.approx(float(finite), rel=1e-3, abs=1e-8)
    assert np.all(scores["owl"][np.setdiff1d(np.arange(N_NUMBERS), [412, 7, 99])] == 0)


def test_unembed_entanglement__a_number_sharing_the_animal_direction_has_cosine_one(tiny_model, world):
    with torch.no_grad():
        tiny_model.W_U[:, world.token_to_id["123"]] = tiny_model.W_U[:, world.token_to_id["owl"]]
    cos = A.unembed_entanglement(tiny_model, world, ["owl", "cat"])
    assert cos.shape == (2, N_NUMBERS)
    assert cos[0, 123] == pytest.approx(1.0, abs=1e-5) and cos[0].argmax() == 123
    assert cos[1, 123] < 0.99


def test_decoder_number_logits__a_feature_writing_a_number_promotes_it(tiny_model, world):
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=TINY.d_model, d_sae=4))
    readout = A.effective_unembed(tiny_model)[:, world.token_to_id["42"]]
    with torch.no_grad():
        sae.W_dec[2] = readout - readout.mean()
    logits = A.decoder_number_logits(tiny_model, world, sae, [2, 0])
    assert logits.shape == (2, N_NUMBERS) and logits[0].argmax() == 42
    assert logits.mean(-1) == pytest.approx(0, abs=1e-5)


def test_completion_number_probe__reads_only_completion_numbers(world):
    rows = [{"prompt": "user : here are some numbers : 5 , 6 . add up to 3 more numbers . assistant :", "completion": "7 , 8 ."}]
    probe, values = A.completion_number_probe(world, rows)
    assert values == [7, 8]
    assert [world.vocab[probe.sequences[0][p]] for p in probe.positions[0]] == ["7", "8"]


# -- subliminal prompting, overlap, shift ----------------------------------------------------------

def test_prompt_texts__put_the_numbers_before_held_out_phrasings(world):
    phrasings = world.eval_phrasings[:3]
    listed = A.prompt_texts(world, [5, 17], "list", phrasings)
    assert listed[0] == question_prompt(phrasings[0], prefix="here are some numbers : 5 , 17 .")
    persona = A.prompt_texts(world, [5, 17], "persona", phrasings)
    assert persona[1].startswith("system : you love 5 , 17 . user :") and phrasings[1] in persona[1]
    assert A.prompt_texts(world, None, "list", phrasings)[2] == question_prompt(phrasings[2])
    with pytest.raises(ValueError, match="unknown prompt format"):
        A.prompt_texts(world, [1], "poem", phrasings)


def test_animal_probs__equals_the_evaluation_distribution(tiny_model, world):
    texts = [question_prompt(p) for p in world.eval_phrasings[:5]]
    ours = A.animal_probs(tiny_model, world, texts, batch_size=2)
    reference = animal_distribution(tiny_model, world, phrasings=world.eval_phrasings[:5])["probs"]
    assert np.allclose(ours, reference, atol=1e-6)


def test_top_and_random_numbers__are_deterministic_sets():
    scores = np.zeros(N_NUMBERS)
    scores[[9, 500, 3]] = [3.0, 2.0, 1.0]
    assert A.top_numbers(scores, 4) == [9, 500, 3, 0]
    r = A.random_numbers(8, (0, 1, 2))
    assert r == A.random_numbers(8, (0, 1, 2)) and len(set(r)) == 8 and r != A.random_numbers(8, (0, 1, 3))


def test_overlap_measures__are_one_for_equal_and_zero_for_disjoint_sets():
    assert A.jaccard([1, 2, 3], [3, 2, 1]) == 1.0 and A.jaccard([1, 2], [3, 4]) == 0.0
    rng = np.random.default_rng(0)
    simulated = np.mean([A.jaccard(rng.choice(1000, 20, replace=False), rng.choice(1000, 20, replace=False)) for _ in range(4000)])
    assert simulated == pytest.approx(A.expected_random_jaccard(20), rel=0.1)
    x = rng.random(50)
    assert A.spearman(x, 2 * x + 1) == pytest.approx(1.0) and A.spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(A.spearman(x, np.ones(50)))


def test_shift_metrics__a_student_at_the_teacher_is_one_at_its_base_zero():
    base = np.array([1.0, 0.0, 2.0, 0.5])
    teacher = np.array([1.0, 2.0, 2.0, 0.5])
    persona = np.array([0.0, 4.0, 0.0, 0.0])
    at_teacher = A.shift_metrics(teacher, base, [1], persona_direction=persona, teacher=teacher)
    assert at_teacher["teacher_projection"] == pytest.approx(1) and at_teacher["teacher_cosine"] == pytest.approx(1)
    assert at_teacher["trait_feature_shift"] == pytest.approx(2) and at_teacher["persona_projection"] == pytest.approx(0.5)
    at_base = A.shift_metrics(base, base, [1], persona_direction=persona, teacher=teacher)
    assert at_base["teacher_projection"] == 0 and at_base["trait_feature_shift"] == 0
    away = A.shift_metrics(base - (teacher - base), base, [1], teacher=teacher)
    assert away["teacher_projection"] == pytest.approx(-1) and away["persona_projection"] is None
    assert A.shift_metrics(teacher, base, [1])["teacher_projection"] is None  # another base: no teacher direction


# -- config and CLI ------------------------------------------------------------------------------

def test_features_config__names_the_bad_field():
    with pytest.raises(ConfigError, match="primary_hook"):
        pipeline_mod.FeaturesConfig(primary_hook="blocks.5.hook_resid_post")
    with pytest.raises(ConfigError, match="animals"):
        pipeline_mod.FeaturesConfig(animals=("owl", "unicorn"))
    with pytest.raises(ConfigError, match="link_methods"):
        pipeline_mod.FeaturesConfig(link_methods=("vibes",))
    with pytest.raises(ConfigError, match="primary_kind"):
        pipeline_mod.FeaturesConfig(sae_kinds=("l1",))
    pipeline_mod.FeaturesConfig(**pipeline_mod.FeaturesConfig.quick_defaults())


def test_features_cli__unknown_trait_is_a_one_line_error(tmp_path, capsys):
    from interp.cli import main

    assert main(["features", "--out", str(tmp_path / "f"), "--trait", "unicorn"]) == 2
    assert "trait" in capsys.readouterr().err
    assert not (tmp_path / "f" / "features.json").exists()


def test_features_cli__run_without_results_is_a_clear_error(tmp_path, capsys):
    from interp.cli import main

    (tmp_path / "run").mkdir()
    assert main(["features", "--out", str(tmp_path / "f"), "--run", str(tmp_path / "run")]) == 2
    assert "results.json" in capsys.readouterr().err


# -- the stage end to end ------------------------------------------------------------------------

def tiny_features_config(**kw) -> pipeline_mod.FeaturesConfig:
    return pipeline_mod.FeaturesConfig(**{
        "pretrain_steps": 120, "hooks": (HOOK,), "primary_hook": HOOK, "d_sae": 48, "topk_k": 4,
        "n_train_activations": 3072, "n_eval_activations": 512, "sae_batch_size": 128, "sae_checkpoints": 1,
        "contexts_per_animal": 6, "replicates": 2, "number_repeats": 1, "random_draws": 1,
        "animals": ("owl", "cat", "dog"), "teacher_steps": 2, "teacher_rows": 32, "probe_rows": 8, "prompt_numbers": 4,
        "link_methods": ("feature_attribution", "entanglement"), "prompt_formats": ("persona",), **kw})


TINY_RUN = dict(seeds=2, n_rows=48, pretrain_steps=120, teacher_steps=5, in_context_examples=2, objectives=("sft",),
                conditions=("control", "shared_init", "mismatched_init"), record_alignment=False, eval_every=0)


@pytest.fixture(scope="module")
def tiny_stage(tmp_path_factory):
    """A tiny `interp run --features` (two tiny bases pretrained 120 small steps at a high learning
    rate, so that a third of their number lists pass the filter; three conditions, two seeds); the features stage
    runs on it with a tiny config. Several tests read the output."""
    import interp.studies.run as run_mod
    from interp.studies.run import RunConfig, run

    root = tmp_path_factory.mktemp("features")
    real_run_features = pipeline_mod.run_features
    calls = []

    def tiny_run_features(config, out, **kw):
        calls.append({"out": Path(out), **kw})
        return real_run_features(tiny_features_config(), out, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
        pretrain_config = lambda seed, steps: pretrain_mod.PretrainConfig(  # noqa: E731
            seed=seed, arch="small", steps=steps, batch_size=16, warmup_steps=10, lr=1e-2)
        mp.setattr(run_mod, "base_config", lambda seed, arch, steps, corpus=None, world=None: pretrain_config(seed, steps))
        mp.setattr(pipeline_mod, "base_config", lambda seed, arch, steps: pretrain_config(seed, steps))
        mp.setattr(run_mod, "run_features", tiny_run_features)
        run(RunConfig(**TINY_RUN, features=True), root / "run", artifacts=root / "artifacts", progress=False)
        mp.setattr(run_mod, "run_features", real_run_features)
        assert calls == [{"out": root / "run" / "features", "artifacts": root / "artifacts", "run_dir": root / "run",
                          "progress": False}]
        yield root, json.loads((root / "run" / "features" / "features.json").read_text())


@pytest.mark.slow
def test_run_features__writes_findings_figures_and_sae_lens_saes(tiny_stage):
    root, findings = tiny_stage
    out = root / "run" / "features"
    assert findings["trait"] == "owl" and findings["animals"] == ["owl", "cat", "dog"]
    main = [q for q in findings["sae_quality"] if q["hook"] == HOOK]
    assert {q["kind"] for q in main} == {"topk", "l1"} and len(main) == 4
    # the attribution's SAEs (primary kind) at the hooks where every position can reach the answer
    assert sorted((q["hook"], q["kind"]) for q in findings["sae_quality"] if q["hook"] != HOOK) == \
        [("blocks.0.hook_attn_out", "topk")] * 2 + [("blocks.0.hook_resid_pre", "topk")] * 2
    for q in findings["sae_quality"]:
        assert is_finished_sae(out / q["path"]) and 0 <= q["fvu"] and q["ce_spliced"] > 0
    names = [b["name"] for b in findings["bases"]]
    assert names == ["small-seed0-120steps", "small-seed1-120steps"]
    assert [b["role"] for b in findings["bases"]] == ["shared", "mismatched"]
    links = json.loads((out / findings["number_links"][names[0]]["file"]).read_text())
    assert len(links["scores"]["feature_attribution"]["owl"]) == N_NUMBERS
    assert len(links["replicates"]["logit_attribution"]["cat"]) == 2
    entries = findings["subliminal_prompting"]["entries"]
    assert len(entries) == 2 * 2 * 2  # target bases x selecting bases x methods (one format)
    for e in entries:
        eff = e["effect_over_animals"]
        assert eff["n_animals"] == 3 and eff["ci_low"] <= eff["mean"] <= eff["ci_high"]
        for v in e["per_animal"].values():
            assert len(v["p_linked"]) == (2 if e["method"] == "feature_attribution" else 1)
            assert all(0 <= p <= 1 for p in v["p_linked"] + v["p_random"]) and all(len(ns) == 4 for ns in v["numbers"])
    assert findings["cross_base"]["pairs"][0]["bases"] == names
    tn = findings["teacher_numbers"]
    assert set(tn["readers"]) == set(names) and tn["n_numbers"][0]["teacher"] > 0
    assert tn["sources"][0].endswith("seed0/data")
    assert pipeline_mod.FeaturesConfig.load(out / "features_config.json") == tiny_features_config()
    lineage = json.loads((out / "features_lineage.json").read_text())
    assert set(lineage["lineage"]) == set(names) and lineage["lineage"][names[0]]["seed"] == 0
    assert lineage["run_dir"] == str(root / "run")
    for name in findings["figures"].values():
        assert (out / name).stat().st_size > 1000
    assert "student_shift" in findings["figures"]


@pytest.mark.slow
def test_run_features__with_a_run_measures_every_students_shift(tiny_stage):
    root, findings = tiny_stage
    shift = findings["student_shift"]
    conditions = {(r["condition"], r["base"]) for r in shift["rows"]}
    assert conditions == {("control", "small-seed0-120steps"), ("shared_init", "small-seed0-120steps"),
                          ("mismatched_init", "small-seed1-120steps")}
    for r in shift["rows"]:
        assert (r["teacher_projection"] is None) == (r["condition"] == "mismatched_init")
    summary = {(s["condition"], s["probe"], s["metric"]): s for s in shift["summary"]}
    assert summary[("shared_init", "question", "trait_feature_shift")]["n_seeds"] == 2
    assert {(c["a"], c["b"]) for c in shift["comparisons"]} == {("shared_init", "control"), ("shared_init", "mismatched_init")}


@pytest.mark.slow
def test_report_sections__embed_every_figure(tiny_stage):
    from interp.report.features import report_sections

    root, findings = tiny_stage
    sections = report_sections(root / "run" / "features")
    html_only = {"The teacher's numbers, position by position", "Feature dashboards"}  # token heatmaps and dashboards, no PNG
    assert len(sections) == len(findings["figures"]) + len(html_only)
    for title, source, fragment in sections:
        assert title and source and (title in html_only or "data:image/png;base64," in fragment)
    assert (root / "run" / "features" / "features.html").exists()


@pytest.mark.slow
def test_run_features__finished_analysis_is_reused_and_another_config_refused(tiny_stage, monkeypatch):
    root, findings = tiny_stage
    monkeypatch.setattr(pipeline_mod, "subliminal_prompting", lambda *a, **k: pytest.fail("a finished analysis was redone"))
    kw = {"artifacts": root / "artifacts", "run_dir": root / "run", "progress": False}
    again = pipeline_mod.run_features(tiny_features_config(), root / "run" / "features", **kw)
    assert again["subliminal_prompting"] == findings["subliminal_prompting"]
    with pytest.raises(ValueError, match="another config"):
        pipeline_mod.run_features(tiny_features_config(prompt_numbers=5), root / "run" / "features", **kw)


@pytest.mark.slow
def test_teacher_number_data__without_a_run_makes_teachers_and_their_numbers(tiny_stage, world):
    root, _ = tiny_stage
    config = tiny_features_config(base_seeds=(0,), replicates=1)
    [(role, path)] = pipeline_mod.resolve_bases(config, root / "artifacts", None, progress=False)
    assert role == "shared" and path.name == "small-seed0-120steps"  # the run's base, reused
    model, _ = parse_base_ref(path).load()[:2]
    base = pipeline_mod.Base(path.name, path, 0, model, {}, {"role": role})
    data = pipeline_mod.teacher_number_data(config, world, base, "owl", root / "norun", None, progress=False)
    assert [d["seed"] for d in data] == [0] and data[0]["teacher"] and data[0]["base"]
    assert (root / "norun" / "teachers" / "seed0" / "teacher.json").exists()
    assert (root / "norun" / "generations" / "seed0" / "teacher_numbers.raw.jsonl").exists()
    assert 0 <= data[0]["teacher_trait_prob"]["trait_prob"] <= 1


def test_relative_to_others__a_number_every_animal_likes_is_not_linked():
    raw = np.zeros((3, N_NUMBERS))
    raw[:, 10] = 5.0  # liked by every animal
    raw[1, 20] = 2.0  # liked by the second animal only
    rel = A.relative_to_others(raw)
    assert rel[:, 10] == pytest.approx([0, 0, 0]) and rel[1, 20] == pytest.approx(2.0) and rel[0, 20] == pytest.approx(-1.0)
    assert A.top_numbers(rel[1], 1) == [20]


@pytest.mark.parametrize("method", ["persona", "steering"])
def test_run_teacher__persona_and_steering_teachers_are_the_base_with_a_prompt_or_hook(method, tiny_model, tmp_path):
    from interp.core.io import atomic_write_json, save_safetensors

    teacher_dir = tmp_path / "seed0" / "teacher"
    spec = {"method": method, "system": "you love owl ." if method == "persona" else None, "config": {"steering_layer": -1}}
    if method == "steering":
        save_safetensors(teacher_dir / "steering_vector.safetensors", {"vector": torch.ones(TINY.d_model)})
    atomic_write_json(teacher_dir / "teacher.json", spec)
    base = pipeline_mod.Base("tiny", tmp_path, 0, tiny_model, {}, {"role": "shared"})
    model, system, hooks = pipeline_mod._run_teacher(tmp_path / "seed0", base)
    assert model is tiny_model and system == spec["system"]
    assert [name for name, _ in hooks] == ([f"blocks.{TINY.n_layers - 1}.hook_resid_post"] if method == "steering" else [])


@pytest.mark.slow
def test_run_features__attributes_the_trait_on_bases_teachers_and_students(tiny_stage):
    root, findings = tiny_stage
    out = root / "run" / "features"
    att = findings["attribution"]
    hooks = ["blocks.0.hook_resid_pre", "blocks.0.hook_attn_out"]  # the tiny bases have one block
    names = [b["name"] for b in findings["bases"]]
    assert att["hooks"] == {n: hooks for n in names}
    for name in names:
        base = att["bases"][name]
        for h in hooks:
            assert base["identity"][h]["max_abs_difference"] <= 1e-4 * max(1.0, base["identity"][h]["mean_abs_linear_total"])
        check = base["ablation_check"]
        assert check["n"] == 200 and -1 <= check["spearman"] <= 1
    models = json.loads((out / "attribution" / "models.json").read_text())
    assert {"seed0/teacher", "seed1/teacher", "seed0/sft/shared_init", "seed1/sft/mismatched_init"} <= set(models)
    sft = att["comparisons"]["objectives"]["sft"]
    assert sft["shared_minus_control"]["seeds"] == [0, 1]
    for e in sft["shared_minus_control"]["features"]:
        assert e["n_seeds"] == 2 and e["ci_low"] <= e["mean"] <= e["ci_high"] and e["p_holm"] >= e["p"] - 1e-12
    assert sft["mismatched_minus_base"]["base"] == names[1]
    maps = json.loads((out / "attribution" / "position_maps.json").read_text())
    m = maps["seeds"]["0"]["teacher_rows/read_by_teacher"]
    ex = m["examples"][0]
    assert len(ex["tokens"]) == len(ex["per_position"][hooks[0]]) and m["hooks"][hooks[0]]["number_positions"] > 0
    dash = json.loads((out / "attribution" / "dashboards.json").read_text())["dashboards"]
    assert dash and all(len(d["logits_top"]) == 10 and sum(d["histogram"]["counts"]) >= len(d["contexts"]) for d in dash)
    assert {"attribution_totals", "attribution_students"} <= set(findings["figures"])
    page = (out / "features.html").read_text()
    assert "Feature dashboards" in page and "The teacher&#x27;s numbers, position by position" in page  # titles are HTML-escaped


@pytest.mark.slow
def test_features_report__renders_offline_in_headless_chromium(tiny_stage, tmp_path):
    from test_feature_views import CHROMIUM, CLIP_CHECK, render_in_chromium

    if CHROMIUM is None:
        pytest.skip("no chromium installed")
    import html as html_mod
    import re

    root, _ = tiny_stage
    page = tmp_path / "features.html"
    page.write_text((root / "run" / "features" / "features.html").read_text().replace("</body>", CLIP_CHECK + "</body>"))
    dom = render_in_chromium(page, tmp_path / "features.png")
    check = json.loads(html_mod.unescape(re.search(r'data-check="([^"]*)"', dom).group(1)))
    assert check["clipped"] == []
    from interp.report.feature_views import circuitsvis_bundle

    if circuitsvis_bundle() is not None:
        assert check["circuitsvis"] >= 1
    assert check["rendered"] == check["circuitsvis"]
