"""``interp report DIR``: a self-contained HTML page (plots embedded as PNG data, no network) and
PNG files from a run directory written by ``interp run``.

The page leads with the answer (did the shared-init student move toward the teacher, against
its controls?), then shows the results table with 95% intervals, the bar plot, the trait
probability over training steps per condition, and, where the students recorded them,
gradient alignment and weight-distance curves and a per-layer alignment heatmap. Every figure
names the file it was computed from.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from interp.io import atomic_write_bytes, atomic_write_text, read_json, read_jsonl

REPORT_FILE = "report.html"


def _fig_to_png(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode()


def _student_logs(run_dir: Path, filename: str) -> dict[tuple[str, str], list[list[dict]]]:
    """(objective, condition) -> one list of log rows per seed, for every student that has ``filename``."""
    out: dict[tuple[str, str], list[list[dict]]] = {}
    for path in sorted(run_dir.glob(f"seed*/students/*/*/{filename}")):
        condition, objective = path.parent.name, path.parent.parent.name
        out.setdefault((objective, condition), []).append(read_jsonl(path))
    return out


def _curves_figure(logs, key: str, ylabel: str, title: str):
    import matplotlib.pyplot as plt

    objectives = sorted({o for o, _ in logs})
    fig, axes = plt.subplots(1, len(objectives), figsize=(5 * len(objectives), 3.6), squeeze=False)
    for ax, obj in zip(axes[0], objectives):
        for (o, condition), seeds in sorted(logs.items()):
            if o != obj:
                continue
            series = [[(r["step"], r[key]) for r in rows if key in r] for rows in seeds]
            series = [s for s in series if s]
            if not series:
                continue
            n = min(len(s) for s in series)
            steps = np.array([p[0] for p in series[0][:n]])
            vals = np.array([[p[1] for p in s[:n]] for s in series])
            mean = vals.mean(0)
            line, = ax.plot(steps, mean, label=condition, lw=1.5 if condition in ("shared_init", "mismatched_init", "control") else 0.8)
            if len(series) > 1:
                sem = vals.std(0, ddof=1) / np.sqrt(len(series))
                ax.fill_between(steps, mean - 1.96 * sem, mean + 1.96 * sem, color=line.get_color(), alpha=0.15)
        ax.set_title(f"{title} ({obj})", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _headline(results: dict) -> str:
    parts = []
    for c in results.get("comparisons", []):
        d = c["difference"]
        significant = c["welch_p"] < 0.05 and d["ci_low"] > 0
        parts.append(f"<li><b>{html.escape(c['objective'])}</b>: {c['a']} − {c['b']} = {d['mean']:+.4f} "
                     f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], Welch p = {c['welch_p']:.3g} "
                     f"→ <span class='{'yes' if significant else 'no'}'>"
                     f"{'moved toward the teacher' if significant else 'no significant difference'}</span></li>")
    return "<ul>" + "".join(parts) + "</ul>"


def _table(results: dict) -> str:
    rows = ["<tr><th>condition</th><th>objective</th><th>P(trait)</th><th>95% CI</th><th>n seeds</th></tr>"]
    for c in results["conditions"]:
        t = c["trait_prob"]
        rows.append(f"<tr><td>{c['name']}</td><td>{c['objective'] or '–'}</td><td>{t['mean']:.4f}</td>"
                    f"<td>[{t['ci_low']:.4f}, {t['ci_high']:.4f}]</td><td>{t['n_seeds']}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def make_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and the PNGs it embeds into ``run_dir``; returns the HTML path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not (run_dir / "results.json").exists():
        raise FileNotFoundError(f"{run_dir} has no results.json: run `interp run --out {run_dir}` first")
    results = read_json(run_dir / "results.json")
    figures_dir = run_dir / "figures"
    figures_dir.mkdir(exist_ok=True)
    sections = []

    from interp.run import plot_results

    plot_results(results, figures_dir / "trait_by_condition.png")
    img = base64.b64encode((figures_dir / "trait_by_condition.png").read_bytes()).decode()
    sections.append(("P(trait) by condition", "results.json", img))

    train_logs = _student_logs(run_dir, "train_log.jsonl")
    if any("trait_prob" in r for seeds in train_logs.values() for rows in seeds for r in rows):
        fig = _curves_figure(train_logs, "trait_prob", "P(trait)", "trait probability over steps")
        sections.append(("Trait probability over training", "seed*/students/*/*/train_log.jsonl",
                         _fig_to_png(fig, figures_dir / "trait_over_steps.png")))
        plt.close(fig)

    align_logs = _student_logs(run_dir, "alignment.jsonl")
    for key, label in (("grad_cos_teacher_dir", "cos(−gradient, teacher − base)"),
                       ("step_cos_teacher_dir", "cos(optimizer step, teacher − base)"),
                       ("weight_cos", "cos(student − base, teacher − base)"),
                       ("dist_to_teacher", "‖student − teacher‖")):
        if any(key in r for seeds in align_logs.values() for rows in seeds for r in rows):
            fig = _curves_figure(align_logs, key, label, label)
            sections.append((label, "seed*/students/*/*/alignment.jsonl", _fig_to_png(fig, figures_dir / f"{key}.png")))
            plt.close(fig)

    body = "".join(f"<h2>{html.escape(title)}</h2><p class='src'>from {html.escape(src)}</p>"
                   f"<img src='data:image/png;base64,{data}'/>" for title, src, data in sections)
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>interp report: {html.escape(str(run_dir))}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
.yes{{color:#070;font-weight:bold}}.no{{color:#a40}}.src{{color:#777;font-size:80%}}img{{max-width:100%}}</style></head>
<body><h1>Subliminal learning: trait <code>{html.escape(results['trait'])}</code></h1>
<h2>Did the shared-init student move toward the teacher?</h2>{_headline(results)}
<h2>Results (mean over seeds, 95% t-interval)</h2>{_table(results)}{body}
<p class='src'>config: {html.escape(str(results.get('config')))}</p></body></html>"""
    atomic_write_text(run_dir / REPORT_FILE, page)
    return run_dir / REPORT_FILE
