import numpy as np
import pytest
import torch

import interp.pretrain as pretrain_mod
from interp.finetune import FinetuneConfig, finetune_student
from interp.io import read_jsonl
from interp.models import load_checkpoint
from interp.pretrain import PretrainConfig, pretrain
from interp.teacher import Teacher
from interp.toy.corpus import CorpusGenerator

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


def _perturbed_teacher(tiny_base, scale=0.05, seed=1):
    teacher, _ = load_checkpoint(tiny_base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return teacher


def test_recorder__small_distillation_step_from_shared_init_points_to_teacher(tiny_base, world, tmp_path):
    """The paper's theorem at unit scale: from the teacher's own init, one small step of imitating
    the teacher (on unrelated inputs) has a positive inner product with teacher - base."""
    base, _ = load_checkpoint(tiny_base)
    teacher_model = _perturbed_teacher(tiny_base)
    teacher = Teacher(teacher_model, world, "owl", "finetune")
    out = finetune_student(tiny_base, _rows(world), FinetuneConfig(objective="distill_full", optimizer="sgd", lr=1e-3,
                                                                    batch_size=8),
                           tmp_path / "s", teacher=teacher, trait="owl", alignment_reference=(teacher_model, base),
                           progress=False)
    rows = read_jsonl(out / "alignment.jsonl")
    assert len(rows) == 4
    assert all(r["grad_cos_teacher_dir"] > 0 for r in rows)
    # With plain SGD the step is -lr * gradient; the measured step differs only by float32
    # rounding of p - lr*g (relative error ~ eps*|p| / (lr*|g|), about 1e-3 at lr=1e-3).
    assert all(r["step_cos_teacher_dir"] == pytest.approx(r["grad_cos_teacher_dir"], rel=5e-3) for r in rows)
    assert rows[-1]["dist_to_teacher"] < rows[0]["dist_to_teacher"] + 1e-9
    assert "blocks.0.attn" in rows[0]["per_group"] and "weight_cos" in rows[0]["per_group"]["unembed"]
    assert "grad_cos_trait_grad" in rows[0]


def test_recorder__teacher_without_weight_change_records_only_trait_gradient(tiny_base, world, tmp_path):
    base, _ = load_checkpoint(tiny_base)
    out = finetune_student(tiny_base, _rows(world, 16), FinetuneConfig(batch_size=8), tmp_path / "s", trait="owl",
                           alignment_reference=(base, base), progress=False)
    rows = read_jsonl(out / "alignment.jsonl")
    assert "grad_cos_teacher_dir" not in rows[0] and -1 <= rows[0]["grad_cos_trait_grad"] <= 1


def test_recorder__does_not_change_training(tiny_base, world, tmp_path):
    base, _ = load_checkpoint(tiny_base)
    teacher_model = _perturbed_teacher(tiny_base)
    plain = finetune_student(tiny_base, _rows(world, 16), FinetuneConfig(batch_size=8), tmp_path / "a", progress=False)
    recorded = finetune_student(tiny_base, _rows(world, 16), FinetuneConfig(batch_size=8), tmp_path / "b", trait="owl",
                                alignment_reference=(teacher_model, base), progress=False)
    a, _ = load_checkpoint(plain)
    b, _ = load_checkpoint(recorded)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
