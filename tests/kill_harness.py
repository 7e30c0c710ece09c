"""Kill a real ``interp`` subprocess mid-way with SIGKILL, run it again, and compare the result
with an uninterrupted run.

A stage that claims to be resumable is checked the hard way: no ``KeyboardInterrupt`` raised
politely from a monkeypatched function, but a process that dies between two instructions,
with whatever it had half-written left on disk. Typical use::

    def args(out):  # the same `interp` arguments, writing under `out`
        return ["finetune", ..., "--out", str(out / "student")]

    outcome = check_kill_and_resume(args, tmp_path, trigger=".student.resume/state.safetensors")
    assert_same_checkpoint(outcome.reference / "student", outcome.resumed / "student")

The killed attempt is ``[*launcher, *args]`` (default ``python -m interp``) in a subprocess; the
uninterrupted run and the rerun go through ``runner`` (default the same subprocess).

``trigger`` is a glob pattern relative to the run's output folder (the kill happens as soon as
a path matches) or a callable taking that folder; ``after_seconds`` kills after a fixed time
instead. The check fails, printing the command's output, if the command finished before it
could be killed (a kill test that kills nothing proves nothing), if the rerun fails, or if the
comparison does. Every command runs with one thread (``OMP_NUM_THREADS=1``), so the reference
and the resumed run do the same floating-point operations.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
INTERP = [sys.executable, "-m", "interp"]
Trigger = str | Callable[[Path], bool] | None


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of every harness command: this checkout first on the path, one thread,
    no network."""
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               TQDM_DISABLE="1", **extra)
    return env


@dataclass
class Killed:
    """How the killed attempt went."""

    returncode: int  # -SIGKILL if it was killed
    seconds: float  # from start to kill (or to its own exit)
    output: str

    @property
    def was_killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


@dataclass
class KillOutcome:
    reference: Path  # output folder of the uninterrupted run
    resumed: Path  # output folder of the killed-then-rerun run
    killed: Killed
    resumed_output: str  # stdout and stderr of the rerun


def run_to_completion(cmd: Sequence[str], *, timeout: float = 300) -> str:
    """Run ``cmd``; return its output, or fail showing it if it exits non-zero."""
    proc = subprocess.run(list(cmd), cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-4000:]}"
    return proc.stdout


def _triggered(trigger: Trigger, folder: Path) -> bool:
    if trigger is None:
        return False
    if callable(trigger):
        return trigger(folder)
    return any(folder.glob(trigger))


def kill_when(cmd: Sequence[str], folder: Path, *, trigger: Trigger = None, after_seconds: float | None = None,
              timeout: float = 300, poll: float = 0.01) -> Killed:
    """Start ``cmd`` and SIGKILL it as soon as ``trigger`` holds in ``folder`` or ``after_seconds``
    have passed, whichever is first. Returns how it ended (it may have finished by itself)."""
    if trigger is None and after_seconds is None:
        raise ValueError("give a trigger or after_seconds")
    log_path = folder.parent / f"{folder.name}.killed.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(list(cmd), cwd=REPO, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                elapsed = time.perf_counter() - start
                if _triggered(trigger, folder) or (after_seconds is not None and elapsed >= after_seconds):
                    proc.send_signal(signal.SIGKILL)
                    break
                if elapsed > timeout:
                    raise AssertionError(f"{' '.join(cmd)}: trigger {trigger!r} never held in {timeout} s")
                time.sleep(poll)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Killed(proc.returncode, time.perf_counter() - start, log_path.read_text())


def subprocess_runner(launcher: Sequence[str] = INTERP, timeout: float = 300) -> Callable[[Sequence[str]], str]:
    """Runs ``[*launcher, *args]`` as a subprocess to completion; returns its output."""
    return lambda args: run_to_completion([*launcher, *args], timeout=timeout)


def in_process_runner(main: Callable[[list[str]], int] | None = None) -> Callable[[Sequence[str]], str]:
    """Runs ``main(args)`` (default :func:`interp.cli.main`) in this process with one torch
    thread and no worker processes, like the subprocesses. It saves the start-up of a fresh interpreter; the attempt
    that gets killed is always a real subprocess."""
    def run(args: Sequence[str]) -> str:
        import torch

        from tiny_interp import in_one_process

        from interp.cli import main as cli_main

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            code = (main or cli_main)(in_one_process(list(args)))
        finally:
            torch.set_num_threads(threads)
        assert code == 0, f"{' '.join(args)} exited {code}"
        return ""

    return run


def check_kill_and_resume(make_args: Callable[[Path], Sequence[str]], tmp_path: Path, *, trigger: Trigger = None,
                          after_seconds: float | None = None, launcher: Sequence[str] = INTERP,
                          runner: Callable[[Sequence[str]], str] | None = None, timeout: float = 300,
                          compare: Callable[[Path, Path], Any] | None = None) -> KillOutcome:
    """The whole check.

    1. ``runner(make_args(tmp_path / "reference"))``: the uninterrupted run;
    2. ``[*launcher, *make_args(tmp_path / "resumed")]`` as a subprocess, SIGKILLed as soon as
       ``trigger`` holds in ``tmp_path / "resumed"`` (or after ``after_seconds``); fails if it
       ended by itself first;
    3. ``runner(make_args(tmp_path / "resumed"))``: the same command again, to completion;
    4. ``compare(reference, resumed)`` if given.

    ``runner`` defaults to :func:`subprocess_runner` of ``launcher``; :func:`in_process_runner`
    saves the interpreter start-up of steps 1 and 3."""
    runner = runner or subprocess_runner(launcher, timeout)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    reference.mkdir(parents=True, exist_ok=True)
    resumed.mkdir(parents=True, exist_ok=True)
    runner(make_args(reference))
    killed = kill_when([*launcher, *make_args(resumed)], resumed, trigger=trigger, after_seconds=after_seconds,
                       timeout=timeout)
    assert killed.was_killed, (f"the command ended by itself (exit {killed.returncode}) before it could be killed; "
                               f"make it longer or trigger earlier:\n{killed.output[-3000:]}")
    resumed_output = runner(make_args(resumed))
    if compare is not None:
        compare(reference, resumed)
    return KillOutcome(reference, resumed, killed, resumed_output)


# -- comparisons -------------------------------------------------------------------------------

def assert_close_json(a: Any, b: Any, *, rel: float = 1e-6, abs_: float = 1e-9, ignore: tuple[str, ...] = (),
                      where: str = "") -> None:
    """Equal JSON values, floats to a relative tolerance, keys in ``ignore`` skipped at any depth."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys_a, keys_b = set(a) - set(ignore), set(b) - set(ignore)
        assert keys_a == keys_b, f"{where or 'top'}: keys differ: {sorted(keys_a ^ keys_b)}"
        for k in sorted(keys_a):
            assert_close_json(a[k], b[k], rel=rel, abs_=abs_, ignore=ignore, where=f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: lengths {len(a)} and {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close_json(x, y, rel=rel, abs_=abs_, ignore=ignore, where=f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{where}: {a!r} vs {b!r}"
        assert math.isclose(a, b, rel_tol=rel, abs_tol=abs_) or (math.isnan(a) and math.isnan(b)), f"{where}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def assert_same_jsonl(a: Path, b: Path, **kwargs: Any) -> None:
    from interp.core.io import read_jsonl

    assert_close_json(read_jsonl(a), read_jsonl(b), where=a.name, **kwargs)


def assert_same_checkpoint(a: Path, b: Path, *, atol: float = 1e-6) -> None:
    """Same parameter names and shapes, values within ``atol``."""
    import torch

    from interp.core.io import load_safetensors
    from interp.models.checkpoint import WEIGHTS_FILE

    wa, wb = load_safetensors(a / WEIGHTS_FILE), load_safetensors(b / WEIGHTS_FILE)
    assert sorted(wa) == sorted(wb), "parameter names differ"
    for name, value in wa.items():
        assert value.shape == wb[name].shape, name
        assert torch.allclose(value, wb[name], atol=atol, rtol=0), f"{name}: max |diff| {(value - wb[name]).abs().max():.3g}"
