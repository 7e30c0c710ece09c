"""``interp generate``: sample number continuations from a checkpoint into a raw JSONL file."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.generate import GenerateConfig, config_path_for, generate_numbers
from interp.io import read_jsonl


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="sample number continuations from a model (the raw data set)",
        description="Continue N_ROWS paper-shaped number prompts of the toy world with a checkpoint's model and "
        "write one JSONL row per prompt (id, system, prompt, completion, ended_with_eos, model) to --out, with the "
        "config beside it (OUT.config.json). A finished file of the same config is reused (--force regenerates); "
        "an interrupted run resumes from OUT.partial.jsonl.",
    )
    p.add_argument("--model", required=True, help="checkpoint directory (e.g. artifacts/bases/small-seed0)")
    p.add_argument("--out", required=True, help="raw JSONL file to write, e.g. DIR/teacher_numbers.raw.jsonl")
    p.add_argument("--force", action="store_true", help="regenerate even if a finished file exists, or one of another config")
    GenerateConfig.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from interp.models import load_checkpoint
    from interp.toy.world import ToyWorld

    world = ToyWorld()
    config = GenerateConfig.from_args(args)
    model, lineage = load_checkpoint(args.model, expect_vocab=world.vocab)
    model_lineage = {"checkpoint": str(Path(args.model)), "stage": lineage.stage, "seed": lineage.seed,
                     "parent": lineage.parent, "world_fingerprint": lineage.world_fingerprint}
    out = generate_numbers(model, world, config, args.out, lineage=model_lineage, force=args.force)
    rows = read_jsonl(out)
    n_eos = sum(bool(r["ended_with_eos"]) for r in rows)
    print(f"wrote {out} ({len(rows)} rows, {n_eos} ended with EOS) and {config_path_for(out)}")
    return 0
