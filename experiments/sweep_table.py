"""Print a sweep's rows (``OUT/sweep_results.json``) as the markdown table of docs/sft_transmission.md.

    python experiments/sweep_table.py /work/runs/sft/sft_transmission [--objective sft]
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


if __name__ == "__main__":
    main()
