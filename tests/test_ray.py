"""``--executor ray``: ``interp run`` and ``interp sweep`` as Ray tasks give the local executor's
results (data files byte for byte, P(trait) to float tolerance), on a local Ray instance, with a
Ray worker killed mid-job, and joined to a ``ray start --head`` cluster; a missing Ray or an
unreachable address is a one-line error.

Ray comes with the test extra (``pip install -e '.[test]'``), so CI runs all of this; the tests
that need it skip only where it is not installed. One local Ray instance (2 CPUs, a small object
store, no dashboard) serves the whole module: starting Ray takes several seconds. Its workers get
the tiny architecture presets of ``tests/tiny_interp.py`` through Ray's
``worker_process_setup_hook``, as the driver (this process) gets them through monkeypatch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from interp.cli import main
from interp.core.io import read_json
from interp.models.checkpoint import WEIGHTS_FILE

from kill_harness import REPO, assert_close_json, assert_same_checkpoint
from tiny_interp import in_one_process, one_torch_thread, use_tiny_presets

TESTS = Path(__file__).parent
# `interp run --quick`, shrunk: tiny bases (tiny_interp's presets), 2 seeds of 48 rows, the three
# students a sweep trains.
RUN_ARGS = ["--quick", "--seeds", "2", "--n-rows", "48", "--pretrain-steps", "100", "--teacher-steps", "4",
            "--objectives", "sft", "--conditions", "control", "shared_init", "mismatched_init", "--eval-every", "0",
            "--no-record-alignment", "--in-context-examples", "1"]
# A sweep whose first cell is that run (the same RunConfig), the second cell's students trained
# at another learning rate on the first's teacher and data.
SWEEP = {"base": {"quick": True, "seeds": 2, "n_rows": 48, "pretrain_steps": 100, "teacher_steps": 4, "eval_every": 0,
                  "record_alignment": False, "in_context_examples": 1},
         "cells": [{}, {"lr": 0.002}]}
# The environment of every Ray worker: this checkout and the tests importable, one thread.
WORKER_ENV = {"PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
# Ray starts its workers at niceness 15: on a machine shared with other work they wait behind it
# (observed: tasks that had not started after minutes at a load average of 15 on 2 cores). The
# Ray processes the tests start run their workers at the tests' own priority.
RAY_NICENESS = {"RAY_worker_niceness": "0"}


@pytest.fixture
def tiny_presets(monkeypatch):
    use_tiny_presets(monkeypatch.setitem, monkeypatch.setattr)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep on the local executor, in this process (one thread, as each Ray task has):
    ``ROOT/sweep``, its bases in ``ROOT/artifacts``. Its first cell is also the reference of the
    shrunk quick run (``ROOT/run``, a link to it): one local run fewer."""
    root = tmp_path_factory.mktemp("local")
    (root / "sweep.json").write_text(json.dumps(SWEEP))
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        use_tiny_presets(mp.setitem, mp.setattr)
        assert main(in_one_process(["sweep", "--config", str(root / "sweep.json"), "--out", str(root / "sweep"),
                                    "--artifacts", str(root / "artifacts")])) == 0
    (root / "run").symlink_to(root / "sweep" / "cell00", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def _ray_module():
    ray = pytest.importorskip("ray")  # a fallback only: the test extra installs Ray, and CI runs these tests
    yield ray
    ray.shutdown()


@pytest.fixture
def local_ray(_ray_module):
    """This process connected to a local Ray instance (started once, kept for the module's tests)."""
    from interp.core.ray_executor import connect

    if not _ray_module.is_initialized():
        with pytest.MonkeyPatch.context() as mp:  # read by the Ray processes ray.init starts
            for name, value in RAY_NICENESS.items():
                mp.setenv(name, value)
            connect(None, num_cpus=2, object_store_memory=100 * 2**20, log_to_driver=False,
                    runtime_env={"worker_process_setup_hook": "tiny_interp.use_tiny_presets", "env_vars": WORKER_ENV})
    return _ray_module


def assert_same_run(a: Path, b: Path, artifacts: tuple[Path, Path] | None = None) -> None:
    """Two run directories hold the same data files (byte for byte), students and results.
    ``artifacts``: the two runs' artifacts folders, when they differ (every data row names the
    base that wrote it by its path, which is then the only difference allowed)."""
    data = sorted(str(p.relative_to(a)) for p in a.glob("seed*/data/*.jsonl"))
    assert data, f"no data files under {a}"
    assert data == sorted(str(p.relative_to(b)) for p in b.glob("seed*/data/*.jsonl"))
    for name in data:
        bytes_a, bytes_b = (a / name).read_bytes(), (b / name).read_bytes()
        if artifacts is not None:
            bytes_a, bytes_b = (x.replace(str(folder).encode(), b"ARTIFACTS") for x, folder in
                                zip((bytes_a, bytes_b), artifacts))
        assert bytes_a == bytes_b, f"{name} differs"
    students = sorted(p.parent.relative_to(a) for p in a.glob(f"seed*/students/*/*/{WEIGHTS_FILE}"))
    assert len(students) == 6
    for student in students:
        assert_same_checkpoint(a / student, b / student)
        assert_close_json(read_json(a / student / "eval.json"), read_json(b / student / "eval.json"))
    # results.json: every P(trait), interval and comparison; the bases' paths and the time differ
    assert_close_json(read_json(a / "results.json"), read_json(b / "results.json"), ignore=("wall_seconds", "bases"))


# -- one-line errors ------------------------------------------------------------------------------

def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_executor_ray__without_ray_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    err = _one_line_error(capsys, ["run", "--quick", "--out", str(tmp_path / "run"), "--executor", "ray"])
    assert "needs Ray" in err and "pip install -e '.[ray]'" in err
    config = tmp_path / "sweep.json"
    config.write_text(json.dumps(SWEEP))
    err = _one_line_error(capsys, ["sweep", "--config", str(config), "--out", str(tmp_path / "s"), "--executor", "ray"])
    assert "pip install -e '.[ray]'" in err
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_executor_ray__unreachable_address_is_a_one_line_error(_ray_module, capsys, tmp_path):
    _ray_module.shutdown()  # a process already connected keeps its connection: test a fresh one
    port = _free_port()  # nothing listens there
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        start = time.monotonic()
        err = _one_line_error(capsys, ["run", "--quick", "--out", str(tmp_path / "run"), "--executor", "ray",
                                       "--ray-address", address])
        assert f"--ray-address {address}: no Ray cluster answers" in err
        assert time.monotonic() - start < 60  # bounded: Ray itself would retry for minutes
    assert not (tmp_path / "run").exists()
    err = _one_line_error(capsys, ["run", "--out", str(tmp_path / "run"), "--ray-address", "auto"])
    assert "only used with --executor ray" in err


# -- the graph runner -----------------------------------------------------------------------------

def test_run_graph__dependencies_order_jobs_and_a_failure_keeps_the_others(local_ray, tmp_path):
    from interp.core.ray_executor import Job, run_graph
    from parallel_jobs import write_marker

    d = str(tmp_path)
    jobs = [Job("a", write_marker, (d, 0)), Job("bad", write_marker, (d, 1, True)),
            Job("c", write_marker, (d, 2), after=("a",)), Job("d", write_marker, (d, 3), after=("c",))]
    with pytest.raises(RuntimeError, match="job 1 failed on purpose"):  # the job's own exception, not Ray's
        run_graph(jobs, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job0", "job2", "job3"]
    times = [(tmp_path / f"job{i}").stat().st_mtime for i in (0, 2, 3)]
    assert times == sorted(times)  # each after the one it depends on
    assert run_graph(jobs[:1] + jobs[2:], progress=False) == {"a": 0, "c": 4, "d": 9}
    with pytest.raises(ValueError, match="not given before it"):
        run_graph([Job("c", write_marker, (d, 2), after=("a",))], progress=False)


def test_run_on_ray__the_graph_of_two_runs_sharing_data(monkeypatch, tmp_path):
    """The jobs and dependencies run_on_ray gives Ray (captured, not run): bases shared, a seed's
    students after its data, its collection after its students, and a second run on the same
    teacher and data after the first's data job, or after all of the first's jobs on that seed
    where its audit differs (both write the audit there)."""
    import interp.core.ray_executor as ray_executor
    import interp.studies.run as run_mod

    graphs = []
    monkeypatch.setattr(ray_executor, "connect", lambda *a, **kw: True)
    monkeypatch.setattr(ray_executor, "run_graph", lambda jobs, **kw: graphs.append(jobs) or {j.key: {} for j in jobs})
    monkeypatch.setattr(run_mod, "_finish_run", lambda config, out, per_seed, *a: {"out": out, "seeds": len(per_seed)})
    base = run_mod.RunConfig(seeds=2, n_rows=48, objectives=("sft",), conditions=("control", "shared_init"))
    for second, waits_for in ((base.replace(lr=0.002), "data"), (base.replace(lora_rank=4), "collect")):
        graphs.clear()
        runs = [(base, tmp_path / f"{waits_for}-a", tmp_path / f"{waits_for}-shared"),
                (second, tmp_path / f"{waits_for}-b", tmp_path / f"{waits_for}-shared")]
        summaries = run_mod.run_on_ray(runs, artifacts=tmp_path / "artifacts", progress=False)
        assert [s["seeds"] for s in summaries] == [2, 2]
        (jobs,) = graphs
        after = {j.key: j.after for j in jobs}
        pretrain = [k for k in after if k.startswith("pretrain")]
        assert len(pretrain) == 2  # shared and mismatched bases, once for both runs
        for run_dir in (runs[0][1], runs[1][1]):
            for s in (0, 1):
                seed = run_dir / f"seed{s}"
                students = [f"student {seed} sft/{c}" for c in ("control", "shared_init")]
                assert all(after[k] == (f"data {seed}",) for k in students)
                assert after[f"collect {seed}"] == tuple(students)
        for s in (0, 1):
            first, second_seed = runs[0][1] / f"seed{s}", runs[1][1] / f"seed{s}"
            assert after[f"data {first}"] == tuple(pretrain)
            assert after[f"data {second_seed}"] == (*pretrain, f"{waits_for} {first}")


# -- whole runs -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_sweep_on_a_local_ray_instance__same_results_files_as_the_local_executor(reference, local_ray, tiny_presets,
                                                                                  tmp_path):
    """The cells side by side, their bases pretrained by Ray tasks into a fresh artifacts folder."""
    out, artifacts = tmp_path / "sweep", tmp_path / "artifacts"
    assert main(["sweep", "--config", str(reference / "sweep.json"), "--out", str(out), "--artifacts", str(artifacts),
                 "--executor", "ray"]) == 0
    bases = sorted((reference / "artifacts" / "bases").iterdir())
    assert [b.name for b in bases] == sorted(b.name for b in (artifacts / "bases").iterdir())
    for base in bases:  # pretrained in a Ray worker: the same weights, bit for bit
        assert (base / WEIGHTS_FILE).read_bytes() == (artifacts / "bases" / base.name / WEIGHTS_FILE).read_bytes()
    local = reference / "sweep"
    for cell in ("cell00", "cell01"):
        assert_same_run(local / cell, out / cell, artifacts=(reference / "artifacts", artifacts))
    assert (out / "cell00" / "seed0" / "data").resolve() == (out / "cell01" / "seed0" / "data").resolve()
    assert_close_json(read_json(local / "sweep_results.json"), read_json(out / "sweep_results.json"),
                      ignore=("wall_seconds",))
    assert (local / "sweep.md").read_text() == (out / "sweep.md").read_text()


def _task_pids(title: str) -> list[int]:
    """Processes whose command line starts with ``title`` (a Ray worker shows ``ray::TASK NAME``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith(title):
                pids.append(int(proc.name))
    return pids


class KillWorker(threading.Thread):
    """SIGKILL the Ray worker running the task named ``name`` once ``ready()`` holds (or 3 s
    after the task was first seen running): the task dies mid-job."""

    def __init__(self, name: str, ready, timeout: float = 600):
        super().__init__(daemon=True)
        self.title, self.ready, self.timeout = f"ray::{name}", ready, timeout
        self.killed: int | None = None
        self.done = threading.Event()

    def run(self) -> None:
        start, seen = time.monotonic(), None
        while not self.done.is_set() and time.monotonic() - start < self.timeout:
            pids = _task_pids(self.title)
            if pids:
                seen = seen or time.monotonic()
                if self.ready() or time.monotonic() - seen > 3:
                    os.kill(pids[0], signal.SIGKILL)
                    self.killed = pids[0]
                    return
            time.sleep(0.02)


@pytest.mark.slow
def test_run_quick_on_a_local_ray_instance__a_killed_worker_loses_nothing(reference, local_ray, tiny_presets, tmp_path):
    """`interp run --quick --executor ray`, the worker of seed 0's teacher-and-data task killed
    once its teacher is written (generation, evaluation and audit still to come): Ray runs the task
    again, which reuses the teacher, and the run equals the local executor's."""
    out = (tmp_path / "run").absolute()
    killer = KillWorker(f"teacher and data {out / 'seed0'}", lambda: (out / "seed0" / "teacher" / "teacher.json").exists())
    killer.start()
    try:
        assert main(["run", *RUN_ARGS, "--out", str(out), "--artifacts", str(reference / "artifacts"),
                     "--executor", "ray"]) == 0
    finally:
        killer.done.set()
        killer.join()
    assert killer.killed is not None, "no worker was killed: the test proved nothing"
    assert_same_run(reference / "run", out)


@pytest.fixture
def ray_head(_ray_module, tmp_path, monkeypatch):
    """A one-node cluster started by `ray start --head` (2 CPUs; stopped after the test), and the
    environment that joins it: `ray start` turns on token authentication, which a driver uses
    with RAY_AUTH_MODE=token."""
    _ray_module.shutdown()  # this process's local instance, if an earlier test started one
    port = _free_port()
    log_path = tmp_path / "head.log"
    ray_cli = Path(sys.executable).with_name("ray")
    with open(log_path, "w") as log:
        head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}",
                                 f"--ray-client-server-port={_free_port()}", "--num-cpus=2",
                                 f"--object-store-memory={100 * 2**20}", "--include-dashboard=false",
                                 "--disable-usage-stats"], env={**os.environ, **WORKER_ENV, **RAY_NICENESS}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log_path.read_text():
            assert head.poll() is None and time.monotonic() < deadline, f"ray start failed:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.5)
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        yield f"127.0.0.1:{port}"
    finally:
        _ray_module.shutdown()
        os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started, and only those
        try:
            head.wait(timeout=5)  # `ray start --block` drains for up to 30 s: not needed here
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # what a slow drain left
        except ProcessLookupError:
            pass
        head.wait()


@pytest.mark.slow
def test_run_quick_joining_a_ray_start_head_cluster__same_results_as_the_local_executor(reference, ray_head,
                                                                                         tiny_presets, tmp_path):
    out = tmp_path / "run"
    assert main(["run", *RUN_ARGS, "--out", str(out), "--artifacts", str(reference / "artifacts"),
                 "--executor", "ray", "--ray-address", ray_head]) == 0
    assert_same_run(reference / "run", out)
