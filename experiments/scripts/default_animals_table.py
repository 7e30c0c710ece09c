"""The default at other animals: SFT shared − control and shared − mismatched per animal, Holm-corrected.

Reads the run directories of ``interp sweep --config experiments/configs/default_animals.json``
(one per animal) and the default ``interp run`` (owl), and corrects the comparisons as two
families: the six animals of the confirmation (12 comparisons) and the animals held out from any
tuning (fox, dolphin: 4 comparisons). Writes a JSON file and prints a markdown table.

    python experiments/scripts/default_animals_table.py SWEEP_DIR DEFAULT_RUN_DIR --out experiments/results/default_animals.json
"""

import argparse
import json
from pathlib import Path

from interp.core.stats import holm

HELD_OUT = ("fox", "dolphin")  # chosen before any run, never used in tuning anything


def comparisons(run_dir: Path, objective: str = "sft") -> tuple[str, dict, list[float]]:
    results = json.loads((run_dir / "results.json").read_text())
    found = {}
    for c in results["comparisons"]:
        if c["objective"] == objective and c["a"] == "shared_init" and c["b"] in ("control", "mismatched_init"):
            found[c["b"]] = {"difference": c["difference"], "p": c["welch_p"]}
    per_seed = []
    for seed_dir in sorted(run_dir.glob("seed*/seed_results.json")):
        s = json.loads(seed_dir.read_text())
        per_seed.append(s[f"shared_init/{objective}"]["trait_prob_shift"] - s[f"control/{objective}"]["trait_prob_shift"])
    return results["trait"], found, per_seed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweep", type=Path)
    ap.add_argument("default_run", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    runs = [args.default_run] + sorted(p.parent for p in args.sweep.glob("cell*/results.json"))
    rows = []
    for run_dir in runs:
        trait, found, per_seed = comparisons(run_dir)
        for b, c in found.items():
            rows.append({"trait": trait, "comparison": f"shared_init - {b}", "held_out": trait in HELD_OUT,
                         "n_seeds": c["difference"]["n_seeds"], "mean": c["difference"]["mean"],
                         "ci_low": c["difference"]["ci_low"], "ci_high": c["difference"]["ci_high"], "p": c["p"],
                         "seeds_positive": (sum(x > 0 for x in per_seed), len(per_seed)) if b == "control" else None})
    for held_out in (False, True):
        family = [r for r in rows if r["held_out"] == held_out]
        for r, p in zip(family, holm([r["p"] for r in family])):
            r["holm_p"] = p
            r["family_size"] = len(family)
    args.out.write_text(json.dumps({"objective": "sft", "held_out": list(HELD_OUT), "rows": rows}, indent=2) + "\n")
    print("| animal | comparison | difference | 95% interval | Welch p | Holm p (family) | seeds > 0 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        pos = f"{r['seeds_positive'][0]}/{r['seeds_positive'][1]}" if r["seeds_positive"] else ""
        fam = f"{r['holm_p']:.2g} ({'held out' if r['held_out'] else 'six animals'}, {r['family_size']})"
        print(f"| {r['trait']} | {r['comparison']} | {r['mean']:+.3f} | [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] "
              f"| {r['p']:.2g} | {fam} | {pos} |")


if __name__ == "__main__":
    main()
