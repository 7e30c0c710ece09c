"""Power of the SFT claim (shared - control, Welch 95% interval above zero) for seeds x rows.

From the measured spread of per-seed effects (docs/sft_transmission.md, docs/main_run.md):

* 3,000 prompts: shared - control per seed +0.051, +0.086, +0.090, +0.079, +0.108, +0.025, +0.097,
  +0.020 (8 seeds, this machine) and +0.031, +0.092, +0.088 (3 seeds, another machine): pooled;
* 10,000 prompts: +0.225, +0.284, +0.153, +0.141 (4 seeds).

Each cell simulates ``--draws`` replications of a run with ``n`` seeds: shared-init shifts
N(effect, sd_s) and control shifts N(0, sd_c) with sd_s^2 + sd_c^2 = sd^2 (the per-seed
differences' variance), the split either all in the shared shifts or half and half (the Welch
degrees of freedom differ), and takes the run's own interval (interp.core.stats.diff_ci). It
reports the probability that the lower end is above zero, and above a margin of a quarter of the
effect, at the measured sd and at its one-sided 80% upper confidence bound (an sd from 4-11
seeds is itself uncertain), the worse split in each case.

    python experiments/scripts/power_sft_claim.py --out experiments/results/power_sft_claim.json
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
from scipy import stats

from interp.core.stats import diff_ci

PER_SEED = {
    3000: [0.051, 0.086, 0.090, 0.079, 0.108, 0.025, 0.097, 0.020, 0.031, 0.092, 0.088],
    10000: [0.225, 0.284, 0.153, 0.141],
}


def power(effect: float, sd: float, n: int, *, draws: int, margin: float, seed: int = 0) -> dict:
    """P(lower end > 0) and P(lower end > margin) of the Welch interval of n seeds per group,
    the worse of the two variance splits."""
    out = {}
    for split in (1.0, 0.5):
        rng = np.random.default_rng([seed, n, int(effect * 1e4), int(sd * 1e4), int(split * 10)])
        sd_s, sd_c = sd * math.sqrt(split), sd * math.sqrt(1 - split)
        lows = []
        for _ in range(draws):
            a = rng.normal(effect, sd_s, n)
            b = rng.normal(0.0, sd_c, n)  # sd_c 0: every control shift 0 (Welch df n - 1)
            lows.append(diff_ci(a, b).ci_low)
        lows = np.asarray(lows)
        out[split] = {"p_above_zero": float((lows > 0).mean()), "p_above_margin": float((lows > margin).mean()),
                      "median_lower_end": float(np.median(lows))}
    worse = min(out.values(), key=lambda r: r["p_above_zero"])
    return worse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10])
    args = ap.parse_args()
    table = []
    for rows, values in PER_SEED.items():
        x = np.asarray(values)
        effect, sd, k = float(x.mean()), float(x.std(ddof=1)), len(x)
        sd_upper = sd * math.sqrt((k - 1) / stats.chi2.ppf(0.2, k - 1))  # one-sided 80% upper bound
        for n in args.seeds:
            for label, s in (("measured sd", sd), ("80% upper sd", sd_upper)):
                p = power(effect, s, n, draws=args.draws, margin=effect / 4)
                table.append({"prompts": rows, "seeds": n, "effect": effect, "sd": s, "sd_kind": label,
                              "measured_from_seeds": k, **p})
    print("| prompts | seeds | effect | sd | P(lower > 0) | P(lower > effect/4) | median lower end |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['prompts']:,} | {r['seeds']} | {r['effect']:+.3f} | {r['sd']:.3f} ({r['sd_kind']}) | "
              f"{r['p_above_zero']:.2f} | {r['p_above_margin']:.2f} | {r['median_lower_end']:+.3f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"per_seed_effects": {str(k): v for k, v in PER_SEED.items()}, "draws": args.draws,
                       "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
