"""Holm-correct the comparisons of several sweeps as one family (docs/sft_transmission.md).

Each sweep corrects its own comparisons (shared − control and shared − mismatched per cell); a
claim drawn from many sweeps should survive the correction over all of them together. Extra
comparisons of a cell's own ``results.json`` (e.g. shared − shuffled_across, run when the cell
trains the shuffled conditions) join the family with ``--with-shuffled``.

    python experiments/scripts/holm_across_sweeps.py /work/runs/sft_teachers /work/runs/sft_natural ... [--with-shuffled]

``--pooled CELL MORE`` replaces the comparisons of the sweep cell directory CELL by those over
its seeds and the seeds of MORE (the same configuration run at other seeds, pooled by
``experiments/scripts/pool_seeds.py``); ``--shuffled-only SWEEP`` takes only the shuffled comparisons of
a sweep whose cells repeat another sweep's (so that a repeated cell is not counted twice).
"""

import argparse
import json
from pathlib import Path

import sys

from interp.core.stats import holm

sys.path.insert(0, str(Path(__file__).parent))
from pool_seeds import pooled_comparison  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweeps", type=Path, nargs="+")
    ap.add_argument("--objective", default="sft")
    ap.add_argument("--with-shuffled", action="store_true")
    ap.add_argument("--pooled", nargs=2, type=Path, action="append", default=[], metavar=("CELL", "MORE"))
    ap.add_argument("--shuffled-only", type=Path, nargs="*", default=[])
    args = ap.parse_args()
    pooled = {cell.resolve(): more for cell, more in args.pooled}
    o = args.objective
    tests = []  # (sweep, cell, comparison, difference, raw p)
    for sweep in args.sweeps:
        rows = json.loads((sweep / "sweep_results.json").read_text())["rows"]
        for i, r in enumerate(rows):
            cell_dir = (sweep / f"cell{i:02d}").resolve()
            for key, label, b in ((f"vs_control/{o}", "shared − control", "control"),
                                  (f"vs_mismatched/{o}", "shared − mismatched", "mismatched_init")):
                if sweep.resolve() in {p.resolve() for p in args.shuffled_only}:
                    continue
                if cell_dir in pooled:
                    d, p, n = pooled_comparison([cell_dir, pooled[cell_dir]], b, o)
                    tests.append((sweep.name, f"{r['cell']} ({n} seeds pooled)", label, d, p))
                    continue
                c = r[key]
                tests.append((sweep.name, r["cell"], label, c["difference"], c["welch_p"]))
            if args.with_shuffled:
                res = json.loads((sweep / f"cell{i:02d}" / "results.json").read_text())
                for c in res["comparisons"]:
                    if c["objective"] == o and c["b"] == "shuffled_across":
                        tests.append((sweep.name, r["cell"], "shared − shuffled_across", c["difference"], c["welch_p"]))
    adjusted = holm([t[4] for t in tests])
    print(f"Holm over {len(tests)} comparisons of {len(args.sweeps)} sweeps")
    print("| sweep | cell | comparison | difference [95% CI] | p | Holm p (all) |")
    print("|---|---|---|---|---|---|")
    for (sweep, cell, label, d, p), adj in zip(tests, adjusted):
        print(f"| {sweep} | {cell} | {label} | {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {p:.2g} | "
              f"{adj:.2g} |")


if __name__ == "__main__":
    main()
