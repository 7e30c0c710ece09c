"""Sampling speed on a real model: the suite's sampler against Hugging Face ``generate`` and
``HookedTransformer.generate``, on the same left-padded batches of chat-formatted number prompts.

``interp bench --only real_generation --real-model FILE`` (a GGUF file, a Hugging Face directory
or a TransformerLens name). Each side decodes greedily (so the outputs can be compared row by
row) for ``max_new_tokens`` tokens, stopping rows at the end-of-turn token; the rate is new tokens
per second, the two sides of a comparison alternate which runs first (as :func:`interp.bench.suite.alternating`
does; :func:`interp.bench.suite.run_bench` turns the measurements into its comparison rows).

* ours: :func:`interp.stages.generate.sample_completions` on the converted HookedTransformer
  (TransformerLens's cached forward on left-padded batches; the lean forward does not support
  rotary attention);
* ``HookedTransformer.generate(use_past_kv_cache=True)`` on the same model and batches;
* transformers' ``generate`` (its KV cache) on the transformers model the file loads into (a GGUF
  file is dequantized the same way), with the attention mask of the padding.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch



BASELINES = {"hf": "transformers generate (KV cache)", "tl": "HookedTransformer.generate(use_past_kv_cache=True)"}


def _hf_model(ref: str):
    from transformers import AutoModelForCausalLM

    from interp.models.gguf import is_local_model

    path = Path(ref)
    if is_local_model(path) and path.is_file():
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path) if is_local_model(path) else ref, dtype=torch.float32)
    return model.eval()


def _left_padded(prompts: Sequence[Sequence[int]], rows: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    from interp.training.loop import pad_batch

    tokens, mask = pad_batch([prompts[i] for i in rows], pad_id, side="left")
    return tokens, mask.long()


def _cut(new: list[int], stops: set[int]) -> tuple[list[int], int]:
    """The completion up to its first stop token, and the new tokens it counts (the stop included)."""
    for k, t in enumerate(new):
        if t in stops:
            return new[:k], k + 1
    return new, len(new)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_real_generation(ref: str, *, n_prompts: int, batch_size: int, max_new_tokens: int,
                          repeats: int) -> dict[str, Any]:
    """New tokens/s per repeat of each sampler (``ours``, ``hf``, ``tl``; ``ours`` runs once beside
    each of the others, alternating which goes first) and the greedy outputs compared row by row."""
    from interp.stages.generate import plan_batches, sample_completions
    from interp.models.checkpoint import _quiet_tl
    from interp.models.real import load_real_base

    model, world, _ = load_real_base(ref)
    hf = _hf_model(ref)
    prompts = [world.encode_prompt(p) for p in world.number_prompts(n_prompts, seed=11)]
    batches = plan_batches([len(p) for p in prompts], batch_size, padded=True)
    stops, pad = set(world.stop_ids), world.pad_id

    def ours() -> tuple[float, list[list[int]]]:
        seconds, out = _timed(lambda: sample_completions(model, prompts, eos_id=world.end_id, stop_ids=world.stop_ids,
                                                         max_new_tokens=max_new_tokens, temperature=0.0, seed=0,
                                                         batch_size=batch_size, progress=False, pad_id=pad))
        return out.n_new_tokens / seconds, out.tokens

    def run_batches(generate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[float, list[list[int]]]:
        completions: list[list[int]] = [[] for _ in prompts]
        n_new = 0

        def all_batches() -> None:
            nonlocal n_new
            with torch.inference_mode():
                for rows in batches:
                    tokens, mask = _left_padded(prompts, rows, pad)
                    out = generate(tokens, mask)[:, tokens.shape[1]:]
                    for i, new in zip(rows, out.tolist()):
                        completions[i], counted = _cut(new, stops)
                        n_new += counted

        seconds, _ = _timed(all_batches)
        return n_new / seconds, completions

    def hf_generate(tokens, mask):
        return hf.generate(tokens, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                           eos_token_id=sorted(stops), pad_token_id=pad, use_cache=True)

    def tl_generate(tokens, mask):
        ctx = _quiet_tl()
        try:
            return model.generate(tokens, max_new_tokens=max_new_tokens, do_sample=False, use_past_kv_cache=True,
                                  stop_at_eos=True, eos_token_id=sorted(stops), padding_side="left", verbose=False,
                                  return_type="tokens")
        finally:
            ctx.__exit__(None, None, None)

    sides = {"hf": lambda: run_batches(hf_generate), "tl": lambda: run_batches(tl_generate)}
    result: dict[str, Any] = {"model": ref, "n_prompts": len(prompts), "batch_sizes": [len(b) for b in batches],
                              "mean_prompt_tokens": float(np.mean([len(p) for p in prompts])),
                              "max_new_tokens": max_new_tokens, "rates": {}, "greedy_identical_rows": {}}
    for name, theirs in sides.items():
        ours_rates, their_rates = [], []
        for r in range(repeats):  # no untimed warm-up call: on a real model on the CPU each call is minutes
            if r % 2 == 0:
                rate_ours, out_ours = ours()
                rate_theirs, out_theirs = theirs()
            else:
                rate_theirs, out_theirs = theirs()
                rate_ours, out_ours = ours()
            ours_rates.append(rate_ours)
            their_rates.append(rate_theirs)
        result["rates"][name] = {"ours": ours_rates, "theirs": their_rates}
        result["greedy_identical_rows"][name] = sum(x == y for x, y in zip(out_ours, out_theirs))
    return result
