import pytest
import torch

import interp.stages.pretrain as pretrain_mod
from interp.core.config import ConfigError
from interp.core.io import read_jsonl
from interp.models.checkpoint import load_checkpoint
from interp.stages.pretrain import ARCH_PRESETS, PretrainConfig, pretrain

from conftest import TINY


@pytest.fixture
def tiny_arch(monkeypatch):
    monkeypatch.setitem(ARCH_PRESETS, "small", TINY)


def _cfg(**kw):
    return PretrainConfig(**{"steps": 6, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, **kw})


def test_pretrain__writes_a_complete_checkpoint_with_lineage(tiny_arch, tmp_path):
    out = pretrain(_cfg(), tmp_path / "base", artifacts=tmp_path, progress=False)
    model, lineage = load_checkpoint(out)
    assert lineage.stage == "pretrain" and lineage.seed == 0 and lineage.parent is None
    assert lineage.config["steps"] == 6 and lineage.world_fingerprint
    assert [r["step"] for r in read_jsonl(out / "pretrain_log.jsonl")] == list(range(6))
    assert PretrainConfig.load(out / "pretrain_config.json") == _cfg()
    assert not (tmp_path / ".base.resume").exists()


def test_pretrain__loss_goes_down(tiny_arch, tmp_path):
    out = pretrain(_cfg(steps=40, batch_size=16, lr=3e-3), tmp_path / "b", artifacts=tmp_path, progress=False)
    losses = [r["loss"] for r in read_jsonl(out / "pretrain_log.jsonl")]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0


def test_pretrain__finished_base_is_reused_not_retrained(tiny_arch, tmp_path, monkeypatch):
    out = pretrain(_cfg(), tmp_path / "base", artifacts=tmp_path, progress=False)
    monkeypatch.setattr(pretrain_mod, "train_step", lambda *a, **k: pytest.fail("retrained a finished base"))
    assert pretrain(_cfg(), out, artifacts=tmp_path, progress=False) == out


def test_pretrain__other_config_in_same_dir_is_refused(tiny_arch, tmp_path):
    out = pretrain(_cfg(), tmp_path / "base", artifacts=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"another config.*'lr'"):
        pretrain(_cfg(lr=5e-4), out, artifacts=tmp_path, progress=False)


def test_pretrain__interrupted_run_resumes_to_identical_weights(tiny_arch, tmp_path, monkeypatch):
    reference = pretrain(_cfg(), tmp_path / "ref", artifacts=tmp_path, progress=False)
    real_step, calls = pretrain_mod.train_step, {"n": 0}

    def crashing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(pretrain_mod, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_cfg(), tmp_path / "run", artifacts=tmp_path, progress=False)
    assert not (tmp_path / "run").exists()  # nothing half-written looks finished
    monkeypatch.setattr(pretrain_mod, "train_step", real_step)
    resumed = pretrain(_cfg(), tmp_path / "run", artifacts=tmp_path, progress=False)
    a, _ = load_checkpoint(reference)
    b, _ = load_checkpoint(resumed)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), name
    assert [r["step"] for r in read_jsonl(resumed / "pretrain_log.jsonl")] == list(range(6))


def test_pretrain_config__rejects_bad_values():
    with pytest.raises(ConfigError, match="warmup_steps"):
        PretrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ConfigError, match="arch"):
        PretrainConfig(arch="huge")


def test_pretrain__packed_engine_takes_the_padded_engine_steps(tiny_arch, tmp_path):
    """The padding-free engine (the default) pretrains the same base as model(tokens) on padded
    batches: the same losses and weights after a few steps, to float tolerance."""
    outs = {e: pretrain(_cfg(steps=6), tmp_path / e, artifacts=tmp_path, progress=False, engine=e)
            for e in ("padded", "packed")}
    losses = {e: [r["loss"] for r in read_jsonl(out / "pretrain_log.jsonl")] for e, out in outs.items()}
    assert losses["packed"] == pytest.approx(losses["padded"], rel=1e-5)
    packed, padded = (load_checkpoint(outs[e])[0] for e in ("packed", "padded"))
    for (name, a), b in zip(packed.named_parameters(), padded.parameters()):
        if name.endswith("attn.b_K"):  # no gradient in exact arithmetic: AdamW scales rounding noise (test_finetune)
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
