"""``interp generate``: sample number continuations from a checkpoint into a raw JSONL file."""

from __future__ import annotations

import argparse

from interp.core.io import read_jsonl
from interp.models.refs import parse_model_ref
from interp.stages.generate import GenerateConfig, config_path_for, generate_numbers
from interp.worlds.hf import add_number_prompt_arguments, number_prompt_options, with_number_prompts


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate", help="sample number continuations from a model (the raw data set)",
        description="Continue N_ROWS paper-shaped number prompts of the model's world (the toy world, or a real "
        "model's natural-language prompts) and "
        "write one JSONL row per prompt (id, system, prompt, completion, ended_with_eos, model) to --out, with the "
        "config beside it (OUT.config.json). A finished file of the same config is reused (--force regenerates); "
        "an interrupted run resumes from OUT.partial.jsonl.",
    )
    p.add_argument("--model", required=True, help="checkpoint directory (e.g. artifacts/bases/small-seed0), teacher "
                   "directory (a persona teacher's system prompt and a steering teacher's hooks are applied), or a "
                   "TransformerLens model name (e.g. gpt2: natural-language prompts in its tokenizer's world)")
    p.add_argument("--out", required=True, help="raw JSONL file to write, e.g. DIR/teacher_numbers.raw.jsonl")
    p.add_argument("--force", action="store_true", help="regenerate even if a finished file exists, or one of another config")
    GenerateConfig.add_arguments(p)
    add_number_prompt_arguments(p)  # a real model's name or file: which prompts (paper or grammar), worked examples
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = GenerateConfig.from_args(args)  # a bad option fails before a model is loaded
    options = number_prompt_options(args)
    speaker = parse_model_ref(args.model).speaker()
    speaker.world = with_number_prompts(speaker.world, options, args.model)
    if speaker.system is not None:  # a persona teacher speaks under its system prompt
        if config.system is None:
            config = config.replace(system=speaker.system)
        elif config.system != speaker.system:
            raise ValueError(f"--system {config.system!r} contradicts the system prompt {speaker.system!r} of the "
                             f"{speaker.method} teacher {args.model}")
    out = generate_numbers(speaker.model, speaker.world, config, args.out, fwd_hooks=speaker.fwd_hooks,
                           lineage=speaker.lineage, force=args.force)
    rows = read_jsonl(out)
    n_eos = sum(bool(r["ended_with_eos"]) for r in rows)
    print(f"wrote {out} ({len(rows)} rows, {n_eos} ended with EOS) and {config_path_for(out)}")
    return 0
