"""Holm-correct the comparisons of several sweeps as one family (docs/sft_transmission.md).

Each sweep corrects its own comparisons (shared − control and shared − mismatched per cell); a
claim drawn from many sweeps should survive the correction over all of them together. Extra
comparisons of a cell's own ``results.json`` (e.g. shared − shuffled_across, run when the cell
trains the shuffled conditions) join the family with ``--with-shuffled``.

    python experiments/holm_across_sweeps.py /work/runs/sft_teachers /work/runs/sft_natural ... [--with-shuffled]
"""

import argparse
import json
from pathlib import Path

from interp.core.stats import holm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweeps", type=Path, nargs="+")
    ap.add_argument("--objective", default="sft")
    ap.add_argument("--with-shuffled", action="store_true")
    args = ap.parse_args()
    o = args.objective
    tests = []  # (sweep, cell, comparison, difference, raw p)
    for sweep in args.sweeps:
        rows = json.loads((sweep / "sweep_results.json").read_text())["rows"]
        for i, r in enumerate(rows):
            for key, label in ((f"vs_control/{o}", "shared − control"), (f"vs_mismatched/{o}", "shared − mismatched")):
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
