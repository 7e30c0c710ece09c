"""Measuring primitives of ``interp bench``: repeated measurements with alternating sides, the
comparison row of ``bench.json``, a per-step timer, the benchmark rows, and number formatting
(shared by :mod:`interp.bench.suite` and :mod:`interp.bench.speed`)."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from interp.stages.generate import number_prompts
from interp.worlds.toy.templates import format_numbers


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median and interquartile range (numpy's linear percentiles) of repeated measurements."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("spread: no values")
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "n": int(x.size), "values": x.tolist()}


def alternating(subject: Callable[[], float], baseline: Callable[[], float], repeats: int, *,
                warmup: bool = True) -> tuple[list[float], list[float]]:
    """``repeats`` measurements of each side, the side that runs first alternating between repeats
    (after one untimed call of each when ``warmup``)."""
    if warmup:
        subject(), baseline()
    ours, theirs = [], []
    for r in range(repeats):
        if r % 2 == 0:
            ours.append(subject())
            theirs.append(baseline())
        else:
            theirs.append(baseline())
            ours.append(subject())
    return ours, theirs


def comparison(key: str, title: str, compares: str, *, measure: str, subject: tuple[str, list[float]],
               baseline: tuple[str, list[float]], ratio: str, higher_is_better: bool,
               target: dict[str, Any] | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row of ``bench.json``: both sides, the per-repeat ratio ``subject / baseline``, and the
    target (``{"text", "threshold", "kind": "ratio_at_least" | "ratio_at_most" | "overhead_below"}``)
    checked against the median ratio."""
    ratios = [a / b for a, b in zip(subject[1], baseline[1])]
    row = {"key": key, "title": title, "compares": compares, "measure": measure, "higher_is_better": higher_is_better,
           "subject": {"label": subject[0], **spread(subject[1])},
           "baseline": {"label": baseline[0], **spread(baseline[1])},
           "ratio": {"definition": ratio, **spread(ratios)}, "target": None, "details": details or {}}
    if target is not None:
        median = row["ratio"]["median"]
        met = {"ratio_at_least": median >= target["threshold"], "ratio_at_most": median <= target["threshold"],
               "overhead_below": median - 1 < target["threshold"]}[target["kind"]]
        row["target"] = {**target, "met": bool(met)}
    return row


def _timed(fn: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
    """Seconds ``fn`` took on ``clock`` (wall time; ``time.process_time``: this process's CPU
    time, which on a shared machine leaves out the time spent waiting for a core), and its result."""
    start = clock()
    result = fn()
    return clock() - start, result


class StepTimer:
    """A ``finetune_student`` callback noting the time after every step. It needs no copy of the
    weights before each step, so it adds nothing of its own to either side of a comparison."""

    needs_params_before = False

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.times: list[float] = []
        self.clock = clock  # time.process_time: CPU seconds of this process (see _timed)

    def __call__(self, record) -> None:
        self.times.append(self.clock())

    def step_seconds(self) -> np.ndarray:
        """Seconds between consecutive steps (the first step, with its warm-up, is not timed)."""
        return np.diff(self.times)


def number_rows(world, n: int, seed: int) -> list[dict]:
    """``n`` rows shaped like the filtered number data (prompt, completion of 6-10 numbers)."""
    rng = np.random.default_rng([seed, 7])
    return [{"prompt": p, "completion": format_numbers(rng.integers(0, 1000, rng.integers(6, 11)).tolist(), ",") + " ."}
            for p in number_prompts(world, n, seed)]


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2e}"
