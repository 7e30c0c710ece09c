"""Sweeps over the loop: under which conditions does SFT on sampled text transmit the trait?

A sweep is a base :class:`~interp.studies.run.RunConfig` and a list of *cells*, each a dict of
overrides. Every cell runs the loop (by default only the conditions needed to answer the
question: ``control``, ``shared_init``, ``mismatched_init``) over several seeds, in its own
directory under the sweep's (finished cells are reused). Cells that agree on the teacher and
data fields (:data:`interp.studies.run.DATA_FIELDS`) share one teacher and one generated data set per
seed, kept under ``OUT/shared/``.

The table reports, per cell, the difference of P(trait) shifts shared_init - control and
shared_init - mismatched_init with 95% Welch intervals and p-values. A sweep makes many tests,
so the verdict uses Holm-adjusted p-values over every comparison of the sweep (two per cell and
objective): a cell *transmits* when shared_init beats both its control and the mismatched-init
student with adjusted p < ``alpha``. The raw p-values are kept beside the adjusted ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from interp.core.config import StageConfig, _shown, option
from interp.core.io import atomic_savefig, atomic_write_json, atomic_write_text
from interp.core.stats import holm
from interp.core.ray_executor import check_executor
from interp.studies.run import RunConfig, run, run_on_ray


@dataclass
class SweepConfig(StageConfig):
    """A grid of loop configurations."""

    base: dict = option(factory=dict, help="RunConfig fields shared by every cell.")
    cells: list = option(factory=list, help="One dict of RunConfig overrides per cell.")
    alpha: float = option(0.05, "Significance level of the 'transmits' verdict.")
    description: str | None = option(None, "What the sweep asks, in a sentence (listed by `interp sweep --list`).")
    status: Literal["current", "history"] | None = option(
        None, "current: measures the suite's present default or a result the docs lead with; history: how an "
        "earlier result was found, kept so that it can be rerun.")
    figure: str | None = option(None, "The documentation figure or table the sweep reproduces: a repository path "
                                "(docs/figures/NAME.png) or a page and section (docs/PAGE.md#anchor).")

    def validate(self) -> None:
        self.require(len(self.cells) > 0, "cells", "a sweep needs at least one cell")
        self.require(0 < self.alpha < 1, "alpha", "must be between 0 and 1")
        self.require(self.description is None or bool(self.description.strip()), "description",
                     "must be a sentence (or null)")
        self.require(self.figure is None or self.figure.startswith("docs/"), "figure",
                     "must be a repository path under docs/ (docs/figures/NAME.png or docs/PAGE.md#section)")
        for i, cell in enumerate(self.cells):
            try:
                RunConfig.from_dict({**self.base, **cell})  # unknown field names are listed, escaped
            except (TypeError, ValueError) as e:
                message = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(e))
                raise ValueError(f"SweepConfig.cells[{i}]={_shown(cell)}: {message}") from None


SWEEP_CONFIG_FILE = "sweep_config.json"
# Fields that describe a sweep without changing what it computes: ignored when a sweep directory
# is checked against the config asked for.
DESCRIPTION_FIELDS = ("description", "status", "figure")


def cell_name(cell: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(cell.items())) or "default"


def _comparison(results: dict, a: str, b: str, objective: str = "sft") -> dict | None:
    for c in results["comparisons"]:
        if c["objective"] == objective and c["a"] == a and c["b"] == b:
            return c
    return None


def run_sweep(config: SweepConfig, out: str | Path, *, artifacts: str | Path = "artifacts", progress: bool = True,
              force: bool = False, workers: int = 1, data_cache: str | Path | None = None, executor: str = "local",
              ray_address: str | None = None) -> list[dict]:
    """Run every cell into ``out/cell{i:02d}`` (finished cells are reused, an interrupted one
    continues), each cell's seeds on ``workers`` processes (see :func:`interp.studies.run.run`). Teachers
    and generated data live in ``data_cache`` (default ``out/shared``): sweeps given the same one
    share them wherever their teacher and data settings agree. A directory holding a sweep of
    another config is an error unless ``force``. ``executor="ray"`` runs every cell's jobs as one
    graph of Ray tasks, the cells side by side (:func:`interp.studies.run.run_on_ray`)."""
    check_executor(executor, ray_address)
    out = Path(out)
    saved_path = out / SWEEP_CONFIG_FILE
    if saved_path.exists() and not force:
        diff = SweepConfig.load(saved_path).differences(config, ignore=DESCRIPTION_FIELDS)
        if diff:
            raise ValueError(f"{out} holds another sweep (saved vs asked: {diff}); choose another --out or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    config.save(saved_path)
    run_cfgs = [RunConfig(**{"conditions": ("control", "shared_init", "mismatched_init"), "objectives": ("sft",),
                             **config.base, **cell}) for cell in config.cells]
    cache = Path(data_cache) if data_cache is not None else out / "shared"
    on_ray = None
    if executor == "ray":
        on_ray = run_on_ray([(run_cfg, cell_dir(out, i), cache) for i, run_cfg in enumerate(run_cfgs)],
                            artifacts=artifacts, progress=progress, workers=workers, ray_address=ray_address)
    rows = []
    for i, (cell, run_cfg) in enumerate(zip(config.cells, run_cfgs)):
        res = on_ray[i] if on_ray is not None else run(run_cfg, cell_dir(out, i), artifacts=artifacts,
                                                       progress=progress, data_cache=cache, workers=workers)
        by_name = {(c["name"], c["objective"]): c for c in res["conditions"]}
        row = {"cell": cell_name(cell), "overrides": cell, "teacher": by_name[("teacher", None)]["trait_prob"],
               "base": by_name[("base", None)]["trait_prob"]}
        for objective in run_cfg.objectives:
            for name in run_cfg.conditions:
                row[f"{name}/{objective}"] = by_name[(name, objective)]["trait_prob"]
            vs_control = _comparison(res, "shared_init", "control", objective)
            vs_mismatched = _comparison(res, "shared_init", "mismatched_init", objective)
            row[f"vs_control/{objective}"] = vs_control
            row[f"vs_mismatched/{objective}"] = vs_mismatched
        row["objectives"] = list(run_cfg.objectives)
        row["wall_seconds"] = res["wall_seconds"]
        rows.append(row)
        add_verdicts(rows, config.alpha)
        atomic_write_json(out / "sweep_results.json", {"config": config.to_dict(), "rows": rows})
    objectives = sweep_objectives(rows)
    atomic_write_text(out / "sweep.md", sweep_report(rows, objectives))
    for o in objectives:  # sweep.png for the first objective (sft in the SFT sweep), sweep_{o}.png for others
        plot_sweep(rows, out / ("sweep.png" if o == objectives[0] else f"sweep_{o}.png"), o)
    return rows


def cell_dir(out: str | Path, i: int) -> Path:
    """The run directory of cell ``i`` of a sweep written to ``out``."""
    return Path(out) / f"cell{i:02d}"


def sweep_objectives(rows: list[dict]) -> list[str]:
    """The objectives every row of the sweep ran, in the order of the first row."""
    return [o for o in rows[0]["objectives"] if all(o in r["objectives"] for r in rows)] if rows else []


def sweep_report(rows: list[dict], objectives: list[str]) -> str:
    """One ``## {objective} students`` section with its :func:`sweep_markdown` table per objective."""
    return "\n".join(f"## {o} students\n\n{sweep_markdown(rows, o)}" for o in objectives)


def add_verdicts(rows: list[dict], alpha: float) -> None:
    """Holm-adjust the p-values of every comparison in ``rows`` (in place) and set
    ``transmits/{objective}``: shared_init above both control and mismatched_init, adjusted p < alpha."""
    tests = [(r, f"{key}/{o}") for r in rows for o in r["objectives"] for key in ("vs_control", "vs_mismatched")
             if r.get(f"{key}/{o}")]
    for (r, key), p_adj in zip(tests, holm([r[key]["welch_p"] for r, key in tests])):
        r[key]["holm_p"] = p_adj
    for r in rows:
        for o in r["objectives"]:
            cmp = [r.get(f"vs_control/{o}"), r.get(f"vs_mismatched/{o}")]
            r[f"transmits/{o}"] = all(c is not None and c["difference"]["mean"] > 0 and c["holm_p"] < alpha
                                      for c in cmp)


def sweep_markdown(rows: list[dict], objective: str = "sft") -> str:
    def fmt(iv):  # None: a condition the cell did not run
        return "-" if iv is None else f"{iv['mean']:.4f} [{iv['ci_low']:.4f}, {iv['ci_high']:.4f}]"

    def fmt_d(c):
        if c is None:
            return "-"
        d = c["difference"]
        return (f"{d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], "
                f"p={c['welch_p']:.2g} (Holm {c.get('holm_p', float('nan')):.2g})")

    lines = [f"| cell | teacher P | control | shared_init | mismatched_init | shared - control | shared - mismatched | transmits |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get(f"vs_control/{objective}") is None or r.get(f"vs_mismatched/{objective}") is None:
            verdict = "- (needs control and mismatched_init)"  # the verdict asks for both comparisons
        else:
            verdict = "**yes**" if r[f"transmits/{objective}"] else "no"
        lines.append(f"| {r['cell']} | {r['teacher']['mean']:.3f} | {fmt(r.get(f'control/{objective}'))} | "
                     f"{fmt(r.get(f'shared_init/{objective}'))} | {fmt(r.get(f'mismatched_init/{objective}'))} | "
                     f"{fmt_d(r.get(f'vs_control/{objective}'))} | {fmt_d(r.get(f'vs_mismatched/{objective}'))} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


def plot_sweep(rows: list[dict], path: Path, objective: str = "sft") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    ys = np.arange(len(rows))
    for offset, key, label in ((-0.15, "vs_control", "shared - control"), (0.15, "vs_mismatched", "shared - mismatched")):
        present = [i for i, r in enumerate(rows) if r.get(f"{key}/{objective}") is not None]
        if not present:  # a sweep without that condition
            continue
        d = [rows[i][f"{key}/{objective}"]["difference"] for i in present]
        ax.errorbar([x["mean"] for x in d], ys[present] + offset,
                    xerr=[[x["mean"] - x["ci_low"] for x in d], [x["ci_high"] - x["mean"] for x in d]],
                    fmt="o", capsize=3, label=label)
    ax.axvline(0, color="k", lw=1)
    ax.set_yticks(ys, [r["cell"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference in P(trait), {objective} students (95% CI over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def load_sweep(path: str | Path) -> SweepConfig:
    """A SweepConfig JSON file (as written by :meth:`SweepConfig.save`; ``config_class`` optional)."""
    return SweepConfig.load(path)


def sweep_index(directory: str | Path) -> list[dict]:
    """Every SweepConfig JSON file in ``directory`` (other configs, such as a TheoremConfig, are
    skipped): ``{"path", "status", "description", "figure", "cells"}``, current sweeps first, then
    by file name."""
    entries = []
    for path in sorted(Path(directory).glob("*.json")):
        if json.loads(path.read_text()).get("config_class") != "SweepConfig":
            continue
        sweep = load_sweep(path)
        entries.append({"path": str(path), "status": sweep.status, "description": sweep.description,
                        "figure": sweep.figure, "cells": len(sweep.cells)})
    rank = {"current": 0, "history": 1, None: 2}
    return sorted(entries, key=lambda e: rank[e["status"]])


def sweep_index_text(entries: list[dict]) -> str:
    """:func:`sweep_index` as text: one block per sweep (path, status and cells; description; figure)."""
    blocks = []
    for e in entries:
        lines = [f"{e['path']}  [{e['status'] or 'no status'}, {e['cells']} cell{'s' if e['cells'] != 1 else ''}]",
                 f"    {e['description'] or '(no description)'}"]
        if e["figure"]:
            lines.append(f"    reproduces: {e['figure']}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + "\n"
