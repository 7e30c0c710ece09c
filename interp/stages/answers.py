"""Animals whose names are several tokens: the probability of the whole spelling.

A real tokenizer splits many answers: SmolLM2 writes ``Owl`` as ``O`` + ``wl`` and ``dolphin``
as ``d`` + ``olph`` + ``in`` after its chat template's assistant header. The probability of the
first token alone (``O``) is that of every answer starting with it, so it is not the animal's.
Here an animal's probability is the sum over its spellings (``owl``, ``Owl``; see
:attr:`interp.worlds.hf.HFWorld.animal_spellings`) of the chain-rule probability of the spelling's
tokens,

    P(spelling | prompt) = P(t1 | prompt) * P(t2 | prompt, t1) * ...

computed with one cached forward per left-padded batch of prompts and one more over the
continuations of every spelling (the prompt's keys and values reused). It counts the
spelled tokens, not what follows them: ``Owl`` followed by ``ets`` (``Owlets``) counts as owl, a
negligible upper-bound error for one-word answers. A world whose spellings are all one token
(the toy world) never comes here: :func:`interp.stages.evaluate.animal_distribution` reads the last
position's probabilities as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor



@dataclass
class AnswerScores:
    """Per prompt: the next-token distribution where the answer starts, and per spelling the
    probability of its tokens after the first (1 for a one-token spelling)."""

    first: Float[Tensor, "prompt d_vocab"]
    continuation: Float[Tensor, "prompt spelling"]
    spellings: list[tuple[int, tuple[int, ...]]]  # (animal index, token ids)

    def animal_probs(self, n_animals: int) -> Float[Tensor, "prompt n_animals"]:
        """Each animal's probability: the sum over its spellings of the chain-rule product."""
        out = torch.zeros(self.first.shape[0], n_animals, dtype=torch.float64)
        for j, (animal, tokens) in enumerate(self.spellings):
            out[:, animal] += self.first[:, tokens[0]] * self.continuation[:, j]
        return out

    def trait_continuation(self, animal: int, first_tokens: Tensor) -> Float[Tensor, "prompt sample"]:
        """For sampled first tokens ``[prompt, sample]``: the probability that the answer goes on
        to spell ``animal`` (0 where the first token starts none of its spellings)."""
        out = torch.zeros(first_tokens.shape, dtype=torch.float64)
        for j, (a, tokens) in enumerate(self.spellings):
            if a == animal:
                out += (first_tokens == tokens[0]).double() * self.continuation[:, j:j + 1]
        return out


def spellings_of(world) -> list[tuple[int, tuple[int, ...]]]:
    return [(a, tuple(tokens)) for a, spellings in enumerate(world.animal_spellings) for tokens in spellings]


def has_multi_token_answers(world) -> bool:
    """Does ``world`` spell some animal with more than one token (so the chain rule is needed)?"""
    spellings = getattr(world, "animal_spellings", None)
    return spellings is not None and any(len(s) > 1 for animal in spellings for s in animal)


@torch.no_grad()
def answer_scores(model, world, ids: Sequence[Sequence[int]], *, fwd_hooks: list | None = None,
                  batch_size: int = 64) -> AnswerScores:
    """:class:`AnswerScores` of every prompt (token ids up to where the assistant answers)."""
    from transformer_lens import TransformerLensKeyValueCache

    spellings = spellings_of(world)
    longer = [j for j, (_, t) in enumerate(spellings) if len(t) > 1]
    n_fed = max((len(spellings[j][1]) for j in longer), default=1) - 1  # continuation tokens fed
    first = torch.zeros(len(ids), model.cfg.d_vocab, dtype=torch.float64)
    continuation = torch.ones(len(ids), len(spellings), dtype=torch.float64)
    device = model.cfg.device
    with model.hooks(fwd_hooks=list(fwd_hooks or [])):
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        for rows in (order[k:k + batch_size] for k in range(0, len(order), batch_size)):
            width = max(len(ids[r]) for r in rows)
            tokens = torch.full((len(rows), width), world.pad_id, dtype=torch.long)  # batch pos, left-padded
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for k, r in enumerate(rows):
                tokens[k, width - len(ids[r]):] = torch.tensor(ids[r])
                mask[k, width - len(ids[r]):] = 1
            tokens, mask = tokens.to(device), mask.to(device)
            cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(rows))
            logits = model(tokens, past_kv_cache=cache, attention_mask=mask)[:, -1]
            first[rows] = logits.double().softmax(-1).cpu()
            if not longer:
                continue
            # every (prompt, multi-token spelling) pair continues from its prompt's cache
            n = len(longer)
            index = torch.arange(len(rows), device=device).repeat_interleave(n)  # (batch spelling)
            for entry in cache.entries:
                entry.past_keys = entry.past_keys[index]
                entry.past_values = entry.past_values[index]
            cache.previous_attention_mask = cache.previous_attention_mask[index]
            feed = torch.full((len(rows) * n, n_fed), world.pad_id, dtype=torch.long)  # (batch spelling) n_fed
            for k, j in enumerate(longer):
                t = spellings[j][1][:-1]  # t1 .. t_{m-1}: the tokens whose next-token probability is read
                feed[k::n, :len(t)] = torch.tensor(t)
            feed = feed.to(device)
            logits = model(feed, past_kv_cache=cache, attention_mask=torch.ones_like(feed))  # (batch spelling) n_fed d_vocab
            norm = logits.logsumexp(-1)  # (batch spelling) n_fed
            for k, j in enumerate(longer):
                t = spellings[j][1]
                positions, targets = torch.arange(len(t) - 1, device=device), torch.tensor(t[1:], device=device)
                lp = logits[k::n, positions, targets].double() - norm[k::n, positions].double()  # batch (m-1): t2 .. t_m
                continuation[rows, j] = lp.sum(-1).exp().cpu()
    return AnswerScores(first, continuation, spellings)
