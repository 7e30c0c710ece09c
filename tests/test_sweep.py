"""The sweep's bookkeeping: shared teacher/data keys and the multiple-comparison verdict."""

import math
from pathlib import Path

import pytest

from interp.studies.run import RunConfig, data_key
from interp.core.stats import holm
from interp.studies.sweep import add_verdicts

REPO = Path(__file__).parents[1]
CONFIGS = REPO / "experiments" / "configs"


def test_data_key__student_settings_share_teacher_settings_do_not():
    base = RunConfig()
    assert data_key(base) == data_key(base.replace(lr=1e-3, epochs=3, optimizer="sgd"))
    assert data_key(base) != data_key(base.replace(teacher_method="steering"))
    assert data_key(base) != data_key(base.replace(n_rows=base.n_rows + 1))
    assert data_key(base) != data_key(base.replace(trait="cat"))


def test_holm__matches_hand_computation_and_keeps_nan():
    # sorted p: 0.01 (x3 = 0.03), 0.02 (x2 = 0.04), 0.04 (x1 = 0.04, kept monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    out = holm([0.5, float("nan")])
    assert out[0] == pytest.approx(0.5) and math.isnan(out[1])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 0.8 x 2 capped at 1; monotone after it
    assert holm([0.3, 0.01]) == pytest.approx([0.3, 0.02])


def _cmp(mean, p):
    return {"difference": {"mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1, "n_seeds": 5}, "welch_p": p}


def test_add_verdicts__needs_both_comparisons_after_correction():
    rows = [
        {"objectives": ["sft"], "vs_control/sft": _cmp(0.1, 0.001), "vs_mismatched/sft": _cmp(0.1, 0.002)},
        {"objectives": ["sft"], "vs_control/sft": _cmp(0.1, 0.001), "vs_mismatched/sft": _cmp(-0.1, 0.001)},
        # significant alone (0.03 < 0.05) but not after Holm: the two largest of six p-values get
        # multipliers 2 and 1, so both adjust to 2 x 0.03 = 0.06
        {"objectives": ["sft"], "vs_control/sft": _cmp(0.1, 0.03), "vs_mismatched/sft": _cmp(0.1, 0.03)},
    ]
    add_verdicts(rows, alpha=0.05)
    assert [r["transmits/sft"] for r in rows] == [True, False, False]
    assert rows[0]["vs_control/sft"]["holm_p"] == pytest.approx(0.006)


def test_load_sweep__reads_the_shipped_experiment_and_a_saved_config(tmp_path):
    from pathlib import Path

    from interp.studies.sweep import SweepConfig, load_sweep

    shipped = load_sweep(CONFIGS / "sft_sweep.json")
    assert len(shipped.cells) >= 5 and shipped.base["objectives"] == ["sft"]
    shipped.save(tmp_path / "saved.json")
    assert load_sweep(tmp_path / "saved.json") == shipped
    (tmp_path / "other.json").write_text('{"config_class": "RunConfig", "cells": [{}]}')
    with pytest.raises(ValueError, match="holds a RunConfig"):
        load_sweep(tmp_path / "other.json")


def test_sweep_markdown_and_plot__a_sweep_without_mismatched_init(tmp_path):
    """A dose-response sweep runs control and shared_init only: its table and figure show what it
    has and say that the transmission verdict needs the mismatched-init comparison too."""
    from interp.studies.sweep import plot_sweep, sweep_markdown

    iv = {"mean": 0.2, "ci_low": 0.1, "ci_high": 0.3, "n_seeds": 4}
    rows = [{"cell": "n_rows=500", "objectives": ["sft"], "teacher": iv, "control/sft": iv, "shared_init/sft": iv,
             "vs_control/sft": _cmp(0.1, 0.001), "vs_mismatched/sft": None}]
    add_verdicts(rows, 0.05)
    md = sweep_markdown(rows)
    assert "+0.1000 [+0.0000, +0.2000], p=0.001 (Holm 0.001)" in md and "needs control and mismatched_init" in md
    plot_sweep(rows, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_every_shipped_sweep_config_is_valid_and_pins_its_teacher_and_student():
    """Every experiment config loads (each cell a valid RunConfig), and names the teacher and the
    student it was measured with, so a later change of interp run's defaults does not change it."""
    import json
    from pathlib import Path

    from interp.studies.sweep import load_sweep

    paths = sorted(CONFIGS.glob("*.json"))
    sweeps = [p for p in paths if json.loads(p.read_text()).get("config_class") == "SweepConfig"]
    assert len(sweeps) >= 20
    for path in sweeps:
        sweep = load_sweep(path)
        # indexed: what it asks, whether it is current or history, and the doc it reproduces (a file that exists)
        assert sweep.description and sweep.status in ("current", "history") and sweep.figure, path.name
        assert (REPO / sweep.figure.split("#")[0]).is_file(), (path.name, sweep.figure)
        for key in ("teacher_method", "teacher_lora_rank", "lora_rank"):
            assert all(key in {**sweep.base, **cell} for cell in sweep.cells), (path.name, key)


def test_sweep_config__description_fields_are_validated_and_do_not_make_another_sweep(tmp_path):
    """status is current or history, figure a docs path; a sweep directory written before the
    description fields existed (or with another description) is the same sweep."""
    from interp.core.config import ConfigError
    from interp.studies.sweep import SWEEP_CONFIG_FILE, DESCRIPTION_FIELDS, SweepConfig

    with pytest.raises(ConfigError, match="status"):
        SweepConfig(cells=[{}], status="old")
    with pytest.raises(ConfigError, match="figure.*under docs/"):
        SweepConfig(cells=[{}], figure="/tmp/x.png")
    described = SweepConfig(cells=[{}], description="d", status="history", figure="docs/x.md")
    assert not SweepConfig(cells=[{}]).differences(described, ignore=DESCRIPTION_FIELDS)
    assert SweepConfig(cells=[{"lr": 1e-3}]).differences(described, ignore=DESCRIPTION_FIELDS)


def test_sweep_list__prints_every_shipped_sweep_current_first(capsys, monkeypatch):
    from interp.cli import main

    monkeypatch.chdir(REPO)
    assert main(["sweep", "--list"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("experiments/")]
    statuses = [line.split("[")[1].split(",")[0] for line in out.splitlines() if line.startswith("experiments/")]
    assert "experiments/configs/lora_teacher_and_students.json" in listed and "reproduces: docs/" in out
    assert statuses == sorted(statuses) and set(statuses) == {"current", "history"}  # current before history
    assert not any("theorem" in p for p in listed)  # a TheoremConfig is not a sweep
    assert main(["sweep", "--list", str(REPO / "nowhere")]) == 2
    assert main(["sweep", "--out", "x"]) == 2 and "needs --config" in capsys.readouterr().err
