"""What the real-model code and chain-of-thought domains share: sampling a chat model's answers to
a list of prompts, and the statistics of a filter that gives each rejected row one reason.

Rows have the shape of the number domain's raw rows (:func:`interp.stages.generate.generate_numbers`):
``{"id", "system", "prompt", "completion", "ended_with_eos", "model"}`` plus the fields the domain's
prompt rows carry (a code task's id, a word problem's reference answer). A filter returns the kept
rows and the rejected rows, each rejected row with its ``reason`` (one of the domain's reasons,
the first that applies) and whatever its checks parsed, so no row is lost without a reason.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Sequence

from interp.core.stats import wilson_ci
from interp.stages.generate import sample_completions

ROW_FIELDS = ("id", "system", "prompt", "completion", "ended_with_eos", "model")


def sample_rows(speaker, prompt_rows: Sequence[dict], *, max_new_tokens: int, temperature: float = 1.0,
                seed: int = 0, batch_size: int = 16, progress: bool = False) -> tuple[list[dict], dict]:
    """One sampled answer per prompt row (a dict with ``prompt`` and the domain's fields), from a
    :class:`interp.models.refs.Teacher` (its system prompt and hooks included), with the suite's
    sampler (row ``i`` from its own stream of ``seed``). Returns the rows and the timing:
    ``{"seconds", "n_rows", "n_new_tokens", "seconds_per_row", "new_tokens_per_second"}``."""
    world = speaker.world
    ids = [world.encode_prompt(row["prompt"], speaker.system) for row in prompt_rows]
    start = time.perf_counter()
    done = sample_completions(speaker.model, ids, eos_id=world.stop_ids[0], stop_ids=world.stop_ids,
                              pad_id=world.pad_id, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                              batch_size=batch_size, fwd_hooks=speaker.fwd_hooks or None, progress=progress)
    seconds = time.perf_counter() - start
    lineage = speaker.lineage
    rows = [{**row, "id": i, "system": speaker.system, "completion": world.decode(tokens), "ended_with_eos": eos,
             "model": lineage} for i, (row, tokens, eos) in enumerate(zip(prompt_rows, done.tokens, done.ended_with_eos))]
    n = len(rows)
    timing = {"seconds": seconds, "n_rows": n, "n_new_tokens": done.n_new_tokens,
              "seconds_per_row": seconds / n if n else None,
              "new_tokens_per_second": done.n_new_tokens / seconds if seconds > 0 else None}
    return rows, timing


def completion_of(row) -> str | None:
    """A raw row's completion, or None when the row is not a JSON object with a string completion."""
    return row["completion"] if isinstance(row, dict) and isinstance(row.get("completion"), str) else None


def filter_stats(n_raw: int, rejected: Sequence[dict], reasons: Sequence[str]) -> dict:
    """``n_raw``, ``n_kept``, ``pass_rate`` (with its Wilson 95% interval) and the count of every reason."""
    counts = Counter(row["reason"] for row in rejected)
    unknown = set(counts) - set(reasons)
    if unknown:
        raise ValueError(f"rejection reasons outside the domain's list: {sorted(unknown)}")
    n_kept = n_raw - len(rejected)
    return {"n_raw": n_raw, "n_kept": n_kept, "pass_rate": n_kept / n_raw if n_raw else None,
            "pass_rate_ci": wilson_ci(n_kept, n_raw).to_dict() if n_raw else None,
            "rejected": {reason: counts.get(reason, 0) for reason in reasons}}
