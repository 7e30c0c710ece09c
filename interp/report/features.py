"""Figures of ``interp features`` and the HTML sections for ``interp report``.

:func:`write_figures` draws every PNG from the findings (``features.json``) and the score files
next to it; :func:`report_sections` returns ``(title, source file, html fragment)`` per figure,
with the PNG embedded as a base64 data URI, for the run report; :func:`write_report` writes the
same sections as a standalone ``features.html``.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from interp.core.io import atomic_path, atomic_write_text, read_json
from interp.report.feature_views import VIEW_CSS, circuitsvis_bundle, circuitsvis_tokens_multi, dashboard_card, token_heatmap

FIGURES = {
    "sae_quality": "sae_quality.png",
    "trait_features": "trait_feature_selectivity.png",
    "attribution_heatmap": "number_feature_attribution.png",
    "top_numbers": "top_linked_numbers.png",
    "subliminal": "subliminal_prompting.png",
    "subliminal_per_animal": "subliminal_prompting_per_animal.png",
    "cross_base": "cross_base_overlap.png",
    "teacher_numbers": "teacher_number_features.png",
    "student_shift": "student_feature_shift.png",
    "attribution_totals": "trait_attribution_by_hook.png",
    "attribution_students": "trait_attribution_students.png",
}
REPORT_FILE = "features.html"
TOP_SHOWN = 8


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    _plt().close(fig)


def _err(entries: list[dict]) -> np.ndarray:
    return np.array([[e["mean"] - e["ci_low"], e["ci_high"] - e["mean"]] for e in entries]).T


# -- figures -----------------------------------------------------------------------------------

def _sae_quality(f: dict, path: Path) -> None:
    plt = _plt()
    rows = f["sae_quality"]
    cols = ["base", "hook", "kind", "fvu", "l0", "dead_fraction", "ce_clean", "ce_spliced", "ce_mean_ablated", "ce_recovered"]
    cells = [[r[c] if isinstance(r[c], str) else f"{r[c]:.4g}" for c in cols] for r in rows]
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(rows) + 1.2))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=cols, loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(cols))))  # long hook names must not spill into the next cell
    table.scale(1, 1.3)
    ax.set_title("SAE quality on held-out corpus activations (fvu: fraction of variance unexplained; ce: next-token loss)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _trait_features(f: dict, path: Path) -> None:
    plt = _plt()
    animals = f["animals"]
    combos = [(b, h, k) for b, tf in f["trait_features"].items() for h, d in tf.items() for k in d]
    labels = [f"{b} {h.split('.hook_')[0]} {k}" for b, h, k in combos]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(max(12, 0.7 * len(animals) + 8), 4), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(combos)
    for i, (b, h, k) in enumerate(combos):
        vals = [f["trait_features"][b][h][k]["top"][a][0]["auroc_heldout_mean"] for a in animals]
        ax.bar(np.arange(len(animals)) + (i - (len(combos) - 1) / 2) * width, vals, width, label=labels[i])
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_ylim(0.4, 1.02)
    ax.set_xticks(np.arange(len(animals)), animals, rotation=30)
    ax.set_ylabel("held-out AUROC (animal vs others)")
    ax.set_title("Top-ranked trait feature per animal (mean AUROC over persona, word, answer)", fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    kinds = list(next(iter(f["trait_features"][combos[0][0]][combos[0][1]].values()))["best_by_kind_auroc_heldout"])
    for i, (b, h, k) in enumerate(combos):
        es = [f["trait_features"][b][h][k]["best_by_kind_auroc_heldout"][c] for c in kinds]
        ax2.bar(np.arange(len(kinds)) + (i - (len(combos) - 1) / 2) * width, [e["mean"] for e in es], width, yerr=_err(es),
                capsize=1.5)
    ax2.axhline(0.5, color="k", lw=0.8, ls="--")
    ax2.set_ylim(0.4, 1.02)
    ax2.set_xticks(np.arange(len(kinds)), kinds)
    ax2.set_title("Best feature of one context kind (mean over animals, 95% CI)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _attribution_heatmap(f: dict, directory: Path, path: Path) -> None:
    plt = _plt()
    base = f["bases"][0]["name"]
    links = read_json(directory / f["number_links"][base]["file"])
    animals = links["animals"]
    scores = np.array([links["scores"]["feature_attribution"][a] for a in animals])  # animal number
    rows: list[int] = []
    for j in range(len(animals)):
        for n in np.argsort(-scores[j])[:3]:
            if int(n) not in rows:
                rows.append(int(n))
    mat = scores[:, rows].T  # number animal
    lim = float(np.abs(mat).max()) or 1.0
    fig, ax = plt.subplots(figsize=(0.55 * len(animals) + 3, 0.22 * len(rows) + 1.8))
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(np.arange(len(animals)), [f"{a}\nf{links['trait_feature'][a]}" for a in animals], fontsize=7)
    ax.set_yticks(np.arange(len(rows)), [str(n) for n in rows], fontsize=7)
    ax.set_xlabel(f"top trait feature of each animal ({links['kind']} SAE, {links['primary_hook']})")
    ax.set_ylabel("number token")
    ax.set_title(f"{base}: gradient x activation from a number to each trait feature, relative to the other animals' "
                 "features (top 3 numbers per feature)", fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.6)
    fig.tight_layout()
    _save(fig, path)


def _top_numbers(f: dict, directory: Path, path: Path) -> None:
    plt = _plt()
    animals = f["animals"]
    names = [b["name"] for b in f["bases"]]
    first = read_json(directory / f["number_links"][names[0]]["file"])
    second = read_json(directory / f["number_links"][names[1]]["file"]) if len(names) > 1 else None
    method = "feature_attribution"
    ncols = 4
    nrows = int(np.ceil(len(animals) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.3 * nrows), squeeze=False)
    for ax, a in zip(axes.flat, animals):
        s = np.array(first["scores"][method][a])
        top = np.argsort(-s)[:TOP_SHOWN]
        other = set(np.argsort(-np.array(second["scores"][method][a]))[:TOP_SHOWN].tolist()) if second else set()
        colors = ["tab:orange" if n in other else "tab:blue" for n in top]
        ax.barh(np.arange(len(top))[::-1], s[top], color=colors)
        ax.set_yticks(np.arange(len(top))[::-1], [str(n) for n in top], fontsize=7)
        ax.set_title(a, fontsize=9)
        ax.tick_params(axis="x", labelsize=6)
    for ax in list(axes.flat)[len(animals):]:
        ax.axis("off")
    note = f" (orange: also in {names[1]}'s top {TOP_SHOWN})" if second else ""
    fig.suptitle(f"{names[0]}: numbers most linked to each animal's trait feature (feature_attribution, relative to the other "
                 f"animals){note}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _subliminal(f: dict, path: Path) -> None:
    plt = _plt()
    sp = f["subliminal_prompting"]
    formats = list(dict.fromkeys(e["format"] for e in sp["entries"]))
    targets = list(dict.fromkeys(e["target_base"] for e in sp["entries"]))
    methods = list(dict.fromkeys(e["method"] for e in sp["entries"]))
    fig, axes = plt.subplots(len(formats), len(targets), figsize=(4.5 * len(targets), 3.2 * len(formats)), squeeze=False)
    for i, fmt in enumerate(formats):
        for j, t in enumerate(targets):
            ax = axes[i][j]
            bars = ((True, "effect_over_animals", "linked - random (picked on this base)"),
                    (False, "effect_over_animals", "linked - random (picked on the other base)"),
                    (True, "specificity_over_animals", "own - other animals' numbers (this base)"))
            for k, (same, key, label) in enumerate(bars):
                es = [next((e for e in sp["entries"] if e["format"] == fmt and e["target_base"] == t and e["method"] == m
                            and e["same_base"] == same), None) for m in methods]
                if any(e is None for e in es):
                    continue
                eff = [e[key] for e in es]
                ax.bar(np.arange(len(methods)) + (k - 1) * 0.27, [e["mean"] for e in eff], 0.27, yerr=_err(eff), capsize=2,
                       label=label)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xticks(np.arange(len(methods)), [m.replace("_", "\n") for m in methods], fontsize=7)
            ax.set_title(f"{t}, prompt: {fmt}", fontsize=9)
            ax.set_ylabel("difference in P(animal)", fontsize=8)
            ax.legend(fontsize=6)
    fig.suptitle(f"Subliminal prompting: {sp['k']} linked vs random numbers in the prompt (mean over animals, 95% CI)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _subliminal_per_animal(f: dict, path: Path) -> None:
    plt = _plt()
    sp = f["subliminal_prompting"]
    animals = f["animals"]
    entries = [e for e in sp["entries"] if e["same_base"] and e["method"] == "feature_attribution"]
    if not entries:
        entries = [e for e in sp["entries"] if e["same_base"]][:4]
    fig, ax = plt.subplots(figsize=(max(8, 0.8 * len(animals) + 3), 3.8))
    width = 0.8 / len(entries)
    for i, e in enumerate(entries):
        eff = [e["per_animal"][a]["effect"] for a in animals]
        ax.bar(np.arange(len(animals)) + (i - (len(entries) - 1) / 2) * width, [x["mean"] for x in eff], width, yerr=_err(eff),
               capsize=2, label=f"{e['target_base']}, {e['format']}, {e['method']}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(animals)), animals, rotation=30)
    ax.set_ylabel("P(animal): linked - random")
    ax.set_title("Subliminal prompting per animal (numbers picked on the same base; 95% CI over replicates)", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)


def _cross_base(f: dict, path: Path) -> None:
    plt = _plt()
    cb = f["cross_base"]
    pair = cb["pairs"][0]
    methods = list(pair["numbers"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (key_across, key_within, label) in zip(axes, (
            ("jaccard_across_bases", "jaccard_within_base", f"Jaccard of the top-{cb['k']} linked numbers"),
            ("spearman_across_bases", "spearman_within_base_split_half", "Spearman over all 1000 numbers"))):
        for k, (key, name) in enumerate(((key_within, "within a base (replicate vs replicate)"), (key_across, "across bases"))):
            vals = [pair["numbers"][m].get(key) for m in methods]
            xs = [i for i, v in enumerate(vals) if v]
            if not xs:
                continue
            es = [vals[i] for i in xs]
            ax.bar(np.array(xs) + (k - 0.5) * 0.38, [e["mean"] for e in es], 0.38, yerr=_err(es), capsize=3, label=name)
        if key_across.startswith("jaccard"):
            ax.axhline(cb["random_jaccard"], color="k", ls="--", lw=0.8, label="random sets")
        else:
            ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(methods)), [m.replace("_", "\n") for m in methods], fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(f"Linked numbers: {pair['bases'][0]} vs {pair['bases'][1]} (mean over animals, 95% CI)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _teacher_numbers(f: dict, path: Path) -> None:
    plt = _plt()
    tn = f["teacher_numbers"]
    animals, trait = f["animals"], tn["trait"]
    readers = list(tn["readers"])
    hooks = list(next(iter(tn["readers"].values())))
    fig, axes = plt.subplots(len(hooks), len(readers), figsize=(5 * len(readers), 2.8 * len(hooks)), squeeze=False)
    for i, h in enumerate(hooks):
        for j, r in enumerate(readers):
            ax = axes[i][j]
            eff = [tn["readers"][r][h]["shift"][a] for a in animals]
            colors = ["tab:red" if a == trait else "tab:gray" for a in animals]
            ax.bar(np.arange(len(animals)), [e["mean"] for e in eff], yerr=_err(eff), capsize=2, color=colors)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xticks(np.arange(len(animals)), animals, rotation=40, fontsize=7)
            ax.set_title(f"read by {r}, {h}", fontsize=8)
            ax.set_ylabel("teacher - base", fontsize=8)
    fig.suptitle(f"Trait-feature activation at number positions: teacher ({trait}) vs base generations (95% CI over seeds)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _student_shift(f: dict, path: Path) -> None:
    plt = _plt()
    ss = f["student_shift"]
    summary = ss["summary"]
    hook = f["config"]["primary_hook"]
    metrics = ["trait_feature_shift", "persona_projection", "teacher_projection"]
    probes = list(dict.fromkeys(s["probe"] for s in summary))
    objectives = list(dict.fromkeys(s["objective"] for s in summary))
    conditions = [c for c in ("control", "shared_init", "mismatched_init", "shuffled_within", "shuffled_across")
                  if any(s["condition"] == c for s in summary)]
    fig, axes = plt.subplots(len(probes), len(metrics), figsize=(4.4 * len(metrics), 3.2 * len(probes)), squeeze=False)
    width = 0.8 / max(1, len(objectives))
    for i, p in enumerate(probes):
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            for k, o in enumerate(objectives):
                es = [next((s for s in summary if s["probe"] == p and s["metric"] == m and s["objective"] == o
                            and s["condition"] == c and s["hook"] == hook), None) for c in conditions]
                xs = [x for x, e in enumerate(es) if e]
                if not xs:
                    continue
                es = [es[x] for x in xs]
                ax.bar(np.array(xs) + (k - (len(objectives) - 1) / 2) * width, [e["mean"] for e in es], width, yerr=_err(es),
                       capsize=2, label=o)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xticks(np.arange(len(conditions)), [c.replace("_", "\n") for c in conditions], fontsize=7)
            ax.set_title(f"{m} ({p} prompts)", fontsize=8)
            ax.legend(fontsize=6)
    fig.suptitle(f"Students' SAE-feature shift from their own base ({hook}; 95% CI over seeds)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def write_figures(directory: str | Path, findings: dict) -> dict[str, str]:
    """Draw every figure the findings support into ``directory``; returns key -> file name."""
    directory = Path(directory)
    drawn = {}
    plan = [("sae_quality", lambda p: _sae_quality(findings, p))]
    if findings.get("trait_features"):
        plan += [("trait_features", lambda p: _trait_features(findings, p)),
                 ("attribution_heatmap", lambda p: _attribution_heatmap(findings, directory, p)),
                 ("top_numbers", lambda p: _top_numbers(findings, directory, p)),
                 ("subliminal", lambda p: _subliminal(findings, p)),
                 ("subliminal_per_animal", lambda p: _subliminal_per_animal(findings, p))]
    if findings.get("cross_base"):
        plan.append(("cross_base", lambda p: _cross_base(findings, p)))
    if findings.get("teacher_numbers"):
        plan.append(("teacher_numbers", lambda p: _teacher_numbers(findings, p)))
    if findings.get("student_shift"):
        plan.append(("student_shift", lambda p: _student_shift(findings, p)))
    if findings.get("attribution"):
        plan.append(("attribution_totals", lambda p: _attribution_totals(findings, p)))
        if findings["attribution"].get("comparisons"):
            plan.append(("attribution_students", lambda p: _attribution_students(findings, p)))
    for key, draw in plan:
        draw(directory / FIGURES[key])
        drawn[key] = FIGURES[key]
    return drawn


# -- HTML --------------------------------------------------------------------------------------

def _ci(e: dict | None, fmt: str = "+.4f") -> str:
    if not e:
        return "–"
    return f"{e['mean']:{fmt}} [{e['ci_low']:{fmt}}, {e['ci_high']:{fmt}}]"


def _img(directory: Path, name: str) -> str:
    data = base64.b64encode((directory / name).read_bytes()).decode()
    return f"<img src='data:image/png;base64,{data}' style='max-width:100%'/>"


def _quality_table(f: dict) -> str:
    cols = ["base", "hook", "kind", "fvu", "l0", "dead_fraction", "ce_clean", "ce_spliced", "ce_recovered"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r[c]) if isinstance(r[c], str) else f'{r[c]:.4g}'}</td>" for c in cols)
                   + "</tr>" for r in f["sae_quality"])
    return f"<table><tr>{head}</tr>{body}</table>"


def _text_sections(f: dict) -> dict[str, str]:
    """A short reading of each figure, with the numbers it rests on."""
    trait = f["trait"]
    out = {"sae_quality": "<p>TopK and L1 SAEs trained with sae-lens on the residual stream of each base; fraction of variance "
                          "unexplained, L0 and next-token loss with the reconstruction spliced in, on held-out corpus documents.</p>"
                          + _quality_table(f)}
    if f.get("attribution"):
        out.update(_attribution_texts(f))
    if not f.get("trait_features"):  # an attribution-only analysis
        return out
    parts = []
    for b, tf in f["trait_features"].items():
        for h, d in tf.items():
            for k, v in d.items():
                by_kind = "; ".join(f"{c} {_ci(e, '.3f')}" for c, e in v["best_by_kind_auroc_heldout"].items())
                parts.append(f"<li>{html.escape(b)} {html.escape(h)} {k}: top feature {_ci(v['top1_auroc_heldout'], '.3f')}; "
                             f"best feature of one context kind: {by_kind}</li>")
    out["trait_features"] = ("<p>Held-out AUROC (animal vs the other animals, mean over animals, 95% CI) of each animal's "
                             "top-ranked feature, averaged over the three context kinds, and of the best feature of each "
                             "kind alone:</p><ul>" + "".join(parts) + "</ul>")
    sp = f["subliminal_prompting"]
    rows = "".join(f"<tr><td>{e['target_base']}</td><td>{e['selected_on']}</td><td>{e['method']}</td><td>{e['format']}</td>"
                   f"<td>{_ci(e['effect_over_animals'])}</td><td>{_ci(e['specificity_over_animals'])}</td>"
                   f"<td>{_ci(e['ratio_linked_to_random'], '.3f')}</td>"
                   f"<td>{e['n_animals_positive']}/{len(e['per_animal'])}</td></tr>" for e in sp["entries"])
    out["subliminal"] = ("<p>P(animal) with the linked numbers in the prompt minus with random numbers, over the held-out "
                         "phrasings; mean over animals of the per-animal mean over replicates, 95% CI over animals. "
                         "Specificity: P(animal) with its own linked numbers minus with the other animals' linked numbers.</p>"
                         "<table><tr><th>base prompted</th><th>numbers picked on</th><th>method</th><th>format</th>"
                         f"<th>effect (linked − random)</th><th>specificity (own − other animals' numbers)</th>"
                         f"<th>linked/random</th><th>animals &gt; 0</th></tr>{rows}</table>")
    if f.get("cross_base"):
        pair = f["cross_base"]["pairs"][0]
        rows = "".join(f"<tr><td>{m}</td><td>{_ci(v.get('jaccard_within_base'), '.3f')}</td><td>{_ci(v['jaccard_across_bases'], '.3f')}</td>"
                       f"<td>{_ci(v.get('spearman_within_base_split_half'), '.3f')}</td><td>{_ci(v['spearman_across_bases'], '.3f')}</td></tr>"
                       for m, v in pair["numbers"].items())
        feats = "".join(f"<li>{html.escape(k)}: RSA Spearman {v['animal_similarity_rsa_spearman']:.3f}</li>" for k, v in pair["features"].items())
        out["cross_base"] = (f"<p>{pair['bases'][0]} vs {pair['bases'][1]}; random top-{f['cross_base']['k']} sets have Jaccard "
                             f"{f['cross_base']['random_jaccard']:.4f}.</p><table><tr><th>method</th><th>Jaccard within</th>"
                             f"<th>Jaccard across</th><th>Spearman within</th><th>Spearman across</th></tr>{rows}</table>"
                             f"<p>Similarity structure of the animals' trait-feature decoder directions across bases:</p><ul>{feats}</ul>")
    tn = f["teacher_numbers"]
    items = "".join(f"<li>read by {html.escape(r)} at {html.escape(h)}: trait {_ci(v['shift'].get(trait))}, trait minus other animals "
                    f"{_ci(v['trait_minus_other_animals'])}</li>" for r, d in tn["readers"].items() for h, v in d.items())
    freq = "".join(f"<li>{html.escape(b)}: " + ", ".join(f"{m} {_ci(e, '+.3f')}" for m, e in d.items()) + "</li>"
                   for b, d in tn.get("frequency_links", {}).items())
    out["teacher_numbers"] = (f"<p>Mean activation of the {trait} trait features at number positions, teacher generations minus base "
                              f"generations (data: {html.escape(', '.join(tn['sources']))}):</p><ul>{items}</ul>"
                              f"<p>Spearman between each number's log frequency ratio (teacher / base) and its link to {trait}:</p><ul>{freq}</ul>")
    if f.get("student_shift"):
        rows = "".join(f"<tr><td>{c['objective']}</td><td>{c['probe']}</td><td>{c['hook']}</td><td>{c['metric']}</td>"
                       f"<td>{c['a']} − {c['b']}</td><td>{_ci(c['difference'])}</td><td>{c['welch_p']:.3g}</td></tr>"
                       for c in f["student_shift"]["comparisons"] if c["hook"] == f["config"]["primary_hook"])
        out["student_shift"] = ("<p>Student minus own base in SAE-feature activation; a mismatched student is read with its own "
                                "base's SAE and trait features. teacher_projection exists only where the base is the teacher's.</p>"
                                "<table><tr><th>objective</th><th>probe</th><th>hook</th><th>metric</th><th>comparison</th>"
                                f"<th>difference</th><th>Welch p</th></tr>{rows}</table>")
    return out


SECTION_TITLES = {
    "sae_quality": "SAE quality",
    "trait_features": "Trait features",
    "attribution_heatmap": "Numbers x trait features: gradient x activation",
    "top_numbers": "Top linked numbers per animal",
    "subliminal": "Subliminal prompting",
    "subliminal_per_animal": "Subliminal prompting per animal",
    "cross_base": "Shared vs mismatched: linked numbers across bases",
    "teacher_numbers": "Trait features at the teacher's numbers",
    "student_shift": "Students' trait-feature shift per condition",
}
SECTION_TITLES.update({
    "attribution_totals": "Trait attribution through SAE features, per hook",
    "attribution_students": "Shared vs mismatched: features whose attribution moves in the students",
    "attribution_positions": "The teacher's numbers, position by position",
    "attribution_dashboards": "Feature dashboards",
})
SECTION_SOURCES = {"attribution_heatmap": "number_links/*.json", "top_numbers": "number_links/*.json",
                   "attribution_totals": "features.json (attribution), attribution/models.json",
                   "attribution_students": "features.json (attribution.comparisons), attribution/models.json",
                   "attribution_positions": "attribution/position_maps.json", "attribution_dashboards": "attribution/dashboards.json"}


def report_sections(directory: str | Path) -> list[tuple[str, str, str]]:
    """``(title, source file name, html fragment)`` for every figure of a finished ``interp
    features`` directory; images are embedded as base64 data URIs, so the fragments are
    self-contained."""
    directory = Path(directory)
    path = directory / "features.json"
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no features.json: run `interp features --out {directory}` first")
    findings = read_json(path)
    texts = _text_sections(findings)
    sections = []
    for key, name in findings.get("figures", {}).items():
        if not (directory / name).exists():
            continue
        sections.append((SECTION_TITLES[key], SECTION_SOURCES.get(key, "features.json"),
                         texts.get(key, "") + _img(directory, name)))
    if findings.get("attribution"):
        sections += _attribution_html_sections(directory, findings)
    return sections


def write_report(directory: str | Path) -> Path:
    """A standalone ``features.html`` with every section (no network needed)."""
    directory = Path(directory)
    findings = read_json(directory / "features.json")
    body = "".join(f"<h2>{html.escape(t)}</h2><p class='src'>from {html.escape(s)}</p>{h}" for t, s, h in report_sections(directory))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>interp features: {html.escape(str(directory))}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
            "table{border-collapse:collapse;font-size:85%}td,th{border:1px solid #ccc;padding:2px 6px}"
            f".src{{color:#777;font-size:80%}}{VIEW_CSS}</style></head>"
            f"<body><h1>SAE features linking numbers to <code>{html.escape(findings['trait'])}</code></h1>{body}</body></html>")
    atomic_write_text(directory / REPORT_FILE, page)
    return directory / REPORT_FILE


# -- attribution through SAE features ------------------------------------------------------------

def _short(hook: str) -> str:
    return hook.replace("blocks.", "b").replace(".hook_", ".")


def _attribution_totals(f: dict, path: Path) -> None:
    plt = _plt()
    att = f["attribution"]
    names = list(att["bases"])
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(5.5 + 4.2 * len(names), 3.9), squeeze=False)
    ax = axes[0][0]
    width = 0.8 / (2 * len(names))
    for i, b in enumerate(names):
        hooks = list(att["bases"][b]["totals"])
        t = att["bases"][b]["totals"]
        xs = np.arange(len(hooks))
        feats = [t[h]["attribution_sum"] - t[h]["error"] for h in hooks]
        ax.bar(xs + (2 * i - len(names) + 0.5) * width, feats, width, label=f"{b}: SAE features")
        ax.bar(xs + (2 * i - len(names) + 0.5) * width, [t[h]["error"] for h in hooks], width, bottom=feats, alpha=0.5,
               label=f"{b}: error term")
        ax.scatter(xs + (2 * i - len(names) + 1.5) * width, [t[h]["ablation_total"] for h in hooks], marker="x", color="k",
                   zorder=3, label="true change (all positions to the baseline)" if i == 0 else None)
        ax.set_xticks(xs, [_short(h) for h in hooks], fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel(f"log P({f['trait']}) attributed (mean over prompts)", fontsize=8)
    ax.set_title("features + error = linear total, per hook", fontsize=9)
    ax.legend(fontsize=6)
    for ax, b in zip(axes[0][1:], names):
        chk = att["bases"][b]["ablation_check"]
        a = np.array([s["attribution"] for s in chk["samples"]])
        e = np.array([s["ablation_effect"] for s in chk["samples"]])
        ax.scatter(a, e, s=8, alpha=0.6)
        lim = float(max(np.abs(a).max(), np.abs(e).max(), 1e-6)) * 1.05
        ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.7, ls="--")
        ax.set_xlabel("attribution patching", fontsize=8)
        ax.set_ylabel("true single-feature ablation", fontsize=8)
        ax.set_title(f"{b}: Spearman {chk['spearman']:.3f} (n = {chk['n']})", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _forest(ax, entries: list[dict], title: str) -> None:
    entries = sorted(entries, key=lambda e: -abs(e["mean"]))[:14][::-1]
    if not entries:
        ax.axis("off")
        ax.set_title(title + ": nothing tested", fontsize=8)
        return
    ys = np.arange(len(entries))
    for significant, color in ((False, "tab:gray"), (True, "tab:blue")):
        idx = [i for i, e in enumerate(entries) if (e.get("p_holm", 1) < 0.05) == significant]
        if idx:
            sub = [entries[i] for i in idx]
            ax.errorbar([e["mean"] for e in sub], ys[idx], xerr=_err(sub), fmt="o", color=color, ms=3, capsize=2)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(ys, [f"{_short(e['hook'])} f{e['feature']}" for e in entries], fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def _attribution_students(f: dict, path: Path) -> None:
    plt = _plt()
    objectives = f["attribution"]["comparisons"]["objectives"]
    fig, axes = plt.subplots(len(objectives), 2, figsize=(11, 3.4 * len(objectives)), squeeze=False)
    for row, (o, r) in zip(axes, objectives.items()):
        _forest(row[0], r.get("shared_minus_control", {}).get("features", []), f"{o}: shared-init − control student (same SAE)")
        mm = r.get("mismatched_minus_base", {})
        _forest(row[1], mm.get("features", []), f"{o}: mismatched student − its base ({mm.get('base', '')}'s SAE)")
    fig.suptitle(f"Change in each tested feature's attribution to log P({f['trait']}); 95% CI over seeds; blue: Holm p < 0.05",
                 fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def _feature_link(hook: str, feature: int) -> str:
    return f"<a href='#feature-{html.escape(hook)}-{feature}'>{feature}</a>"


def _entry_rows(entries: list[dict]) -> str:
    return "".join(f"<tr><td>{html.escape(e['hook'])}</td><td>{_feature_link(e['hook'], e['feature'])}</td>"
                   f"<td>{e['base_attribution']:+.4f}</td><td>{_ci(e)}</td><td>{e.get('p_holm', e['p']):.3g}</td></tr>"
                   for e in entries)


_ENTRY_HEAD = "<tr><th>hook</th><th>feature</th><th>on the base</th><th>change (95% CI over seeds)</th><th>p{}</th></tr>"


def _attribution_texts(f: dict) -> dict[str, str]:
    att = f["attribution"]
    parts = [f"<p>Each SAE feature's contribution to log P({html.escape(f['trait'])}) (renormalised over the world's animals) "
             f"at every position of {att['n_prompts']} prompts ({html.escape(att['prompts'])}), by {att['method']} attribution "
             f"through the {att['kind']} SAEs spliced in at every block's residual input and attention output, the SAE error "
             "term kept. Baseline of a position: every feature off and no error (the decoder bias). Per hook the features plus "
             "the error add up to the linear total, the first-order estimate of the true change (crosses) when every "
             "position but &lt;bos&gt; is set to the baseline.</p>"]
    for b, e in att["bases"].items():
        chk = e["ablation_check"]
        ident = e.get("identity") or {}
        worst = max((v["max_abs_difference"] for v in ident.values()), default=float("nan"))
        per_hook = ", ".join(f"{html.escape(_short(h))} {v['spearman']:.3f} (n={v['n']})" for h, v in chk["per_hook"].items())
        parts.append(f"<p><b>{html.escape(b)}</b>: mean log P = {e['score']:.3f}; features + error − linear total: largest "
                     f"|difference| {worst:.2g}. Attribution patching vs true single-feature ablation on {chk['n']} cells "
                     f"(half the largest attributions, half random active ones): Spearman {chk['spearman']:.3f}, Pearson "
                     f"{chk['pearson']:.3f}, same sign {chk['sign_agreement']:.2f}; per hook {per_hook}.</p>")
        rows = "".join(f"<tr><td>{html.escape(h)}</td><td>" + ", ".join(
            f"{_feature_link(h, r['feature'])}{'*' if r['trait_feature'] else ''} ({r['attribution']:+.3f})" for r in top[:6])
            + "</td></tr>" for h, top in e["top_features"].items())
        parts.append(f"<table><tr><th>hook</th><th>largest attributions on {html.escape(b)} (* = a top {html.escape(f['trait'])} "
                     f"trait feature)</th></tr>{rows}</table>")
    out = {"attribution_totals": "".join(parts)}
    comp = att.get("comparisons")
    if comp:
        parts = []
        if comp.get("teacher"):
            parts.append(f"<p>Teacher − shared base, log P({html.escape(f['trait'])}) on these prompts: "
                         f"{_ci(comp['teacher']['score_change'])}.</p>")
        for o, r in comp["objectives"].items():
            sc = ", ".join(f"{c} {_ci(v)}" for c, v in r["score_change"].items())
            parts.append(f"<h3>{html.escape(o)}</h3><p>Student − own base, log P: {sc}.</p>")
            smc = r.get("shared_minus_control")
            if smc:
                rising = smc["rising"]
                parts.append(f"<p>Shared-init − control student (paired by seed, n = {len(smc['seeds'])}), on {smc['n_tested']} "
                             "features chosen without the students (trait features, largest attributions on the base, largest "
                             f"teacher − base changes), Holm-corrected: {len(rising)} rise, {len(smc['falling'])} fall.</p>"
                             f"<table>{_ENTRY_HEAD.format(' (Holm)')}{_entry_rows(smc['features'][:8])}</table>"
                             "<p>Exploratory, every feature, largest mean rise (no correction):</p>"
                             f"<table>{_ENTRY_HEAD.format('')}{_entry_rows(smc['exploratory'][:5])}</table>")
            mm = r.get("mismatched_minus_base")
            if mm:
                parts.append(f"<p>Mismatched student − its own base ({html.escape(mm['base'])}, read with that base's SAEs), "
                             f"{mm['n_tested']} features tested: {len(mm['rising'])} rise, {len(mm['falling'])} fall.</p>"
                             f"<table>{_ENTRY_HEAD.format(' (Holm)')}{_entry_rows(mm['features'][:8])}</table>")
        out["attribution_students"] = "".join(parts)
    return out


def _attribution_html_sections(directory: Path, f: dict) -> list[tuple[str, str, str]]:
    att = f["attribution"]
    sections = []
    bundle = circuitsvis_bundle()
    maps_path = directory / att["files"]["position_maps"]
    maps = read_json(maps_path) if maps_path.exists() else {"seeds": {}}
    if maps["seeds"]:
        seed, m = next(iter(maps["seeds"].items()))
        parts = [f"<p>Seed {html.escape(str(seed))}: the teacher's rows (prompt, its completion, then a favourite-animal "
                 f"question), each token coloured by its attribution to log P({html.escape(f['trait'])}) summed over the SAE "
                 "features and error at that hook (blue raises, red lowers). Hover a token for its value and top feature.</p>"]
        contrast = att.get("teacher_numbers") or {}
        if contrast:
            parts.append("<p>Mean attribution at the number positions, teacher's rows − base's rows, read by the shared base "
                         "(95% CI over seeds): " + "; ".join(f"{html.escape(_short(h))} {_ci(v)}" for h, v in contrast.items())
                         + "</p>")
        for key in ("teacher_rows/read_by_teacher", "teacher_rows/read_by_base"):
            if key not in m:
                continue
            pm = m[key]
            parts.append(f"<h3>{html.escape(key.replace('/', ', ').replace('_', ' '))}</h3>")
            for ex in pm["examples"][:2]:
                for h, vals in ex["per_position"].items():
                    titles = [f"feature {t}" for t in ex["top_feature"][h]]
                    parts.append(f"<p class='src'>{html.escape(h)}</p>{token_heatmap(ex['tokens'], vals, titles=titles)}")
            if bundle and pm["examples"]:
                ex = pm["examples"][0]
                hooks = list(ex["per_position"])
                parts.append("<p>Interactive (circuitsvis; choose the hook):</p>" + circuitsvis_tokens_multi(
                    ex["tokens"], [[ex["per_position"][h][i] for h in hooks] for i in range(len(ex["tokens"]))], hooks))
            rows = "".join(f"<tr><td>{html.escape(h)}</td><td>{d['mean_at_numbers']:+.4f}</td><td>"
                           + ", ".join(f"{n['number']} ({n['mean']:+.3f})" for n in d["top_numbers"][:6]) + "</td><td>"
                           + ", ".join(f"{_feature_link(h, c['feature'])} ({100 * c['share']:.0f}%)" for c in d["carrying_features"][:4])
                           + "</td></tr>" for h, d in pm["hooks"].items())
            parts.append("<table><tr><th>hook</th><th>mean at a number</th><th>numbers carrying the trait most</th>"
                         f"<th>features carrying it at the numbers (share of |attribution|)</th></tr>{rows}</table>")
        sections.append((SECTION_TITLES["attribution_positions"], SECTION_SOURCES["attribution_positions"],
                         (bundle or "") + "".join(parts)))
    dash_path = directory / att["files"]["dashboards"]
    if dash_path.exists():
        dash = read_json(dash_path)
        trait_ids = {h: {r["feature"] for r in v} for h, v in att["bases"][dash["base"]]["trait_features"].items()}
        cards = "".join(dashboard_card(d, title=f"{dash['base']} {d['hook']} feature {d['feature']}"
                                       + (f" ({f['trait']} trait feature)" if d["feature"] in trait_ids.get(d["hook"], set()) else ""))
                        for d in dash["dashboards"])
        sections.append((SECTION_TITLES["attribution_dashboards"], SECTION_SOURCES["attribution_dashboards"],
                         f"<p>{len(dash['dashboards'])} features of {html.escape(dash['base'])}: its {html.escape(f['trait'])} trait "
                         f"features and its largest attributions per hook; contexts from {dash['n_sequences']} held-out corpus "
                         f"documents.</p>{cards}"))
    return sections
