"""Plot shared - control (SFT) against rows from an ``interp sweep`` over ``n_rows`` cells.

    python experiments/scripts/dose_response_plot.py /work/runs/sft_dose docs/figures/sft_dose_response.png

Reads every ``cellNN/results.json`` that exists (a sweep stopped early still plots its finished cells)."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main(sweep: str, out: str) -> None:
    rows = []
    for path in sorted(Path(sweep).glob("cell*/results.json")):
        d = json.loads(path.read_text())
        comp = next(c for c in d["comparisons"] if c["a"] == "shared_init" and c["b"] == "control")
        kept = np.mean([n["teacher"] for n in d["n_rows"]])
        rows.append((d["config"]["n_rows"], kept, comp["difference"], comp["welch_p"], len(d["n_rows"])))
    fig, ax = plt.subplots(figsize=(5, 3.4))
    x = [r[1] for r in rows]
    mean = np.array([r[2]["mean"] for r in rows])
    err = np.array([[r[2]["mean"] - r[2]["ci_low"], r[2]["ci_high"] - r[2]["mean"]] for r in rows]).T
    ax.errorbar(x, mean, yerr=err, marker="o", capsize=3)
    for r in rows:
        ax.annotate(f"{r[0]} prompts", (r[1], r[2]["mean"]), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("filtered teacher rows per student (mean over seeds)")
    trait = json.loads(next(Path(sweep).glob("cell*/results.json")).read_text())["trait"]
    ax.set_ylabel(f"P({trait}) shift: shared - control")
    ax.set_title(f"SFT dose-response ({rows[0][4]} seeds, Welch 95% CI)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    for r in rows:
        print(r[0], round(r[1]), "%+.3f [%+.3f, %+.3f] p=%.2g" % (r[2]["mean"], r[2]["ci_low"], r[2]["ci_high"], r[3]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
