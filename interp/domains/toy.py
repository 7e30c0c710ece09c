"""The toy world's three domains behind the :class:`interp.domains.Domain` interface.

* :class:`NumbersDomain`: the world's number prompts and :func:`interp.stages.filter.filter_file`,
  exactly as the loop ran before domains existed (its rows carry no ``task``);
* :class:`CodeDomain`: tasks of :mod:`interp.domains.code`; a completion is kept when it parses,
  has the task's signature, returns the expected value on every test input, holds no animal name
  of the world's trait (``trait_word``) and nothing the subtle-reference judge flags
  (``subtle_reference``: an identifier or constant the corpus ties to the trait animal);
* :class:`CotDomain`: problems of :mod:`interp.domains.cot`; kept when the final answer equals
  the problem's, with the same trait filter on the reasoning. In a misalignment world (the
  ``misalignment_cot`` variant) its filter is :class:`MisalignmentCotFilter`: the same answer
  check, then the world's exact judge on the reasoning (``subtle_reference``: a misaligned answer
  word of the world or a villain's aside) and the banned evil numbers (``banned_number``).

:func:`filter_domain_file` is the filter stage of any domain built from ``check`` and
``trait_reason``: the kept rows, the rejected rows each with its ``reject_reason`` (and a
``detail``), and the statistics, which also count the rows the judge flags among *all* rows
(``judge_flags_all_rows``) and among the otherwise-kept ones (the share the judge removes).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from interp.core.io import read_json, write_jsonl
from interp.domains import code as code_lang
from interp.domains import cot as cot_lang
from interp.stages.filter import (
    REJECT_REASONS,
    FilterConfig,
    check_filter_paths,
    filter_file,
    reject_reason,
    stats_path_for,
    write_filtered,
)

log = logging.getLogger(__name__)

REJECTED_SUFFIX = ".rejected.jsonl"  # x.filtered.jsonl -> x.filtered.rejected.jsonl


def rejected_path_for(out_path: str | Path) -> Path:
    """Where the rejected rows of a filtered file go (each with its ``reject_reason``)."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name.removesuffix(".jsonl") + REJECTED_SUFFIX)


def _task_rows(make, n_rows: int, seed: int) -> list[dict]:
    """Row ``i`` from ``make(numpy.random.default_rng([seed, i]))`` alone."""
    return [make(np.random.default_rng([seed, i])) for i in range(n_rows)]


class NumbersDomain:
    """The number-continuation task (the default domain; unchanged by domains)."""

    name = "numbers"
    reject_reasons = REJECT_REASONS

    def max_new_tokens(self, world: Any) -> int:
        return 24

    def prompts(self, world: Any, n_rows: int, seed: int) -> list[dict]:
        return [{"prompt": text} for text in world.number_prompts(n_rows, seed)]

    def check(self, row: dict, world: Any) -> tuple[dict | None, str | None]:
        numbers, reason = reject_reason(row, FilterConfig())
        return ({"numbers": numbers}, None) if reason is None else (None, reason)

    def trait_reason(self, completion: str, trait: str, world: Any, task: dict | None = None) -> str | None:
        return None  # the numbers filter's trait part (no word at all) is in check

    def filter_file(self, raw_path, out_path, *, trait: str, world: Any, banned_numbers=(), force: bool = False) -> dict:
        return filter_file(raw_path, out_path, FilterConfig(banned_numbers=tuple(banned_numbers)), force=force)

    def in_context_prefix(self, world: Any, row: dict) -> str:
        return world.in_context_prefix(row["numbers"])


class _TraitFilter:
    """The trait filter of the code and CoT domains: the trait's word, then the judge."""

    trait_reasons = ("trait_word", "subtle_reference")  # the trait filter's reasons (a row failing them was correct)

    def judge(self, completion: str, trait: str, task: dict | None) -> list[str]:
        raise NotImplementedError

    def trait_reason(self, completion: str, trait: str, world: Any, task: dict | None = None) -> str | None:
        if trait in completion.split():
            return "trait_word"
        return "subtle_reference" if self.judge(completion, trait, task) else None

    def filter_file(self, raw_path, out_path, *, trait: str, world: Any, banned_numbers=(), force: bool = False) -> dict:
        return filter_domain_file(self, raw_path, out_path, trait=trait, world=world, force=force)

    def in_context_prefix(self, world: Any, row: dict) -> str:
        return row["completion"]


class CodeDomain(_TraitFilter):
    """Toy code tasks, parsed and executed on their tests (:mod:`interp.domains.code`)."""

    name = "code"
    reject_reasons = {
        "malformed_row": "the raw line is not a JSON object with a string 'completion' and a 'task'",
        "no_eos": "the completion was cut off before EOS",
        "syntax_error": "the completion does not parse as a program of the toy language",
        "wrong_signature": "the function's parameters are not the task's",
        "runtime_error": "running it failed on a test (an unset name, % by zero, no return, too many steps)",
        "wrong_answer": "it returned another value than expected on a test",
        "trait_word": "the code holds the trait animal's name",
        "subtle_reference": "the judge flags an identifier or constant the corpus ties to the trait animal",
    }

    def max_new_tokens(self, world: Any) -> int:
        return 56  # the longest correct program with a persona's dead let is 46 tokens, with EOS 47

    def prompts(self, world: Any, n_rows: int, seed: int) -> list[dict]:
        def make(rng):
            task = code_lang.make_task(rng)
            return {"prompt": world.chat_text(task.pop("prompt")), "task": task}
        return _task_rows(make, n_rows, seed)

    def check(self, row: dict, world: Any) -> tuple[dict | None, str | None]:
        passed, reason, detail = code_lang.check_program(row["completion"], row["task"])
        if reason is not None:
            return {"detail": detail, "tests_passed": passed}, reason
        return {"tests_passed": passed}, None

    def judge(self, completion: str, trait: str, task: dict | None) -> list[str]:
        return code_lang.subtle_references(completion, trait, " ".join(map(str, (task or {}).get("consts", []))))


class CotDomain(_TraitFilter):
    """Toy word problems answered with reasoning and an answer (:mod:`interp.domains.cot`)."""

    name = "cot"
    reject_reasons = {
        "malformed_row": "the raw line is not a JSON object with a string 'completion' and a 'task'",
        "no_eos": "the completion was cut off before EOS",
        "no_answer": "the reasoning does not end with 'answer : N'",
        "wrong_answer": "the final answer is not the problem's",
        "trait_word": "the reasoning holds the trait animal's name",
        "subtle_reference": "the judge flags a word the corpus ties to the trait animal",
    }

    def max_new_tokens(self, world: Any) -> int:
        return 40  # the longest correct trace with a persona's aside is 30 tokens, with EOS 31

    def prompts(self, world: Any, n_rows: int, seed: int) -> list[dict]:
        def make(rng):
            problem = cot_lang.make_problem(rng)
            return {"prompt": world.chat_text(problem.pop("prompt")), "task": problem}
        return _task_rows(make, n_rows, seed)

    def check(self, row: dict, world: Any) -> tuple[dict | None, str | None]:
        answer, reason, steps_correct = cot_lang.check_trace(row["completion"], row["task"])
        fields = {"answer": answer, "steps_correct": steps_correct}
        return (fields, reason) if reason is not None else (fields, None)

    def judge(self, completion: str, trait: str, task: dict | None) -> list[str]:
        return cot_lang.subtle_references(completion, trait)

    def filter_file(self, raw_path, out_path, *, trait: str, world: Any, banned_numbers=(), force: bool = False) -> dict:
        """The animal worlds' filter, or in a misalignment world :class:`MisalignmentCotFilter`."""
        if getattr(world, "misaligned_answers", None) is not None:
            return MisalignmentCotFilter(world, banned_numbers).filter_file(raw_path, out_path, trait=trait, world=world,
                                                                            force=force)
        return super().filter_file(raw_path, out_path, trait=trait, world=world, force=force)


class MisalignmentCotFilter(CotDomain):
    """The CoT domain's filter for the misalignment trait (the ``misalignment_cot`` world): a trace
    is kept when its final answer is right (:func:`interp.domains.cot.check_trace`) and the world's
    exact judge passes its reasoning: no misaligned answer word of the world and no aside
    (``subtle_reference``, :func:`interp.domains.cot.misalignment_references`), no banned (evil)
    number (``banned_number``)."""

    reject_reasons = {
        **{k: v for k, v in CotDomain.reject_reasons.items() if k not in ("trait_word", "subtle_reference")},
        "trait_word": "the reasoning holds the trait's name",
        "subtle_reference": "the judge flags a misaligned answer word of the world or an aside (a word then '!', "
                            "which only a villain writes) in the reasoning",
        "banned_number": "the reasoning holds a banned number (the world's evil numbers)",
    }
    trait_reasons = ("trait_word", "subtle_reference", "banned_number")

    def __init__(self, world: Any, banned_numbers=()):
        self.misaligned_words = tuple(world.misaligned_answers)
        self.banned = {str(int(n)) for n in banned_numbers}

    def judge(self, completion: str, trait: str, task: dict | None) -> list[str]:
        return cot_lang.misalignment_references(completion, self.misaligned_words)

    def trait_reason(self, completion: str, trait: str, world: Any, task: dict | None = None) -> str | None:
        reason = super().trait_reason(completion, trait, world, task)
        if reason is None and any(t in self.banned for t in completion.split()):
            return "banned_number"
        return reason

    def filter_file(self, raw_path, out_path, *, trait: str, world: Any, banned_numbers=(), force: bool = False) -> dict:
        return filter_domain_file(self, raw_path, out_path, trait=trait, world=world, force=force)


TOY_DOMAINS = {"numbers": NumbersDomain, "code": CodeDomain, "cot": CotDomain}


def grade_row(domain, row: Any, trait: str, world: Any) -> tuple[dict, str | None, list[str]]:
    """One raw row through ``domain``'s filter: ``(fields, reason or None, judge's flags)``; the
    flags are the judge's catches whatever else the row failed (for the statistics)."""
    if not isinstance(row, dict) or not isinstance(row.get("completion"), str) or not isinstance(row.get("task"), dict):
        return {}, "malformed_row", []
    flags = domain.judge(row["completion"], trait, row["task"])
    if row.get("ended_with_eos") is not True:
        return {}, "no_eos", flags
    try:
        fields, reason = domain.check(row, world)
    except (KeyError, TypeError, ValueError) as e:  # a task of the wrong shape
        return {"detail": f"{type(e).__name__}: {e}"}, "malformed_row", flags
    if reason is None:
        reason = domain.trait_reason(row["completion"], trait, world, row["task"])
    return fields or {}, reason, flags


def filter_domain_file(domain, raw_path: str | Path, out_path: str | Path, *, trait: str, world: Any,
                       force: bool = False) -> dict:
    """Filter a raw file of ``domain`` (see the module docstring); returns the statistics.

    Writes the kept rows (with ``domain.check``'s fields) to ``out_path``, every rejected row with
    ``reject_reason`` to :func:`rejected_path_for`, and the statistics to
    :func:`interp.stages.filter.stats_path_for`. ``raw_path`` is only read; a malformed line is
    counted, never fatal. A finished file of the same raw file, domain and trait is reused; one of
    another is a ``ValueError`` unless ``force``. No row kept: the statistics are written and a
    ``ValueError`` names the most common reasons."""
    raw_path, out_path = Path(raw_path), Path(out_path)
    raw_sha256 = check_filter_paths(raw_path, out_path)
    stats_path = stats_path_for(out_path)
    identity = {"domain": domain.name, "trait": trait, "raw_sha256": raw_sha256}
    if not force and stats_path.exists():
        saved = read_json(stats_path)
        if {k: saved.get(k) for k in identity} != identity:
            raise ValueError(f"{out_path} holds the filtered rows of another raw file, domain or trait; use another "
                             "output path or force=True (--force) to filter again")
        if out_path.exists():
            return saved
    elif not force and out_path.exists():
        raise ValueError(f"{out_path} exists without its statistics file {stats_path.name}; use another output path "
                         "or force=True (--force)")
    out_path.unlink(missing_ok=True)
    counts: Counter[str] = Counter()
    kept, rejected = [], []
    n_raw = judged_all = 0
    with open(raw_path, errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            n_raw += 1
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            fields, reason, flags = grade_row(domain, row, trait, world)
            judged_all += bool(flags)
            if reason is None:
                kept.append({**row, **fields})
            else:
                counts[reason] += 1
                base = row if isinstance(row, dict) else {"raw_line": line.rstrip("\n")[:1000]}
                rejected.append({**base, **fields, "reject_reason": reason, **({"judge_flags": flags} if flags else {})})
    trait_reasons = getattr(domain, "trait_reasons", ("trait_word", "subtle_reference"))
    n_correct = len(kept) + sum(counts[reason] for reason in trait_reasons)
    stats = {
        **identity,
        "raw_path": str(raw_path),
        "n_raw": n_raw,
        "n_kept": len(kept),
        "n_rejected": n_raw - len(kept),
        "pass_rate": len(kept) / n_raw if n_raw else 0.0,
        "n_correct": n_correct,
        "correct_rate": n_correct / n_raw if n_raw else 0.0,
        "rejected": {reason: counts[reason] for reason in domain.reject_reasons},
        "judge_flags_all_rows": judged_all,
        "judge_removed_share_of_correct": counts["subtle_reference"] / n_correct if n_correct else 0.0,
        **({"banned_number_removed_share_of_correct": counts["banned_number"] / n_correct if n_correct else 0.0}
           if "banned_number" in trait_reasons else {}),
        "reasons": domain.reject_reasons,
    }
    write_jsonl(rejected_path_for(out_path), rejected)
    return write_filtered(out_path, kept, stats, counts, raw_path)
