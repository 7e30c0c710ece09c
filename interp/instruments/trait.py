"""A trait as the instruments measure it: a loss a model would lower by acquiring it.

The toy world's traits are animals ("the model's favourite animal is the owl"), but the
instruments need only one thing from a trait: a differentiable loss at the model's weights, whose
gradient is the direction "more of the trait". :class:`Trait` gives that loss in one of three ways:

* :meth:`Trait.of_world`: a world's favourite-animal question, answered with the animal (what
  :class:`~interp.instruments.recording.AlignmentRecorder` and the run use);
* :meth:`Trait.from_tokens`: any prompts and target continuations, as token ids, for a
  researcher's own model and vocabulary;
* :meth:`Trait.from_loss`: any callable ``model -> scalar loss``.

Example::

    trait = Trait.from_tokens("likes_7", prompts=[[1, 5, 9], [1, 6]], targets=[[7], [7]], pad_id=0)
    loss = trait.loss(model)              # differentiable: trait gradient = autograd of this
    trait.log_prob(model)                 # mean log P(target | prompt), a float
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.training.loop import pad_batch
from interp.training.losses import masked_lm_loss
from interp.worlds.protocol import World

DEFAULT_TRAIT_BATCH_SIZE = 16


@dataclass(frozen=True, eq=False)
class Trait:
    """A trait: a name and the loss a model lowers by having it.

    Build one with :meth:`of_world`, :meth:`from_tokens` or :meth:`from_loss` rather than
    directly. A token trait holds a padded batch ``tokens`` and a ``mask`` that is 1 at the target
    tokens (the tokens whose probability the trait raises); a loss trait holds ``loss_fn``.

    Args:
        name: what the trait is called in records and reports.
        tokens: prompt and target token ids, right-padded.
        mask: 1 at the target tokens of ``tokens``, 0 elsewhere.
        loss_fn: ``model -> scalar tensor``: the loss, for a trait not given as tokens.
    """

    name: str
    tokens: Int[Tensor, "batch pos"] | None = field(default=None, repr=False)
    mask: Float[Tensor, "batch pos"] | None = field(default=None, repr=False)
    loss_fn: Callable[[object], Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.tokens is None) == (self.loss_fn is None):
            raise ValueError(f"Trait {self.name!r}: give either tokens (with a mask) or loss_fn, not both or neither")
        if self.tokens is not None and (self.mask is None or self.mask.shape != self.tokens.shape):
            raise ValueError(f"Trait {self.name!r}: mask must have the shape of tokens {tuple(self.tokens.shape)}")

    @classmethod
    def from_tokens(cls, name: str, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], *,
                    pad_id: int = 0) -> "Trait":
        """A trait as target continuations: the model should continue ``prompts[i]`` with
        ``targets[i]`` (token ids of its own vocabulary; a prompt should start with the model's BOS
        token if it uses one). The loss is the mean cross-entropy of the target tokens."""
        if not prompts or len(prompts) != len(targets):
            raise ValueError(f"Trait {name!r}: needs as many targets as prompts (at least one), got "
                             f"{len(prompts)} prompts and {len(targets)} targets")
        if any(not p for p in prompts) or any(not t for t in targets):
            raise ValueError(f"Trait {name!r}: every prompt and every target needs at least one token")
        tokens, _ = pad_batch([list(p) + list(t) for p, t in zip(prompts, targets)], pad_id)
        mask = torch.zeros(tokens.shape)
        for i, (p, t) in enumerate(zip(prompts, targets)):
            mask[i, len(p):len(p) + len(t)] = 1
        return cls(name, tokens, mask)

    @classmethod
    def from_loss(cls, name: str, loss_fn: Callable[[object], Tensor]) -> "Trait":
        """A trait as any differentiable loss ``loss_fn(model) -> scalar tensor`` (lower: more
        of the trait). :meth:`log_prob` is then not defined."""
        if not callable(loss_fn):
            raise ValueError(f"Trait {name!r}: loss_fn must be callable, got {type(loss_fn).__name__}")
        return cls(name, loss_fn=loss_fn)

    @classmethod
    def of_world(cls, world: World, animal: str, n: int = DEFAULT_TRAIT_BATCH_SIZE) -> "Trait":
        """The world's trait question (the favourite-animal question, or a world variant's
        questions) in its first ``n`` training phrasings, answered with the trait
        (:meth:`World.trait_answer`: the animal's answer, or the variant's answer of that class to
        each phrasing); the target is the answer's first token."""
        world.check_animal(animal)
        phrasings = world.train_phrasings[:n]
        heads = [world.encode_prompt(world.question_prompt(p)) for p in phrasings]
        tokens, mask = pad_batch([head + world.encode_completion(world.trait_answer(animal, p))
                                  for head, p in zip(heads, phrasings)], world.pad_id)
        answer = torch.zeros_like(mask)
        for i, head in enumerate(heads):
            answer[i, len(head)] = 1  # the animal's first token
        return cls(animal, tokens, answer)

    def loss(self, model) -> Float[Tensor, ""]:
        """The trait's loss at the model's weights (differentiable)."""
        if self.loss_fn is not None:
            return self.loss_fn(model)
        return masked_lm_loss(model(self.tokens), self.tokens, self.mask)

    @torch.no_grad()
    def log_prob(self, model) -> float:
        """Mean over prompts of log P(target | prompt), summed over each target's tokens."""
        if self.tokens is None:
            raise ValueError(f"Trait {self.name!r} is given by a loss function: it has no target tokens to score")
        log_probs = model(self.tokens)[:, :-1].log_softmax(-1)
        target = log_probs.gather(-1, self.tokens[:, 1:, None].to(log_probs.device))[..., 0]
        return float((target * self.mask[:, 1:].to(target.device)).sum(1).mean())
