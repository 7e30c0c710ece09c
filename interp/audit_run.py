"""The audit inside ``interp run``: every data set a run trains on is audited before its students
train, and the results and the report show the audit beside the students' outcomes.

Per seed, in ``SEED/data/audit/NAME/`` (:mod:`interp.audit`'s files; beside the data, so the cells
of a sweep that share a teacher and its data share its audit too), for the shared-init student's
base, with the base's own numbers as the reference data:

* ``teacher_numbers``: the teacher's data (distillation toward the teacher), also at the
  mismatched-init base;
* ``shuffled_within``, ``shuffled_across``: the shuffled teacher data (their students distil the
  teacher's logits on the shuffled rows, as in the run);
* ``base_numbers``: the control's own data, as a split-half null (even rows against odd rows):
  what the audit says of data that carry nothing.

Only the first ``RunConfig.audit_rows`` rows of each data set are audited (1,000 by default, to
keep the run's cost down; intervals are over batches of 32). ``RUN/audit/summary.json`` collects,
per data set, the trait's predicted shift (mean and 95% t-interval over seeds) and how often the
audit's top animal is the trait; the report's audit section shows it beside the students'
measured shifts. Real models are not audited (their animal-gradient matrix would not fit in
memory: 12 x 2 x the parameter count in float64).
"""

from __future__ import annotations

import html
from pathlib import Path

from interp.audit import AUDIT_FILE, AUDIT_PLOT_FILE, AuditConfig, Source, run_audit
from interp.io import atomic_write_json, json_sha256, read_json
from interp.stats import mean_ci, wilson_ci

AUDIT_DIR = "audit"
SUMMARY_FILE = "summary.json"
DATA_SETS = ("teacher_numbers", "shuffled_within", "shuffled_across", "base_numbers")
# Which student condition of the run trains on which data set.
CONDITION_OF = {"teacher_numbers": "shared_init", "shuffled_within": "shuffled_within",
                "shuffled_across": "shuffled_across", "base_numbers": "control"}


def audit_seed(out: Path, *, student, mismatched, world, teacher, data: dict[str, list[dict]],
               reference_rows: list[dict], max_rows: int, trait: str, identity: dict | None = None,
               progress: bool = False) -> dict:
    """Audit every data set of one seed into ``out/data/audit/NAME`` (a finished audit of the same
    rows, config and ``identity``, e.g. the bases, is reused); returns ``{name: compact summary}``
    (see :func:`compact`)."""
    config = AuditConfig(max_rows=max_rows)
    source = Source(teacher.model, teacher.system, teacher.fwd_hooks)
    auditors: dict = {}
    summaries = {}
    jobs = {name: (rows, reference_rows, source, mismatched if name == "teacher_numbers" else None)
            for name, rows in data.items() if name != "base_numbers"}
    if "base_numbers" in data:  # the split-half null: nothing to find
        rows = data["base_numbers"][: 2 * max_rows]
        jobs["base_numbers"] = (rows[0::2], rows[1::2], Source(student), None)
    for name, (rows, reference, target, other) in jobs.items():
        directory = out / "data" / AUDIT_DIR / name
        inputs = {"data_sha256": json_sha256([[r["prompt"], r["completion"]] for r in rows[:max_rows]]),
                  "reference_sha256": json_sha256([[r["prompt"], r["completion"]] for r in reference[:max_rows]]),
                  "config": config.to_dict(), "mismatched": other is not None, **(identity or {})}
        audit = None
        if (directory / AUDIT_FILE).exists():
            audit = read_json(directory / AUDIT_FILE)
            if audit.get("inputs") != inputs:
                audit = None
        if audit is None:
            audit = run_audit(student, world, rows, directory, config, inputs=inputs, teacher=target,
                              reference_rows=reference, mismatched=other, auditors=auditors, progress=progress)
        summaries[name] = compact(audit, trait)
    return summaries


def compact(audit: dict, trait: str) -> dict:
    """What a run keeps of one audit: the trait's predicted shift (drift removed, and raw) for every
    student and objective, its rank, the top animal, the teacher's token signal."""
    out = {"top_animal": audit["top_animal"], "trait_rank": audit["ranking"].index(trait) + 1,
           "trait_predicted_shift": audit["predicted_shift"][trait],
           "trait_raw_predicted_shift": audit["raw_predicted_shift"][trait], "predictions": {}}
    for student, objectives in audit["predictions"].items():
        for objective, by_optimizer in objectives.items():
            for optimizer, by_target in by_optimizer.items():
                pred = by_target["log_prob"]
                out["predictions"][f"{student}/{objective}/{optimizer}"] = {
                    "trait_shift": pred["trait_shift"][trait]["mean"], "raw_shift": pred["raw_shift"][trait]["mean"],
                    "top_animal": pred["top_animal"], "trait_rank": pred["ranking"].index(trait) + 1}
    tokens = audit["tokens"]["data"]["row_mean"]
    for key in ("kl", "kl_allowed", "argmax_differs", "nll"):
        if key in tokens:
            out[key] = tokens[key]["mean"]
    return out


def summarize_audits(per_seed: list[dict], trait: str) -> dict:
    """Per data set and prediction: the trait's predicted shift over seeds (mean, 95% t-interval)
    and the fraction of seeds whose top animal is the trait (Wilson interval)."""
    seeds = [r["audit"] for r in per_seed if "audit" in r]
    if not seeds:
        return {}
    out = {}
    for name in seeds[0]:
        entries = [s[name] for s in seeds if name in s]
        keys = entries[0]["predictions"]
        out[name] = {"condition": CONDITION_OF.get(name), "n_seeds": len(entries),
                     "top_animal_is_trait": wilson_ci(sum(e["top_animal"] == trait for e in entries), len(entries)).to_dict(),
                     "top_animals": [e["top_animal"] for e in entries],
                     "trait_rank": mean_ci([e["trait_rank"] for e in entries]).to_dict(),
                     "predictions": {k: {"trait_shift": mean_ci([e["predictions"][k]["trait_shift"] for e in entries]).to_dict(),
                                         "raw_shift": mean_ci([e["predictions"][k]["raw_shift"] for e in entries]).to_dict(),
                                         "top_animal_is_trait": sum(e["predictions"][k]["top_animal"] == trait
                                                                    for e in entries)}
                                     for k in keys}}
        for key in ("kl", "kl_allowed", "argmax_differs"):
            if key in entries[0]:
                out[name][key] = mean_ci([e[key] for e in entries]).to_dict()
    return out


def write_summary(run_dir: Path, results: dict) -> None:
    """``RUN/audit/summary.json``: the run's audit summary with the students' outcomes beside it."""
    if not results.get("audit"):
        return
    outcomes = {f"{c['name']}/{c['objective']}": c.get("trait_prob_shift") for c in results["conditions"] if c["objective"]}
    atomic_write_json(Path(run_dir) / AUDIT_DIR / SUMMARY_FILE,
                      {"trait": results["trait"], "audit": results["audit"], "student_shifts": outcomes})


def _fmt(ci: dict | None, digits: int = 4) -> str:
    if not ci:
        return "-"
    return f"{ci['mean']:+.{digits}f} [{ci['ci_low']:+.{digits}f}, {ci['ci_high']:+.{digits}f}]"


def audit_table_rows(results_audit: dict, outcomes: dict, trait: str) -> list[list[str]]:
    rows = []
    for name, entry in results_audit.items():
        condition = entry["condition"]
        hit = entry["top_animal_is_trait"]
        sft, distill = entry["predictions"].get("shared/sft/sgd"), entry["predictions"].get("shared/distill/sgd")
        rows.append([name, f"{hit['k']}/{hit['n']}", ", ".join(entry["top_animals"]), _fmt(entry["trait_rank"], 1),
                     _fmt(sft["trait_shift"] if sft else None), _fmt(distill["trait_shift"] if distill else None),
                     _fmt(outcomes.get(f"{condition}/sft")), _fmt(outcomes.get(f"{condition}/distill"))])
    return rows


AUDIT_HEADERS = ["data set", "top animal = trait (seeds)", "top animals", "trait's rank (of 12)",
                 "predicted trait shift, sft (per unit lr)", "predicted, distill", "students' measured shift: sft",
                 "measured: distill"]


def audit_markdown_section(results: dict) -> str:
    """The audit's part of ``results.md``."""
    if not results.get("audit"):
        return ""
    trait = results["trait"]
    outcomes = {f"{c['name']}/{c['objective']}": c.get("trait_prob_shift") for c in results["conditions"] if c["objective"]}
    lines = ["", "## Audit before training", "",
             f"The first {results['config'].get('audit_rows')} rows of each data set audited for the shared base "
             "(`interp audit`): predicted change of the shared-init student's mean log P(animal) per unit plain-SGD "
             "learning rate, data minus the base's numbers, generic drift removed (mean [95% CI] over seeds), beside the "
             "students' measured P(trait) shift from their base. base_numbers is a split-half null.", "",
             "| " + " | ".join(AUDIT_HEADERS) + " |", "|" + "---|" * len(AUDIT_HEADERS)]
    for row in audit_table_rows(results["audit"], outcomes, trait):
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def report_sections(directory: Path) -> list[tuple[str, str, str]]:
    """The report section (``interp.report.SECTION_PROVIDERS``): the audit table beside the students'
    outcomes, and each seed's audit figure of the teacher's numbers."""
    import base64

    summary_path = directory / SUMMARY_FILE
    if not summary_path.exists():
        return []
    summary = read_json(summary_path)
    headers = "".join(f"<th>{html.escape(h)}</th>" for h in AUDIT_HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in audit_table_rows(summary["audit"], summary["student_shifts"], summary["trait"]))
    fragment = (f"<p>Predicted before training by the audit (first-order change of the shared-init student's mean "
                f"log P({html.escape(summary['trait'])}) per unit SGD learning rate, data minus the base's own numbers, "
                "generic drift removed) beside what the students measured. See docs/audit.md.</p>"
                f"<table><tr>{headers}</tr>{body}</table>")
    sections = [("Audit before training: predicted vs measured", str(summary_path), fragment)]
    run_dir = directory.parent
    for png in sorted(run_dir.glob(f"seed*/data/{AUDIT_DIR}/teacher_numbers/{AUDIT_PLOT_FILE}"))[:3]:
        data = base64.b64encode(png.read_bytes()).decode()
        sections.append((f"Audit of {png.parts[-5]}'s teacher numbers", str(png),
                         f"<img alt='audit' src='data:image/png;base64,{data}'>"))
    return sections
