"""The theorem check's results as text and figures: ``theorem.md`` and the PNGs of
:data:`interp.studies.theorem.PLOT_FILES`, read from ``theorem.json`` and its JSONL rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from interp.core.io import atomic_path, atomic_write_text, read_jsonl
from interp.report.text import fmt_ci
from interp.studies.theorem import BATCHES_FILE, PLOT_FILES, STEP_SIZE_FILE, THEOREM_MD_FILE


def _fmt(ci: dict | None, digits: int = 4) -> str:
    return fmt_ci(ci, digits, signed=True, missing="-")


def theorem_markdown(results: dict) -> str:
    """The summary tables of ``theorem.json`` as markdown."""
    cfg = results["config"]
    lines = [f"# The theorem, checked (trait `{results['trait']}`, {cfg['seeds']} teachers, objective {cfg['objective']})", "",
             "Teachers (finetuned from the shared base): " + "; ".join(
                 f"seed {t['seed']}: P(trait) {t['trait_prob']:.3f} (base {t['base_trait_prob']:.3f}), ‖t‖ = "
                 f"{t['teacher_update_norm']:.3f}" for t in results["teachers"]), "",
             "## One step of imitation, plain gradient descent", "",
             "Fraction of batches whose step has a positive inner product with t = teacher - base (Wilson 95%, batches "
             "pooled over seeds); mean cosine (95% t-interval over seeds). Adam: its first step, -g/(|g|+eps).", "",
             "| init | inputs | positive | cos(step, t) | min cos | Adam positive | cos(Adam step, t) |",
             "|---|---|---|---|---|---|---|"]
    for init, by_dist in results["single_step"].items():
        for dist, e in by_dist.items():
            lines.append(f"| {init} | {dist} | {_fmt(e['fraction_positive'])} | {_fmt(e['cos'])} | {e['min_cos']:+.4f} | "
                         f"{_fmt(e['adam_fraction_positive'])} | {_fmt(e['adam_cos'])} |")
    mism = results["single_step"].get("mismatched_init", {})
    if mism:
        lines += ["", "Mismatched init, other directions: the teacher-specific part of the step, -(g_teacher - g_teacher's base), "
                  "against t; the step against teacher - student base.", "",
                  "| inputs | teacher-specific positive | cos | toward teacher weights positive | cos |", "|---|---|---|---|---|"]
        for dist, e in mism.items():
            lines.append(f"| {dist} | {_fmt(e['teacher_specific_fraction_positive'])} | {_fmt(e['teacher_specific_cos'])} | "
                         f"{_fmt(e['toward_teacher_weights_fraction_positive'])} | {_fmt(e['toward_teacher_weights_cos'])} |")
    lines += ["", f"## Step size ({cfg['sweep_steps']} steps of imitation on teacher numbers from the shared base)", "",
              "| optimizer | lr | positive after 1 step | closer after 1 step | positive after last | closer after last | "
              "cos after last | diverged |", "|---|---|---|---|---|---|---|---|"]
    for e in results["step_size"]:
        lines.append(f"| {e['optimizer']} | {e['lr']:g} | {_fmt(e['first_fraction_positive'])} | "
                     f"{_fmt(e['first_fraction_closer'])} | {_fmt(e['last_fraction_positive'])} | "
                     f"{_fmt(e['last_fraction_closer'])} | {_fmt(e['last_cos'])} | {e['diverged']}/{e['n_runs']} |")
    if results.get("sft"):
        lines += ["", f"## SFT on sampled text ({cfg['sft_steps']} steps, {cfg['sft_optimizer']}, lr {cfg['sft_lr']:g})", "",
                  "| condition | teacher direction | mean cos(-g, t) over steps | mean cos(step, t) | final cos(student - base, t) |",
                  "|---|---|---|---|---|"]
        for cond, e in results["sft"].items():
            lines.append(f"| {cond} | {e['teacher_direction']} | {_fmt(e.get('grad_cos_teacher_dir_run_mean'))} | "
                         f"{_fmt(e.get('step_cos_teacher_dir_run_mean'))} | {_fmt(e.get('final_weight_cos'))} |")
    lines += ["", f"Wall time: {results['wall_seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def write_theorem_outputs(results: dict, out: Path) -> None:
    """``theorem.md`` and the PNGs of :data:`~interp.studies.theorem.PLOT_FILES` (from the summaries and the JSONL rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atomic_write_text(out / THEOREM_MD_FILE, theorem_markdown(results))
    for name, fig in theorem_figures(results, read_jsonl(out / BATCHES_FILE), read_jsonl(out / STEP_SIZE_FILE)).items():
        _save(fig, out / PLOT_FILES[name])
        plt.close(fig)


INIT_COLORS = {"shared_init": "tab:blue", "mismatched_init": "tab:orange", "control": "tab:gray"}


def theorem_figures(results: dict, batch_rows: list[dict], sweep_rows: list[dict]) -> dict:
    """name -> matplotlib figure, for the keys of :data:`~interp.studies.theorem.PLOT_FILES` that have data."""
    figs = {"single_step": single_step_figure(results, batch_rows)}
    for name, draw in (("layers", layers_figure), ("step_size", step_size_figure), ("sft", sft_steps_figure)):
        fig = draw(results)
        if fig is not None:
            figs[name] = fig
    return figs


def single_step_figure(results: dict, batch_rows: list[dict]):
    """Every batch's cosine of one plain gradient step with t, per input distribution; the
    mismatched init on its own axis (its cosines are two orders of magnitude smaller)."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    panels = [(init, [d for d in dict.fromkeys(r["distribution"] for r in batch_rows if r["init"] == init)])
              for init in ("shared_init", "mismatched_init")]
    panels = [(init, dists) for init, dists in panels if dists]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": [len(d) for _, d in panels]})
    for ax, (init, dists) in zip(axes[0], panels):
        top = 0.0
        for j, dist in enumerate(dists):
            vals = np.array([r["cos"] for r in batch_rows if r["distribution"] == dist and r["init"] == init])
            color = "tab:gray" if dist.startswith("null") else INIT_COLORS[init]
            ax.scatter(j + rng.uniform(-0.18, 0.18, len(vals)), vals, s=7, alpha=0.55, color=color)
            frac = results["single_step"][init][dist]["fraction_positive"]
            ax.annotate(f"{frac['k']}/{frac['n']} > 0", (j, vals.max()), textcoords="offset points", xytext=(0, 5),
                        ha="center", fontsize=7.5)
            top = max(top, float(vals.max()))
        ax.axhline(0, color="k", lw=0.6)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.12 * (high - low))  # room for the counts
        ax.set_xticks(range(len(dists)), [d.replace("_", "\n") for d in dists], fontsize=8)
        ax.set_ylabel("cos(−∇L, t)", fontsize=8)
        ax.set_title(f"{init}: one plain gradient step, each dot one batch", fontsize=9)
    fig.suptitle("t = teacher − shared base (for the mismatched init: the teacher's update, transplanted); "
                 "counts: batches with a positive inner product", fontsize=8.5)
    fig.tight_layout()
    return fig


def layers_figure(results: dict):
    """Per-layer cosine of one step at the shared init, distributions x layers (None without it)."""
    import matplotlib.pyplot as plt

    shared = results["single_step"].get("shared_init", {})
    if not shared:
        return None
    names = list(shared)
    layers = list(shared[names[0]]["cos_per_layer"])
    grid = np.array([[shared[d]["cos_per_layer"][layer]["mean"] for layer in layers] for d in names])
    fig, ax = plt.subplots(figsize=(1.1 * len(layers) + 2.5, 0.5 * len(names) + 1.8))
    lim = float(np.abs(grid).max()) or 1.0
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for i, d in enumerate(names):
        for j, layer in enumerate(layers):
            frac = shared[d]["fraction_positive_per_layer"][layer]
            ax.text(j, i, f"{grid[i, j]:+.3f}\n{frac['k']}/{frac['n']}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    fig.colorbar(im, ax=ax, label="mean cos per layer")
    ax.set_title("Shared init, one step: cos(−∇L, t) per layer (and batches > 0)", fontsize=9)
    fig.tight_layout()
    return fig


def step_size_figure(results: dict):
    """Per optimizer, the cosine after one and after the last step, and the runs that ended with a
    positive inner product or closer to the teacher, against the learning rate (None without a sweep)."""
    import matplotlib.pyplot as plt

    if not results["step_size"]:
        return None
    optimizers = list(dict.fromkeys(e["optimizer"] for e in results["step_size"]))
    fig, axes = plt.subplots(2, len(optimizers), figsize=(5.2 * len(optimizers), 6.4), squeeze=False)
    for col, opt in enumerate(optimizers):
        entries = [e for e in results["step_size"] if e["optimizer"] == opt]
        lrs = np.array([e["lr"] for e in entries])
        ax = axes[0, col]
        for label, style in (("first", "o--"), ("last", "s-")):
            ok = [(e["lr"], e[f"{label}_cos"]) for e in entries if e[f"{label}_cos"]]
            if ok:
                x, ci = zip(*ok)
                mean = np.array([c["mean"] for c in ci])
                err = np.array([[c["mean"] - c["ci_low"], c["ci_high"] - c["mean"]] for c in ci]).T
                ax.errorbar(x, mean, yerr=err, fmt=style, capsize=3,
                            label=f"after {'1 step' if label == 'first' else str(results['config']['sweep_steps']) + ' steps'}")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xscale("log")
        ax.set_title(f"{opt}: cos(θ_k − θ0, t)", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[1, col]
        for key, style, label in (("last_fraction_positive", "s-", "inner product > 0"),
                                  ("last_fraction_closer", "^-", "closer to teacher")):
            frac = np.array([e[key]["fraction"] for e in entries])
            err = np.array([[e[key]["fraction"] - e[key]["ci_low"], e[key]["ci_high"] - e[key]["fraction"]] for e in entries]).T
            ax.errorbar(lrs, frac, yerr=err, fmt=style, capsize=3, label=label)
        diverged = [e["lr"] for e in entries if e["diverged"]]
        for lr in diverged:
            ax.axvline(lr, color="r", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("learning rate")
        ax.set_title(f"{opt}: runs after the last step (Wilson 95%; red: some diverged)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def sft_steps_figure(results: dict):
    """Alignment with t over many SFT steps, per condition, mean and 95% band over seeds (None
    without the SFT part)."""
    import matplotlib.pyplot as plt

    sft = results.get("sft") or {}
    if not sft:
        return None
    keys = [k for k in ("grad_cos_teacher_dir", "step_cos_teacher_dir", "weight_cos") if any(k in e for e in sft.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for cond, e in sft.items():
            if key not in e:
                continue
            steps = np.array(e["steps"])
            mean, lo, hi = (np.array(e[key][k]) for k in ("mean", "ci_low", "ci_high"))
            ax.plot(steps, mean, color=INIT_COLORS.get(cond, None), label=f"{cond} ({e['teacher_direction']})")
            ax.fill_between(steps, lo, hi, color=INIT_COLORS.get(cond, None), alpha=0.2)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlabel("SFT step")
        ax.set_title({"grad_cos_teacher_dir": "cos(−gradient, t) per step", "step_cos_teacher_dir": "cos(optimizer step, t)",
                      "weight_cos": "cos(student − base, t)"}[key] + "\n(mean, 95% CI over seeds)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
