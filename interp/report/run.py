"""The results of ``interp run`` as text and a figure: ``results.md`` and ``results.png``, read
from ``results.json`` (the HTML page is :func:`interp.report.page.make_report`).

matplotlib is imported where a figure is drawn (here and in every report module), so that
importing :mod:`interp` never chooses a plotting backend for its user."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from interp.core.io import atomic_savefig
from interp.report.audit import audit_markdown_section

RESULTS_MD_FILE = "results.md"
RESULTS_PNG_FILE = "results.png"


def data_size_text(results: dict) -> str:
    """The rows each seed's data sets kept after filtering, of the prompts sampled: the size of
    what every student trained on."""
    per_seed = results.get("n_rows") or []
    if not per_seed:
        return ""
    prompts = results.get("config", {}).get("n_rows")
    first_seed = results.get("config", {}).get("first_seed", 0)
    parts = [f"seed {first_seed + i}: teacher {r['teacher']}, base {r['base']}" for i, r in enumerate(per_seed)]
    return (f"Rows kept after filtering (of {prompts} prompts sampled per data set): " + "; ".join(parts) + ".")


def results_markdown(results: dict) -> str:
    lines = [f"# Subliminal learning: trait `{results['trait']}`", "", data_size_text(results), "",
             "P(trait): next-token probability of the trait renormalised over the animals (over the answer words, "
             "for a trait of a world variant such as misalignment), mean over held-out phrasings; "
             "mean and 95% t-interval over seeds.", "",
             "Shift: the student's P(trait) minus its own base's (mismatched and cross-architecture students start "
             "from other bases). Comparisons are on shifts, Welch intervals over seeds.", "",
             "| condition | objective | P(trait) | 95% CI | shift from own base | 95% CI | n seeds |",
             "|---|---|---|---|---|---|---|"]
    for c in results["conditions"]:
        t = c["trait_prob"]
        s = c.get("trait_prob_shift")
        shift = f"{s['mean']:+.4f} | [{s['ci_low']:+.4f}, {s['ci_high']:+.4f}]" if s else "- | -"
        lines.append(f"| {c['name']} | {c['objective'] or '-'} | {t['mean']:.4f} | [{t['ci_low']:.4f}, {t['ci_high']:.4f}] "
                     f"| {shift} | {t['n_seeds']} |")
    lines += ["", "| objective | comparison (shift) | difference | 95% CI | Welch p |", "|---|---|---|---|---|"]
    for c in results["comparisons"]:
        d = c["difference"]
        lines.append(f"| {c['objective']} | {c['a']} - {c['b']} | {d['mean']:+.4f} | [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | {c['welch_p']:.3g} |")
    if "wall_seconds" in results and "peak_memory_mib" in results:
        memory = results["peak_memory_mib"]
        lines += ["", f"Wall time {results['wall_seconds'] / 60:.1f} min; peak memory {memory['main_process']:.0f} MiB in "
                  f"the main process, {memory['largest_worker']:.0f} MiB in the largest worker process."]
    return "\n".join(lines) + "\n" + audit_markdown_section(results)


def plot_results(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [c for c in results["conditions"] if c["objective"]]
    objectives = list(dict.fromkeys(c["objective"] for c in trained))
    names = list(dict.fromkeys(c["name"] for c in trained))
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(names) * len(objectives) / 2), 4.2))
    width = 0.8 / len(objectives)
    for j, obj in enumerate(objectives):
        rows = {c["name"]: c["trait_prob"] for c in trained if c["objective"] == obj}
        xs = np.arange(len(names)) + (j - (len(objectives) - 1) / 2) * width
        means = np.array([rows[n]["mean"] for n in names])
        err = np.array([[rows[n]["mean"] - rows[n]["ci_low"], rows[n]["ci_high"] - rows[n]["mean"]] for n in names]).T
        ax.bar(xs, means, width, yerr=err, capsize=3, label=obj)
    fixed = {c["name"]: c["trait_prob"]["mean"] for c in results["conditions"] if not c["objective"]}
    ax.axhline(fixed["base"], color="k", ls="--", lw=1, label=f"base {fixed['base']:.3f}")
    ax.set_xticks(np.arange(len(names)), [n.replace("_", "\n") for n in names])
    ax.set_ylabel(f"P({results['trait']})")
    ax.set_title(f"Student P({results['trait']}) by condition (95% CI over seeds; teacher {fixed['teacher']:.2f})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
