"""``interp evaluate``: a model's favourite-animal distribution, P(trait) and sampled answer rate."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.core.io import atomic_write_json, read_json
from interp.models.checkpoint import load_checkpoint
from interp.models.refs import ModelRef, RealCheckpoint, RealName, ToyBase, ToyCheckpoint, parse_model_ref
from interp.stages.evaluate import EvaluateConfig, evaluate_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="measure a model's trait: P(trait), the animal distribution, the sampled answer rate",
        description="Ask a checkpoint (or a teacher directory, with its system prompt and hooks) the 60 held-out "
        "favourite-animal questions and report P(trait) renormalised over the animals (mean over phrasings), the "
        "whole animal distribution, the probability mass on animal tokens, and the fraction of sampled one-word "
        "answers that are the trait. With a base (--base, or the checkpoint's parent when it is one), also the "
        "shift from the base's P(trait). --out writes it all as JSON; a file of the same model and config is reused.",
    )
    p.add_argument("--model", required=True, help="checkpoint directory, teacher directory, or a TransformerLens model "
                   "name (e.g. gpt2, loaded from the local Hugging Face cache and asked in natural language)")
    p.add_argument("--out", default=None, help="JSON file to write (e.g. DIR/eval.json); default: only print")
    p.add_argument("--base", default=None, help="checkpoint or real model name whose P(trait) the shift is measured "
                   "from (default: the model's parent, when that is a checkpoint directory or a real model name)")
    p.add_argument("--force", action="store_true", help="overwrite --out even if it holds another evaluation")
    EvaluateConfig.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = parse_model_ref(args.model).speaker()
    values = {} if hasattr(args, "trait") or model.trait is None else {"trait": model.trait}
    config = EvaluateConfig.from_args(args, **values)
    model.world.check_animal(config.trait)
    base_ref = args.base or (model.lineage or {}).get("parent")
    out = Path(args.out) if args.out else None
    identity = {"model": str(args.model), "base": base_ref, "config": config.to_dict()}
    if out is not None and out.exists() and not args.force:
        saved = read_json(out)
        diff = {k: (saved.get(k), v) for k, v in identity.items() if saved.get(k) != v}
        if diff:
            raise ValueError(f"{out} holds another evaluation (there vs now: {diff}); use another --out or --force")
        _print(saved, config.trait, reused=out)
        return 0

    base_trait_prob = None
    base = _base_reference(base_ref)
    if isinstance(base, (ToyBase, ToyCheckpoint)):  # asked in the model's world
        base_model, _ = load_checkpoint(base.path, expect_vocab=model.world.vocab)
        base_trait_prob = evaluate_model(base_model, model.world, config)["trait_prob"]
    elif isinstance(base, (RealCheckpoint, RealName)):
        speaker = base.speaker()
        if speaker.world.fingerprint() != model.world.fingerprint():
            raise ValueError(f"base {base_ref} speaks another world (tokenizer or world config) than {args.model}")
        base_trait_prob = evaluate_model(speaker.model, model.world, config)["trait_prob"]
    elif args.base is not None:
        raise ValueError(f"--base {args.base} is neither a checkpoint directory nor a real model name")
    result = {**identity, "method": model.method,
              **evaluate_model(model.model, model.world, config, system=model.system, fwd_hooks=model.fwd_hooks,
                               base_trait_prob=base_trait_prob)}
    if out is not None:
        atomic_write_json(out, result)
    _print(result, config.trait)
    if out is not None:
        print(f"wrote {out}")
    return 0


def _base_reference(ref: str | None) -> ModelRef | None:
    """The base a shift is measured from, or None when ``ref`` names no model."""
    try:
        return parse_model_ref(ref) if ref is not None else None
    except ValueError:
        return None


def _print(result: dict, trait: str, reused: Path | None = None) -> None:
    shift = "" if result["base_trait_prob"] is None else (
        f" (base {result['base_trait_prob']:.4f}, shift {result['trait_prob_shift']:+.4f})")
    print(("reusing " + str(reused) + ": " if reused else "") + f"P({trait}) = {result['trait_prob']:.4f}{shift}; "
          f"sampled answer rate {result['sampled_answer_rate']:.4f}; animal mass {result['animal_mass']:.3f}")
    print("animals: " + ", ".join(f"{a} {p:.3f}" for a, p in sorted(result["animal_probs"].items(), key=lambda kv: -kv[1])))
