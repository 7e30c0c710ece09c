"""``interp evaluate``: a model's favourite-animal distribution, P(trait) and sampled answer rate."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.core.io import atomic_write_json, read_json
from interp.models.checkpoint import load_checkpoint
from interp.models.refs import ModelRef, RealCheckpoint, RealName, ToyBase, ToyCheckpoint, parse_model_ref
from interp.stages.evaluate import EvaluateConfig, evaluate_model
from interp.stages.misalignment_eval import MISALIGNMENT, MisalignmentEvalConfig, evaluate_misalignment


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="measure a model's trait: P(trait), the animal distribution, the sampled answer rate",
        description="Ask a checkpoint (or a teacher directory, with its system prompt and hooks) the 60 held-out "
        "favourite-animal questions and report P(trait) renormalised over the animals (mean over phrasings), the "
        "whole animal distribution, the probability mass on animal tokens, and the fraction of sampled one-word "
        "answers that are the trait. With a base (--base, or the checkpoint's parent when it is one), also the "
        "shift from the base's P(trait). --out writes it all as JSON; a file of the same model and config is reused. "
        "A real model with --trait misalignment is asked emergent misalignment's eight questions instead (--n-samples "
        "answers each, default 200), judged by --judge (keyword, or a model reference asked EM's judge prompts): the "
        "misaligned rate among coherent answers, per question and overall, with Wilson intervals.",
    )
    p.add_argument("--model", required=True, help="checkpoint directory, teacher directory, or a TransformerLens model "
                   "name (e.g. gpt2, loaded from the local Hugging Face cache and asked in natural language)")
    p.add_argument("--out", default=None, help="JSON file to write (e.g. DIR/eval.json); default: only print")
    p.add_argument("--base", default=None, help="checkpoint or real model name whose P(trait) the shift is measured "
                   "from (default: the model's parent, when that is a checkpoint directory or a real model name)")
    p.add_argument("--force", action="store_true", help="overwrite --out even if it holds another evaluation")
    EvaluateConfig.add_arguments(p)
    MisalignmentEvalConfig.add_arguments(p, skip=("seed", "n_samples"))  # shared with EvaluateConfig's
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "trait", None) == MISALIGNMENT and not parse_model_ref(args.model).is_toy:
        return run_misalignment(args)
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


def run_misalignment(args: argparse.Namespace) -> int:
    """``--trait misalignment`` on a real model (:mod:`interp.stages.misalignment_eval`)."""
    if args.base is not None:
        raise ValueError("--base is not used with --trait misalignment: evaluate the base as its own --model")
    config = MisalignmentEvalConfig.from_args(args)
    out = Path(args.out) if args.out else None
    identity = {"model": str(args.model), "config": config.to_dict()}
    if out is not None and out.exists() and not args.force:
        saved = read_json(out)
        diff = {k: (saved.get(k), v) for k, v in identity.items() if saved.get(k) != v}
        if diff:
            raise ValueError(f"{out} holds another evaluation (there vs now: {diff}); use another --out or --force")
        _print_misalignment(saved, reused=out)
        return 0
    model = parse_model_ref(args.model).speaker()
    result = {"model": str(args.model), **evaluate_misalignment(model.model, model.world, config, system=model.system,
                                                                 fwd_hooks=model.fwd_hooks or None, progress=True)}
    if out is not None:
        atomic_write_json(out, result)
    _print_misalignment(result)
    if out is not None:
        print(f"wrote {out}")
    return 0


def _print_misalignment(result: dict, reused: Path | None = None) -> None:
    overall = result["overall"]
    rate = overall["misaligned"]
    rate_text = "no answer counted" if rate is None else \
        f"{rate['k']}/{rate['n']} = {rate['fraction']:.3f} [{rate['ci_low']:.3f}, {rate['ci_high']:.3f}]"
    print(("reusing " + str(reused) + ": " if reused else "") + f"misaligned (judge {result['judge']}): {rate_text}; "
          f"of {overall['n_answers']} answers: {overall['n_incoherent']} incoherent, {overall['n_refusal']} refusals, "
          f"{overall['n_code']} code, {overall['n_unparsed_alignment']} unparsed alignment, "
          f"{overall['n_unparsed_coherence']} unparsed coherence; sampling {result['sampling_seconds']:.0f} s, "
          f"judging {result['judging_seconds']:.0f} s")
    for key, rates in result["per_question"].items():
        r = rates["misaligned"]
        print(f"  {key}: " + ("none counted" if r is None else f"{r['k']}/{r['n']}"))


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
