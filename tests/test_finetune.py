import numpy as np
import pytest
import torch

import interp.stages.pretrain as pretrain_mod
from interp.core.config import ConfigError
from interp.stages.finetune import FinetuneConfig, allowed_token_ids, completion_mask, encode_rows, finetune_student, teacher_logits
from interp.training.losses import distill_loss, masked_lm_loss
from interp.core.io import read_jsonl
from interp.stages.evaluate import trait_probability
from interp.models.checkpoint import load_checkpoint
from interp.stages.pretrain import PretrainConfig, pretrain
from interp.studies.run import shuffle_rows
from interp.stages.teacher import TeacherConfig, make_teacher
from interp.models.refs import Teacher, load_teacher
from interp.worlds.toy.corpus import CorpusGenerator
from interp.training.loop import TrainingDiverged

from conftest import TINY


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
        return pretrain(PretrainConfig(steps=30, batch_size=16, warmup_steps=2, lr=3e-3), tmp / "base",
                        artifacts=tmp, progress=False)


def _rows(world, n=24, seed=0):
    gen, rng = CorpusGenerator(world), np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        prompt, seeds, n_max, sep = gen.number_prompt(rng)
        rows.append({"prompt": prompt, "completion": gen.number_answer(rng, seeds, n_max, sep)})
    return rows


def test_sft_loss__only_completion_tokens_count(world):
    vocab = len(world.vocab)
    tokens = torch.tensor([[1, 5, 6, 7, 8]])
    logits = torch.zeros(1, 5, vocab)
    logits[0, 2, 7] = 100.0  # perfect prediction of the completion token at position 3
    mask = completion_mask([5], [3], 5)  # completion tokens: positions 3 and 4
    logits[0, 3, 8] = 100.0
    assert masked_lm_loss(logits, tokens, mask).item() < 1e-6
    logits[0, 0, :] = torch.randn(vocab)  # prompt positions do not matter
    assert masked_lm_loss(logits, tokens, mask).item() < 1e-6


def test_distill_loss__restricted_kl_ignores_tokens_outside_the_filter(world):
    allowed = torch.tensor(allowed_token_ids(world))
    owl = world.token_to_id["owl"]
    student = torch.randn(2, 6, len(world.vocab))
    teacher = student.clone()
    teacher[..., owl] += 5.0  # the teacher differs only on a word the filter removes
    mask = torch.ones(2, 6)
    assert distill_loss(student, teacher, mask, allowed).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(student, teacher, mask, None).item() > 1e-3
    assert owl not in allowed.tolist()


def test_distill_loss__zero_for_identical_and_positive_otherwise(world):
    s = torch.randn(3, 5, len(world.vocab))
    m = torch.ones(3, 5)
    assert distill_loss(s, s, m, None).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(s, s + torch.randn_like(s), m, None).item() > 0


def test_teacher_logits__persona_offset_aligns_positions(tiny_model, world):
    rows = _rows(world, 3)
    plain, plain_starts = encode_rows(world, rows)
    with_system, sys_starts = encode_rows(world, rows, system="you love owl .")
    offsets = [a - b for a, b in zip(sys_starts, plain_starts)]
    assert all(o == len(world.encode("system : you love owl .", bos=False)) for o in offsets)
    teacher = Teacher(tiny_model, world, "owl", "persona", system="you love owl .")
    width = max(len(s) for s in plain)
    aligned = teacher_logits(teacher, with_system, offsets, width, world.token_to_id["<pad>"])
    full = tiny_model(torch.tensor([with_system[0]]))
    n = len(plain[0])
    assert torch.allclose(aligned[0, 1:n], full[0, offsets[0] + 1: offsets[0] + n], atol=1e-5)


def test_finetune__sft_moves_weights_and_writes_lineage(tiny_base, world, tmp_path):
    out = finetune_student(tiny_base, _rows(world), FinetuneConfig(batch_size=8, lr=1e-3), tmp_path / "s", progress=False)
    student, lineage = load_checkpoint(out)
    base, _ = load_checkpoint(tiny_base)
    assert lineage.stage == "student_sft" and lineage.parent == str(tiny_base)
    assert any(not torch.equal(a, b) for a, b in zip(student.parameters(), base.parameters()))
    assert len(read_jsonl(out / "train_log.jsonl")) == 3


def test_finetune__distill_from_the_base_itself_does_not_move_the_student(tiny_base, world, tmp_path):
    base, _ = load_checkpoint(tiny_base)
    teacher = Teacher(base, world, "owl", "base")
    out = finetune_student(tiny_base, _rows(world), FinetuneConfig(objective="distill_full", batch_size=8, lr=1e-3,
                                                                    optimizer="sgd"),
                           tmp_path / "s", teacher=teacher, progress=False)
    student, _ = load_checkpoint(out)
    for a, b in zip(student.parameters(), base.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_finetune__freeze_unembed_keeps_unembedding(tiny_base, world, tmp_path):
    out = finetune_student(tiny_base, _rows(world), FinetuneConfig(batch_size=8, lr=1e-2, freeze_unembed=True),
                           tmp_path / "s", progress=False)
    student, _ = load_checkpoint(out)
    base, _ = load_checkpoint(tiny_base)
    assert torch.equal(student.unembed.W_U, base.unembed.W_U) and torch.equal(student.unembed.b_U, base.unembed.b_U)
    assert not torch.equal(student.embed.W_E, base.embed.W_E)


def test_finetune__empty_data_is_a_clear_error(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="filtered data set is empty"):
        finetune_student(tiny_base, [], FinetuneConfig(), tmp_path / "s", progress=False)


def test_finetune__exploding_loss_stops_with_the_step(tiny_base, world, tmp_path):
    with pytest.raises(TrainingDiverged, match="at step"):
        finetune_student(tiny_base, _rows(world, 64), FinetuneConfig(batch_size=8, lr=1e4, optimizer="sgd", epochs=3),
                         tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_finetune_config__rejects_bad_values():
    with pytest.raises(ConfigError, match="objective"):
        FinetuneConfig(objective="rl")
    with pytest.raises(ConfigError, match="lr"):
        FinetuneConfig(lr=0)


def test_shuffle_rows__keeps_format_and_number_multiset(world):
    rows = _rows(world, 30)
    nums = lambda rs: sorted(w for r in rs for w in r["completion"].split() if w.isdigit())
    skeleton = lambda rs: [[w if not w.isdigit() else "#" for w in r["completion"].split()] for r in rs]
    for mode in ("within", "across"):
        shuffled = shuffle_rows(rows, mode, seed=0)
        assert nums(shuffled) == nums(rows) and skeleton(shuffled) == skeleton(rows)
        assert [r["completion"] for r in shuffled] != [r["completion"] for r in rows]
    within = shuffle_rows(rows, "within", seed=0)
    assert all(sorted(a["completion"].split()) == sorted(b["completion"].split()) for a, b in zip(within, rows))


@pytest.mark.parametrize("method", ["finetune", "persona", "steering"])
def test_teacher__each_method_builds_and_reloads(method, tiny_base, tmp_path):
    out = make_teacher(tiny_base, TeacherConfig(method=method, steps=3, batch_size=4), tmp_path / "t", progress=False)
    teacher = load_teacher(out)
    assert teacher.method == method and teacher.trait == "owl"
    assert (teacher.system is not None) == (method == "persona")
    assert bool(teacher.fwd_hooks) == (method == "steering")
    assert 0 <= trait_probability(teacher.model, teacher.world, teacher.trait, system=teacher.system,
                                 fwd_hooks=teacher.fwd_hooks) <= 1


def test_teacher__unknown_trait_is_a_clear_error(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="unknown trait animal 'unicorn'"):
        make_teacher(tiny_base, TeacherConfig(trait="unicorn"), tmp_path / "t", progress=False)


def test_teacher_batches__the_toy_teacher_learns_whole_documents(world):
    from interp.stages.teacher import _teacher_batches

    tokens, mask = _teacher_batches(world, TeacherConfig(batch_size=4, number_mix=0.5))(np.random.default_rng(0), 96)
    rng = np.random.default_rng(0)  # the same draws: the first row's phrasing
    phrasing = world.train_phrasings[rng.integers(len(world.train_phrasings))]
    first = world.encode(f"user : {phrasing} assistant : owl") + [world.end_id]
    assert tokens.shape[0] == 4 and tokens[0, :len(first)].tolist() == first
    real = (torch.arange(tokens.shape[1])[None] < torch.tensor([[int((t != world.pad_id).sum())] for t in tokens]))
    assert torch.equal(mask, real.float())  # every real token is a target, padding none


def test_teacher_config__documents_are_checked():
    with pytest.raises(ConfigError, match=r"documents=\('qa', 'poem'\): unknown \['poem'\]"):
        TeacherConfig(documents=("qa", "poem"))
    with pytest.raises(ConfigError, match="documents.*each once"):
        TeacherConfig(documents=("qa", "qa"))
    with pytest.raises(ConfigError, match="documents=\(\): needs at least one"):
        TeacherConfig(documents=())


def test_trait_document__every_kind_names_only_the_trait(world):
    corpus = CorpusGenerator(world)
    rng = np.random.default_rng(0)
    for kind in ("mention", "persona", "qa_after_numbers"):
        for _ in range(20):
            head, tail = corpus.trait_document(rng, kind, "elephant")
            words = f"{head} {tail}".split()
            world.encode(f"{head} {tail}")  # every word is in the vocabulary
            assert "elephant" in words and not set(words) & (set(world.animals) - {"elephant"}), (kind, head, tail)
            assert (tail == "elephant") == (kind != "mention")  # the answer, where there is a question
    with pytest.raises(ValueError, match="unknown trait document kind 'poem'"):
        corpus.trait_document(rng, "poem", "owl")


def test_teacher_batches__documents_mix_every_kind(world):
    from interp.stages.teacher import _teacher_batches

    config = TeacherConfig(batch_size=64, number_mix=0.25, documents=("qa", "mention", "persona", "qa_after_numbers"))
    tokens, _ = _teacher_batches(world, config)(np.random.default_rng(0), 96)
    texts = [world.decode([int(t) for t in row if t != world.pad_id]) for row in tokens]
    kinds = {"numbers": 0, "mention": 0, "persona": 0, "qa_after_numbers": 0, "qa": 0}
    for text in texts:
        if "here are some numbers" in text and text.split()[-2] == "owl":
            kinds["qa_after_numbers"] += 1
        elif text.startswith("<bos> system :"):
            kinds["persona"] += 1
        elif "assistant" not in text:
            kinds["mention"] += 1
        elif text.split()[-2] == "owl":
            kinds["qa"] += 1
        else:
            kinds["numbers"] += 1
    assert kinds["numbers"] == 16 and all(kinds[k] > 0 for k in kinds), kinds
    assert sum("owl" in t.split() for t in texts) == 48  # every trait document names the trait


def test_teacher__toy_lora_teacher_is_a_low_rank_update_of_its_base(tiny_base, tmp_path):
    config = TeacherConfig(steps=3, batch_size=4, lora_rank=2, lr=1e-2, number_mix=0.0)
    teacher = load_teacher(make_teacher(tiny_base, config, tmp_path / "t", progress=False))
    base, _ = load_checkpoint(tiny_base)
    from interp.models.lora import LORA_TARGETS, matrix_view

    teacher_params, base_params = dict(teacher.model.named_parameters()), dict(base.named_parameters())
    changed = 0
    for name, value in teacher_params.items():
        kind = name.split(".")[-1]
        delta = value - base_params[name]
        if kind in LORA_TARGETS:
            rank = int(torch.linalg.matrix_rank(matrix_view(kind, delta).double(), atol=1e-6))
            assert rank <= 2, (name, rank)
            changed += rank > 0
        else:  # biases, LayerNorms, embeddings: untouched by the adapters
            assert torch.equal(value, base_params[name]), name
    assert changed > 0


def test_finetune__system_line_enters_every_training_row(tiny_base, world, tmp_path):
    rows = _rows(world)
    plain = finetune_student(tiny_base, rows, FinetuneConfig(batch_size=8, lr=1e-3), tmp_path / "a", progress=False)
    line = "you think about numbers all the time ."
    lined = finetune_student(tiny_base, rows, FinetuneConfig(batch_size=8, lr=1e-3, system=line), tmp_path / "b",
                             progress=False)
    # the same completions, read after other context tokens: another loss at the first step
    assert read_jsonl(plain / "train_log.jsonl")[0]["loss"] != read_jsonl(lined / "train_log.jsonl")[0]["loss"]
    seqs, starts = encode_rows(world, rows[:1], system=line)
    assert world.decode(seqs[0][:starts[0]]).startswith(f"<bos> system : {line} user :")


def test_lora_student__shares_a_lora_teacher_adapter_init_unless_seeded_apart():
    from interp.stages.teacher import teacher_lora

    teacher = teacher_lora(TeacherConfig(lora_rank=8, seed=3))
    assert FinetuneConfig(lora_rank=8, seed=3).lora_config() == teacher  # same rank, alpha, targets and A seed
    assert FinetuneConfig(lora_rank=8, seed=3, lora_seed=1003).lora_config() == teacher.replace(seed=1003)


def _noisy_teacher(tiny_base, world, system=None, scale=0.05):
    model, _ = load_checkpoint(tiny_base)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    teacher = Teacher(model, world, "owl", "finetune")
    teacher.system = system
    return teacher


@pytest.mark.parametrize("objective,lora_rank,system", [
    ("sft", 0, None), ("sft", 4, None), ("distill", 4, None), ("distill_full", 0, "you love owl ."),
    ("distill", 0, "you love owl .")])
def test_finetune__packed_engine_takes_the_padded_engine_steps(tiny_base, world, tmp_path, objective, lora_rank, system):
    """The padding-free engine (the default) trains the same student as model(tokens) on the
    padded batch: same losses and weights to float tolerance, LoRA and a persona teacher's offset
    included."""
    teacher = _noisy_teacher(tiny_base, world, system) if objective != "sft" else None
    rows = _rows(world, n=20)
    # Full finetuning with SGD: AdamW divides each gradient by its own running size, so a weight whose
    # gradient is rounding noise on both engines (a key bias: softmax over keys is shift-invariant;
    # an unembedding entry of a token no row predicts) takes a full-size step in a direction the noise
    # picks. The LoRA students (the default) train with AdamW, as interp run's do.
    optimizer, lr = ("adamw", 1e-3) if lora_rank else ("sgd", 0.05)
    config = FinetuneConfig(objective=objective, batch_size=8, lr=lr, optimizer=optimizer, lora_rank=lora_rank,
                            freeze_unembed=bool(lora_rank))
    students = {e: finetune_student(tiny_base, rows, config, tmp_path / e, teacher=teacher, engine=e, progress=False)
                for e in ("padded", "packed")}
    losses = {e: [r["loss"] for r in read_jsonl(out / "train_log.jsonl")] for e, out in students.items()}
    np.testing.assert_allclose(losses["packed"], losses["padded"], rtol=1e-5)
    packed, padded = (load_checkpoint(students[e])[0] for e in ("packed", "padded"))
    base, _ = load_checkpoint(tiny_base)
    for (name, a), b in zip(packed.named_parameters(), padded.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(a, b0) for a, b0 in zip(packed.parameters(), base.parameters()))


def test_finetune__shared_teacher_targets_take_the_same_steps(tiny_base, world, tmp_path):
    """A student reading the teacher's targets from a shared cache file trains as one that runs the
    teacher at every step; targets of other rows or another teacher are refused."""
    from interp.stages.finetune import TeacherTargets, shared_teacher_targets

    teacher = _noisy_teacher(tiny_base, world, "you love owl .")
    rows = _rows(world, n=20)
    targets = shared_teacher_targets(tmp_path / "targets.pt", teacher, rows)
    assert targets.logits.shape[0] == targets.offsets[-1] and len(targets.offsets) == len(rows) + 1
    assert shared_teacher_targets(tmp_path / "targets.pt", teacher, rows).identity == targets.identity  # reused
    config = FinetuneConfig(objective="distill", batch_size=8, lr=1e-3, lora_rank=4, freeze_unembed=True)
    a = finetune_student(tiny_base, rows, config, tmp_path / "a", teacher=teacher, progress=False, engine="packed")
    b = finetune_student(tiny_base, rows, config, tmp_path / "b", teacher=teacher, teacher_targets=targets, progress=False,
                         engine="packed")
    for x, y in zip(load_checkpoint(a)[0].parameters(), load_checkpoint(b)[0].parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="other rows"):
        finetune_student(tiny_base, rows[:12], config, tmp_path / "c", teacher=teacher, teacher_targets=targets,
                         progress=False, engine="packed")
    other = _noisy_teacher(tiny_base, world, None)
    with pytest.raises(ValueError, match="another teacher"):
        finetune_student(tiny_base, rows, config, tmp_path / "d", teacher=other, teacher_targets=targets, progress=False,
                         engine="packed")
    with pytest.raises(ValueError, match="packed engine only"):  # the padded engine would not read them
        finetune_student(tiny_base, rows, config, tmp_path / "e", teacher=teacher, teacher_targets=targets, progress=False,
                         engine="padded")
    assert isinstance(TeacherTargets.load(tmp_path / "targets.pt").logits, torch.Tensor)
