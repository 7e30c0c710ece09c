"""``interp report DIR``: a self-contained HTML page (``DIR/report.html``, plots embedded as PNG
data, no network needed) and the PNG files it shows (``DIR/figures/``), for any directory the
suite writes:

* a run directory of ``interp run`` (``results.json`` with ``comparisons``): the page leads with
  the answer, per objective: did the shared-init students move toward the teacher in weight space
  (against the control and the mismatched-init students, paired over seeds, with 95% intervals)
  and did they pick up the trait; then alignment per step for shared_init, mismatched_init and
  control on one axis, weight-distance curves, trait probability and trait-gradient alignment
  over steps, per-group alignment heatmaps, P(trait) by condition and the results table;
* a theorem-check directory of ``interp theorem`` (``theorem.json``);
* an MNIST directory of ``interp mnist`` (``results.json`` with ``init_accuracy``).

Every figure names the file it was computed from. Other modules add sections through
:data:`SECTION_PROVIDERS`: each entry names a subdirectory and a function
``module:function(subdirectory) -> list[(title, source_file, html_fragment)]``, called when the
subdirectory exists; a provider whose module is not installed is skipped, one that fails shows
its error on the page instead of losing the rest of the report.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from interp.core.io import atomic_write_bytes, atomic_write_text, read_json, read_jsonl
from interp.core.stats import mean_ci
from interp.report.mnist import plot_accuracy, plot_alignment
from interp.report.mnist import results_markdown as mnist_markdown
from interp.report.run import data_size_text, plot_results
from interp.report.text import fmt_ci
from interp.report.theorem import theorem_figures, theorem_markdown
from interp.studies.mnist.experiment import ALIGNMENT_FILE as MNIST_ALIGNMENT_FILE
from interp.studies.theorem import BATCHES_FILE, STEP_SIZE_FILE, THEOREM_FILE

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
MAIN_CONDITIONS = ("shared_init", "mismatched_init", "control")
CONDITION_COLORS = {"shared_init": "#1f77b4", "mismatched_init": "#ff7f0e", "control": "#7f7f7f",
                    "cross_architecture": "#9467bd", "shuffled_within": "#2ca02c", "shuffled_across": "#8c564b"}

# (subdirectory, "module:function"): sections other modules add to any report.
SECTION_PROVIDERS: list[tuple[str, str]] = [
    ("features", "interp.report.features:report_sections"),
    ("audit", "interp.report.audit:report_sections"),
]


@dataclass
class Section:
    """One part of the page: a title, the file(s) it was computed from, an HTML fragment."""

    title: str
    source: str
    html: str


@dataclass
class Page:
    """Sections of a report and the figures they embed (written to ``directory/figures``)."""

    directory: Path
    headline: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def figure(self, name: str, fig, title: str, source: str, caption: str = "") -> None:
        """Save ``fig`` as ``figures/{name}.png`` (atomically) and add it as a section."""
        import matplotlib.pyplot as plt

        path = self.directory / FIGURES_DIR / f"{name}.png"
        data = save_png(fig, path)
        plt.close(fig)
        text = f"<p class='caption'>{caption}</p>" if caption else ""
        self.sections.append(Section(title, source, f"{text}<img alt='{html.escape(title)}' "
                                     f"src='data:image/png;base64,{base64.b64encode(data).decode()}'/>"
                                     f"<p class='src'>figure: {FIGURES_DIR}/{name}.png</p>"))

    def add(self, title: str, source: str, fragment: str) -> None:
        self.sections.append(Section(title, source, fragment))


def save_png(fig, path: Path) -> bytes:
    """Write ``fig`` to ``path`` as PNG atomically (temporary file, then rename); returns the bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return data


# -- small HTML helpers ----------------------------------------------------------------------------
def _esc(x) -> str:
    return html.escape(str(x))


def html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def markdown_to_html(text: str) -> str:
    """The markdown this suite writes (headings, paragraphs, pipe tables, `code`) as HTML."""
    out, table = [], []

    def inline(s: str) -> str:
        parts = _esc(s).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    def flush() -> None:
        if table:
            cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table
                     if not set(line.replace("|", "").strip()) <= set("-: ")]
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells[0]) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in cells[1:]) + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 5)
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return "\n".join(out)


def _verdict(ok: bool | None, yes: str, no: str) -> str:
    if ok is None:
        return f"<span class='na'>{_esc(no)}</span>"
    return f"<span class='{'yes' if ok else 'no'}'>{_esc(yes if ok else no)}</span>"


# -- run directories ---------------------------------------------------------------------------------
def student_logs(run_dir: Path, filename: str) -> dict[tuple[str, str], dict[int, list[dict]]]:
    """(objective, condition) -> {seed: log rows} for every student that has ``filename``."""
    out: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for path in sorted(run_dir.glob(f"seed*/students/*/*/{filename}")):
        condition, objective = path.parent.name, path.parent.parent.name
        seed = int(path.parent.parent.parent.parent.name.removeprefix("seed"))
        rows = read_jsonl(path)
        if rows:
            out.setdefault((objective, condition), {})[seed] = rows
    return out


def _series(seeds: dict[int, list[dict]], key: str, group: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, values[seed, step]) of ``key`` (in ``per_group[group]`` if given) on the steps every
    seed recorded with a non-null value; None when there is none."""
    def value(r):
        return (r.get("per_group", {}).get(group, {}) if group else r).get(key)

    per_seed = [{r["step"]: value(r) for r in rows if value(r) is not None} for rows in seeds.values()]
    if not per_seed or not all(per_seed):
        return None
    steps = sorted(set.intersection(*(set(d) for d in per_seed)))
    if not steps:
        return None
    return np.array(steps), np.array([[d[s] for s in steps] for d in per_seed], dtype=float)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over the last ``window`` steps (shorter at the start), along the last axis."""
    if window <= 1:
        return values
    c = np.cumsum(np.pad(values, [(0, 0)] * (values.ndim - 1) + [(1, 0)]), axis=-1)
    idx = np.arange(values.shape[-1])
    lo = np.maximum(idx + 1 - window, 0)
    return (c[..., idx + 1] - c[..., lo]) / (idx + 1 - lo)


def _band(ax, steps: np.ndarray, values: np.ndarray, label: str, color: str | None, main: bool) -> None:
    """Mean over seeds, with a 95% t-interval band when there are several."""
    cis = [mean_ci(values[:, j]) for j in range(values.shape[1])]
    mean = np.array([c.mean for c in cis])
    ax.plot(steps, mean, color=color, lw=1.8 if main else 0.9, ls="-" if main else "--", alpha=1 if main else 0.7,
            label=f"{label} (n={values.shape[0]})")
    if values.shape[0] > 1 and main:
        ax.fill_between(steps, [c.ci_low for c in cis], [c.ci_high for c in cis], color=color, alpha=0.18)


def _curves(logs, objectives: list[str], keys: list[tuple[str, str]], *, smooth_window: int = 1, main_only: bool = False):
    """One panel per (key, objective): every condition's mean over seeds on one axis."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(keys), len(objectives), figsize=(5.0 * len(objectives), 3.2 * len(keys)), squeeze=False)
    for i, (key, label) in enumerate(keys):
        for j, objective in enumerate(objectives):
            ax = axes[i, j]
            conditions = sorted({c for o, c in logs if o == objective},
                                key=lambda c: (c not in MAIN_CONDITIONS, MAIN_CONDITIONS.index(c) if c in MAIN_CONDITIONS else c))
            drawn = False
            for condition in conditions:
                main = condition in MAIN_CONDITIONS
                if main_only and not main:
                    continue
                series = _series(logs[(objective, condition)], key)
                if series is None:
                    continue
                steps, values = series
                _band(ax, steps, _smooth(values, smooth_window), condition, CONDITION_COLORS.get(condition), main)
                drawn = True
            ax.axhline(0, color="k", lw=0.5)
            ax.set_title(f"{objective}: {label}", fontsize=9)
            ax.set_xlabel("student step", fontsize=8)
            ax.tick_params(labelsize=7)
            if drawn:
                ax.legend(fontsize=6.5)
            else:
                ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="0.5")
    fig.tight_layout()
    return fig


def _per_seed(seeds: dict[int, list[dict]], key: str, how: str) -> dict[int, float]:
    """seed -> the last value (``how='final'``) or the mean over recorded steps (``'mean'``)."""
    out = {}
    for seed, rows in seeds.items():
        vals = [r[key] for r in rows if r.get(key) is not None]
        if vals:
            out[seed] = vals[-1] if how == "final" else float(np.mean(vals))
    return out


def _paired_diff(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """Mean and 95% t-interval of a - b over the seeds both have (the same teacher per seed)."""
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return mean_ci([a[s] - b[s] for s in common]).to_dict()


ALIGNMENT_MEASURES = (  # key, how it is summarised per seed, label, short label (table header)
    ("weight_cos", "final", "final cos(student − base, t)", "final cos(s, t)"),
    ("step_cos_teacher_dir", "mean", "mean cos(optimizer step, t) over steps", "mean cos(step, t)"),
    ("grad_cos_trait_grad", "mean", "mean cos(−gradient, −∇ trait loss)", "mean cos(−g, −∇L_trait)"),
)


def alignment_summary(logs) -> dict:
    """(objective, condition) -> {measure: {"per_seed": {...}, "ci": interval}} plus the teacher
    direction kind (and reason) the students recorded."""
    out: dict = {}
    for (objective, condition), seeds in logs.items():
        entry: dict = {"teacher_direction": next(iter(seeds.values()))[0].get("teacher_direction", "–"),  # older logs lack it
                       "no_direction_reason": next(iter(seeds.values()))[0].get("no_direction_reason")}
        for key, how, _, _ in ALIGNMENT_MEASURES:
            per_seed = _per_seed(seeds, key, how)
            if per_seed:
                entry[key] = {"per_seed": per_seed, "ci": mean_ci(list(per_seed.values())).to_dict()}
        out[(objective, condition)] = entry
    return out


def run_headline(results: dict, summary: dict, objectives: list[str]) -> list[str]:
    """The answer, per objective, as HTML list items: weight-space alignment of the shared-init
    students against the control and the mismatched-init students (paired over seeds; final
    cos(student − base, t), or the trait-gradient alignment where there is no weight direction),
    then the behaviour (P(trait) shift, from ``results['comparisons']``)."""
    items = []
    comparisons = {(c["objective"], c["a"], c["b"]): c for c in results.get("comparisons", [])}
    for objective in objectives:
        shared = summary.get((objective, "shared_init"), {})
        parts = []
        key = "weight_cos" if "weight_cos" in shared else ("grad_cos_trait_grad" if "grad_cos_trait_grad" in shared else None)
        if key:
            label = next(lab for k, _, lab, _ in ALIGNMENT_MEASURES if k == key)
            values = ", ".join(f"{c} {fmt_ci(summary[(objective, c)][key]['ci'], 3, signed=True)}" for c in MAIN_CONDITIONS
                               if key in summary.get((objective, c), {}))
            diffs = {c: _paired_diff(shared[key]["per_seed"], summary[(objective, c)][key]["per_seed"])
                     for c in ("control", "mismatched_init") if key in summary.get((objective, c), {})}
            ok = bool(diffs) and all(d is not None and d["n_seeds"] > 1 and d["ci_low"] > 0 for d in diffs.values())
            diff_text = "; ".join(f"shared − {c} {fmt_ci(d, 3, signed=True)}" for c, d in diffs.items() if d)
            weight_claim = "moved toward the teacher" if key == "weight_cos" else "gradient aligned with the trait gradient"
            parts.append(f"<b>weight space</b> ({_esc(label)}): {values}. Paired over seeds: {diff_text} → "
                         + _verdict(ok if diffs else None, f"shared-init students {weight_claim}, beyond both controls",
                                    "not distinguishable from the controls"))
            if key != "weight_cos":
                reason = shared.get("no_direction_reason")
                parts.append(f"no teacher direction in weight space: {_esc(reason)}")
        else:
            parts.append("<b>weight space</b>: no alignment recorded (record_alignment off)")
        c = comparisons.get((objective, "shared_init", "control"))
        if c:
            d = c["difference"]
            ok = c["welch_p"] < 0.05 and d["ci_low"] > 0
            m = comparisons.get((objective, "shared_init", "mismatched_init"))
            extra = (f"; vs mismatched {fmt_ci(m['difference'], signed=True)} (p = {m['welch_p']:.3g})" if m else "")
            if objective == "distill_full":  # never a green "transmitted": its targets carry the trait word itself
                verdict = _verdict(None, "", "the logit-leak comparison: its whole-vocabulary targets include the "
                                   "teacher's probability of the trait word, so a rise here is a semantic leak through "
                                   "the unembedding, not subliminal transmission"
                                   + (" (the student's P(trait) rose)" if ok else " (no significant rise)"))
            else:
                verdict = _verdict(ok, "the trait was transmitted", "no significant transmission")
            parts.append(f"<b>behaviour</b> (P(trait) shift from own base, shared − control): {fmt_ci(d, signed=True)}, "
                         f"Welch p = {c['welch_p']:.3g}{extra} → " + verdict)
        items.append(f"<li><b>{_esc(objective)}</b><ul>" + "".join(f"<li>{p}</li>" for p in parts) + "</ul></li>")
    return items


def _results_table(results: dict, summary: dict) -> str:
    rows, reasons = [], {}
    for c in results["conditions"]:
        t = c["trait_prob"]
        s = c.get("trait_prob_shift")
        a = summary.get((c["objective"], c["name"]), {}) if c["objective"] else {}
        direction = a.get("teacher_direction", "–")
        if a.get("no_direction_reason"):
            direction = f"{_esc(direction)}*"
        rows.append([_esc(c["name"]), _esc(c["objective"] or "–"), fmt_ci(t, 3), fmt_ci(s, 3, signed=True) if s else "–",
                     *(fmt_ci(a[k]["ci"], 3, signed=True) if k in a else "–" for k, _, _, _ in ALIGNMENT_MEASURES),
                     direction, str(t["n_seeds"])])
        if a.get("no_direction_reason"):
            reasons[a["no_direction_reason"]] = reasons.get(a["no_direction_reason"], []) + [f"{c['name']}/{c['objective']}"]
    headers = ["condition", "objective", "P(trait)", "shift from own base", *(short for _, _, _, short in ALIGNMENT_MEASURES),
               "direction", "seeds"]
    notes = "".join(f"<p class='caption'>* {_esc(', '.join(where))}: no teacher direction, {_esc(reason)}.</p>"
                    for reason, where in reasons.items())
    return html_table(headers, rows) + notes


def _group_heatmaps(logs, objectives: list[str]):
    """Per objective: conditions x parameter groups of (top) the mean over steps of
    cos(optimizer step, t) and (bottom) the final cos(student − base, t), mean over seeds."""
    import matplotlib.pyplot as plt

    panels = []
    for objective in objectives:
        conditions = [c for c in (*MAIN_CONDITIONS, *sorted({c for o, c in logs if o == objective} - set(MAIN_CONDITIONS)))
                      if (objective, c) in logs]
        groups = None
        grids = {"step": [], "weight": []}
        names = []
        for condition in conditions:
            seeds = logs[(objective, condition)]
            first = next(iter(seeds.values()))[0]
            if first.get("weight_cos") is None or "per_group" not in first:
                continue
            groups = groups or list(first["per_group"])
            step_means = [[np.mean([r["per_group"][g]["step_cos_teacher_dir"] for r in rows]) for g in groups]
                          for rows in seeds.values()]
            finals = [[rows[-1]["per_group"][g]["weight_cos"] for g in groups] for rows in seeds.values()]
            grids["step"].append(np.mean(step_means, 0))
            grids["weight"].append(np.mean(finals, 0))
            names.append(condition)
        if names:
            panels.append((objective, names, groups, {k: np.array(v) for k, v in grids.items()}))
    if not panels:
        return None
    n_groups = max(len(p[2]) for p in panels)
    fig, axes = plt.subplots(2, len(panels), figsize=(max(6.0, 0.75 * n_groups + 2.5) * len(panels),
                                                      2 * (0.42 * max(len(p[1]) for p in panels) + 1.6)), squeeze=False)
    for j, (objective, names, groups, grids) in enumerate(panels):
        for i, (key, title) in enumerate((("step", "mean cos(step, t) over steps"), ("weight", "final cos(student − base, t)"))):
            ax, grid = axes[i, j], grids[key]
            lim = float(np.abs(grid).max()) or 1.0
            im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
            _annotate(ax, grid, lim, "{:+.3f}")
            ax.set_xticks(range(len(groups)), groups, rotation=40, ha="right", fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
            ax.set_title(f"{objective}: {title}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def _annotate(ax, grid: np.ndarray, lim: float, fmt: str, labels: np.ndarray | None = None) -> None:
    """Write each cell's value (white on dark cells)."""
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            text = fmt.format(grid[r, c]) + (f"\n{labels[r, c]}" if labels is not None else "")
            ax.text(c, r, text, ha="center", va="center", fontsize=7,
                    color="white" if abs(grid[r, c]) > 0.6 * lim else "black")


MIN_CURVE_STEPS = 20  # fewer steps per student: per-step curves (and their smoothing) show little or nothing
MIN_CURVE_SEEDS = 2  # fewer seeds: no interval band


def training_size(train: dict) -> dict:
    """From the students' training logs: the steps each trained (per (objective, condition), the
    range over seeds) and the number of seeds."""
    steps = {key: sorted({len(rows) for rows in seeds.values()}) for key, seeds in train.items()}
    n_seeds = max((len(seeds) for seeds in train.values()), default=0)
    return {"steps": steps, "n_seeds": n_seeds,
            "min_steps": min((s[0] for s in steps.values()), default=0)}


def training_size_html(size: dict) -> str:
    """The steps each student trained, and a warning when the run is too small for its curves."""
    if not size["steps"]:
        return ""
    cells = "; ".join(f"{_esc(objective)}/{_esc(condition)} {s[0]}" + (f"-{s[-1]}" if len(s) > 1 else "")
                      for (objective, condition), s in sorted(size["steps"].items()))
    text = f"<p>Steps each student trained (range over seeds): {cells}.</p>"
    if size["min_steps"] < MIN_CURVE_STEPS or size["n_seeds"] < MIN_CURVE_SEEDS:
        steps, seeds = size["min_steps"], size["n_seeds"]
        text += (f"<p class='warning'><b>warning: this run is too small for its curves</b>: students trained "
                 f"{steps} step{'s' if steps != 1 else ''} or more over {seeds} seed{'s' if seeds != 1 else ''}; "
                 "the per-step panels below need "
                 f"at least {MIN_CURVE_STEPS} steps and {MIN_CURVE_SEEDS} seeds (for an interval band) and may be "
                 "empty or show a single point. A smoke run (--quick) checks that the loop runs, not what it "
                 "finds.</p>")
    return text


def _run_report(page: Page, results: dict) -> None:
    run_dir = page.directory
    align = student_logs(run_dir, "alignment.jsonl")
    train = student_logs(run_dir, "train_log.jsonl")
    objectives = list(dict.fromkeys(c["objective"] for c in results["conditions"] if c["objective"]))
    summary = alignment_summary(align)
    page.headline += run_headline(results, summary, objectives)
    cfg = results.get("config", {})
    page.add("Data and training size", "results.json; seed*/students/*/*/train_log.jsonl",
             f"<p>{_esc(data_size_text(results))}</p>" + training_size_html(training_size(train)))
    page.add("Results (mean over seeds, 95% t-interval)", "results.json; seed*/students/*/*/alignment.jsonl",
             _results_table(results, summary)
             + "<p class='caption'>t = teacher − base, s = student − base, g the student's gradient, L_trait the loss of "
             "answering the favourite-animal question with the trait. Alignment columns: per seed the final value or the "
             "mean over steps of the student's alignment.jsonl, then mean and t-interval over seeds. Teacher direction: "
             "shared_init "
             "(student starts at the teacher's base), transplanted (mismatched init: the teacher's update moved onto the "
             "student's base), none (no weight direction; the reason is below).</p>"
             + markdown_to_html(_comparisons_markdown(results)))
    _plot_to_page(page, "trait_by_condition", lambda path: plot_results(results, path), "P(trait) by condition",
                  "results.json")
    if align:
        steps_per_run = max(len(rows) for seeds in align.values() for rows in seeds.values())
        window = max(1, steps_per_run // 15)
        page.figure("alignment_per_step", _curves(align, objectives, [
            ("step_cos_teacher_dir", "cos(optimizer step, t)"), ("grad_cos_teacher_dir", "cos(−gradient, t)")],
            smooth_window=window, main_only=True),
            "Alignment per step: shared init, mismatched init and control on one axis",
            "seed*/students/*/*/alignment.jsonl",
            f"Running mean over {window} steps of each seed's per-step cosine, then mean over seeds with a 95% t-band. "
            "Above 0: the step points toward the teacher.")
        page.figure("weight_distance", _curves(align, objectives, [
            ("weight_cos", "cos(student − base, t)"), ("progress", "progress <s, t>/‖t‖²"),
            ("dist_to_teacher_change", "‖student − teacher‖ − ‖base − teacher‖"), ("dist_to_base", "‖student − base‖")]),
            "Weight-space distance and direction", "seed*/students/*/*/alignment.jsonl",
            "Cumulative movement s = student − base against the teacher direction t, every condition (dashed: the other "
            "controls). A negative distance change means the student is closer to the teacher than its base was.")
        heat = _group_heatmaps(align, objectives)
        if heat is not None:
            page.figure("alignment_by_group", heat, "Alignment per parameter group", "seed*/students/*/*/alignment.jsonl",
                        "Rows: conditions; columns: parameter groups. Mean over seeds.")
    if any("trait_prob" in r for seeds in train.values() for rows in seeds.values() for r in rows):
        page.figure("trait_over_steps", _curves(train, objectives, [("trait_prob", "P(trait) (held-out phrasings)")]),
                    "Trait probability over training", "seed*/students/*/*/train_log.jsonl",
                    f"Measured every {cfg.get('eval_every', '?')} steps, beside the alignment above.")
    if any(r.get("grad_cos_trait_grad") is not None for seeds in align.values() for rows in seeds.values() for r in rows):
        page.figure("trait_gradient_alignment", _curves(align, objectives, [
            ("grad_cos_trait_grad", "cos(−gradient, −∇ trait loss)")]),
            "Gradient alignment with the trait loss", "seed*/students/*/*/alignment.jsonl",
            "Recorded every 10 steps: does the student's gradient on numbers also lower the loss of answering the "
            "favourite-animal question with the trait?")
    page.add("Configuration", "run_config.json", f"<pre>{_esc(_config_text(cfg))}</pre>")


def _comparisons_markdown(results: dict) -> str:
    lines = ["| objective | comparison (P(trait) shift) | difference | 95% CI | Welch p |", "|---|---|---|---|---|"]
    for c in results.get("comparisons", []):
        d = c["difference"]
        lines.append(f"| {c['objective']} | {c['a']} − {c['b']} | {d['mean']:+.4f} | [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] "
                     f"| {c['welch_p']:.3g} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _config_text(cfg: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in cfg.items())


def _plot_to_page(page: Page, name: str, draw: Callable[[Path], None], title: str, source: str, caption: str = "") -> None:
    """Add a figure drawn by a function that saves to a path itself (written atomically)."""
    path = page.directory / FIGURES_DIR / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp.png")
    try:
        draw(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    data = base64.b64encode(path.read_bytes()).decode()
    text = f"<p class='caption'>{caption}</p>" if caption else ""
    page.add(title, source, f"{text}<img alt='{_esc(title)}' src='data:image/png;base64,{data}'/>"
                            f"<p class='src'>figure: {FIGURES_DIR}/{name}.png</p>")


# -- theorem directories -------------------------------------------------------------------------
def _theorem_report(page: Page, results: dict) -> None:
    directory = page.directory
    for init, label in (("shared_init", "shared init"), ("mismatched_init", "mismatched init")):
        by_dist = {d: e for d, e in results["single_step"].get(init, {}).items() if not d.startswith("null")}
        if not by_dist:
            continue
        all_positive = all(e["fraction_positive"]["k"] == e["fraction_positive"]["n"] for e in by_dist.values())
        detail = "; ".join(f"{_esc(d)} {fmt_ci(e['fraction_positive'])}, cos {fmt_ci(e['cos'], signed=True)}"
                           for d, e in by_dist.items())
        page.headline.append(f"<li><b>one small step from the {label}</b>: batches with a positive inner product with "
                             f"teacher − base: {detail} → "
                             + _verdict(all_positive, "positive on every batch of every input distribution",
                                        "not positive on every batch") + "</li>")
    null = results["single_step"].get("shared_init", {}).get("null_sft_base_numbers")
    if null:
        page.headline.append(f"<li>null (SFT on base numbers, no teacher in the loss): {fmt_ci(null['fraction_positive'])}, "
                             f"cos {fmt_ci(null['cos'], signed=True)}</li>")
    for e in results.get("step_size", []):
        if e["last_fraction_closer"]["k"] < e["n_runs"] or e["diverged"]:
            page.headline.append(f"<li>step size: first setting where not every run ended closer to the teacher: "
                                 f"{_esc(e['optimizer'])} lr {e['lr']:g}, closer {fmt_ci(e['last_fraction_closer'])}, "
                                 f"positive {fmt_ci(e['last_fraction_positive'])}, diverged {e['diverged']}/{e['n_runs']}</li>")
            break
    sft = results.get("sft") or {}
    if sft and all("final_weight_cos" in e and e["final_weight_cos"] for e in sft.values()):
        page.headline.append("<li>many steps of SFT on sampled text, final cos(student − base, t): " + ", ".join(
            f"{_esc(c)} {fmt_ci(e['final_weight_cos'], 3, signed=True)}" for c, e in sft.items())
            + "; mean cos(−gradient, t) over steps: " + ", ".join(
            f"{_esc(c)} {fmt_ci(e.get('grad_cos_teacher_dir_run_mean'), 4, signed=True)}" for c, e in sft.items()) + "</li>")
    batch_rows = read_jsonl(directory / BATCHES_FILE) if (directory / BATCHES_FILE).exists() else []
    sweep_rows = read_jsonl(directory / STEP_SIZE_FILE) if (directory / STEP_SIZE_FILE).exists() else []
    page.add("Summary tables", THEOREM_FILE, markdown_to_html(theorem_markdown(results)))
    sources = {"single_step": BATCHES_FILE, "layers": THEOREM_FILE, "step_size": THEOREM_FILE,
               "sft": "sft/seed*/*/alignment.jsonl (summarised in theorem.json)"}
    titles = {"single_step": "One step of imitation, every batch", "layers": "Per-layer alignment of one step (shared init)",
              "step_size": "Step size: SGD and Adam", "sft": "Many steps of SFT on sampled text"}
    if batch_rows:
        for name, fig in theorem_figures(results, batch_rows, sweep_rows).items():
            page.figure(f"theorem_{name}", fig, titles[name], sources[name])
    page.add("Configuration", "theorem_config.json", f"<pre>{_esc(_config_text(results['config']))}</pre>")


# -- MNIST directories -----------------------------------------------------------------------------
def _mnist_report(page: Page, results: dict) -> None:
    import matplotlib.pyplot as plt

    directory = page.directory
    teacher = next(c for c in results["conditions"] if c["name"] == "teacher")
    m = teacher["m"]
    at_m = {c["name"]: c for c in results["conditions"] if c["m"] == m and c["name"] != "teacher"}
    for logits in ("aux", "all"):
        shared, cross = at_m.get(f"shared_init_{logits}"), at_m.get(f"cross_init_{logits}")
        if not shared or not cross:
            continue
        diff = mean_ci(np.subtract(shared["per_model_accuracy"], cross["per_model_accuracy"]).tolist()).to_dict("n_models")
        ok = diff["ci_low"] > 0
        cos = shared.get("alignment", {}).get("final_weight", {}).get("cosine")
        page.headline.append(
            f"<li><b>m = {m}, distilled on {logits} logits</b>: shared-init accuracy {fmt_ci(shared['accuracy'], 3)} vs "
            f"cross-init {fmt_ci(cross['accuracy'], 3)} (chance 0.1); paired difference {fmt_ci(diff, 3, signed=True)} → "
            + _verdict(ok, "the shared init beats the cross init", "no advantage for the shared init")
            + (f"; final cos(student − init, t) {fmt_ci(cos, 3, signed=True)}" if cos else "") + "</li>")
    page.add("Results", "results.json", markdown_to_html(mnist_markdown(results)))
    _plot_to_page(page, "mnist_accuracy_vs_m", lambda p: plot_accuracy(results, p, plt), "Accuracy against m",
                  "results.json")
    if (directory / MNIST_ALIGNMENT_FILE).exists():
        rows = read_jsonl(directory / MNIST_ALIGNMENT_FILE)
        _plot_to_page(page, "mnist_alignment", lambda p: plot_alignment(rows, m, p, plt), "Alignment over training",
                      MNIST_ALIGNMENT_FILE)
        groups = [g for g in next(iter(at_m.values()))["alignment"]["final_cosine_by_group"] if g != "total"] if at_m else []
        if groups:
            names = list(at_m)
            grid = np.array([[at_m[n]["alignment"]["final_cosine_by_group"][g]["mean"] for g in groups] for n in names])
            fig, ax = plt.subplots(figsize=(1.2 * len(groups) + 3, 0.45 * len(names) + 1.6))
            lim = float(np.abs(grid).max()) or 1.0
            im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
            _annotate(ax, grid, lim, "{:+.3f}")
            ax.set_xticks(range(len(groups)), groups, fontsize=8)
            ax.set_yticks(range(len(names)), names, fontsize=8)
            ax.set_title(f"final cos(student − init, t) per layer, m = {m} (mean over models)", fontsize=9)
            fig.colorbar(im, ax=ax)
            fig.tight_layout()
            page.figure("mnist_alignment_by_layer", fig, "Alignment per layer", "results.json")


# -- pluggable sections -------------------------------------------------------------------------------
def extra_sections(directory: Path, providers: list[tuple[str, str]] | None = None) -> list[Section]:
    """Sections from :data:`SECTION_PROVIDERS` whose subdirectory exists under ``directory``."""
    out = []
    for subdirectory, spec in (SECTION_PROVIDERS if providers is None else providers):
        sub = directory / subdirectory
        if not sub.is_dir():
            continue
        module_name, _, function = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):  # the provider is not installed: skip it
                continue
            raise
        try:
            for title, source, fragment in getattr(module, function)(sub):
                out.append(Section(str(title), str(source), str(fragment)))
        except Exception:  # one broken section must not lose the rest of the report
            out.append(Section(f"{subdirectory}: section failed", spec,
                               f"<pre class='error'>{_esc(traceback.format_exc())}</pre>"))
    return out


# -- the page ---------------------------------------------------------------------------------------
REPORT_KINDS = ("run", "theorem", "mnist")


def report_kinds(directory: Path) -> list[str]:
    """Which kinds of results ``directory`` holds (see the module docstring)."""
    kinds = []
    if (directory / "results.json").exists():
        results = read_json(directory / "results.json")
        if "comparisons" in results:
            kinds.append("run")
        elif "init_accuracy" in results:
            kinds.append("mnist")
    if (directory / "theorem.json").exists():
        kinds.append("theorem")
    return kinds


STYLE = """body{font-family:system-ui,-apple-system,sans-serif;max-width:1180px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.answer{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.6em 1.2em}
.answer li{margin:.3em 0}table{border-collapse:collapse;font-size:.78em;margin:.6em 0}
td,th{border:1px solid #ccc;padding:2px 5px;text-align:right}td{white-space:nowrap}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.yes{color:#066b1d;font-weight:bold}.no{color:#a33c00;font-weight:bold}.na{color:#777}
.src{color:#777;font-size:.8em;margin:.2em 0}.caption{color:#444;font-size:.88em}.warning{color:#a33}img{max-width:100%}
pre{background:#f6f8fa;padding:.6em;font-size:.8em;overflow-x:auto}.error{color:#a00}nav a{margin-right:.8em;font-size:.85em}"""


def make_report(directory: str | Path) -> Path:
    """Write ``report.html`` and the PNGs it embeds (``figures/``) into ``directory``; returns the
    HTML path. ``directory`` is a run, theorem-check or MNIST directory."""
    import matplotlib

    matplotlib.use("Agg")
    directory = Path(directory)
    kinds = report_kinds(directory)
    if not kinds:
        raise FileNotFoundError(f"{directory} has no results.json (written by `interp run` or `interp mnist`) and no "
                                "theorem.json (written by `interp theorem`): nothing to report")
    page = Page(directory)
    titles = []
    for kind in kinds:
        if kind == "run":
            results = read_json(directory / "results.json")
            titles.append(f"Subliminal learning: trait <code>{_esc(results['trait'])}</code>")
            _run_report(page, results)
        elif kind == "theorem":
            results = read_json(directory / "theorem.json")
            titles.append(f"The theorem, checked: trait <code>{_esc(results['trait'])}</code>")
            _theorem_report(page, results)
        else:
            titles.append("MNIST auxiliary-logit experiment")
            _mnist_report(page, read_json(directory / "results.json"))
    page.sections += extra_sections(directory)
    question = {"run": "Did the shared-init student move toward the teacher?",
                "theorem": "Does one small step of imitation from the shared init point toward the teacher?",
                "mnist": "Did the shared-init student learn what the teacher knows?"}[kinds[0]]
    nav = "".join(f"<a href='#s{i}'>{_esc(s.title)}</a>" for i, s in enumerate(page.sections))
    body = "".join(f"<h2 id='s{i}'>{_esc(s.title)}</h2><p class='src'>from {_esc(s.source)}</p>{s.html}"
                   for i, s in enumerate(page.sections))
    text = f"""<!doctype html><html><head><meta charset='utf-8'><title>interp report: {_esc(directory)}</title>
<style>{STYLE}</style></head><body><h1>{' · '.join(titles)}</h1><p class='src'>{_esc(directory.resolve())}</p>
<div class='answer'><h2 style='border:0;margin-top:.3em'>{_esc(question)}</h2><ul>{''.join(page.headline)}</ul></div>
<nav>{nav}</nav>{body}</body></html>"""
    atomic_write_text(directory / REPORT_FILE, text)
    return directory / REPORT_FILE
