"""End-to-end: the whole loop on tiny bases, and the CLI's main job on the quick setting."""

import json

import pytest

import interp.stages.pretrain as pretrain_mod
from interp.report.outputs import finish_run
from interp.cli import main
from interp.core.config import ConfigError
from interp.studies.run import OBJECTIVES, TRAINED_CONDITIONS, RunConfig, run

from conftest import TINY

TINY_OTHER = TINY.replace(d_model=48, n_heads=2, d_mlp=96)


@pytest.fixture
def tiny_presets(monkeypatch):
    """Tiny architectures, pretrained just enough (200 steps at a high learning rate) to write
    number lists that pass the filter."""
    import interp.studies.run as run_mod

    monkeypatch.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
    monkeypatch.setattr(run_mod, "base_config", lambda seed, arch, steps: pretrain_mod.PretrainConfig(
        seed=seed, arch=arch, steps=steps, warmup_steps=10, lr=1e-2))
    monkeypatch.setitem(pretrain_mod.ARCH_PRESETS, "narrow", TINY_OTHER)


def _tiny_run_config(**kw):
    return RunConfig(**{"seeds": 2, "n_rows": 48, "pretrain_steps": 200, "teacher_steps": 5, "in_context_examples": 2, **kw})


@pytest.mark.slow
def test_run__writes_every_condition_with_intervals(tiny_presets, tmp_path):
    results = run(_tiny_run_config(), tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False)
    finish_run(tmp_path / "run")  # what `interp run` does next: the text, the figure and the page
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["trait"] == "owl"
    names = {(c["name"], c["objective"]) for c in on_disk["conditions"]}
    expected = {("base", None), ("teacher", None), ("in_context", None)} | {
        (c, o) for c in TRAINED_CONDITIONS for o in OBJECTIVES}
    assert names == expected
    for c in on_disk["conditions"]:
        t = c["trait_prob"]
        assert t["n_seeds"] == 2 and t["ci_low"] <= t["mean"] <= t["ci_high"] and 0 <= t["mean"] <= 1
    assert (tmp_path / "run" / "results.md").exists() and (tmp_path / "run" / "results.png").exists()
    assert "Did the shared-init student move toward the teacher?" in (tmp_path / "run" / "report.html").read_text()
    # Every data set the students train on was audited before training, and the report shows it.
    assert set(on_disk["audit"]) == {"teacher_numbers", "shuffled_within", "shuffled_across", "base_numbers"}
    assert on_disk["audit"]["teacher_numbers"]["n_seeds"] == 2
    assert (tmp_path / "run" / "seed0" / "data" / "audit" / "teacher_numbers" / "audit.json").exists()
    assert "Audit before training" in (tmp_path / "run" / "results.md").read_text()
    assert "Audit before training: predicted vs measured" in (tmp_path / "run" / "report.html").read_text()
    assert (tmp_path / "run" / "seed0" / "data" / "teacher_numbers.raw.jsonl").exists()
    assert (tmp_path / "run" / "seed0" / "data" / "teacher_numbers.filtered.jsonl").exists()
    # A finished run is not redone: a second call reuses every stage and gives the same numbers.
    again = run(_tiny_run_config(), tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False)
    assert again["conditions"] == results["conditions"]


def test_run__directory_of_another_run_is_refused(tiny_presets, tmp_path):
    (tmp_path / "run").mkdir()
    _tiny_run_config(trait="cat").save(tmp_path / "run" / "run_config.json")
    with pytest.raises(ValueError, match="holds another run"):
        run(_tiny_run_config(), tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False)


def test_run_cli__unknown_trait_is_a_one_line_error(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), "--trait", "unicorn"]) == 2
    assert "unknown trait animal 'unicorn'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "results.json").exists()


def test_run_config__rejects_contradictions():
    with pytest.raises(ConfigError, match="mismatched_base_seed"):
        RunConfig(shared_base_seed=1, mismatched_base_seed=1)
    with pytest.raises(ConfigError, match="objectives"):
        RunConfig(objectives=("rlhf",))
    with pytest.raises(ConfigError, match="cross_arch"):
        RunConfig(arch="narrow", cross_arch="narrow")


@pytest.mark.slow
def test_run_sweep__cells_share_teacher_data_and_report_every_objective(tiny_presets, tmp_path):
    from interp.studies.sweep import SweepConfig, run_sweep

    config = SweepConfig(base={"seeds": 2, "n_rows": 32, "pretrain_steps": 200, "teacher_steps": 5,
                               "in_context_examples": 1, "eval_every": 0, "record_alignment": False,
                               "objectives": ["sft", "distill"]},
                         cells=[{}, {"lr": 2e-3}])
    rows = run_sweep(config, tmp_path / "sweep", artifacts=tmp_path / "artifacts", progress=False)
    assert [r["cell"] for r in rows] == ["default", "lr=0.002"]
    for r in rows:
        for o in ("sft", "distill"):
            assert r[f"shared_init/{o}"]["n_seeds"] == 2 and "holm_p" in r[f"vs_control/{o}"]
    # the student-only override reuses the first cell's teacher data: both link to one directory
    data = [(tmp_path / "sweep" / f"cell0{i}" / "seed0" / "data").resolve() for i in (0, 1)]
    assert data[0] == data[1]
    md = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "## sft students" in md and "## distill students" in md and "lr=0.002" in md
    assert (tmp_path / "sweep" / "sweep.png").exists() and (tmp_path / "sweep" / "sweep_distill.png").exists()
