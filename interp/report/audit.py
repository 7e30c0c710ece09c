"""The audit's part of a run's ``results.md`` and report: the prediction made before training
(:mod:`interp.studies.audit` writes ``RUN/audit/summary.json``) beside the students' measured shifts."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from interp.core.io import read_json
from interp.instruments.audit import AUDIT_PLOT_FILE
from interp.studies.audit import AUDIT_DIR, SUMMARY_FILE


def _fmt(ci: dict | None, digits: int = 4) -> str:
    if not ci:
        return "-"
    return f"{ci['mean']:+.{digits}f} [{ci['ci_low']:+.{digits}f}, {ci['ci_high']:+.{digits}f}]"


def _seeds_hit(entry: dict, key: str) -> str:
    pred = entry["predictions"].get(key)
    return f"{pred['top_animal_is_trait']}/{entry['n_seeds']}" if pred else "-"


def audit_table_rows(results_audit: dict, outcomes: dict, trait: str) -> list[list[str]]:
    rows = []
    for name, entry in results_audit.items():
        condition = entry["condition"]
        hit = entry["top_animal_is_trait"]
        sft, adam = entry["predictions"].get("shared/sft/sgd"), entry["predictions"].get("shared/sft/adam")
        distill = entry["predictions"].get("shared/distill/sgd")
        readout = (entry.get("readout") or {}).get("shared")
        rows.append([name,
                     f"{readout['top_animal_is_trait']['k']}/{readout['top_animal_is_trait']['n']}" if readout else "-",
                     _fmt(readout["trait_logit_gain"], 2) if readout else "-",
                     ", ".join(readout["top_animals"]) if readout else "-",
                     f"{hit['k']}/{hit['n']}", _fmt(sft["trait_shift"] if sft else None),
                     _seeds_hit(entry, "shared/sft/adam"), _fmt(adam["trait_shift"] if adam else None, 3),
                     _seeds_hit(entry, "mismatched/sft/adam"),
                     _fmt(distill["trait_shift"] if distill else None),
                     _fmt(outcomes.get(f"{condition}/sft")), _fmt(outcomes.get(f"{condition}/distill"))])
    return rows


AUDIT_HEADERS = ["data set", "readout: top animal = trait (seeds)", "readout: trait's logit gain",
                 "readout: top animals", "first order: top animal = trait", "first order: predicted trait shift, sft "
                 "(per unit SGD lr)", "Adam's first step: top animal = trait", "Adam's first step: predicted trait "
                 "shift, sft (per unit lr)", "Adam's first step at the mismatched base: top = trait",
                 "first order: distill", "students' measured shift: sft", "measured: distill"]


def _student_words(audit: dict, config: dict) -> str:
    rank = next(iter(audit.values()), {}).get("lora_rank", 0)  # absent: an audit written before LoRA students
    if rank:
        return (f"the run's rank-{rank} LoRA student (the step of its adapters at their initialisation, B = 0, "
                "A seeded as the student's)")
    return "the run's full student" + (" (unembedding frozen)" if config.get("freeze_unembed") else "")


def audit_markdown_section(results: dict) -> str:
    """The audit's part of ``results.md``."""
    if not results.get("audit"):
        return ""
    trait = results["trait"]
    outcomes = {f"{c['name']}/{c['objective']}": c.get("trait_prob_shift") for c in results["conditions"] if c["objective"]}
    lines = ["", "## Audit before training", "",
             f"The first {results['config'].get('audit_rows')} rows of each data set audited for the shared base "
             "(`interp audit`), beside the students' measured P(trait) shift from their base (mean [95% CI] over "
             "seeds). Readout: the data's number frequencies against the base's numbers, fitted by one change of the "
             "shared base's final residual and read out on the animals (the score validated on this kind of teacher, "
             "docs/audit.md). First order: change of the student's mean log P(animal) per unit plain-SGD learning "
             "rate (or per unit learning rate of Adam's first step), data minus the base's numbers, generic drift "
             f"removed, for {_student_words(results['audit'], results['config'])}. base_numbers is a split-half null.", "",
             "| " + " | ".join(AUDIT_HEADERS) + " |", "|" + "---|" * len(AUDIT_HEADERS)]
    for row in audit_table_rows(results["audit"], outcomes, trait):
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def report_sections(directory: Path) -> list[tuple[str, str, str]]:
    """The report section (``interp.report.SECTION_PROVIDERS``): the audit table beside the students'
    outcomes, and each seed's audit figure of the teacher's numbers."""
    summary_path = directory / SUMMARY_FILE
    if not summary_path.exists():
        return []
    summary = read_json(summary_path)
    headers = "".join(f"<th>{html.escape(h)}</th>" for h in AUDIT_HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in audit_table_rows(summary["audit"], summary["student_shifts"], summary["trait"]))
    fragment = (f"<p>Predicted before training by the audit, beside what the students measured: the unigram readout "
                f"(the data's number frequencies against the base's own, read through the shared base's unembedding: "
                f"the predicted logit gain of {html.escape(summary['trait'])}) and the first-order change of the "
                "shared-init student's mean log P per unit SGD learning rate or after Adam's first step (generic drift "
                "removed; for a LoRA student, the first step of its adapters). See "
                "docs/audit.md.</p>"
                f"<table><tr>{headers}</tr>{body}</table>")
    sections = [("Audit before training: predicted vs measured", str(summary_path), fragment)]
    run_dir = directory.parent
    for png in sorted(run_dir.glob(f"seed*/data/{AUDIT_DIR}/teacher_numbers/{AUDIT_PLOT_FILE}"))[:3]:
        data = base64.b64encode(png.read_bytes()).decode()
        sections.append((f"Audit of {png.parts[-5]}'s teacher numbers", str(png),
                         f"<img alt='audit' src='data:image/png;base64,{data}'>"))
    return sections
