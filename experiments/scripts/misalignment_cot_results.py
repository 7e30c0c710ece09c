"""Write experiments/results/domains_misalignment_cot_results.json: chain-of-thought data with the
misalignment trait (experiments/configs/domains_misalignment_cot.json), each part pooled and
Holm-corrected by misalignment_summary.py.

* ``cot``: the CoT runs' seeds 0-4 (the measurement; Holm over its two comparisons);
* ``cot_ten_seeds``: seeds 0-9 pooled (seeds 5-9 set down before seeds 0-4 were read);
* ``numbers_same_bases``: number students on the same bases (seeds 0-4);
* ``pilot``: the one-seed 3,000-prompt pilot that chose the prompt count;
* ``holm_cot_and_numbers``: Holm over the four comparisons of ``cot`` and ``numbers_same_bases``.

    python experiments/scripts/misalignment_cot_results.py --cot RUNS/cot RUNS/cot-seeds5-9 \
        --numbers RUNS/numbers --pilot RUNS/pilot --out experiments/results/domains_misalignment_cot_results.json
"""

import argparse
import sys
from pathlib import Path

from interp.core.io import atomic_write_json
from interp.core.stats import holm

sys.path.insert(0, str(Path(__file__).parent))
from misalignment_summary import print_summary, summarize  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cot", type=Path, nargs="+", required=True, help="the CoT run directories (seeds 0-4 first)")
    ap.add_argument("--numbers", type=Path, nargs="*", default=[], help="number runs on the same bases")
    ap.add_argument("--pilot", type=Path, nargs="*", default=[], help="the pilot run")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    out = {"cot": summarize(args.cot[:1])}
    if len(args.cot) > 1:
        out["cot_ten_seeds"] = summarize(args.cot)
    if args.numbers:
        out["numbers_same_bases"] = summarize(args.numbers)
    if args.pilot:
        out["pilot"] = summarize(args.pilot)
    family = [(part, c) for part in ("cot", "numbers_same_bases") if part in out for c in out[part]["comparisons"]]
    adjusted = holm([c["welch_p"] for _, c in family])
    out["holm_cot_and_numbers"] = [{"part": part, "a": c["a"], "b": c["b"], "difference": c["difference"],
                                    "welch_p": c["welch_p"], "holm_p": p} for (part, c), p in zip(family, adjusted)]
    atomic_write_json(args.out, out)
    for part, summary in out.items():
        if isinstance(summary, dict):
            print(f"== {part}")
            print_summary(summary)
    for h in out["holm_cot_and_numbers"]:
        print(f"{h['part']}: {h['a']} - {h['b']}: p {h['welch_p']:.3g}, Holm over four {h['holm_p']:.3g}")


if __name__ == "__main__":
    main()
