import json

import pytest
import torch

import interp.stages.pretrain as pretrain_mod
import interp.studies.theorem as theorem_mod
from interp.cli import main
from interp.core.config import ConfigError
from interp.models.checkpoint import build_model
from interp.report.outputs import finish_theorem
from interp.report.page import make_report
from interp.core.stats import wilson_ci
from interp.training.losses import kl_loss
from interp.studies.theorem import (FlatLayout, TheoremConfig, imitation_gradient, random_token_batches,
                            run_theorem, summarize_single_step, summarize_step_size)

from conftest import TINY


def test_wilson_ci__known_values():
    assert wilson_ci(81, 263).ci_low == pytest.approx(0.2553, abs=1e-4)  # the textbook example
    assert wilson_ci(81, 263).ci_high == pytest.approx(0.3662, abs=1e-4)
    full = wilson_ci(50, 50)
    assert full.fraction == 1.0 and full.ci_high == 1.0 and full.ci_low == pytest.approx(0.9287, abs=1e-4)
    assert wilson_ci(0, 10).ci_low == 0.0 and wilson_ci(0, 10).ci_high == pytest.approx(0.2775, abs=1e-4)
    with pytest.raises(ValueError, match="k=3, n=2"):
        wilson_ci(3, 2)


def test_imitation_loss__zero_at_the_target_and_masked():
    logits = torch.randn(2, 5, 7)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    assert kl_loss(logits, logits, mask).item() == pytest.approx(0.0, abs=1e-6)
    other = logits.clone()
    other[0, 4] += 5.0  # a masked position: no effect
    assert kl_loss(logits, other, mask).item() == pytest.approx(0.0, abs=1e-6)
    other[1, 0] += torch.randn(7)
    assert kl_loss(logits, other, mask).item() > 0
    assert kl_loss(logits, other, mask, allowed=torch.tensor([0, 1])).item() >= 0


def test_flat_layout__every_layer_is_one_slice(tiny_model):
    layout = FlatLayout(tiny_model)
    flat = layout.weights(tiny_model)
    named = dict(tiny_model.named_parameters())
    assert flat.numel() == sum(p.numel() for p in named.values())
    block = torch.cat([named[n].detach().reshape(-1).double() for n in layout.names if n.startswith("blocks.0.")])
    assert torch.equal(flat[layout.layers["blocks.0"]], block)
    assert set(layout.layers) == {"embed", "pos_embed", "blocks.0", "ln_final", "unembed"}


def test_imitation_gradient__small_teacher_update_points_toward_the_teacher(world, tokenizer):
    """The theorem in its own regime: a teacher that is the base plus a tiny update; one step of
    imitation on random token strings has a positive inner product with that update on every batch."""
    student, teacher = build_model(TINY, tokenizer, seed=0), build_model(TINY, tokenizer, seed=0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=gen))
    layout = FlatLayout(student)
    t = layout.weights(teacher) - layout.weights(student)
    inner = [float(-imitation_gradient(student, teacher, batch, layout, None) @ t)
             for batch in random_token_batches(world, 4, 6, 10, seed=0)]
    assert all(x > 0 for x in inner)
    # The gradient at the teacher itself is zero: there is nothing left to imitate.
    batch = random_token_batches(world, 4, 1, 10, seed=1)[0]
    assert imitation_gradient(teacher, teacher, batch, layout, None).abs().max() < 1e-6


def _row(seed, init, dist, inner, i=0, **extra):
    return {"seed": seed, "init": init, "distribution": dist, "batch": i, "inner": inner, "cos": inner / 10,
            "adam_cos": -inner, "cos_per_layer": {"embed": inner, "unembed": -1.0}, **extra}


def test_summarize_single_step__fractions_and_seed_intervals():
    rows = [_row(0, "shared_init", "random_tokens", v, i) for i, v in enumerate([1.0, 2.0, -1.0])]
    rows += [_row(1, "shared_init", "random_tokens", v, i) for i, v in enumerate([3.0, 3.0, 3.0])]
    rows += [_row(0, "mismatched_init", "random_tokens", -1.0, teacher_specific_inner=1.0, teacher_specific_cos=0.5,
                  toward_teacher_weights_cos=0.1)]
    out = summarize_single_step(rows)
    e = out["shared_init"]["random_tokens"]
    assert e["fraction_positive"]["k"] == 5 and e["fraction_positive"]["n"] == 6
    assert e["fraction_positive_per_seed"]["0"]["k"] == 2
    assert e["cos"]["mean"] == pytest.approx((0.2 / 3 + 0.3) / 2)  # mean of per-seed means
    assert e["cos"]["n_seeds"] == 2 and e["min_cos"] == pytest.approx(-0.1)
    assert e["adam_fraction_positive"]["k"] == 1
    assert e["fraction_positive_per_layer"]["unembed"]["k"] == 0
    m = out["mismatched_init"]["random_tokens"]
    assert m["fraction_positive"]["k"] == 0 and m["teacher_specific_fraction_positive"]["k"] == 1


def test_summarize_step_size__a_diverged_run_is_neither_positive_nor_closer():
    def step(seed, repeat, k, inner, change, diverged=False):
        row = {"seed": seed, "optimizer": "sgd", "lr": 1.0, "repeat": repeat, "step": k, "diverged": diverged}
        return row if diverged else {**row, "inner": inner, "cos": inner, "progress": inner, "dist_to_teacher_change": change}
    rows = [step(0, 0, 1, 0.1, -1.0), step(0, 0, 2, 0.2, 1.0), step(1, 0, 1, 0.1, -1.0), step(1, 0, 2, 0, 0, diverged=True)]
    (e,) = summarize_step_size(rows, sweep_steps=2)
    assert e["n_runs"] == 2 and e["diverged"] == 1
    assert e["first_fraction_positive"]["k"] == 2 and e["first_fraction_closer"]["k"] == 2
    assert e["last_fraction_positive"]["k"] == 1 and e["last_fraction_positive"]["n"] == 2
    assert e["last_fraction_closer"]["k"] == 0


def test_theorem_config__rejects_bad_values():
    with pytest.raises(ConfigError, match="distributions"):
        TheoremConfig(distributions=("poems",))
    with pytest.raises(ConfigError, match="mismatched_base_seed"):
        TheoremConfig(mismatched_base_seed=0)
    with pytest.raises(ConfigError, match="n_batches"):
        TheoremConfig(n_batches=0)


def _tiny_config(**kw):
    return TheoremConfig(**{"seeds": 2, "pretrain_steps": 120, "teacher_steps": 5, "n_batches": 3, "batch_size": 4,
                            "n_rows": 40,
                            "random_length": 6, "sgd_lrs": (0.1, 1.0), "adam_lrs": (1e-3,), "sweep_steps": 2,
                            "sweep_repeats": 1, "sft_steps": 2, "sft_batch_size": 4, **kw})


@pytest.fixture
def tiny_theorem_presets(monkeypatch):
    monkeypatch.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
    monkeypatch.setattr(theorem_mod, "base_config", lambda seed, arch, steps: pretrain_mod.PretrainConfig(
        seed=seed, arch=arch, steps=steps, warmup_steps=10, lr=1e-2, batch_size=24))


@pytest.mark.slow
def test_run_theorem__writes_every_part_on_tiny_bases(tiny_theorem_presets, tmp_path):
    config = _tiny_config()
    results = run_theorem(config, tmp_path / "th", artifacts=tmp_path / "artifacts", progress=False)
    finish_theorem(tmp_path / "th")  # what `interp theorem` does next: theorem.md, the figures, the page
    on_disk = json.loads((tmp_path / "th" / "theorem.json").read_text())
    assert on_disk["single_step"] == results["single_step"]
    for init in ("shared_init", "mismatched_init"):
        for dist in config.distributions:
            e = on_disk["single_step"][init][dist]
            assert e["n_batches"] == 6 and e["n_seeds"] == 2
            assert e["fraction_positive"]["ci_low"] <= e["fraction_positive"]["fraction"] <= e["fraction_positive"]["ci_high"]
    assert "null_sft_base_numbers" in on_disk["single_step"]["shared_init"]
    assert "teacher_specific_cos" in on_disk["single_step"]["mismatched_init"]["teacher_numbers"]
    rows = [json.loads(line) for line in (tmp_path / "th" / "theorem_batches.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * (2 * 4 * 3 + 3)  # seeds x (inits x distributions x batches + null batches)
    # One plain SGD step goes along -gradient whatever the learning rate: the same batch gives
    # the same direction at lr 0.1 and 1 (up to float32 rounding of the weights).
    sweep = [json.loads(line) for line in (tmp_path / "th" / "step_size.jsonl").read_text().splitlines()]
    first = {(r["seed"], r["lr"]): r["cos"] for r in sweep if r["optimizer"] == "sgd" and r["step"] == 1}
    for seed in (0, 1):
        assert first[(seed, 0.1)] == pytest.approx(first[(seed, 1.0)], rel=1e-2, abs=1e-4)
    assert {e["optimizer"] for e in on_disk["step_size"]} == {"sgd", "adam"}
    assert set(on_disk["sft"]) == {"shared_init", "control", "mismatched_init"}
    assert on_disk["sft"]["mismatched_init"]["teacher_direction"] == "transplanted"
    assert (tmp_path / "th" / "sft" / "seed0" / "control" / "alignment.jsonl").exists()
    for name in theorem_mod.PLOT_FILES.values():
        assert (tmp_path / "th" / name).stat().st_size > 1000
    assert "## Step size" in (tmp_path / "th" / "theorem.md").read_text()
    page = make_report(tmp_path / "th").read_text()
    assert "one small step from the shared init" in page.split("<nav>")[0]
    for name in ("single_step", "layers", "step_size", "sft"):
        assert f"figures/theorem_{name}.png" in page
    # A second call reuses teachers, data and students and refuses another config.
    with pytest.raises(ValueError, match="another config"):
        run_theorem(_tiny_config(n_batches=4), tmp_path / "th", artifacts=tmp_path / "artifacts", progress=False)


def test_theorem_cli__bad_option_is_a_one_line_error(tmp_path, capsys):
    assert main(["theorem", "--out", str(tmp_path / "t"), "--trait", "unicorn"]) == 2
    assert "unknown trait animal 'unicorn'" in capsys.readouterr().err
    assert main(["theorem", "--out", str(tmp_path / "t"), "--n-batches", "0"]) == 2
    assert "n_batches" in capsys.readouterr().err
