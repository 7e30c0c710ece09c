"""Statistics used for every reported figure: means with 95% Student-t intervals over seeds,
and Welch's test for a difference between a condition and its control."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st


@dataclass(frozen=True)
class Interval:
    """Mean of independent replicates (seeds or models) with a two-sided confidence interval."""

    mean: float
    ci_low: float
    ci_high: float
    n: int

    def to_dict(self, n_key: str = "n_seeds") -> dict[str, float | int]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, n_key: self.n}

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.ci_low:.4f}, {self.ci_high:.4f}] (n={self.n})"


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean. With one value the interval is the point (n=1 says so)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci: no values")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"mean_ci: non-finite values {x.tolist()}")
    m = float(x.mean())
    if x.size == 1:
        return Interval(m, m, m, 1)
    sem = float(x.std(ddof=1) / math.sqrt(x.size))
    half = float(_st.t.ppf(0.5 + confidence / 2, df=x.size - 1)) * sem
    return Interval(m, m - half, m + half, int(x.size))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value for mean(a) != mean(b); nan when either has < 2 values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or b.size < 2:
        return float("nan")
    if np.std(a) == 0 and np.std(b) == 0:
        return 0.0 if a.mean() != b.mean() else 1.0
    return float(_st.ttest_ind(a, b, equal_var=False).pvalue)


def diff_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """Welch interval for mean(a) - mean(b) (unpaired seeds)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Interval(d, d, d, min(a.size, b.size))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(d, d, d, min(a.size, b.size))
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(_st.t.ppf(0.5 + confidence / 2, df=dof)) * se
    return Interval(d, d - half, d + half, min(a.size, b.size))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given; nan stays nan).

    Controls the family-wise error rate over all the given tests: reject test ``i`` at level
    ``alpha`` when its adjusted p-value is below ``alpha``."""
    p = np.asarray(p_values, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(p.shape, np.nan)
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()

@dataclass(frozen=True)
class Proportion:
    """A fraction of independent trials with its two-sided Wilson score interval."""

    k: int
    n: int
    fraction: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | int]:
        return {"fraction": self.fraction, "ci_low": self.ci_low, "ci_high": self.ci_high, "k": self.k, "n": self.n}

    def __str__(self) -> str:
        return f"{self.k}/{self.n} = {self.fraction:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"


def wilson_ci(k: int, n: int, confidence: float = 0.95) -> Proportion:
    """Wilson score interval of a binomial fraction ``k / n``. Unlike the normal (Wald) interval
    it stays inside [0, 1] and is not a point at k = 0 or k = n: 50 successes in 50 trials give
    [0.929, 1]."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson_ci: need 0 <= k <= n and n > 0, got k={k}, n={n}")
    z = float(_st.norm.ppf(0.5 + confidence / 2))
    p = k / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    if k == 0:
        low = 0.0
    if k == n:
        high = 1.0
    return Proportion(k, n, p, low, high)
