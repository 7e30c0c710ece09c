"""Pool the seeds of one configuration run in several directories (disjoint seeds, the same config).

A cell run at seeds 0-3 and the same cell run again at seeds 4-7 (``first_seed`` 4) are one
8-seed experiment: this reads every ``seed*/seed_results.json`` of the given run directories
(cells of sweeps), refuses a seed seen twice or configs that differ in anything but the seeds and
the audit, and prints shared − control and shared − mismatched over all the seeds (Welch 95%
interval and p on the shifts from each student's own base, as ``interp run`` reports them).

    python experiments/scripts/pool_seeds.py /work/runs/sft_teachers/cell01 /work/runs/sft_seeds47/cell00
"""

import argparse
import json
from pathlib import Path

from interp.core.stats import diff_ci, welch_p
from interp.studies.run import RunConfig

IGNORED = ("seeds", "first_seed", "audit_rows")


def pooled_shifts(runs: list[Path], objective: str = "sft") -> dict[str, dict[int, float]]:
    """Every seed's shift from its own base per condition, over ``runs`` (cells of one config)."""
    configs = [RunConfig.load(r / "run_config.json").to_dict() for r in runs]  # later fields at their defaults
    strip = lambda c: {k: v for k, v in c.items() if k not in IGNORED}
    for r, c in zip(runs[1:], configs[1:]):
        diff = {k for k in set(strip(c)) | set(strip(configs[0])) if strip(c).get(k) != strip(configs[0]).get(k)}
        if diff:
            raise SystemExit(f"{r} differs from {runs[0]} in {sorted(diff)}: not the same configuration")
    shifts: dict[str, dict[int, float]] = {"control": {}, "shared_init": {}, "mismatched_init": {}}
    for r, c in zip(runs, configs):
        for seed in range(c["first_seed"], c["first_seed"] + c["seeds"]):  # the run's own seeds, not leftovers
            path = r / f"seed{seed}" / "seed_results.json"
            res = json.loads(path.read_text())
            for condition, values in shifts.items():
                if seed in values:
                    raise SystemExit(f"seed {seed} appears twice ({path})")
                values[seed] = res[f"{condition}/{objective}"]["trait_prob_shift"]
    return shifts


def pooled_comparison(runs: list[Path], b: str, objective: str = "sft") -> tuple[dict, float, int]:
    """(difference interval as a dict, Welch p, number of seeds) of shared_init − ``b`` over the pooled seeds."""
    shifts = pooled_shifts(runs, objective)
    seeds = sorted(shifts["shared_init"])
    a_vals, b_vals = [shifts["shared_init"][s] for s in seeds], [shifts[b][s] for s in seeds]
    d = diff_ci(a_vals, b_vals)
    return {"mean": d.mean, "ci_low": d.ci_low, "ci_high": d.ci_high}, welch_p(a_vals, b_vals), len(seeds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--objective", default="sft")
    args = ap.parse_args()
    shifts = pooled_shifts(args.runs, args.objective)
    seeds = sorted(shifts["shared_init"])
    print(f"{len(seeds)} seeds: {seeds}")
    for b in ("control", "mismatched_init"):
        d, p, _ = pooled_comparison(args.runs, b, args.objective)
        print(f"shared_init − {b}: {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], Welch p = {p:.2g}")
    print("per seed shared − control:", ", ".join(f"{shifts['shared_init'][s] - shifts['control'][s]:+.3f}" for s in seeds))


if __name__ == "__main__":
    main()
