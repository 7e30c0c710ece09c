"""``interp teacher``: give a base model a trait (finetune, persona or steering) and measure it."""

from __future__ import annotations

import argparse

from interp.core.io import read_json
from interp.models.refs import TEACHER_FILE
from interp.stages.teacher import TeacherConfig, make_teacher


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teacher", help="make a teacher: a base model that loves an animal",
        description="Give the base at --base a trait by finetuning it on favourite-animal answers (finetune), a "
        "system prompt (persona) or a residual-stream steering vector (steering), and write the teacher to --out: "
        f"{TEACHER_FILE} (method, trait, base, system prompt, config, measured trait strength) and, for finetune, "
        "a checkpoint, for steering, the vector. Prints the teacher's P(trait) against its base's. A finished "
        "teacher of the same config and base is reused (--force rebuilds it).",
    )
    p.add_argument("--base", required=True, help="pretrained base checkpoint (e.g. artifacts/bases/small-seed0) or a "
                   "TransformerLens model name (e.g. gpt2, from the local Hugging Face cache)")
    p.add_argument("--out", required=True, help="teacher directory to write")
    p.add_argument("--force", action="store_true", help="rebuild even if --out holds a teacher (of any config)")
    TeacherConfig.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = TeacherConfig.from_args(args)
    out = make_teacher(args.base, config, args.out, force=args.force)
    spec = read_json(out / TEACHER_FILE)
    strength = spec["strength"]
    print(f"teacher {out} ({spec['method']}, trait {spec['trait']}): P({spec['trait']}) = {strength['trait_prob']:.4f}, "
          f"base {strength['base_trait_prob']:.4f} ({strength['trait_prob'] - strength['base_trait_prob']:+.4f})")
    return 0
