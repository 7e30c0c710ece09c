"""Sampling speed on a real model: the suite's sampler against Hugging Face ``generate`` and
``HookedTransformer.generate``, on the same left-padded batches of chat-formatted number prompts.

``interp bench --only real_generation --real-model FILE`` (a GGUF file, a Hugging Face directory
or a TransformerLens name). Each side decodes greedily (so the outputs can be compared row by
row) for ``max_new_tokens`` tokens, stopping rows at the end-of-turn token; the rate is new tokens
per second, the two sides of a comparison alternate which runs first (:func:`interp.bench.alternating`).

* ours: :func:`interp.generate.sample_completions` on the converted HookedTransformer
  (TransformerLens's cached forward on left-padded batches; the lean forward does not support
  rotary attention);
* ``HookedTransformer.generate(use_past_kv_cache=True)`` on the same model and batches;
* transformers' ``generate`` (its KV cache) on the transformers model the file loads into (a GGUF
  file is dequantized the same way), with the attention mask of the padding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from interp.bench import _timed, alternating, comparison


BASELINES = {"hf": "transformers generate (KV cache)", "tl": "HookedTransformer.generate(use_past_kv_cache=True)"}


def _hf_model(ref: str):
    from transformers import AutoModelForCausalLM

    from interp.gguf import is_local_model

    path = Path(ref)
    if is_local_model(path) and path.is_file():
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path) if is_local_model(path) else ref, dtype=torch.float32)
    return model.eval()


def _left_padded(prompts: Sequence[Sequence[int]], rows: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    from interp.training import pad_batch

    tokens, mask = pad_batch([prompts[i] for i in rows], pad_id, side="left")
    return tokens, mask.long()


def _cut(new: list[int], stops: set[int]) -> tuple[list[int], int]:
    """The completion up to its first stop token, and the new tokens it counts (the stop included)."""
    for k, t in enumerate(new):
        if t in stops:
            return new[:k], k + 1
    return new, len(new)


def bench_real_generation(ref: str, *, n_prompts: int, batch_size: int, max_new_tokens: int,
                          repeats: int) -> list[dict[str, Any]]:
    from interp.generate import plan_batches, sample_completions
    from interp.models import _quiet_tl
    from interp.real import load_real_base

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

    outputs: dict[str, list[list[int]]] = {}

    def side(name: str, fn: Callable[[], tuple[float, list[list[int]]]]) -> Callable[[], float]:
        def run() -> float:
            rate, completions = fn()
            outputs[name] = completions
            return rate
        return run

    rows = []
    sizes = [len(b) for b in batches]
    for key, title, name, fn in (
            ("real_generation_hf", "Sampling a real model: the suite's sampler vs transformers' generate", "hf",
             lambda: run_batches(hf_generate)),
            ("real_generation_tl", "Sampling a real model: the suite's sampler vs HookedTransformer.generate", "tl",
             lambda: run_batches(tl_generate))):
        suite, reference = alternating(side("ours", ours), side(name, fn), repeats)
        same = sum(a == b for a, b in zip(outputs["ours"], outputs[name]))
        rows.append(comparison(
            key, title, f"new tokens/s decoding {len(prompts)} chat-formatted number prompts greedily (up to "
            f"{max_new_tokens} new tokens, stop at the end of turn) in left-padded batches of at most {batch_size}; "
            f"model {ref}", measure="new tokens/s", subject=("sample_completions", suite),
            baseline=(BASELINES[name], reference),
            ratio="ours / theirs", higher_is_better=True, target={"text": ">= 1x", "threshold": 1.0, "kind": "ratio_at_least"},
            details={"n_prompts": len(prompts), "batch_sizes": sizes, "mean_prompt_tokens": float(np.mean([len(p) for p in prompts])),
                     "max_new_tokens": max_new_tokens, "greedy_identical_rows": same, "greedy_rows": len(prompts),
                     "greedy_identical": same == len(prompts)}))
    return rows
