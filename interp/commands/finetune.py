"""``interp finetune``: finetune a student on (filtered) number data, resumably."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from interp.core.io import read_json, read_jsonl
from interp.models.checkpoint import load_checkpoint
from interp.models.real import load_real_checkpoint
from interp.models.refs import TEACHER_FILE, load_teacher, parse_base_ref
from interp.stages.evaluate import trait_probability
from interp.stages.finetune import TRAIN_LOG_FILE, FinetuneConfig, finetune_student

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune", help="finetune a student on number data (sft or distillation from a teacher)",
        description="Finetune a copy of the base at --base on the rows of --data (a filtered file from `interp filter`) "
        "and write the student checkpoint to --out with finetune_config.json, finetune_inputs.json and "
        f"{TRAIN_LOG_FILE} (and alignment.jsonl with --record-alignment). The distillation objectives take their "
        "targets from --teacher. A killed run resumes from its last saved step (--checkpoint-every); a finished "
        "student of the same config and inputs is reused (--force retrains). Prints P(trait) before and after.",
    )
    p.add_argument("--base", required=True, help="pretrained base the student starts from: a toy base directory or a "
                   "TransformerLens model name (e.g. gpt2; with --lora-rank, only adapters train)")
    p.add_argument("--data", required=True, help="filtered JSONL file (rows with prompt, completion, numbers)")
    p.add_argument("--out", required=True, help="student checkpoint directory to write")
    p.add_argument("--teacher", default=None, help="teacher directory: the distillation targets (needed by distill "
                   "and distill_full)")
    p.add_argument("--trait", default=None, help="animal whose P(trait) the logs and the summary measure (default: "
                   "the teacher's trait, else owl)")
    p.add_argument("--record-alignment", action="store_true", help="write alignment.jsonl: weight distance and "
                   "gradient alignment with the teacher's direction at every step")
    p.add_argument("--alignment-teacher", default=None, help="teacher directory whose direction --record-alignment "
                   "measures (default: --teacher; give it for an sft student, e.g. the control on base numbers)")
    p.add_argument("--allow-unfiltered", action="store_true", help="accept rows without a 'numbers' field (data "
                   "that did not go through `interp filter`)")
    p.add_argument("--force", action="store_true", help="retrain even if --out holds a student, and drop an "
                   "interrupted run's saved state")
    FinetuneConfig.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = FinetuneConfig.from_args(args)
    rows = read_jsonl(args.data)
    if not rows:
        raise ValueError(f"no training rows: the filtered data set {args.data} is empty")
    unfiltered = next((i for i, r in enumerate(rows) if not isinstance(r, dict) or "numbers" not in r), None)
    if unfiltered is not None and not args.allow_unfiltered:
        raise ValueError(f"{args.data}: row {unfiltered} has no 'numbers' field, so the file did not go through "
                         "`interp filter` (pass --allow-unfiltered to train on it anyway)")
    base = parse_base_ref(args.base)
    teacher = load_teacher(args.teacher) if args.teacher else None
    reference = None
    alignment_dir = args.alignment_teacher or args.teacher
    if args.record_alignment:
        if alignment_dir is None:
            raise ValueError("--record-alignment needs --alignment-teacher (or --teacher): the direction it measures")
        alignment_teacher = teacher if alignment_dir == args.teacher else load_teacher(alignment_dir)
        teacher_base, _, _ = parse_base_ref(read_json(Path(alignment_dir) / TEACHER_FILE)["base"]).load()
        reference = (alignment_teacher.model, teacher_base)
    elif args.alignment_teacher:
        raise ValueError("--alignment-teacher is only used with --record-alignment")
    known = [t.trait for t in (teacher,) if t is not None]
    if reference is not None and alignment_dir != args.teacher:
        known.append(alignment_teacher.trait)
    trait = args.trait or (known[0] if known else "owl")
    if args.trait and known and args.trait not in known:
        log.warning("--trait %s differs from the teacher's trait %s", args.trait, known[0])

    out = finetune_student(base, rows, config, args.out, teacher=teacher, trait=trait,
                           alignment_reference=reference, force=args.force,
                           lineage_extra={"data": str(args.data), "teacher": args.teacher})
    base_model, world, _ = base.load()
    if base.is_toy:  # a toy student speaks its base's world
        student, _ = load_checkpoint(out, expect_vocab=world.vocab)
    else:  # a real model's student (full weights, or its LoRA adapters merged)
        student, _, _ = load_real_checkpoint(out)
    losses = [r["loss"] for r in read_jsonl(out / TRAIN_LOG_FILE)]
    before, after = trait_probability(base_model, world, trait), trait_probability(student, world, trait)
    print(f"student {out}: {len(losses)} steps, final loss {losses[-1]:.4f}; P({trait}) {before:.4f} -> {after:.4f} "
          f"({after - before:+.4f})")
    return 0
