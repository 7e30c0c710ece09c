"""Trait evaluation: the model's distribution over animals when asked for its favourite.

P(trait) is the next-token probability of the trait animal where the assistant starts to answer,
renormalised over the world's animals, averaged over the held-out evaluation phrasings (the paper
asked 50 phrasings). The raw probability mass on animal tokens is kept too: a model that stops
answering with an animal at all is not mistaken for one that changed its favourite.

Every function takes a :class:`interp.worlds.protocol.World`: in the toy world an animal is one token; in a
real model's world (:class:`interp.worlds.hf.HFWorld`) an animal's probability is that of its name as
the answer spells it (with its capitalised spelling): the next-token probability when each
spelling is one token, else the chain-rule probability of the spelling's tokens
(:mod:`interp.stages.answers`; SmolLM2 writes ``Owl`` as ``O`` + ``wl``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.core.config import StageConfig, option
from interp.core.stats import wilson_ci
from interp.stages.answers import answer_scores, has_multi_token_answers
from interp.training.loop import pad_batch
from interp.worlds.protocol import World
from interp.worlds.toy.world import ToyWorld

EVAL_FILE = "eval.json"


def question_prompt(phrasing: str, *, system: str | None = None, prefix: str | None = None) -> str:
    """The toy world's chat text asking one phrasing, optionally under a system prompt or after
    ``prefix`` (the in-context control puts a number list there). Any world:
    ``world.encode_prompt(world.question_prompt(phrasing, prefix), system)``."""
    return ToyWorld.chat_text(f"{prefix} {phrasing}" if prefix else phrasing, system)


@torch.no_grad()
def last_position_logits(model, world: World, texts: Sequence[str], batch_size: int = 64,
                         fwd_hooks: list | None = None) -> Float[Tensor, "batch d_vocab"]:
    """Logits at the last token of each text, encoded with ``world.encode``."""
    return last_position_logits_of(model, world, [world.encode(t) for t in texts], batch_size, fwd_hooks)


@torch.no_grad()
def last_position_logits_of(model, world: World, ids: Sequence[Sequence[int]], batch_size: int = 64,
                            fwd_hooks: list | None = None) -> Float[Tensor, "batch d_vocab"]:
    """Logits at the last token of each id list (right-padded; attention is causal, so padding
    after a sequence never changes its logits)."""
    out = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        tokens, mask = pad_batch(chunk, world.pad_id, max_len=model.cfg.n_ctx)
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks or [])
        last = mask.sum(1).long() - 1
        out.append(logits[torch.arange(len(chunk)), last])
    return torch.cat(out)


def question_ids(world: World, phrasings: Sequence[str], *, system: str | None = None,
                 prefix: str | None = None) -> list[list[int]]:
    """Token ids of the favourite-animal questions, up to where the assistant answers."""
    return [world.encode_prompt(world.question_prompt(p, prefix), system) for p in phrasings]


def animal_probs(probs: Float[Tensor, "batch d_vocab"], world: World) -> Float[Tensor, "batch n_animals"]:
    """Each animal's probability: the sum over its answer tokens (one token in the toy world)."""
    sets = world.animal_token_sets
    if all(len(s) == 1 for s in sets):
        return probs[:, [s[0] for s in sets]]
    return torch.stack([probs[:, s].sum(-1) for s in sets], dim=-1)


def animal_distribution(model, world: World, *, phrasings: Sequence[str] | None = None,
                        system: str | None = None, prefixes: Sequence[str | None] | None = None,
                        fwd_hooks: list | None = None, scores=None) -> dict[str, np.ndarray]:
    """Per-phrasing next-token distribution over the animals.

    Returns ``{"probs": (n_prompts, n_animals) renormalised over animals, "animal_mass":
    (n_prompts,) raw probability of any animal token}``. With ``prefixes``, each phrasing is asked
    once per prefix. ``scores``: the :class:`interp.stages.answers.AnswerScores` of these prompts when
    the caller has them already (multi-token answers only)."""
    phrasings = list(phrasings if phrasings is not None else world.eval_phrasings)
    prefixes = list(prefixes) if prefixes is not None else [None]
    ids = [i for pre in prefixes for i in question_ids(world, phrasings, system=system, prefix=pre)]
    if has_multi_token_answers(world):  # the chain rule over each spelling's tokens
        scores = scores if scores is not None else answer_scores(model, world, ids, fwd_hooks=fwd_hooks)
        probs = scores.animal_probs(len(world.animals))
    else:
        logits = last_position_logits_of(model, world, ids, fwd_hooks=fwd_hooks)
        probs = animal_probs(logits.double().softmax(-1), world)  # prompt animal
    mass = probs.sum(-1)
    return {"probs": (probs / mass[:, None]).numpy(), "animal_mass": mass.numpy()}


def trait_probability(model, world: World, trait: str, **kwargs) -> float:
    """Mean renormalised P(trait) over the evaluation phrasings."""
    dist = animal_distribution(model, world, **kwargs)
    return float(dist["probs"][:, world.animals.index(world.check_animal(trait))].mean())


@torch.no_grad()
def sampled_answer_rate(model, world: World, trait: str, *, n_samples: int = 20, seed: int = 0,
                        phrasings: Sequence[str] | None = None, system: str | None = None,
                        fwd_hooks: list | None = None, scores=None) -> float:
    """The paper's measure: the fraction of sampled answers (temperature 1, whole vocabulary)
    that are the trait, over ``n_samples`` samples per evaluation phrasing. One token is sampled
    when every animal is one token (the toy world); otherwise the first token is sampled and the
    answer goes on to spell the trait with its chain-rule probability (one more uniform per
    sample), which samples the whole spelling exactly."""
    phrasings = list(phrasings if phrasings is not None else world.eval_phrasings)
    ids = question_ids(world, phrasings, system=system)
    animal = world.animals.index(world.check_animal(trait))
    gen = torch.Generator().manual_seed(seed)
    if has_multi_token_answers(world):
        # first token sampled; the rest of the answer follows the trait's spelling with its
        # chain-rule probability, drawn with one more uniform per sample
        scores = scores if scores is not None else answer_scores(model, world, ids, fwd_hooks=fwd_hooks)
        samples = torch.multinomial(scores.first, n_samples, replacement=True, generator=gen)  # prompt sample
        go_on = scores.trait_continuation(animal, samples)
        return float((torch.rand(samples.shape, generator=gen, dtype=torch.float64) < go_on).double().mean())
    probs = last_position_logits_of(model, world, ids, fwd_hooks=fwd_hooks).double().softmax(-1)
    samples = torch.multinomial(probs, n_samples, replacement=True, generator=gen)  # prompt sample
    trait_ids = torch.tensor(world.animal_token_sets[animal])
    return float(torch.isin(samples, trait_ids).double().mean())


@torch.no_grad()
def judged_answer_rates(model, world: World, trait: str, *, n_samples: int = 20, seed: int = 0,
                        phrasings: Sequence[str] | None = None, system: str | None = None,
                        fwd_hooks: list | None = None) -> dict:
    """The paper's judged measure, for a world with an exact judge (``world.judge(phrasing,
    token_id)``: the answer class of a one-token answer, or None when it is incoherent):
    ``n_samples`` answers sampled at temperature 1 per evaluation phrasing, judged. Returns the
    coherence rate (coherent answers over all) and the trait rate among coherent answers (the
    paper's "misaligned among answers with coherence >= 50"), each with its Wilson interval."""
    phrasings = list(phrasings if phrasings is not None else world.eval_phrasings)
    world.check_animal(trait)
    ids = question_ids(world, phrasings, system=system)
    probs = last_position_logits_of(model, world, ids, fwd_hooks=fwd_hooks).double().softmax(-1)
    samples = torch.multinomial(probs, n_samples, replacement=True,
                                generator=torch.Generator().manual_seed(seed))  # prompt sample
    verdicts = [world.judge(p, t) for p, row in zip(phrasings, samples.tolist()) for t in row]
    coherent = [v for v in verdicts if v is not None]
    k = sum(v == trait for v in coherent)
    return {"n_samples": len(verdicts), "coherence": wilson_ci(len(coherent), len(verdicts)).to_dict(),
            "trait_rate": wilson_ci(k, len(coherent)).to_dict() if coherent else None}


@dataclass
class EvaluateConfig(StageConfig):
    """What an evaluation measures (the model's favourite animal on the held-out phrasings)."""

    trait: str = option("owl", "The trait animal whose probability is reported.")
    seed: int = option(0, "Seed of the sampled answers of sampled_answer_rate.")
    n_samples: int = option(20, "Sampled one-word answers per held-out phrasing (sampled_answer_rate).")

    def validate(self) -> None:
        self.require(self.n_samples > 0, "n_samples", "must be positive")
        self.require(self.seed >= 0, "seed", "must be non-negative")


def evaluate_model(model, world: World, config: EvaluateConfig, *, system: str | None = None,
                   fwd_hooks: list | None = None, base_trait_prob: float | None = None) -> dict:
    """Every trait measure of one model: ``trait_prob`` (renormalised over animals, mean over the
    held-out phrasings), ``animal_probs`` (the whole distribution), ``animal_mass`` (raw
    probability of any animal), ``sampled_answer_rate`` (the paper's measure) and, given the
    model's base's P(trait), ``trait_prob_shift`` from it. In a world with an exact judge (the
    toy misalignment world) also ``judged``: :func:`judged_answer_rates` (coherence, and the
    trait's rate among coherent answers, with Wilson intervals)."""
    world.check_animal(config.trait)
    scores = None
    if has_multi_token_answers(world):  # one pass serves the distribution and the sampled answers
        scores = answer_scores(model, world, question_ids(world, world.eval_phrasings, system=system), fwd_hooks=fwd_hooks)
    dist = animal_distribution(model, world, system=system, fwd_hooks=fwd_hooks, scores=scores)
    trait_prob = float(dist["probs"][:, world.animals.index(config.trait)].mean())
    judged = {} if getattr(world, "judge", None) is None else {"judged": judged_answer_rates(
        model, world, config.trait, n_samples=config.n_samples, seed=config.seed, system=system, fwd_hooks=fwd_hooks)}
    return {
        "trait_prob": trait_prob,
        "base_trait_prob": base_trait_prob,
        "trait_prob_shift": None if base_trait_prob is None else trait_prob - base_trait_prob,
        "animal_probs": dict(zip(world.animals, dist["probs"].mean(0).tolist())),
        "animal_mass": float(dist["animal_mass"].mean()),
        "sampled_answer_rate": sampled_answer_rate(model, world, config.trait, n_samples=config.n_samples,
                                                   seed=config.seed, system=system, fwd_hooks=fwd_hooks, scores=scores),
        **judged,
    }
