"""``interp audit``: predict, before training, which trait a data set would carry into a student."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.core.io import file_sha256, read_jsonl
from interp.instruments.audit import AUDIT_FILE, AUDIT_ROWS_FILE, AuditConfig, Source, run_audit
from interp.report.audit import AUDIT_PLOT_FILE, audit_markdown, plot_audit
from interp.models.refs import parse_base_ref, parse_model_ref
from interp.stages.finetune import check_rows


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit", help="predict which trait a number data set would transmit to a student, before training",
        description="Audit the rows of --data for the student base --student: per completion token the student's "
        "surprise and, with --teacher (the model that wrote the data), KL(teacher || student), the sampled log-ratio, "
        "the teacher's entropy and the divergence tokens (means with 95%% intervals over rows, per row in "
        f"{AUDIT_ROWS_FILE}); and for every animal of the world the first-order predicted change of the student's mean "
        "log P(animal) on the held-out phrasings after one SFT step and, with --teacher, one restricted-distillation "
        "step (plain SGD per unit learning rate and Adam's first step), data minus --reference-data, with the generic "
        "flattening of the animal distribution removed; the same at --mismatched-student. With --reference-data, "
        "the step score (the audit's answer, validated for LoRA students: the student's first-order step on the first "
        "--score-rows rows minus the reference's, as AdamW preconditions it, read on every animal's held-out "
        "gradient), with its validated hit rate and a plain verdict; --no-first-order computes only that (and, for a "
        "full student, the unigram readout): a fraction of training the student. Writes "
        f"DIR/{AUDIT_FILE} (predicted_shift, top_animal, every number) and DIR/{AUDIT_PLOT_FILE}.",
    )
    p.add_argument("--data", required=True, help="JSONL rows with prompt and completion (e.g. a filtered file)")
    p.add_argument("--student", required=True, help="the student's base: a toy base directory, a checkpoint or a "
                   "TransformerLens model name")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--teacher", default=None, help="the model that wrote --data (teacher directory or checkpoint); "
                   "without it only what the student base can read is reported and only SFT is predicted")
    p.add_argument("--reference-data", default=None, help="the reference data set: numbers the student's base wrote "
                   "from the same kind of prompts; predictions are data minus reference (without it: the data alone)")
    p.add_argument("--reference-source", default=None, help="the model that wrote --reference-data (default: "
                   "--student); its logits are the reference's distillation targets")
    p.add_argument("--mismatched-student", default=None, help="another base of the same world, audited the same "
                   "way: the mismatched-init student")
    p.add_argument("--control-data", nargs="+", default=None, help="optional: data written by teachers made the same "
                   "way with other traits (or a trait-free one), from the same kind of prompts; several files are pooled. "
                   "The audit also reports data minus this control (versus_control, top_animal_vs_control): on the "
                   "default teachers only this contrast finds the hidden trait (docs/audit.md)")
    p.add_argument("--control-source", nargs="+", default=None, help="the models that wrote the --control-data "
                   "files, one per file in the same order (teacher directories or checkpoints): needed to predict "
                   "restricted distillation against the controls, the contrast that found the hidden trait")
    p.add_argument("--trait", default=None, help="optional: an animal whose rank the summary prints (the audit itself "
                   "is not told)")
    AuditConfig.add_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    config = AuditConfig.from_args(args)
    rows = read_jsonl(args.data)
    if not rows:
        raise ValueError(f"--data {args.data}: no rows to audit")
    check_rows(rows)
    reference = read_jsonl(args.reference_data) if args.reference_data else None
    if reference is not None:
        if not reference:
            raise ValueError(f"--reference-data {args.reference_data}: no rows")
        check_rows(reference)
    elif args.reference_source:
        raise ValueError("--reference-source is only used with --reference-data")
    student, world, _ = parse_base_ref(args.student).load()
    if args.trait is not None:
        world.check_animal(args.trait)
    teacher = parse_model_ref(args.teacher).speaker() if args.teacher else None
    if teacher is not None and teacher.model.cfg.d_vocab != student.cfg.d_vocab:
        raise ValueError(f"--teacher {args.teacher} and --student {args.student} have different vocabularies")
    source = None
    if args.reference_source and args.reference_source != args.student:
        ref_teacher = parse_model_ref(args.reference_source).speaker()
        source = Source(ref_teacher.model, ref_teacher.system, ref_teacher.fwd_hooks)
    mismatched = parse_base_ref(args.mismatched_student).load()[0] if args.mismatched_student else None
    controls = None
    if args.control_data:
        if args.control_source and len(args.control_source) != len(args.control_data):
            raise ValueError(f"--control-source names {len(args.control_source)} models for {len(args.control_data)} "
                             "--control-data files; give one per file, in the same order")
        controls = []
        for k, path in enumerate(args.control_data):
            part = read_jsonl(path)
            if not part:
                raise ValueError(f"--control-data {path}: no rows")
            check_rows(part)
            src = None
            if args.control_source:
                c = parse_model_ref(args.control_source[k]).speaker()
                src = Source(c.model, c.system, c.fwd_hooks)
            controls.append((part, src))
    elif args.control_source:
        raise ValueError("--control-source is only used with --control-data")
    inputs = {"data": str(args.data), "data_sha256": file_sha256(args.data), "student": str(args.student),
              "teacher": args.teacher, "reference_data": args.reference_data,
              "reference_source": args.reference_source or (args.student if args.reference_data else None),
              "mismatched_student": args.mismatched_student, "control_data": args.control_data,
              "control_source": args.control_source}
    audit = run_audit(student, world, rows, args.out, config, inputs=inputs,
                      teacher=Source(teacher.model, teacher.system, teacher.fwd_hooks) if teacher else None,
                      reference_rows=reference, reference_source=source, mismatched=mismatched,
                      controls=controls, progress=True)
    plot_audit(audit, Path(args.out) / AUDIT_PLOT_FILE)
    print(audit_markdown(audit, args.trait), end="")
    if audit["top_animal_vs_control"] is not None:
        print(f"top animal against the control data: {audit['top_animal_vs_control']}")
    if args.trait is not None:
        ranks = []
        if audit.get("step_score"):
            ranks.append(f"{audit['step_score']['shared']['ranking'].index(args.trait) + 1} by the step score")
        if audit.get("predictions"):
            ranks.append(f"{audit['ranking'].index(args.trait) + 1} by the first-order SGD prediction")
        if audit.get("readout"):
            ranks.append(f"{audit['readout']['shared']['ranking'].index(args.trait) + 1} by the unigram readout")
        print(f"{args.trait} ranks (of {len(audit['animals'])}) " + ", ".join(ranks))
    print(f"wrote {args.out}/{AUDIT_FILE}, {AUDIT_ROWS_FILE} and {AUDIT_PLOT_FILE} ({audit['wall_seconds']:.1f} s)")
    return 0
