"""Atomic writes: nothing half-written is ever taken for a finished file."""

import json
import os

import pytest

from interp.core.io import atomic_savefig, atomic_write_json, read_jsonl
from interp.models.checkpoint import Lineage, is_checkpoint, load_checkpoint, save_checkpoint

from conftest import TINY


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_atomic_savefig__format_from_the_final_suffix_and_nothing_left_on_failure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    atomic_savefig(fig, tmp_path / "plot.png", dpi=40)
    atomic_savefig(fig, tmp_path / "plot.svg")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "plot.svg").read_bytes()[:400]
    with pytest.raises(ValueError):
        atomic_savefig(fig, tmp_path / "broken.png", dpi=40, format="no-such-format")
    plt.close(fig)
    assert not (tmp_path / "broken.png").exists() and _leftovers(tmp_path) == []


def test_atomic_write__file_mode_follows_the_umask(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_read_jsonl__torn_last_line_dropped_bad_inner_line_an_error(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "lo')
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]
    path.write_text('{"step": 0}\n{"ste\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2: malformed JSON line"):
        read_jsonl(path)


def test_save_checkpoint__extra_files_appear_with_the_weights_or_not_at_all(tiny_model, tmp_path):
    lineage = Lineage(stage="test", seed=0, parent=None)

    def extra(staging):
        (staging / "stage_config.json").write_text("{}")
        raise KeyboardInterrupt("killed while writing the stage's files")

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tiny_model, tmp_path / "ck", TINY, lineage, extra=extra)
    assert not (tmp_path / "ck").exists() and _leftovers(tmp_path) == []

    stale = tmp_path / ".ck.abcd1234.partial"  # left by a writer killed with SIGKILL
    stale.mkdir()
    save_checkpoint(tiny_model, tmp_path / "ck", TINY, lineage, extra=lambda d: (d / "stage_config.json").write_text("{}"))
    assert is_checkpoint(tmp_path / "ck") and json.loads((tmp_path / "ck" / "stage_config.json").read_text()) == {}
    assert _leftovers(tmp_path) == []
    load_checkpoint(tmp_path / "ck")


def test_save_checkpoint__never_replaces_a_directory_that_is_not_a_checkpoint(tiny_model, tmp_path):
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "notes.txt").write_text("a week of work")
    with pytest.raises(ValueError, match="exists and is not a checkpoint"):
        save_checkpoint(tiny_model, precious, TINY, Lineage(stage="test", seed=0, parent=None))
    assert (precious / "notes.txt").read_text() == "a week of work"
    save_checkpoint(tiny_model, tmp_path / "ck", TINY, Lineage(stage="test", seed=0, parent=None))
    save_checkpoint(tiny_model, tmp_path / "ck", TINY, Lineage(stage="test", seed=1, parent=None))  # a checkpoint is replaced
    assert load_checkpoint(tmp_path / "ck")[1].seed == 1
