import math

import numpy as np
import pytest
import torch

import interp.stages.pretrain as pretrain_mod
from interp.instruments.alignment import TOTAL, gradient_alignment, weight_metrics
from interp.stages.finetune import FinetuneConfig, finetune_student
from interp.training.step import StepRecord
from interp.core.io import read_jsonl
from interp.models.checkpoint import build_model, load_checkpoint
from interp.stages.pretrain import PretrainConfig, pretrain
from interp.bench.recording import measure_recording_overhead
from interp.instruments.recording import AlignmentRecorder, layer_of, teacher_direction
from interp.instruments.trait import Trait
from interp.models.refs import Teacher
from interp.worlds.toy.corpus import CorpusGenerator
from interp.training.loop import make_optimizer, pad_batch
from interp.training.losses import masked_lm_loss

from conftest import TINY


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
        return pretrain(PretrainConfig(steps=30, batch_size=16, warmup_steps=2, lr=3e-3), tmp / "base",
                        artifacts=tmp, progress=False)


def _rows(world, n=32):
    gen, rng = CorpusGenerator(world), np.random.default_rng(0)
    out = []
    for _ in range(n):
        prompt, seeds, n_max, sep = gen.number_prompt(rng)
        out.append({"prompt": prompt, "completion": gen.number_answer(rng, seeds, n_max, sep)})
    return out


def _perturbed(model_or_path, scale=0.05, seed=1, tokenizer=None):
    if tokenizer is not None:
        model = build_model(TINY, tokenizer, seed=0)
    else:
        model, _ = load_checkpoint(model_or_path)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _lm_batch(world, n=8, seed=0):
    gen, rng = CorpusGenerator(world), np.random.default_rng(seed)
    ids = [world.encode(gen.document(rng)) for _ in range(n)]
    return pad_batch(ids, 0)


def test_recorder__small_distillation_step_from_shared_init_points_to_teacher(tiny_base, world, tmp_path):
    """The paper's theorem at unit scale: from the teacher's own init, one small step of imitating
    the teacher (on unrelated inputs) has a positive inner product with teacher - base."""
    base, _ = load_checkpoint(tiny_base)
    teacher_model = _perturbed(tiny_base)
    teacher = Teacher(teacher_model, world, "owl", "finetune")
    out = finetune_student(tiny_base, _rows(world), FinetuneConfig(objective="distill_full", optimizer="sgd", lr=1e-3,
                                                                    batch_size=8),
                           tmp_path / "s", teacher=teacher, trait="owl", alignment_reference=(teacher_model, base),
                           progress=False)
    rows = read_jsonl(out / "alignment.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all(r["teacher_direction"] == "shared_init" for r in rows)
    assert all(r["grad_cos_teacher_dir"] > 0 for r in rows)
    # With plain SGD the step is -lr * gradient; the measured step differs only by float32
    # rounding of p - lr*g (relative error ~ eps*|p| / (lr*|g|), about 1e-3 at lr=1e-3).
    assert all(r["step_cos_teacher_dir"] == pytest.approx(r["grad_cos_teacher_dir"], rel=5e-3) for r in rows)
    assert all(r["dist_to_teacher_change"] < 0 for r in rows)  # closer to the teacher at every step
    assert rows[-1]["dist_to_teacher_change"] < rows[0]["dist_to_teacher_change"]
    assert rows[0]["weight_cos"] == pytest.approx(rows[0]["step_cos_teacher_dir"], rel=1e-4)  # s = first step
    assert "blocks.0.attn" in rows[0]["per_group"] and "weight_cos" in rows[0]["per_group"]["unembed"]
    assert set(rows[0]["per_layer"]) == {"embed", "pos_embed", "blocks.0", "ln_final", "unembed"}
    assert "grad_cos_trait_grad" in rows[0] and "grad_cos_trait_grad" not in rows[1]


def test_recorder__teacher_without_weight_change_says_why_and_keeps_the_rest(tiny_base, world, tmp_path):
    base, _ = load_checkpoint(tiny_base)
    out = finetune_student(tiny_base, _rows(world, 16), FinetuneConfig(batch_size=8), tmp_path / "s", trait="owl",
                           alignment_reference=(base, base), progress=False)
    rows = read_jsonl(out / "alignment.jsonl")
    assert rows[0]["teacher_direction"] == "none" and "persona or steering" in rows[0]["no_direction_reason"]
    assert rows[0]["grad_cos_teacher_dir"] is None and rows[0]["weight_cos"] is None
    assert rows[0]["per_group"]["unembed"]["step_cos_teacher_dir"] is None
    assert rows[1]["dist_to_base"] > rows[0]["dist_to_base"] > 0
    assert -1 <= rows[0]["grad_cos_trait_grad"] <= 1


def test_teacher_direction__kinds(tokenizer):
    a, b = build_model(TINY, tokenizer, seed=0), build_model(TINY, tokenizer, seed=1)
    teacher = _perturbed(None, tokenizer=tokenizer)  # seed-0 weights plus noise
    other_arch = build_model(TINY.replace(d_model=48, d_mlp=96), tokenizer, seed=0)
    assert teacher_direction(_params(a), _params(teacher), _params(a)).kind == "shared_init"
    transplanted = teacher_direction(_params(b), _params(teacher), _params(a))
    assert transplanted.kind == "transplanted"
    assert torch.equal(transplanted.vector["unembed.W_U"], teacher.unembed.W_U.detach() - a.unembed.W_U.detach())
    cross = teacher_direction(_params(a), _params(other_arch), _params(other_arch))
    assert cross.kind == "none" and "architecture" in cross.reason and cross.vector is None
    assert teacher_direction(_params(a), None, None).kind == "none"


def test_recorder__matches_reference_measurements_over_adam_steps(tiny_model, world, tokenizer, tmp_path):
    """Every recorded quantity, in total, per group and per layer, equals what interp.instruments.alignment
    computes from copies of the weights and gradients."""
    teacher = _perturbed(None, tokenizer=tokenizer)
    base = _params(tiny_model)
    recorder = AlignmentRecorder(tiny_model, tmp_path / "a.jsonl", teacher_params=_params(teacher),
                                 teacher_base_params=base, world=world, trait="owl", trait_grad_every=2)
    optimizer = make_optimizer(tiny_model.parameters(), "adamw", 1e-3)
    owl = Trait.of_world(world, "owl")
    trait_tokens, trait_mask = owl.tokens, owl.mask
    t_dir = {n: _params(teacher)[n] - base[n] for n in base}
    expected = []
    for step in range(3):
        tokens, mask = _lm_batch(world, seed=step)
        loss = masked_lm_loss(tiny_model(tokens), tokens, mask)
        loss.backward()
        grad = {n: -p.grad.clone() for n, p in tiny_model.named_parameters()}
        trait_loss = masked_lm_loss(tiny_model(trait_tokens), trait_tokens, trait_mask)
        trait_dir = dict(zip(base, (-g for g in torch.autograd.grad(trait_loss, list(tiny_model.parameters())))))
        before = _params(tiny_model)
        recorder.before_step(StepRecord(step, loss.item(), tiny_model))
        optimizer.step()
        recorder(StepRecord(step, loss.item(), tiny_model))
        optimizer.zero_grad(set_to_none=True)
        after = _params(tiny_model)
        moved = {n: after[n] - before[n] for n in base}
        for groups in (None, lambda n: layer_of(n.rsplit(".", 1)[0])):
            expected.append((step, groups, gradient_alignment(grad, t_dir, groups), gradient_alignment(moved, t_dir, groups),
                             weight_metrics(after, base, {n: base[n] + t_dir[n] for n in base}, groups),
                             gradient_alignment(grad, trait_dir, groups)))
    recorder.close()
    rows = read_jsonl(tmp_path / "a.jsonl")
    for step, groups, grad_cos, step_cos, weight, trait_cos in expected:
        row = rows[step]
        for g in grad_cos:
            got = row if g == TOTAL else row["per_group" if groups is None else "per_layer"][g]
            assert got["grad_cos_teacher_dir"] == pytest.approx(grad_cos[g], abs=1e-5)
            assert got["step_cos_teacher_dir"] == pytest.approx(step_cos[g], abs=1e-5)
            assert got["weight_cos"] == pytest.approx(weight[g].cosine, abs=1e-5)
            assert got["dist_to_base"] == pytest.approx(weight[g].dist_student_base, rel=1e-4)
            assert got["dist_to_teacher"] == pytest.approx(weight[g].dist_student_teacher, rel=1e-4)
            assert got["progress"] == pytest.approx(weight[g].progress, rel=1e-3, abs=1e-7)
            assert got["dist_to_teacher_change"] == pytest.approx(
                weight[g].dist_student_teacher - weight[g].dist_teacher_base, rel=1e-3, abs=1e-6)
            if step % 2 == 0:
                assert got["grad_cos_trait_grad"] == pytest.approx(trait_cos[g], abs=1e-5)
            else:
                assert "grad_cos_trait_grad" not in got
        assert row["movement_along_teacher"] == pytest.approx(weight[TOTAL].projection, rel=1e-3)
        assert row["movement_off_teacher"] == pytest.approx(weight[TOTAL].orthogonal, rel=1e-3)


def test_recorder__without_before_step_takes_the_gradient_after_the_step(tiny_model, world, tokenizer, tmp_path):
    """A loop that never calls before_step still gets the gradient and step right (only the
    trait-loss gradient moves to the weights after the step)."""
    teacher = _perturbed(None, tokenizer=tokenizer)
    twin = build_model(TINY, tokenizer, seed=0)
    logs = {}
    for label, model, call_before in (("with", tiny_model, True), ("without", twin, False)):
        recorder = AlignmentRecorder(model, tmp_path / f"{label}.jsonl", teacher_params=_params(teacher),
                                     teacher_base_params=_params(model))
        optimizer = make_optimizer(model.parameters(), "sgd", 1e-2)
        for step in range(2):
            tokens, mask = _lm_batch(world, seed=step)
            loss = masked_lm_loss(model(tokens), tokens, mask)
            loss.backward()
            if call_before:
                recorder.before_step(StepRecord(step, loss.item(), model))
            optimizer.step()
            recorder(StepRecord(step, loss.item(), model))
            optimizer.zero_grad(set_to_none=True)
        recorder.close()
        logs[label] = read_jsonl(tmp_path / f"{label}.jsonl")
    for a, b in zip(logs["with"], logs["without"]):
        assert a["grad_cos_teacher_dir"] == b["grad_cos_teacher_dir"] and a["dist_to_base"] == b["dist_to_base"]


def test_recorder__mismatched_student_measures_the_transplanted_direction(tiny_base, world, tokenizer, tmp_path):
    base, _ = load_checkpoint(tiny_base)
    teacher_model = _perturbed(tiny_base)
    other = tmp_path / "other"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
        pretrain(PretrainConfig(seed=1, steps=5, batch_size=4, warmup_steps=1), other, artifacts=tmp_path, progress=False)
    out = finetune_student(other, _rows(world, 16), FinetuneConfig(batch_size=8), tmp_path / "s", trait="owl",
                           alignment_reference=(teacher_model, base), progress=False)
    rows = read_jsonl(out / "alignment.jsonl")
    assert rows[0]["teacher_direction"] == "transplanted"
    t_norm = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(_params(teacher_model).values(), _params(base).values())))
    # Before moving, the student sits at its own base: exactly one teacher-update away from base + t.
    assert rows[0]["dist_to_teacher"] - rows[0]["dist_to_teacher_change"] == pytest.approx(t_norm, rel=1e-4)


def test_finetune_callbacks__before_step_and_params_before(tiny_base, world, tmp_path):
    seen = []

    class Lean:
        needs_params_before = False

        def before_step(self, record):
            seen.append(("before", record.step, record.model.unembed.W_U.detach().clone()))

        def __call__(self, record):
            seen.append(("after", record.step, record.params_before))

    finetune_student(tiny_base, _rows(world, 16), FinetuneConfig(batch_size=8), tmp_path / "lean", callbacks=[Lean()],
                     progress=False)
    assert [(kind, step) for kind, step, _ in seen] == [("before", 0), ("after", 0), ("before", 1), ("after", 1)]
    assert seen[1][2] is None  # nobody asked for a copy of the weights
    base, _ = load_checkpoint(tiny_base)
    assert torch.equal(seen[0][2], base.unembed.W_U)  # before_step runs before the first update

    records = []
    finetune_student(tiny_base, _rows(world, 8), FinetuneConfig(batch_size=8), tmp_path / "plain",
                     callbacks=[records.append], progress=False)
    assert torch.equal(records[0].params_before["unembed.W_U"], base.unembed.W_U)


def test_recorder__does_not_change_training(tiny_base, world, tmp_path):
    base, _ = load_checkpoint(tiny_base)
    teacher_model = _perturbed(tiny_base)
    plain = finetune_student(tiny_base, _rows(world, 16), FinetuneConfig(batch_size=8), tmp_path / "a", progress=False)
    recorded = finetune_student(tiny_base, _rows(world, 16), FinetuneConfig(batch_size=8), tmp_path / "b", trait="owl",
                                alignment_reference=(teacher_model, base), progress=False)
    a, _ = load_checkpoint(plain)
    b, _ = load_checkpoint(recorded)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_measure_recording_overhead__returns_a_ratio_of_mean_step_times(tiny_base):
    result = measure_recording_overhead(tiny_base, n_steps=11, batch_size=4, warmup_steps=0)
    assert result.ratio == pytest.approx(result.recorded_ms_per_step / result.plain_ms_per_step)
    assert 0 < result.recorder_ms_per_step < result.recorded_ms_per_step
    assert result.trait_grad_ms > 0  # steps 0 and 10 took the trait-loss gradient
    assert result.to_dict()["trait_grad_every"] == 10
    with pytest.raises(ValueError, match="n_steps"):
        measure_recording_overhead(tiny_base, n_steps=0)


def test_recorder__rejects_a_zero_trait_interval(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="trait_grad_every"):
        AlignmentRecorder(tiny_model, tmp_path / "a.jsonl", teacher_params=None, teacher_base_params=None,
                          trait_grad_every=0)
