"""interp.core.parallel: jobs on spawned worker processes, in order, failures kept apart, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp.core.parallel import resolve_workers, run_jobs
from parallel_jobs import write_marker

TESTS = Path(__file__).parent


def test_resolve_workers__zero_is_one_per_core_capped_by_jobs():
    assert resolve_workers(0, 1) == 1
    assert resolve_workers(0, 1000) == (os.cpu_count() or 1)
    assert resolve_workers(4, 3) == 3
    assert resolve_workers(1, 5) == 1
    with pytest.raises(ValueError, match="workers=-1"):
        resolve_workers(-1, 3)


def test_run_jobs__one_worker_runs_in_this_process(tmp_path):
    assert run_jobs(write_marker, [(str(tmp_path), i) for i in range(3)], workers=1, progress=False) == [0, 1, 4]
    assert {p.read_text() for p in tmp_path.iterdir()} == {str(os.getpid())}


def test_run_jobs__workers_return_results_in_job_order(tmp_path):
    results = run_jobs(write_marker, [(str(tmp_path), i) for i in range(4)], workers=2, progress=False)
    assert results == [0, 1, 4, 9]
    pids = {p.read_text() for p in tmp_path.iterdir()}
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2


def test_run_jobs__a_failed_job_does_not_stop_the_others(tmp_path):
    jobs = [(str(tmp_path), 0, True)] + [(str(tmp_path), i) for i in range(1, 4)]
    with pytest.raises(RuntimeError, match="job 0 failed on purpose"):
        run_jobs(write_marker, jobs, workers=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job1", "job2", "job3"]  # finished despite job 0


def test_run_jobs__workers_exit_when_the_run_is_killed(tmp_path):
    """A killed run leaves no worker behind to race the resumed run over the same files."""
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from interp.core.parallel import run_jobs\nfrom parallel_jobs import sleep_forever\n"
              "run_jobs(sleep_forever, [(%r, 0), (%r, 1)], workers=2, progress=False)\n") % (str(TESTS), str(tmp_path), str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while len(list(tmp_path.glob("pid*"))) < 2 and time.time() < deadline:
            time.sleep(0.1)
        pids = [int(p.read_text()) for p in tmp_path.glob("pid*")]
        assert len(pids) == 2, "the workers never started"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.time() + 10
    alive = pids
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [p for p in pids if _alive(p)]
    assert not alive, f"workers {alive} outlived their killed parent"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_run__seeds_on_workers_match_seeds_in_process(tmp_path):
    """interp run with its seeds (and bases) on 2 spawned workers gives the results of a run in
    this process: the same data, byte for byte, and the same P(trait) to float tolerance."""
    import json

    from tiny_interp import one_torch_thread

    from interp.studies.run import RunConfig, run

    # A 4-step finetuned teacher: on a 6-step base the default unembed edit makes nearly every list
    # carry a non-number token, and this test is about the workers, not the teacher.
    # distill too: its teacher targets are computed by the data jobs and read by the student jobs
    config = RunConfig(teacher_method="finetune", seeds=2, pretrain_steps=6, teacher_steps=4, n_rows=24, objectives=("sft", "distill"),
                       conditions=("control", "shared_init"), eval_every=0, record_alignment=False,
                       in_context_examples=1, student_engine="packed")
    artifacts = tmp_path / "artifacts"
    parallel = run(config, tmp_path / "parallel", artifacts=artifacts, workers=2, progress=False)
    with one_torch_thread():  # as in the workers: the comparison is of the machinery, not of thread counts
        serial = run(config, tmp_path / "serial", artifacts=artifacts, workers=1, progress=False)
    for s in (0, 1):
        for name in ("teacher_numbers.raw.jsonl", "base_numbers.filtered.jsonl"):
            assert (tmp_path / "parallel" / f"seed{s}" / "data" / name).read_bytes() == \
                (tmp_path / "serial" / f"seed{s}" / "data" / name).read_bytes()
    got = {(c["name"], c["objective"]): c["trait_prob"]["mean"] for c in parallel["conditions"]}
    want = {(c["name"], c["objective"]): c["trait_prob"]["mean"] for c in serial["conditions"]}
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    assert json.loads((tmp_path / "parallel" / "results.json").read_text())["conditions"]
    assert not list((tmp_path / "parallel").rglob("*.teacher_targets.pt"))  # removed once the students are collected
