"""The MNIST experiment's results as text and figures: ``results.md``, the accuracy-vs-m plot and
the alignment-over-training plot, read from ``results.json`` and ``alignment.jsonl``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interp.core.io import atomic_savefig, atomic_write_text, read_jsonl
from interp.core.stats import mean_ci
from interp.report.text import fmt_ci
from interp.studies.mnist.experiment import (
    ACCURACY_PLOT_FILE,
    ALIGNMENT_FILE,
    ALIGNMENT_PLOT_FILE,
    RESULTS_MD_FILE,
    STUDENT_CONDITIONS,
)
from interp.studies.mnist.model import N_CLASSES


def _data_label(data: dict[str, Any]) -> str:
    return f"{data['source']}; inputs and noise in {'[0, 1]' if data['input_range'] == 'unit' else '[-1, 1]'}"


def _fmt(ci: dict[str, float]) -> str:
    return fmt_ci(ci, 3)


def results_markdown(results: dict[str, Any]) -> str:
    """A table: accuracy (mean and 95% CI over models) and final alignment per condition and m."""
    lines = [
        f"# MNIST auxiliary-logit experiment ({_data_label(results['data'])})", "",
        "Accuracy: digit test accuracy through the 10 regular logits. cos(student, teacher): cosine of the "
        "student's movement from its init with the teacher's movement from its init, after training. "
        "Step cos: cosine of each optimizer step with the teacher's movement, averaged over the recorded "
        "steps. Mean [95% CI] over models.", "",
        "| condition | m | n_models | accuracy | cos(student, teacher) | step cos |",
        "|---|---|---|---|---|---|",
    ]
    for c in results["conditions"]:
        a = c.get("alignment")
        cos = (_fmt(a["final_weight"]["cosine"]), _fmt(a["mean_step_cosine"]["total"])) if a else ("", "")
        lines.append(f"| {c['name']} | {c['m']} | {c['accuracy']['n_models']} | {_fmt(c['accuracy'])} | {cos[0]} | {cos[1]} |")
    inits = results["init_accuracy"]
    lines += ["", f"Untrained initializations (n={inits['teacher_init']['n_models']}): teacher inits "
              f"{_fmt(inits['teacher_init'])}, cross-init student inits {_fmt(inits['cross_init'])}.",
              "", f"Wall time: {results['wall_seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def write_mnist_outputs(results: dict[str, Any], out: Path, main_m: int) -> None:
    """``results.md``, the accuracy-vs-m plot, and the alignment-over-training plot at ``main_m``
    (read back from ``alignment.jsonl``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atomic_write_text(out / RESULTS_MD_FILE, results_markdown(results))
    plot_accuracy(results, out / ACCURACY_PLOT_FILE, plt)
    plot_alignment(read_jsonl(out / ALIGNMENT_FILE), main_m, out / ALIGNMENT_PLOT_FILE, plt)


def plot_alignment(rows: list[dict[str, Any]], m: int, path: Path, plt: Any) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8))
    for cond in STUDENT_CONDITIONS:
        cond_rows = [r for r in rows if r["condition"] == cond.name and r["m"] == m]
        steps = [r["step"] for r in cond_rows]
        for ax, values in ((axes[0], [r["weight"]["total"]["cosine"] for r in cond_rows]),
                           (axes[1], [r["step_cosine"]["total"] for r in cond_rows]),
                           (axes[2], [r["test_accuracy"] for r in cond_rows])):
            cis = [mean_ci(v) for v in values]
            ax.plot(steps, [c.mean for c in cis], label=cond.name, ls="-" if cond.init == "shared" else "--")
            ax.fill_between(steps, [c.ci_low for c in cis], [c.ci_high for c in cis], alpha=0.2)
    axes[0].set_title(f"cos(student - init, teacher - teacher init), m={m}", fontsize=9)
    axes[1].set_title(f"cos(optimizer step, teacher - teacher init), m={m}", fontsize=9)
    axes[2].set_title(f"digit test accuracy of the students, m={m}", fontsize=9)
    for ax in axes:
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("student step")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=130)
    plt.close(fig)


def plot_accuracy(results: dict[str, Any], path: Path, plt: Any) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    teacher = next(c for c in results["conditions"] if c["name"] == "teacher")["accuracy"]
    ax.axhspan(teacher["ci_low"], teacher["ci_high"], color="0.85")
    ax.axhline(teacher["mean"], color="0.4", lw=1, label=f"teacher (n={teacher['n_models']})")
    ax.axhline(1 / N_CLASSES, color="k", ls=":", lw=1, label="chance")
    for i, cond in enumerate(STUDENT_CONDITIONS):
        entries = sorted((c for c in results["conditions"] if c["name"] == cond.name), key=lambda c: c["m"])
        ms = np.array([c["m"] for c in entries], float) * (1 + 0.03 * (i - 1.5))  # dodge overlapping bars
        mean = np.array([c["accuracy"]["mean"] for c in entries])
        err = np.array([[c["accuracy"]["mean"] - c["accuracy"]["ci_low"], c["accuracy"]["ci_high"] - c["accuracy"]["mean"]]
                        for c in entries]).T
        ax.errorbar(ms, mean, yerr=err, marker="o", capsize=3, label=cond.name,
                    ls="-" if cond.init == "shared" else "--")
    m_ticks = sorted({c["m"] for c in results["conditions"] if c["name"] != "teacher"})
    ax.set_xscale("log")
    ax.set_xticks(m_ticks, [str(m) for m in m_ticks])
    ax.minorticks_off()
    ax.set_xlabel("auxiliary logits m")
    ax.set_ylabel("digit test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"Students trained on noise (mean, 95% CI over models)\n{_data_label(results['data'])}", fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.93), ncol=3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=130)
    plt.close(fig)
