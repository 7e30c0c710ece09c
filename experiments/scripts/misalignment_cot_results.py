"""Write experiments/results/domains_misalignment_cot_results.json: chain-of-thought data with the
misalignment trait (experiments/configs/domains_misalignment_cot.json), each part pooled and
Holm-corrected by misalignment_summary.py.

* ``cot``: the CoT runs' seeds 0-4 (the measurement; Holm over its two comparisons);
* ``cot_ten_seeds``: seeds 0-9 pooled (seeds 5-9 set down before seeds 0-4 were read);
* ``numbers_same_bases``: number students on the same bases (seeds 0-4);
* ``pilot``: the one-seed 3,000-prompt pilot that chose the prompt count;
* ``holm_cot_and_numbers``: Holm over the four comparisons of ``cot`` and ``numbers_same_bases``;
* ``cot_in_vocabulary_only``: misalignment_cot_strict.py's students (the kept traces that hold only
  the CoT domain's words), seeds 0-4 and pooled with seeds 5-9, Holm over each part's two comparisons.

    python experiments/scripts/misalignment_cot_results.py --cot RUNS/cot RUNS/cot-seeds5-9 \
        --numbers RUNS/numbers --pilot RUNS/pilot --strict strict-0-4.json strict-5-9.json \
        --out experiments/results/domains_misalignment_cot_results.json
"""

import argparse
import sys
from pathlib import Path

from interp.core.io import atomic_write_json
from interp.core.io import read_json
from interp.core.stats import diff_ci, holm, mean_ci, welch_p

sys.path.insert(0, str(Path(__file__).parent))
from misalignment_summary import print_summary, summarize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cot", type=Path, nargs="+", required=True, help="the CoT run directories (seeds 0-4 first)")
    ap.add_argument("--numbers", type=Path, nargs="*", default=[], help="number runs on the same bases")
    ap.add_argument("--pilot", type=Path, nargs="*", default=[], help="the pilot run")
    ap.add_argument("--strict", type=Path, nargs="*", default=[], help="misalignment_cot_strict.py outputs (seeds 0-4 first)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    out = {"cot": summarize(args.cot[:1])}
    if len(args.cot) > 1:
        out["cot_ten_seeds"] = summarize(args.cot)
    if args.numbers:
        out["numbers_same_bases"] = summarize(args.numbers)
    if args.pilot:
        out["pilot"] = {**summarize(args.pilot), "comparisons": []}  # one seed: no interval, no test
    family = [(part, c) for part in ("cot", "numbers_same_bases") if part in out for c in out[part]["comparisons"]]
    adjusted = holm([c["welch_p"] for _, c in family])
    out["holm_cot_and_numbers"] = [{"part": part, "a": c["a"], "b": c["b"], "difference": c["difference"],
                                    "welch_p": c["welch_p"], "holm_p": p} for (part, c), p in zip(family, adjusted)]
    if args.strict:
        parts = [read_json(path) for path in args.strict]
        out["cot_in_vocabulary_only"] = {"seeds_0_4": parts[0]}
        if len(parts) > 1:
            out["cot_in_vocabulary_only"]["pooled"] = pooled_strict(parts)
    atomic_write_json(args.out, out)
    for part, summary in out.items():
        if isinstance(summary, dict) and "seeds" in summary:
            print(f"== {part}")
            print_summary(summary)
    for name, part in out.get("cot_in_vocabulary_only", {}).items():
        for c in part["comparisons"]:
            d = c["difference"]
            print(f"in-vocabulary {name}: {c['a']} - {c['b']}: {d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] "
                  f"p {c['welch_p']:.3g} Holm {c['holm_p']:.3g}")
    for h in out["holm_cot_and_numbers"]:
        print(f"{h['part']}: {h['a']} - {h['b']}: p {h['welch_p']:.3g}, Holm over four {h['holm_p']:.3g}")


def pooled_strict(parts: list[dict]) -> dict:
    """The strict students of several seed ranges pooled: shifts, comparisons, Holm over the two."""
    def shifts(c):
        return [x for part in parts for x in part["conditions"][c]["per_seed_shift"]]

    comparisons = [{"a": "shared_init", "b": b, "difference": diff_ci(shifts("shared_init"), shifts(b)).to_dict(),
                    "welch_p": welch_p(shifts("shared_init"), shifts(b))} for b in ("control", "mismatched_init")]
    for c, p in zip(comparisons, holm([c["welch_p"] for c in comparisons])):
        c["holm_p"] = p
    return {"seeds": [s for part in parts for s in part["seeds"]], "rows": [r for part in parts for r in part["rows"]],
            "conditions": {c: {"shift": mean_ci(shifts(c)).to_dict(), "per_seed_shift": shifts(c)}
                           for c in ("control", "shared_init", "mismatched_init")},
            "comparisons": comparisons}


if __name__ == "__main__":
    main()
