"""Dose-response in rows for a misalignment run: one configuration at several ``n_rows``, each
pooled over its seeds by ``misalignment_summary.summarize``, Holm over every comparison of every
size together (docs/misalignment.md).

    python experiments/scripts/misalignment_dose.py --out experiments/results/misalignment_dose_results.json \\
        --size 1000 RUNS/dose-1000/seed-* --size 3000 RUNS/direct/seed-* --size 10000 RUNS/dose-10000/seed-*
"""

import argparse
import sys
from pathlib import Path

from interp.core.io import atomic_write_json
from interp.core.stats import holm

sys.path.insert(0, str(Path(__file__).parent))
from misalignment_summary import summarize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", nargs="+", action="append", required=True, metavar="ROWS RUN",
                    help="a number of prompts, then the run directories of that size")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--alpha", type=float, default=0.05)
    args = ap.parse_args()
    sizes = {}
    for rows, *runs in args.size:
        summary = summarize([Path(r) for r in runs], args.alpha)
        if summary["config"]["n_rows"] != int(rows):
            raise SystemExit(f"--size {rows}: its runs have n_rows {summary['config']['n_rows']}")
        sizes[int(rows)] = summary
    family = [(n, c) for n, s in sizes.items() for c in s["comparisons"]]
    for (n, c), p in zip(family, holm([c["welch_p"] for _, c in family])):
        c["holm_p_dose_family"] = p
    out = {"sizes": {n: {"seeds": s["seeds"], "kept_rows": s["n_rows"], "conditions": {
                k: {"shift": v["shift"], "trait_prob": v["trait_prob"]} for k, v in s["conditions"].items()},
                "comparisons": s["comparisons"], "in_context": s["in_context"]} for n, s in sizes.items()},
           "config": {k: v for k, v in next(iter(sizes.values()))["config"].items() if k != "n_rows"},
           "family_size": len(family)}
    atomic_write_json(args.out, out)
    for n, s in sizes.items():
        line = ", ".join(f"shared - {c['b']} {c['difference']['mean']:+.4f} [{c['difference']['ci_low']:+.4f}, "
                         f"{c['difference']['ci_high']:+.4f}] Holm({len(family)}) p {c['holm_p_dose_family']:.3g}"
                         for c in s["comparisons"])
        print(f"{n} rows ({len(s['seeds'])} seeds): shared shift {s['conditions']['shared_init']['shift']['mean']:+.4f}; {line}")


if __name__ == "__main__":
    main()
