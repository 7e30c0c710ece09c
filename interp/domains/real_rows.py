"""What the real-model code and chain-of-thought domains share: sampling a chat model's answers to
a list of prompts, and the statistics of a filter that gives each rejected row one reason.

Rows have the shape of the number domain's raw rows (:func:`interp.stages.generate.generate_numbers`):
``{"id", "system", "prompt", "completion", "ended_with_eos", "model"}`` plus the fields the domain's
prompt rows carry (a code task's id, a word problem's reference answer). A filter returns the kept
rows and the rejected rows, each rejected row with its ``reject_reason`` (one of the domain's reasons,
the first that applies) and whatever its checks parsed, so no row is lost without a reason.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from interp.core.io import atomic_write_json, file_sha256, read_json, write_jsonl
from interp.core.stats import wilson_ci
from interp.stages.filter import stats_path_for
from interp.stages.generate import sample_completions

ROW_FIELDS = ("id", "system", "prompt", "completion", "ended_with_eos", "model")


def sample_rows(speaker, prompt_rows: Sequence[dict], *, max_new_tokens: int, temperature: float = 1.0,
                seed: int = 0, batch_size: int = 16, progress: bool = False) -> tuple[list[dict], dict]:
    """One sampled answer per prompt row (a dict with ``prompt`` and the domain's fields), from a
    :class:`interp.models.refs.Teacher` (its system prompt and hooks included), with the suite's
    sampler (row ``i`` from its own stream of ``seed``). Returns the rows and the timing:
    ``{"seconds", "cpu_seconds", "n_rows", "n_new_tokens", "seconds_per_row", "cpu_seconds_per_row",
    "new_tokens_per_second"}`` (wall-clock seconds, and the CPU time of this process: on a shared
    machine the wall clock also counts the time other processes held the cores)."""
    world = speaker.world
    ids = [world.encode_prompt(row["prompt"], speaker.system) for row in prompt_rows]
    start, cpu_start = time.perf_counter(), time.process_time()
    done = sample_completions(speaker.model, ids, eos_id=world.stop_ids[0], stop_ids=world.stop_ids,
                              pad_id=world.pad_id, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                              batch_size=batch_size, fwd_hooks=speaker.fwd_hooks or None, progress=progress)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    lineage = speaker.lineage
    rows = [{**row, "id": i, "system": speaker.system, "completion": world.decode(tokens), "ended_with_eos": eos,
             "model": lineage} for i, (row, tokens, eos) in enumerate(zip(prompt_rows, done.tokens, done.ended_with_eos))]
    n = len(rows)
    timing = {"seconds": seconds, "cpu_seconds": cpu_seconds, "n_rows": n, "n_new_tokens": done.n_new_tokens,
              "seconds_per_row": seconds / n if n else None, "cpu_seconds_per_row": cpu_seconds / n if n else None,
              "new_tokens_per_second": done.n_new_tokens / seconds if seconds > 0 else None}
    return rows, timing


def completion_of(row) -> str | None:
    """A raw row's completion, or None when the row is not a JSON object with a string completion."""
    return row["completion"] if isinstance(row, dict) and isinstance(row.get("completion"), str) else None


def filter_stats(n_raw: int, rejected: Sequence[dict], reasons: Sequence[str]) -> dict:
    """``n_raw``, ``n_kept``, ``pass_rate`` (with its Wilson 95% interval) and the count of every reason."""
    counts = Counter(row["reject_reason"] for row in rejected)
    unknown = set(counts) - set(reasons)
    if unknown:
        raise ValueError(f"rejection reasons outside the domain's list: {sorted(unknown)}")
    n_kept = n_raw - len(rejected)
    return {"n_raw": n_raw, "n_kept": n_kept, "pass_rate": n_kept / n_raw if n_raw else None,
            "pass_rate_ci": wilson_ci(n_kept, n_raw).to_dict() if n_raw else None,
            "rejected": {reason: counts.get(reason, 0) for reason in reasons}}


REJECTED_SUFFIX = ".rejected.jsonl"  # x.filtered.jsonl -> x.filtered.rejected.jsonl


def read_raw_rows(path: str | Path) -> list:
    """The rows of a raw generated file, one per non-blank line: the JSON value, or the line itself
    (cut to 1,000 characters) when it is not JSON, so that a malformed line is a rejected row
    (``malformed_row``), never an error."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"raw file {path} does not exist")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except (ValueError, RecursionError):
                    rows.append(line.rstrip("\n")[:1000])
    return rows


def filter_raw_file(raw_path: str | Path, out_path: str | Path, identity: dict,
                    filter_rows: Callable[[list], tuple[list[dict], list[dict], dict]], *, force: bool = False) -> dict:
    """A domain's filter stage on files: the kept rows to ``out_path``, the rejected rows (each with
    its ``reject_reason``) beside it (``OUT.rejected.jsonl``), the statistics with ``identity``
    (domain, trait, judge) and the raw file's SHA-256 to ``OUT.stats.json``; returns the statistics.
    The raw file is only read. A finished filter of the same raw file and identity is reused; one of
    another is a one-line ``ValueError`` unless ``force``."""
    raw_path, out_path = Path(raw_path), Path(out_path)
    if raw_path.resolve() == out_path.resolve():
        raise ValueError(f"the filtered file must not replace the raw file {raw_path}")
    rows = read_raw_rows(raw_path)
    identity = {**identity, "raw_sha256": file_sha256(raw_path)}
    stats_path = stats_path_for(out_path)
    if not force and stats_path.exists():
        saved = read_json(stats_path)
        if {k: saved.get(k) for k in identity} != identity:
            raise ValueError(f"{out_path} holds the filtered rows of another raw file, domain, trait or judge; use "
                             "another output path or force=True (--force) to filter again")
        if out_path.exists():
            return saved
    elif not force and out_path.exists():
        raise ValueError(f"{out_path} exists without its statistics file {stats_path.name}; use another output path "
                         "or force=True (--force)")
    kept, rejected, stats = filter_rows(rows)
    stats = {**identity, "raw_path": str(raw_path), **stats}
    out_path.unlink(missing_ok=True)  # no stale kept file beside new statistics
    write_jsonl(out_path.with_name(out_path.name.removesuffix(".jsonl") + REJECTED_SUFFIX), rejected)
    atomic_write_json(stats_path, stats)
    write_jsonl(out_path, kept)
    return stats
