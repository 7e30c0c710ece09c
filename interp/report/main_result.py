"""The main result as the README and the docs show it, generated from a finished run.

``interp results-table RUN_DIR`` reads ``RUN_DIR/results.json`` (written by ``interp run``) and
writes three things kept in the repository:

* a small results file (``docs/results/main_run.json``): only the fields the table and the figure
  need, in the schema of ``results.json`` (so every report function reads it too), plus the run's
  config and seeds;
* the figure (``docs/figures/main_run.png``): P(trait) of the students of one objective by
  condition, with 95% intervals and every seed;
* the table, written between two marker comments into each document given (``README.md``,
  ``docs/index.md`` and ``docs/main_run.md``), links and image paths relative to each document.

The table and the figure are rendered from the results file alone, never from the run directory,
so a test can check that every document's table is the one the committed file renders
(:func:`stale_documents`, ``interp results-table --check``): the README, the docs and the run
cannot disagree.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from interp.core.io import atomic_savefig, atomic_write_json, atomic_write_text, read_json

TABLE_START = "<!-- results-table:start (written by `interp results-table`; edit the run, not this table) -->"
TABLE_END = "<!-- results-table:end -->"

DEFAULT_RESULTS_FILE = Path("docs/results/main_run.json")
DEFAULT_FIGURE = Path("docs/figures/main_run.png")
DEFAULT_DOCUMENTS = (Path("README.md"), Path("docs/index.md"), Path("docs/main_run.md"))

# The rows of the table, in this order, and how a reader should read each condition's name.
CONDITION_LABELS = {
    "base": "base (no training)",
    "teacher": "teacher",
    "control": "control: the base's own numbers",
    "shared_init": "**shared init**: the teacher's numbers",
    "mismatched_init": "mismatched init (another seed's base)",
    "cross_architecture": "cross-architecture base",
    "shuffled_within": "shared init, numbers shuffled within rows",
    "shuffled_across": "shared init, numbers shuffled across rows",
    "in_context": "in-context: teacher lists in the prompt, no training",
}
COMPARISON_LABELS = {
    "control": "**shared init − control**",
    "mismatched_init": "**shared init − mismatched init**",
    "shuffled_across": "shared init − shuffled across",
}


def _seeds(config: dict) -> list[int]:
    return list(range(config["first_seed"], config["first_seed"] + config["seeds"]))


def main_result(results: dict, objective: str = "sft") -> dict:
    """The part of a run's ``results.json`` that the table and the figure show: the untrained rows
    (base, teacher, in-context), the students of ``objective`` under every condition, their
    comparisons, the kept rows per seed, the run's config and seeds. Raises ``ValueError`` when the
    run has no students of ``objective``."""
    objectives = list(dict.fromkeys(c["objective"] for c in results["conditions"] if c["objective"]))
    if objective not in objectives:
        raise ValueError(f"the run has no {objective!r} students; its objectives: {objectives}")
    keep = ("name", "objective", "trait_prob", "trait_prob_shift", "own_base_trait_prob", "per_seed")
    conditions = [{k: c[k] for k in keep if k in c} for c in results["conditions"]
                  if c["objective"] in (None, objective)]
    comparisons = [c for c in results["comparisons"] if c["objective"] == objective]
    config = results["config"]
    return {"trait": results["trait"], "objective": objective, "seeds": _seeds(config), "config": config,
            "n_rows": results.get("n_rows", []), "conditions": conditions, "comparisons": comparisons}


def _objective_name(objective: str) -> str:
    return "SFT" if objective == "sft" else f"`{objective}`"


def _relative(target: Path, document: Path) -> str:
    return Path(os.path.relpath(target, document.parent)).as_posix()


def _config_line(result: dict) -> str:
    """How the run was asked for: the default config, or which fields differed from it. Read from
    the saved config as a dict, so a results file outlives a field that a later version drops."""
    from interp.studies.run import RESUME_ONLY_RUN_FIELDS, RunConfig

    defaults = RunConfig().to_dict()
    saved = {k: v for k, v in result["config"].items() if k not in RESUME_ONLY_RUN_FIELDS}
    changed = {k: v for k, v in saved.items() if k in defaults and v != defaults[k]}
    gone = sorted(k for k in saved if k not in defaults)
    if not changed and not gone:
        return "`interp run --out runs/main` (the default config)"
    parts = [f"`{k}` {v!r}" for k, v in sorted(changed.items())] + [f"`{k}` {saved[k]!r} (a field this version no longer has)"
                                                                   for k in gone]
    return f"`interp run` with {', '.join(parts)} (the rest default)"


def render_table(result: dict, *, document: Path, results_file: Path = DEFAULT_RESULTS_FILE,
                 figure: Path = DEFAULT_FIGURE) -> str:
    """The markdown block (table, figure and provenance line) for ``document``: paths to the
    results file and the figure are written relative to it. Pure: the same ``result`` always
    gives the same text."""
    trait, objective, seeds = result["trait"], result["objective"], result["seeds"]
    by_name = {c["name"]: c for c in result["conditions"]}
    seed_text = f"seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"
    lines = [f"**{_objective_name(objective)} students, trait `{trait}`**: "
             f"P({trait}) over the animals on held-out questions, mean over {len(seeds)} seeds ({seed_text}), "
             "95% t-interval; comparisons on each student's shift from its own base (Welch).", "",
             f"| condition | P({trait}) | 95% interval | n seeds |", "|---|---|---|---|"]
    for name, label in CONDITION_LABELS.items():
        if name not in by_name:
            continue
        t = by_name[name]["trait_prob"]
        bold = "**" if name == "shared_init" else ""
        own, base = by_name[name].get("own_base_trait_prob"), by_name.get("base", {}).get("trait_prob", {}).get("mean")
        if own is not None and base is not None and abs(own - base) >= 5e-4:  # a student of another base
            label = f"{label}, its base {own:.3f}"
        lines.append(f"| {label} | {bold}{t['mean']:.3f}{bold} | [{t['ci_low']:.3f}, {t['ci_high']:.3f}] | {t['n_seeds']} |")
    for comparison in result["comparisons"]:
        if comparison["a"] != "shared_init" or comparison["b"] not in COMPARISON_LABELS:
            continue
        d = comparison["difference"]
        lines.append(f"| {COMPARISON_LABELS[comparison['b']]} (p = {comparison['welch_p']:.2g}) | **{d['mean']:+.3f}** "
                     f"| [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {d['n_seeds']} |")
    lines += ["", f"![P({trait}) by condition]({_relative(figure, document)})", "",
              f"From {_config_line(result)}; the numbers are in [{results_file.name}]({_relative(results_file, document)}), "
              "the table and the figure are written from it by `interp results-table RUN_DIR`."]
    return "\n".join(lines)


def replace_block(text: str, block: str, *, name: str = "document") -> str:
    """``text`` with everything between :data:`TABLE_START` and :data:`TABLE_END` replaced by
    ``block``. Raises ``ValueError`` when the markers are missing or out of order."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{name} has no results-table markers: put a line {TABLE_START!r} and, below it, "
                         f"a line {TABLE_END!r} where the table goes")
    return text[:start + len(TABLE_START)] + "\n" + block + "\n" + text[end:]


def current_block(text: str, *, name: str = "document") -> str:
    """The block now between the markers of ``text`` (what :func:`replace_block` put there)."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{name} has no results-table markers")
    return text[start + len(TABLE_START):end].strip("\n")


def plot_main_result(result: dict, path: str | Path) -> None:
    """Bar chart of P(trait) by condition for the result's objective: mean, 95% interval and one
    dot per seed; the base's P(trait) as a dashed line, the teacher's in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trait = result["trait"]
    students = [c for c in result["conditions"] if c["objective"]]
    fixed = {c["name"]: c["trait_prob"] for c in result["conditions"] if not c["objective"]}
    fig, ax = plt.subplots(figsize=(8.5, 3.2))
    xs = np.arange(len(students))
    means = np.array([c["trait_prob"]["mean"] for c in students])
    err = np.array([[c["trait_prob"]["mean"] - c["trait_prob"]["ci_low"], c["trait_prob"]["ci_high"] - c["trait_prob"]["mean"]]
                    for c in students]).T
    colors = ["tab:red" if c["name"] == "shared_init" else "tab:gray" for c in students]
    ax.bar(xs, means, 0.6, yerr=err, capsize=3, color=colors, alpha=0.8)
    for x, c in zip(xs, students):
        seeds = c.get("per_seed", [])
        ax.scatter(np.full(len(seeds), x) + np.linspace(-0.12, 0.12, len(seeds)), seeds, s=10, color="k", zorder=3)
    if "base" in fixed:
        ax.axhline(fixed["base"]["mean"], color="k", ls="--", lw=1, label=f"base {fixed['base']['mean']:.3f}")
    if "in_context" in fixed:
        ax.axhline(fixed["in_context"]["mean"], color="tab:blue", ls=":", lw=1,
                   label=f"in-context {fixed['in_context']['mean']:.3f}")
    ax.set_xticks(xs, [c["name"].replace("_", "\n") for c in students], fontsize=8)
    ax.set_ylabel(f"P({trait})")
    teacher = f"; teacher {fixed['teacher']['mean']:.3f}" if "teacher" in fixed else ""
    ax.set_title(f"{_objective_name(result['objective']).strip('`')} students: P({trait}) by condition (95% CI, dots: {len(result['seeds'])} seeds{teacher})",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the bars
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def write_documents(result: dict, documents: tuple[Path, ...] | list[Path], *, results_file: Path = DEFAULT_RESULTS_FILE,
                    figure: Path = DEFAULT_FIGURE) -> None:
    """Write the table of ``result`` between the markers of every document (read all first, so a
    document without markers fails before any is changed)."""
    texts = {d: Path(d).read_text() for d in documents}
    new = {d: replace_block(t, render_table(result, document=Path(d), results_file=results_file, figure=figure), name=str(d))
           for d, t in texts.items()}
    for d, t in new.items():
        atomic_write_text(d, t)


def publish_main_result(run_dir: str | Path, *, objective: str = "sft", results_file: Path = DEFAULT_RESULTS_FILE,
                        figure: Path = DEFAULT_FIGURE, documents: tuple[Path, ...] = DEFAULT_DOCUMENTS) -> dict:
    """Extract the main result of the finished run in ``run_dir`` into ``results_file``, draw
    ``figure`` and write the table into ``documents``. Returns the extracted result."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: RUN_DIR must be a finished `interp run` directory")
    result = main_result(read_json(path), objective)
    for d in documents:  # fail on a document without markers before anything is written
        replace_block(Path(d).read_text(), "", name=str(d))
    atomic_write_json(results_file, result)
    plot_main_result(result, figure)
    write_documents(result, documents, results_file=results_file, figure=figure)
    return result


def stale_documents(*, results_file: Path = DEFAULT_RESULTS_FILE, figure: Path = DEFAULT_FIGURE,
                    documents: tuple[Path, ...] = DEFAULT_DOCUMENTS) -> list[str]:
    """The documents whose table differs from the one ``results_file`` renders (empty: all agree)."""
    result = read_json(results_file)
    return [str(d) for d in documents
            if current_block(Path(d).read_text(), name=str(d))
            != render_table(result, document=Path(d), results_file=results_file, figure=figure)]
