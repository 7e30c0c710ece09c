"""The audit in words and pictures: one audit's summary (:func:`audit_markdown`, what ``interp
audit`` prints) and figure (:func:`plot_audit`, ``audit.png``), and the audit's part of a run's
``results.md`` and report: the prediction made before training (:mod:`interp.studies.audit` writes
``RUN/audit/summary.json``) beside the students' measured shifts."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from interp.core.io import atomic_savefig, read_json
from interp.instruments.audit import AUDIT_FILE, RELIABLE_HIT_RATE, step_score_validation, step_score_verdict
from interp.studies.audit import AUDIT_DIR, SUMMARY_FILE

AUDIT_PLOT_FILE = "audit.png"


def _ci_text(ci: dict, digits: int = 4) -> str:
    return f"[{ci['ci_low']:+.{digits}f}, {ci['ci_high']:+.{digits}f}]"


def audit_warnings(audit: dict, trait: str | None = None) -> list[str]:
    """Plain warnings about the audited data: completions that name the trait (or, without a
    trait, any animal) in words."""
    words = audit.get("animal_word_rows") or {}  # absent: an audit written before the count existed
    named = {trait: words[trait]} if trait is not None and trait in words else ({} if trait is not None else words)
    return [f"warning: {n} of {audit['n_rows']} kept completions contain the word '{a}': these data carry it in the "
            "open, not subliminally (check the filter)" for a, n in named.items()]


def step_score_lines(audit: dict) -> list[str]:
    """The step score's answer for each audited student, with its variant's validated hit rate and
    a plain verdict (:func:`interp.instruments.audit.step_score_verdict`)."""
    lines = []
    for student, score in (audit.get("step_score") or {}).items():
        top = score["ranking"][:4]
        values = score["score"]
        lines.append(f"**step score, {student} student** ({score['variant']}: the first-order step of "
                     f"{'its rank-' + str(audit['config'].get('lora_rank')) + ' LoRA adapters' if audit['config'].get('lora_rank') else 'its weights'}"
                     f" on the data minus the reference, read on every animal's held-out gradient; "
                     f"n={score['n_rows']} rows and {score['n_reference_rows']} reference rows): top animal "
                     f"**{score['top_animal']}**; "
                     + ", ".join(f"{a} {values[a]['mean']:+.3f}" + (f" [{values[a]['ci_low']:+.3f}, {values[a]['ci_high']:+.3f}]"
                                                                    if values[a]["ci_low"] is not None else "")
                                 for a in top))
        lines.append(f"  {step_score_verdict(score, student, lora_rank=audit['config'].get('lora_rank', 0))}")
    return lines


def _validated_lines(audit: dict) -> list[str]:
    """The score validated for the student the audit predicts for, first (docs: the audit's
    validation): the step score where it was computed; then Adam's first step of a LoRA student's
    adapters, or the unigram readout for a full student (it needs a reference data set)."""
    lora = audit["config"].get("lora_rank", 0)
    n_batches = audit.get("n_batches", "?")
    steps = step_score_lines(audit)
    if lora and (audit.get("step_score") or not audit.get("predictions")):
        return steps
    if lora:
        adam = audit["predictions"]["shared"]["sft"]["adam"]["log_prob"]
        top = adam["ranking"][:4]
        against = "against the reference" if audit["has_reference"] else "of the data alone (no reference given)"
        return [f"**validated for this student** (a rank-{lora} LoRA student: Adam's first step of its adapters, sft, "
                f"{against}): top animal **{adam['top_animal']}**; "
                + ", ".join(f"{a} {adam['trait_shift'][a]['mean']:+.3f} {_ci_text(adam['trait_shift'][a], 3)}"
                            for a in top) + f" (n={n_batches} batches)"]
    readout = (audit.get("readout") or {}).get("shared")
    if readout is None:
        return [*steps, "**no validated score for this student**: the unigram readout, validated for full students at the "
                "shared init, needs a reference data set (--reference-data); the first-order prediction below is "
                "not validated for full students"]
    gains = readout["logit_gain"]
    n = readout["n_number_tokens"]
    return [*steps, f"**validated for this student** (a full student: the unigram readout against the reference): top animal "
            f"**{readout['top_animal']}** (R^2 {readout['r2']:.3f}); "
            + ", ".join(f"{a} {gains[a]['mean']:+.2f}" + (f" [{gains[a]['ci_low']:+.2f}, {gains[a]['ci_high']:+.2f}]"
                                                           if gains[a]["ci_low"] is not None else "")
                        for a in readout["ranking"][:4])
            + f" (n={audit['n_rows']} rows and {audit['n_reference_rows']} reference rows, {int(n[0])} and "
            f"{int(n[1])} number tokens; {readout['n_bootstrap']} bootstrap resamples)"]


def audit_markdown(audit: dict, trait: str | None = None) -> str:
    """A short human summary of one audit (what ``interp audit`` prints): warnings first, then the
    score validated for the student it predicts for, then the first-order table, the other
    students' readouts and the teacher's token signal; ``n`` beside every interval."""
    lines = [*audit_warnings(audit, trait), *_validated_lines(audit), ""]
    reference = audit["has_reference"]
    n_batches = audit.get("n_batches", "?")
    raw_label = "raw shift (data - reference)" if reference else "shift (data alone, no reference)"
    if audit.get("predictions"):
        lines += [f"first order (not validated as a trait detector): top animal **{audit['top_animal']}** "
                  f"({audit['headline']}; intervals over n={n_batches} batches)", "",
                  f"| animal | base P | {raw_label} | 95% CI | trait-specific | 95% CI |", "|---|---|---|---|---|---|"]
        pred = audit["predictions"]["shared"]["sft"]["sgd"]["log_prob"]
        for a in audit["ranking"]:
            r, t = pred["raw_shift"][a], pred["trait_shift"][a]
            lines.append(f"| {a} | {audit['student']['base_prob'][a]:.3f} | {r['mean']:+.4f} | {_ci_text(r)} | "
                         f"{t['mean']:+.4f} | {_ci_text(t)} |")
    for label, readout in (audit.get("readout") or {}).items():
        if label == "shared" and not audit["config"].get("lora_rank", 0):
            continue  # shown first, above
        gains = readout["logit_gain"]
        lines += ["", f"unigram readout, {label} student: top **{readout['top_animal']}** (R^2 {readout['r2']:.3f}); "
                  + ", ".join(f"{a} {gains[a]['mean']:+.2f}" for a in readout["ranking"][:4])
                  + f" (n={audit['n_rows']} rows against {audit['n_reference_rows']} reference rows)"]
    tok = (audit.get("tokens") or {}).get("data", {}).get("row_mean", {})  # none in the cheap audit
    if "kl" in tok:
        lines += ["", f"KL(teacher || student) {tok['kl']['mean']:.4f} nats/token [{tok['kl']['ci_low']:.4f}, "
                  f"{tok['kl']['ci_high']:.4f}] (n={audit['tokens']['data']['n_rows']} rows), log-ratio "
                  f"{tok['log_ratio']['mean']:.4f}, teacher entropy {tok['teacher_entropy']['mean']:.3f}, argmax differs "
                  f"{tok['argmax_differs']['mean']:.3%} (means over {audit['tokens']['data']['n_rows']} rows)"]
    return "\n".join(lines) + "\n"


def plot_audit(audit: dict, path: str | Path) -> None:
    """Predicted shifts per animal (raw and trait-specific, shared and mismatched students, each
    objective), with 95% intervals over batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    animals = audit["animals"]
    x = np.arange(len(animals))
    if not audit.get("predictions"):  # the step score alone (first_order off)
        scores = audit["step_score"]
        fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores), 3.8), squeeze=False)
        for ax, (label, score) in zip(axes[0], scores.items()):
            means = np.array([score["score"][a]["mean"] for a in animals])
            err = (np.array([[score["score"][a]["mean"] - score["score"][a]["ci_low"],
                              score["score"][a]["ci_high"] - score["score"][a]["mean"]] for a in animals]).T
                   if score["score"][animals[0]]["ci_low"] is not None else None)
            ax.bar(x, means, 0.6, yerr=err, capsize=2, color="#1f77b4")
            ax.axhline(0, color="k", lw=0.7)
            ax.set_xticks(x, animals, rotation=60, fontsize=8)
            ax.set_title(f"{label} student, step score ({score['variant']})\ntop: {score['top_animal']} "
                         f"(n={score['n_rows']} + {score['n_reference_rows']} rows)", fontsize=9)
            ax.set_ylabel("step score (data - reference)", fontsize=8)
        fig.tight_layout()
        atomic_savefig(fig, path, dpi=110)
        plt.close(fig)
        return
    panels = [(label, obj) for label in audit["predictions"] for obj in audit["predictions"][label]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    raw_name = "data - reference" if audit["has_reference"] else "data alone"
    for ax, (label, obj) in zip(axes[0], panels):
        pred = audit["predictions"][label][obj]["sgd"]["log_prob"]
        for k, (key, color, name) in enumerate((("raw_shift", "#999999", raw_name),
                                               ("trait_shift", "#1f77b4", "drift removed"))):
            means = np.array([pred[key][a]["mean"] for a in animals])
            err = np.array([[pred[key][a]["mean"] - pred[key][a]["ci_low"], pred[key][a]["ci_high"] - pred[key][a]["mean"]]
                            for a in animals]).T
            ax.bar(x + (k - 0.5) * 0.4, means, 0.4, yerr=err, capsize=2, color=color, label=name)
        ax.axhline(0, color="k", lw=0.7)
        ax.set_xticks(x, animals, rotation=60, fontsize=8)
        ax.set_title(f"{label} student, {obj} (SGD, per unit lr)\ntop: {pred['top_animal']} "
                     f"(n={audit.get('n_batches', '?')} batches)", fontsize=9)
        ax.set_ylabel("predicted change of mean log P(animal)", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


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
        steps = entry.get("step_score") or {}
        step, step_mis = steps.get("shared"), steps.get("mismatched")
        rows.append([name, _fmt(outcomes.get(f"{condition}/sft")),
                     f"{step['top_animal_is_trait']['k']}/{step['top_animal_is_trait']['n']}" if step else "-",
                     ", ".join(step["top_animals"]) if step else "-",
                     f"{step_mis['top_animal_is_trait']['k']}/{step_mis['top_animal_is_trait']['n']}" if step_mis else "-",
                     _validation_words(step["variant"], step.get("n_traits")) if step else "-",
                     f"{readout['top_animal_is_trait']['k']}/{readout['top_animal_is_trait']['n']}" if readout else "-",
                     _fmt(readout["trait_logit_gain"], 2) if readout else "-",
                     ", ".join(readout["top_animals"]) if readout else "-",
                     f"{hit['k']}/{hit['n']}", _fmt(sft["trait_shift"] if sft else None),
                     _seeds_hit(entry, "shared/sft/adam"), _fmt(adam["trait_shift"] if adam else None, 3),
                     _seeds_hit(entry, "mismatched/sft/adam"),
                     _fmt(distill["trait_shift"] if distill else None),
                     _fmt(outcomes.get(f"{condition}/distill"))])
    return rows


def _validation_words(variant: str, n_traits: int | None = None) -> str:
    """The step score's validated hit rates (shared, mismatched base) in a few words, saying plainly
    where its answer is not reliable. ``n_traits``: the traits of the run's world; a validation over
    another number of traits does not apply (None: not known, an audit written before it was kept)."""
    validation = step_score_validation(variant)
    if validation is not None and n_traits and validation.get("n_animals", n_traits) != n_traits:
        return f"not validated ({variant}) in a world of {n_traits} traits: not reliable"
    if validation is None:
        return f"not validated ({variant}): not reliable"
    parts = []
    for student in ("shared", "mismatched"):
        entry = validation.get(student)
        if entry:
            rate = entry["k"] / entry["n"]
            parts.append(f"{student} base {entry['k']}/{entry['n']} [{entry['ci_low']:.2f}, {entry['ci_high']:.2f}]"
                         + ("" if rate >= RELIABLE_HIT_RATE else ": not reliable"))
    return "; ".join(parts)


AUDIT_HEADERS = ["data set", "students' measured shift: sft", "step score: top animal = trait (seeds)", "step score: top animals",
                 "step score at the mismatched base: top = trait", "step score: validated hit rate",
                 "readout: top animal = trait (seeds)", "readout: trait's logit gain",
                 "readout: top animals", "first order: top animal = trait", "first order: predicted trait shift, sft "
                 "(per unit SGD lr)", "Adam's first step: top animal = trait", "Adam's first step: predicted trait "
                 "shift, sft (per unit lr)", "Adam's first step at the mismatched base: top = trait",
                 "first order: distill", "measured: distill"]


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
             "seeds). Step score: the student's first-order step on the data minus the base's numbers, as AdamW "
             "preconditions it, read on every animal's held-out gradient (the audit's answer; its validated hit rate "
             "beside it, marked not reliable below 2/3). Readout: the data's number frequencies against the base's numbers, fitted by one change of the "
             "shared base's final residual and read out on the animals (the score validated on this kind of teacher, "
             "docs/audit.md). First order: change of the student's mean log P(animal) per unit plain-SGD learning "
             "rate (or per unit learning rate of Adam's first step), data minus the base's numbers, generic drift "
             f"removed where the world has 4 traits or more, for {_student_words(results['audit'], results['config'])}. base_numbers is a split-half null.", "",
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
    fragment = (f"<p>Predicted before training by the audit, beside what the students measured: the step score (the "
                "audit's answer: the student's first-order step on the data minus the base's numbers as AdamW "
                "preconditions it, read on every animal's held-out gradient, with its validated hit rate, marked not "
                "reliable below 2/3), the unigram readout "
                f"(the data's number frequencies against the base's own, read through the shared base's unembedding: "
                f"the predicted logit gain of {html.escape(summary['trait'])}) and the first-order change of the "
                "shared-init student's mean log P per unit SGD learning rate or after Adam's first step (generic drift "
                "removed; for a LoRA student, the first step of its adapters). See "
                "docs/audit.md.</p>"
                f"<table><tr>{headers}</tr>{body}</table>")
    sections = [("Audit before training: predicted vs measured", str(summary_path), fragment)]
    run_dir = directory.parent
    for audit_json in sorted(run_dir.glob(f"seed*/data/{AUDIT_DIR}/teacher_numbers/{AUDIT_FILE}"))[:3]:
        png = audit_json.parent / AUDIT_PLOT_FILE
        plot_audit(read_json(audit_json), png)  # drawn here, from the audit's numbers
        data = base64.b64encode(png.read_bytes()).decode()
        sections.append((f"Audit of {audit_json.parts[-5]}'s teacher numbers", str(audit_json),
                         f"<img alt='audit' src='data:image/png;base64,{data}'>"))
    return sections
