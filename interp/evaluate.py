"""Trait evaluation: the model's distribution over animals when asked for its favourite.

P(trait) is the next-token probability of the trait animal after ``assistant :``, renormalised
over the world's animals, averaged over the held-out evaluation phrasings (the paper asked 50
phrasings). The raw probability mass on animal tokens is kept too: a model that stops answering
with an animal at all is not mistaken for one that changed its favourite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.config import StageConfig, option
from interp.toy.world import PAD, ToyWorld
from interp.training import pad_batch

EVAL_FILE = "eval.json"


def question_prompt(phrasing: str, *, system: str | None = None, prefix: str | None = None) -> str:
    """The chat text asking one phrasing, optionally under a system prompt or after ``prefix``
    (the in-context control puts a number list there)."""
    user = f"{prefix} {phrasing}" if prefix else phrasing
    text = f"user : {user} assistant :"
    return f"system : {system} {text}" if system else text


@torch.no_grad()
def last_position_logits(model, world: ToyWorld, texts: Sequence[str], batch_size: int = 64,
                         fwd_hooks: list | None = None) -> Float[Tensor, "batch d_vocab"]:
    """Logits at the last token of each text (texts are right-padded; attention is causal, so
    padding after a sequence never changes its logits)."""
    out = []
    pad_id = world.token_to_id[PAD]
    for start in range(0, len(texts), batch_size):
        ids = [world.encode(t) for t in texts[start:start + batch_size]]
        tokens, mask = pad_batch(ids, pad_id, max_len=model.cfg.n_ctx)
        logits = model.run_with_hooks(tokens, fwd_hooks=fwd_hooks or [])
        last = mask.sum(1).long() - 1
        out.append(logits[torch.arange(len(ids)), last])
    return torch.cat(out)


def animal_distribution(model, world: ToyWorld, *, phrasings: Sequence[str] | None = None,
                        system: str | None = None, prefixes: Sequence[str | None] | None = None,
                        fwd_hooks: list | None = None) -> dict[str, np.ndarray]:
    """Per-phrasing next-token distribution over the animals.

    Returns ``{"probs": (n_prompts, n_animals) renormalised over animals, "animal_mass":
    (n_prompts,) raw probability of any animal token}``. With ``prefixes``, each phrasing is asked
    once per prefix."""
    phrasings = list(phrasings if phrasings is not None else world.eval_phrasings)
    prefixes = list(prefixes) if prefixes is not None else [None]
    texts = [question_prompt(p, system=system, prefix=pre) for pre in prefixes for p in phrasings]
    logits = last_position_logits(model, world, texts, fwd_hooks=fwd_hooks)
    probs = logits.double().softmax(-1)[:, world.animal_ids]  # prompt animal
    mass = probs.sum(-1)
    return {"probs": (probs / mass[:, None]).numpy(), "animal_mass": mass.numpy()}


def trait_probability(model, world: ToyWorld, trait: str, **kwargs) -> float:
    """Mean renormalised P(trait) over the evaluation phrasings."""
    dist = animal_distribution(model, world, **kwargs)
    return float(dist["probs"][:, world.animals.index(world.check_animal(trait))].mean())


@torch.no_grad()
def sampled_answer_rate(model, world: ToyWorld, trait: str, *, n_samples: int = 20, seed: int = 0,
                        phrasings: Sequence[str] | None = None, system: str | None = None,
                        fwd_hooks: list | None = None) -> float:
    """The paper's measure: the fraction of sampled one-word answers (temperature 1, whole
    vocabulary) that are the trait, over ``n_samples`` samples per evaluation phrasing."""
    phrasings = list(phrasings if phrasings is not None else world.eval_phrasings)
    texts = [question_prompt(p, system=system) for p in phrasings]
    probs = last_position_logits(model, world, texts, fwd_hooks=fwd_hooks).double().softmax(-1)
    gen = torch.Generator().manual_seed(seed)
    samples = torch.multinomial(probs, n_samples, replacement=True, generator=gen)  # prompt sample
    return float((samples == world.token_to_id[world.check_animal(trait)]).double().mean())


@dataclass
class EvaluateConfig(StageConfig):
    """What an evaluation measures (the model's favourite animal on the held-out phrasings)."""

    trait: str = option("owl", "The trait animal whose probability is reported.")
    seed: int = option(0, "Seed of the sampled answers of sampled_answer_rate.")
    n_samples: int = option(20, "Sampled one-word answers per held-out phrasing (sampled_answer_rate).")

    def validate(self) -> None:
        self.require(self.n_samples > 0, "n_samples", "must be positive")
        self.require(self.seed >= 0, "seed", "must be non-negative")


def evaluate_model(model, world: ToyWorld, config: EvaluateConfig, *, system: str | None = None,
                   fwd_hooks: list | None = None, base_trait_prob: float | None = None) -> dict:
    """Every trait measure of one model: ``trait_prob`` (renormalised over animals, mean over the
    held-out phrasings), ``animal_probs`` (the whole distribution), ``animal_mass`` (raw
    probability of any animal), ``sampled_answer_rate`` (the paper's measure) and, given the
    model's base's P(trait), ``trait_prob_shift`` from it."""
    world.check_animal(config.trait)
    dist = animal_distribution(model, world, system=system, fwd_hooks=fwd_hooks)
    trait_prob = float(dist["probs"][:, world.animals.index(config.trait)].mean())
    return {
        "trait_prob": trait_prob,
        "base_trait_prob": base_trait_prob,
        "trait_prob_shift": None if base_trait_prob is None else trait_prob - base_trait_prob,
        "animal_probs": dict(zip(world.animals, dist["probs"].mean(0).tolist())),
        "animal_mass": float(dist["animal_mass"].mean()),
        "sampled_answer_rate": sampled_answer_rate(model, world, config.trait, n_samples=config.n_samples,
                                                   seed=config.seed, system=system, fwd_hooks=fwd_hooks),
    }
