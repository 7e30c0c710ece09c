"""The audit inside ``interp run`` (its section of the report is :mod:`interp.report.audit`): every data set a run trains on is audited before its students
train, and the results and the report show the audit beside the students' outcomes.

Per seed, in ``SEED/data/audit/NAME/`` (:mod:`interp.instruments.audit`'s files; beside the data, so the cells
of a sweep that share a teacher and its data share its audit too), for the shared-init student's
base, with the base's own numbers as the reference data:

* ``teacher_numbers``: the teacher's data (distillation toward the teacher), also at the
  mismatched-init base;
* ``shuffled_within``, ``shuffled_across``: the shuffled teacher data (their students distil the
  teacher's logits on the shuffled rows, as in the run);
* ``base_numbers``: the control's own data, as a split-half null (even rows against odd rows):
  what the audit says of data that carry nothing;
* ``control_teacher_{kind}_numbers``: each control teacher's data (``RunConfig.control_teachers``,
  the secure and educational teachers beside the emergent-misalignment teacher), with that teacher
  as their source: does the audit name the trait for the teacher's numbers and not for theirs?

Each audit has the step score (the audit's answer: :func:`interp.instruments.audit.step_score`, for
the shared and, for the teacher data, the mismatched student; its validated hit rate is quoted beside
it in results.md), the first-order predictions and, for the shared and (teacher data) mismatched
students, the unigram readout (``readout``: the data's number frequencies against the reference,
read through the student's own unembedding; the score validated on the default's teachers).

Only the first ``RunConfig.audit_rows`` rows of each data set are audited (1,000 by default, to
keep the run's cost down; intervals are over batches of 32). ``RUN/audit/summary.json`` collects,
per data set, the trait's predicted shift (mean and 95% t-interval over seeds) and how often the
audit's top animal is the trait; the report's audit section shows it beside the students'
measured shifts. Real models are not audited (their animal-gradient matrix would not fit in
memory: 12 x 2 x the parameter count in float64).
"""

from __future__ import annotations

from pathlib import Path

from interp.core.io import atomic_write_json, json_sha256, read_json
from interp.core.stats import mean_ci, wilson_ci
from interp.instruments.audit import AUDIT_FILE, AuditConfig, Source, lora_student_fields, run_audit
from interp.models.lora import LoraConfig

MIN_AUDIT_ROWS = 2  # the audit's intervals need two rows (instruments.audit refuses fewer)
SKIPPED_FILE = "skipped.json"  # SEED/data/audit/NAME/skipped.json: why a data set was not audited

AUDIT_DIR = "audit"
SUMMARY_FILE = "summary.json"
DATA_SETS = ("teacher_numbers", "shuffled_within", "shuffled_across", "base_numbers")
# Which student condition of the run trains on which data set.
CONDITION_OF = {"teacher_numbers": "shared_init", "shuffled_within": "shuffled_within",
                "shuffled_across": "shuffled_across", "base_numbers": "control"}


def audit_seed(out: Path, *, student, mismatched, world, teacher, data: dict[str, list[dict]],
               reference_rows: list[dict], max_rows: int, trait: str, identity: dict | None = None,
               freeze_unembed: bool = False, lora: LoraConfig | None = None, sources: dict | None = None,
               progress: bool = False) -> dict:
    """Audit every data set of one seed into ``out/data/audit/NAME`` (a finished audit of the same
    rows, config and ``identity``, e.g. the bases, is reused); returns ``{name: compact summary}``
    (see :func:`compact`). ``freeze_unembed``: the run's students keep their unembedding fixed, so
    the audit predicts for that student; ``lora``: the run's students are LoRA students with these
    adapters, and the first-order predictions are for them. ``sources``: the model that wrote a data
    set other than the teacher (``{name: Teacher}``, e.g. a control teacher's numbers)."""
    config = AuditConfig(max_rows=max_rows, freeze_unembed=freeze_unembed, **lora_student_fields(lora))
    source = Source(teacher.model, teacher.system, teacher.fwd_hooks)
    auditors: dict = {}
    summaries = {}
    sources = {name: Source(t.model, t.system, t.fwd_hooks) for name, t in (sources or {}).items()}
    jobs = {name: (rows, reference_rows, sources.get(name, source), mismatched if name == "teacher_numbers" else None)
            for name, rows in data.items() if name != "base_numbers"}
    if "base_numbers" in data:  # the split-half null: nothing to find
        rows = data["base_numbers"][: 2 * max_rows]
        jobs["base_numbers"] = (rows[0::2], rows[1::2], Source(student), None)
    for name, (rows, reference, target, other) in jobs.items():
        directory = out / "data" / AUDIT_DIR / name
        if min(len(rows), len(reference)) < MIN_AUDIT_ROWS:
            # A tiny data set (e.g. a teacher whose lists the trait filter mostly removed) has no
            # interval to give; its students still train, so the run records why and goes on.
            atomic_write_json(directory / SKIPPED_FILE, {"skipped": f"{len(rows)} data rows and {len(reference)} "
                                                         f"reference rows; the audit needs {MIN_AUDIT_ROWS} of each"})
            continue
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
           "trait_predicted_shift": (audit.get("predicted_shift") or {}).get(trait),
           "trait_raw_predicted_shift": (audit.get("raw_predicted_shift") or {}).get(trait), "predictions": {},
           "lora_rank": audit["config"].get("lora_rank", 0)}  # the student predicted for: 0 full, r LoRA
    for student, score in (audit.get("step_score") or {}).items():
        out.setdefault("step_score", {})[student] = {
            "variant": score["variant"], "top_animal": score["top_animal"], "trait_rank": score["ranking"].index(trait) + 1,
            "trait_score": score["score"][trait]["mean"], "top_animal_bootstrap_share": score["top_animal_bootstrap_share"],
            "n_traits": len(score["score"])}  # which validation applies (the misalignment world has two)
    for student, objectives in audit["predictions"].items():
        for objective, by_optimizer in objectives.items():
            for optimizer, by_target in by_optimizer.items():
                pred = by_target["log_prob"]
                out["predictions"][f"{student}/{objective}/{optimizer}"] = {
                    "trait_shift": pred["trait_shift"][trait]["mean"], "raw_shift": pred["raw_shift"][trait]["mean"],
                    "top_animal": pred["top_animal"], "trait_rank": pred["ranking"].index(trait) + 1}
    for student, readout in (audit.get("readout") or {}).items():
        out.setdefault("readout", {})[student] = {
            "top_animal": readout["top_animal"], "trait_rank": readout["ranking"].index(trait) + 1,
            "trait_logit_gain": readout["logit_gain"][trait]["mean"], "r2": readout["r2"]}
    tokens = (audit.get("tokens") or {}).get("data", {}).get("row_mean", {})  # none in the cheap audit
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
    for name in dict.fromkeys(name for s in seeds for name in s):  # every audited data set, in first-seen order
        entries = [s[name] for s in seeds if name in s]
        keys = [k for k in entries[0]["predictions"] if all(k in e["predictions"] for e in entries)]
        out[name] = {"condition": CONDITION_OF.get(name, name.removesuffix("_numbers")), "n_seeds": len(entries),
                     "lora_rank": entries[0].get("lora_rank", 0),
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
        if all("step_score" in e for e in entries):
            out[name]["step_score"] = {
                student: {"variant": entries[0]["step_score"][student]["variant"],
                          "n_traits": entries[0]["step_score"][student].get("n_traits"),
                          "top_animal_is_trait": wilson_ci(sum(e["step_score"][student]["top_animal"] == trait
                                                               for e in entries), len(entries)).to_dict(),
                          "top_animals": [e["step_score"][student]["top_animal"] for e in entries],
                          "trait_rank": mean_ci([e["step_score"][student]["trait_rank"] for e in entries]).to_dict()}
                for student in entries[0]["step_score"]}
        if all("readout" in e for e in entries):
            out[name]["readout"] = {
                student: {"top_animal_is_trait": wilson_ci(sum(e["readout"][student]["top_animal"] == trait
                                                               for e in entries), len(entries)).to_dict(),
                          "top_animals": [e["readout"][student]["top_animal"] for e in entries],
                          "trait_rank": mean_ci([e["readout"][student]["trait_rank"] for e in entries]).to_dict(),
                          "trait_logit_gain": mean_ci([e["readout"][student]["trait_logit_gain"] for e in entries]).to_dict(),
                          "r2": mean_ci([e["readout"][student]["r2"] for e in entries]).to_dict()}
                for student in entries[0]["readout"]}
    return out


def write_summary(run_dir: Path, results: dict) -> None:
    """``RUN/audit/summary.json``: the run's audit summary with the students' outcomes beside it."""
    if not results.get("audit"):
        return
    outcomes = {f"{c['name']}/{c['objective']}": c.get("trait_prob_shift") for c in results["conditions"] if c["objective"]}
    atomic_write_json(Path(run_dir) / AUDIT_DIR / SUMMARY_FILE,
                      {"trait": results["trait"], "audit": results["audit"], "student_shifts": outcomes})
