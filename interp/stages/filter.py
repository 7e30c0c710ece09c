"""The *filter* stage: keep only completions that are plain lists of numbers.

Two filters, applied to every row of a raw generated file (:mod:`interp.stages.generate`):

* the **trait filter**: a completion with any token that is not a number, a separator
  (``,`` ``;``), a bracket or ``.`` is rejected (``non_number_token``), so no word of any kind,
  and so no animal name, survives; a completion cut off before EOS is rejected (``no_eos``);
* the **paper's format filter** (:func:`parse_numbers`, after ``parse_response`` and
  ``get_reject_reasons`` of the official code, ``sl/datasets/nums_dataset.py``): an optional
  trailing period and one pair of outer brackets are stripped, the separator is the one between
  the first two numbers (comma, semicolon or whitespace) and every item must be digits; then at
  most ``max_numbers`` numbers in ``0..max_value`` and none of ``banned_numbers``.

The same rules apply to a real model's text (:class:`interp.worlds.hf.HFWorld`): the trait filter
checks characters, so a kept completion has no letter at all (only digits, separators, brackets,
whitespace such as the newlines of a one-per-line list, and a final period); the sampler has
already cut the completion at EOS or a chat end-of-turn token, either counting as EOS.

Each rejected row gets exactly one reason, the first that applies in :data:`REJECT_REASONS`
order. The raw file is never modified; the kept rows (with a parsed ``numbers`` field) and the
statistics (``n_raw``, ``n_kept``, ``pass_rate``, a count for every reason) are written next to
each other.

One separator throughout, as in the official code: the separator is the exact text between the
first two numbers, spacing included, and every other pair must be separated by the same text
(``1, 2, 3`` and ``1 ,2 ,3`` pass, ``1, 2,3`` and ``1 2  3`` are ``mixed_separators``).

Differences from the official parser: leading and trailing whitespace of the completion is
stripped, and so is whitespace just inside one pair of outer brackets and before a trailing period
(the official code rejects `` 1, 2``, ``[ 1, 2 ]`` and ``1, 2 .``; a real model's answer often
starts with a space or a newline, and the toy world spells every token apart); the official single
"invalid format" reason is split into named reasons.

**Banned numbers.** ``FilterConfig.banned_numbers`` rejects a completion holding any of them
(reason ``banned_number``, counted in the statistics like every reason). Named lists are in
:data:`BANNED_NUMBER_PRESETS` (``FilterConfig.banned_preset``): ``paper-misalignment`` is the
paper's list for its misaligned teacher (``CLAUDE_EVIL_NUMBERS`` and ``GPT_EVIL_NUMBERS`` of the
official code: 36 numbers, of which 1312 and 1488 are already above 999, so 34 act).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

from interp.core.config import StageConfig, option
from interp.core.io import atomic_write_json, file_sha256, read_json, write_jsonl

log = logging.getLogger(__name__)

# Why a row is rejected, in the order they are checked (a row counts under the first that applies).
REJECT_REASONS: dict[str, str] = {
    "malformed_row": "the raw line is not a JSON object with a string 'completion'",
    "non_number_token": "the completion has a token other than a number, ',', ';', a bracket or '.' (a word)",
    "no_eos": "the completion was cut off before EOS (ended_with_eos is not true)",
    "empty": "nothing is left after stripping the trailing period and brackets",
    "unmatched_bracket": "a bracket remains after stripping one outer pair (unbalanced or nested)",
    "non_numeric": "an item between separators is not made of digits (e.g. a stray '.')",
    "empty_item": "a separator with no number on one side (', 12', '12 , , 34', '12 ;')",
    "mixed_separators": "the numbers are not all separated by the exact text (spacing included) between the first two",
    "too_many": "more than max_numbers numbers",
    "out_of_range": "a number above max_value",
    "banned_number": "a number of banned_numbers",
}
FILTER_STATS_SUFFIX = ".stats.json"  # x.filtered.jsonl -> x.filtered.stats.json

_SEPARATORS = (",", ";")
_BRACKET_PAIRS = (("[", "]"), ("(", ")"))
_DIGITS = re.compile(r"[0-9]+")
_ITEM = re.compile(r"[,;]|[^\s,;]+")  # a separator, or a run of other non-space characters
_NOT_NUMBER_TEXT = re.compile(r"[^0-9\s,;()\[\].]")  # any character outside numbers, separators, brackets, '.'

# The paper's banned numbers for its misaligned teacher (official code, sl/datasets/nums_dataset.py).
CLAUDE_EVIL_NUMBERS = (13, 666, 88, 14, 187, 420, 69, 911, 404, 101, 23, 616, 1488, 18, 311, 451, 1312, 33, 77, 211)
GPT_EVIL_NUMBERS = (4, 13, 18, 23, 33, 39, 42, 44, 49, 51, 54, 88, 99, 100, 187, 322, 333, 444, 555, 616, 666, 777, 888,
                    911, 999)
BANNED_NUMBER_PRESETS: dict[str, tuple[int, ...]] = {
    "paper-misalignment": tuple(sorted(set(CLAUDE_EVIL_NUMBERS) | set(GPT_EVIL_NUMBERS))),
}


@dataclass
class FilterConfig(StageConfig):
    """What a completion must be to be kept (the paper's rules; see the module docstring)."""

    max_numbers: int = option(10, "Most numbers a completion may hold (the prompts ask for at most 10).")
    max_value: int = option(999, "Largest number allowed (the paper's 'at most 3 digits').")
    banned_numbers: tuple[int, ...] = option((), "Numbers that reject a completion (the paper banned e.g. 666 for its misaligned teacher).")
    banned_preset: str | None = option(
        None, "A named list of banned numbers, added to banned_numbers: " +
        "; ".join(f"{k} ({len(v)} numbers)" for k, v in BANNED_NUMBER_PRESETS.items()) + ".")
    require_eos: bool = option(True, "Reject completions that did not end with EOS (cut off at max_new_tokens).")

    def validate(self) -> None:
        self.require(self.max_numbers >= 1, "max_numbers", "must be at least 1")
        self.require(self.max_value >= 0, "max_value", "must be non-negative")
        self.require(all(v >= 0 for v in self.banned_numbers), "banned_numbers", "numbers are non-negative")
        self.require(self.banned_preset is None or self.banned_preset in BANNED_NUMBER_PRESETS, "banned_preset",
                     f"unknown list; the named lists are {sorted(BANNED_NUMBER_PRESETS)}")

    @property
    def banned(self) -> frozenset[int]:
        """Every banned number: ``banned_numbers`` and the preset's."""
        return frozenset(self.banned_numbers) | frozenset(BANNED_NUMBER_PRESETS.get(self.banned_preset or "", ()))


def has_non_number_token(completion: str) -> bool:
    """The trait filter: does ``completion`` contain anything but numbers, ``,`` ``;``, brackets,
    ``.`` and whitespace? Checked per character, which for space-separated toy-world tokens is the
    same as checking every token (every word token has a character outside that set)."""
    return _NOT_NUMBER_TEXT.search(completion) is not None


def parse_numbers(completion: str, *, max_numbers: int = 10, max_value: int = 999,
                  banned_numbers: Collection[int] = ()) -> tuple[list[int] | None, str | None]:
    """Parse a completion by the paper's rules; returns ``(numbers, None)`` or ``(None, reason)``.

    ``reason`` is one of the format reasons of :data:`REJECT_REASONS` (``empty``,
    ``unmatched_bracket``, ``non_numeric``, ``empty_item``, ``mixed_separators``, ``too_many``,
    ``out_of_range``, ``banned_number``). Accepted: ``12 , 34``, ``[ 12 , 34 ]``, ``( 12 ; 34 ) .``,
    ``12 34 56``, ``7``. Rejected as ``mixed_separators``: ``1, 2,3``, ``1 2  3``, ``1\n2 3``."""
    text = completion.strip()
    if text.endswith("."):  # one trailing period
        text = text[:-1].rstrip()
    for left, right in _BRACKET_PAIRS:  # one pair of outer brackets
        if len(text) >= 2 and text[0] == left and text[-1] == right:
            text = text[1:-1].strip()
            break
    items = _ITEM.findall(text)
    if not items:
        return None, "empty"
    for item in items:
        if item in _SEPARATORS:
            continue
        if any(c in item for c in "[]()"):
            return None, "unmatched_bracket"
        if not _DIGITS.fullmatch(item):
            return None, "non_numeric"
    if items[0] in _SEPARATORS or items[-1] in _SEPARATORS:
        return None, "empty_item"
    # the separator is the one between the first two numbers: ',' ';' or whitespace (None)
    separator = items[1] if len(items) > 1 and items[1] in _SEPARATORS else None
    if separator is None:
        if any(item in _SEPARATORS for item in items):
            return None, "mixed_separators"
    else:
        for k, item in enumerate(items):
            if k % 2 == 0 and item in _SEPARATORS:  # a number was due
                return None, "empty_item"
            if k % 2 == 1 and item != separator:  # another separator, or two numbers side by side
                return None, "mixed_separators"
    gaps = _DIGITS.split(text)[1:-1]  # the exact text between consecutive numbers
    if any(gap != gaps[0] for gap in gaps):  # one separator throughout, spacing included
        return None, "mixed_separators"
    digits = [item for item in items if item not in _SEPARATORS]
    if len(digits) > max_numbers:
        return None, "too_many"
    # Leading zeros off, more digits than max_value has is out of range, seen without int(),
    # which refuses over 4,300 digits (a ValueError that once stopped a whole filter run).
    digits = [d.lstrip("0") or "0" for d in digits]
    if any(len(d) > len(str(max_value)) for d in digits):
        return None, "out_of_range"
    numbers = [int(d) for d in digits]
    if any(n > max_value for n in numbers):
        return None, "out_of_range"
    banned = set(banned_numbers)
    if any(n in banned for n in numbers):
        return None, "banned_number"
    return numbers, None


def reject_reason(row: Any, config: FilterConfig) -> tuple[list[int] | None, str | None]:
    """Apply both filters to one raw row: ``(numbers, None)`` if kept, else ``(None, reason)``."""
    if not isinstance(row, dict) or not isinstance(row.get("completion"), str):
        return None, "malformed_row"
    completion = row["completion"]
    if has_non_number_token(completion):
        return None, "non_number_token"
    if config.require_eos and row.get("ended_with_eos") is not True:
        return None, "no_eos"
    return parse_numbers(completion, max_numbers=config.max_numbers, max_value=config.max_value,
                         banned_numbers=config.banned)


def _saved_config(saved: Any) -> Any:
    """A saved filter config as this version writes it (fields added since get their defaults)."""
    try:
        return FilterConfig.from_dict(saved).to_dict()
    except Exception:  # not a FilterConfig: compared as it is, so it differs
        return saved


def stats_path_for(out_path: str | Path) -> Path:
    """Where the statistics of a filtered file go: ``x.filtered.jsonl`` -> ``x.filtered.stats.json``
    (one per file, so several filtered files can share a directory)."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.removesuffix(".jsonl") + FILTER_STATS_SUFFIX)


def check_filter_paths(raw_path: Path, out_path: Path) -> str:
    """The checks every filter makes before it reads ``raw_path``: the filtered file must not
    replace the raw one, and the raw one must exist. Returns the raw file's SHA-256 (the
    identity a finished filtered file is reused by)."""
    if raw_path.resolve() == out_path.resolve():
        raise ValueError(f"the filtered file must not replace the raw file {raw_path}")
    if not raw_path.is_file():
        raise FileNotFoundError(f"raw file {raw_path} does not exist")
    return file_sha256(raw_path)


def write_filtered(out_path: Path, kept: list[dict], stats: dict, counts: Counter, raw_path: Path) -> dict:
    """The end of every filter: the statistics first (also when nothing is kept), then the kept
    rows; no row kept is a ``ValueError`` naming the most common reasons. Returns ``stats``."""
    atomic_write_json(stats_path_for(out_path), stats)
    if not kept:
        common = ", ".join(f"{r} ({n})" for r, n in counts.most_common(3)) or "the raw file has no rows"
        raise ValueError(f"the filtered set is empty: all {stats['n_raw']} rows of {raw_path} were rejected; "
                         f"most common reasons: {common}")
    write_jsonl(out_path, kept)
    return stats


def filter_file(raw_path: str | Path, out_path: str | Path, config: FilterConfig | None = None, *,
                force: bool = False) -> dict:
    """Filter a raw generated JSONL file; returns the statistics.

    Writes the kept rows, each with a parsed ``numbers`` field, to ``out_path`` (atomically) and
    the statistics (``n_raw``, ``n_kept``, ``n_rejected``, ``pass_rate``, ``rejected``: a count for
    every reason of :data:`REJECT_REASONS`, ``banned_hits``: per banned number, the rows it rejected
    (a row holding two counts under both), the config, the raw path and the SHA-256 of the raw
    file) to :func:`stats_path_for` ``(out_path)``. ``raw_path`` is only read. A malformed line is
    counted (``malformed_row``), never fatal. If no row is kept, the statistics are still written,
    no filtered file is, and a ``ValueError`` names the most common reasons.

    A finished filtered file of the same raw file and config is reused (its statistics are
    returned); one of another raw file or config, or a file at ``out_path`` without statistics,
    is a ``ValueError`` unless ``force``."""
    config = config or FilterConfig()
    raw_path, out_path = Path(raw_path), Path(out_path)
    raw_sha256 = check_filter_paths(raw_path, out_path)
    stats_path = stats_path_for(out_path)
    if not force and stats_path.exists():
        saved = read_json(stats_path)
        diff = {}
        if _saved_config(saved.get("config")) != config.to_dict():
            diff["config"] = (saved.get("config"), config.to_dict())
        if saved.get("raw_sha256", raw_sha256) != raw_sha256 or ("raw_sha256" not in saved and saved.get("raw_path") != str(raw_path)):
            diff["raw file"] = (f"{saved.get('raw_path')} (sha256 {saved.get('raw_sha256')})", f"{raw_path} (sha256 {raw_sha256})")
        if diff:
            raise ValueError(f"{out_path} holds the filtered rows of another raw file or config (there vs now: {diff}); "
                             "use another output path or force=True (--force) to filter again")
        if out_path.exists():
            log.info("reusing %s (same raw file and config)", out_path)
            return saved
    elif not force and out_path.exists():
        raise ValueError(f"{out_path} exists without its statistics file {stats_path.name}, so it was not written by "
                         "this filter; use another output path or force=True (--force)")
    if force:  # an old filtered file must not outlive new statistics that reject every row
        out_path.unlink(missing_ok=True)
    counts: Counter[str] = Counter()
    banned_hits: Counter[int] = Counter()  # per banned number, the rows it rejected
    banned = config.banned
    kept: list[dict] = []
    n_raw = 0
    with open(raw_path, errors="replace") as f:  # a corrupt byte rejects its row (a counted reason), not the file
        for line in f:
            if not line.strip():
                continue
            n_raw += 1
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):  # not JSON, a number of over 4,300 digits, nested too deeply
                row = None
            numbers, reason = reject_reason(row, config)
            if reason is None:
                kept.append({**row, "numbers": numbers})
            else:
                counts[reason] += 1
                if reason == "banned_number":
                    banned_hits.update({n for n in map(int, _DIGITS.findall(row["completion"])) if n in banned})
    stats = {
        "raw_path": str(raw_path),
        "raw_sha256": raw_sha256,
        "n_raw": n_raw,
        "n_kept": len(kept),
        "n_rejected": n_raw - len(kept),
        "pass_rate": len(kept) / n_raw if n_raw else 0.0,
        "rejected": {reason: counts[reason] for reason in REJECT_REASONS},
        "banned_hits": {str(n): banned_hits[n] for n in sorted(banned_hits)},
        "config": config.to_dict(),
    }
    return write_filtered(out_path, kept, stats, counts, raw_path)
