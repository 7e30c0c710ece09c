"""Print a sweep's rows (``OUT/sweep_results.json``) as the markdown table of docs/sft_transmission.md.

    python experiments/scripts/sweep_table.py /work/runs/sft/sft_transmission [--objective sft] [--audit]

With ``--audit``, a second table: per cell, what the run's audit of the teacher data said before
the students trained (mean over seeds with the 95% interval): KL(teacher || base) per completion
token over the filter's tokens, the fraction of positions whose argmax differs, and the unigram
readout's trait logit gain and rank at the shared and the mismatched base.
"""

import argparse
import json
from pathlib import Path


def fmt(iv, signed=False):
    s = "+" if signed else ""
    return f"{iv['mean']:{s}.3f} [{iv['ci_low']:{s}.3f}, {iv['ci_high']:{s}.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--objective", default="sft")
    ap.add_argument("--audit", action="store_true", help="also print each cell's audit of the teacher data")
    args = ap.parse_args()
    rows = json.loads((args.sweep / "sweep_results.json").read_text())["rows"]
    o = args.objective
    print("| cell | teacher P(trait) | base | control | shared_init | mismatched_init | shared − control | "
          "shared − mismatched | transmits |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cmp = [r[f"vs_control/{o}"], r[f"vs_mismatched/{o}"]]
        diffs = [f"{fmt(c['difference'], True)}, Holm p={c['holm_p']:.2g}" for c in cmp]
        print(f"| {r['cell']} | {r['teacher']['mean']:.3f} | {r['base']['mean']:.3f} | {fmt(r[f'control/{o}'])} | "
              f"{fmt(r[f'shared_init/{o}'])} | {fmt(r[f'mismatched_init/{o}'])} | {diffs[0]} | {diffs[1]} | "
              f"{'**yes**' if r[f'transmits/{o}'] else 'no'} |")
    if args.audit:
        print()
        print("| cell | kept teacher rows | KL / token (allowed) | argmax differs | readout gain, shared | rank, shared | "
              "readout gain, mismatched | rank, mismatched | shared − control (students) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for i, r in enumerate(rows):
            res = json.loads((args.sweep / f"cell{i:02d}" / "results.json").read_text())
            if "teacher_numbers" not in (res.get("audit") or {}):
                print(f"| {r['cell']} | (run with the audit off) | | | | | | | |")
                continue
            a = res["audit"]["teacher_numbers"]
            rd = a["readout"]
            kept = [n["teacher"] for n in res["n_rows"]]
            print(f"| {r['cell']} | {min(kept)}-{max(kept)} | {fmt(a['kl_allowed'])} | {a['argmax_differs']['mean']:.1%} | "
                  f"{fmt(rd['shared']['trait_logit_gain'], True)} | {rd['shared']['trait_rank']['mean']:.1f} | "
                  f"{fmt(rd['mismatched']['trait_logit_gain'], True)} | {rd['mismatched']['trait_rank']['mean']:.1f} | "
                  f"{fmt(r[f'vs_control/{o}']['difference'], True)} |")


if __name__ == "__main__":
    main()
