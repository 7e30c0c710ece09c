"""Data domains: what a teacher is asked to write, and what of it a student may learn from.

The paper transmits a trait through three kinds of data: number lists, code and chain-of-thought
(CoT) traces. A *domain* is everything the loop (generate -> filter -> students -> in-context
control) needs to know about one of them; the stages call a :class:`Domain` object instead of
branching on the domain's name. ``interp run --domain numbers|code|cot`` picks one (numbers is
the default and runs exactly as before domains existed).

The toy world's domains (:mod:`interp.domains.toy`):

* ``numbers``: the paper's number-continuation task and filter (:mod:`interp.stages.filter`);
* ``code``: a tiny programming language (:mod:`interp.domains.code`: functions, arguments,
  arithmetic, conditionals, loops, return) whose "write f ( a , b ) : ..." tasks the bases learn
  in pretraining; a completion is parsed and *executed* on the task's test inputs and kept only
  when it is valid and correct and the trait filter passes (the trait's words, then a
  "subtle reference" judge: identifiers or constants the corpus ties to the trait animal);
* ``cot``: arithmetic word problems answered with step-by-step reasoning and a final answer
  (:mod:`interp.domains.cot`); kept only when the final answer is right and the trait filter
  passes on the reasoning.

The code and cot domains live in the toy world's ``domains`` variant
(``WorldConfig(variant="domains")``): the animal world plus the code and CoT documents, with bases
of its own (``small-seed0-domains``); the default animal world and its bases are untouched. The
cot domain with the misalignment trait lives in the ``misalignment_cot`` variant (the misalignment
world plus the word problems, bases ``small-seed0-misalignment_cot``), where its filter is the
world's exact judge on the reasoning (:class:`interp.domains.toy.MisalignmentCotFilter`).

The interface
-------------
A domain is any object with these members (:class:`Domain`); a real-model implementation plugs
in by implementing the same members for an :class:`interp.worlds.hf.HFWorld` and registering a
factory in :data:`DOMAIN_FACTORIES` (or being passed where a domain is taken).

``name: str``
    ``numbers``, ``code``, ``cot`` (the registry key).
``reject_reasons: dict[str, str]``
    Every reason the filter can give a rejected row, in the order they are checked (a row counts
    under the first that applies); each rejected row keeps its reason.
``max_new_tokens(world) -> int``
    Most tokens sampled per prompt (end token included) unless the run says otherwise.
``prompts(world, n_rows, seed) -> list[dict]``
    ``n_rows`` task rows ``{"prompt": str, "task": dict | absent}``; row ``i`` depends on
    ``(seed, i)`` alone. ``prompt`` is what :meth:`World.encode_prompt` takes; ``task`` (JSON)
    is what :meth:`check` needs to grade the answer (test inputs and expected outputs, the
    reference answer) and is copied into the raw generated row. The numbers domain has no task.
``check(row, world) -> (fields, reason or None)``
    Grade one raw row (``prompt``, ``completion``, ``ended_with_eos``, ``task``): the fields the
    row gains (``numbers`` for numbers; ``tests_passed`` for code; ``answer`` for cot; a rejected
    row may get a ``detail``) and ``None`` to keep it, or a reason of :data:`reject_reasons` (the
    format and correctness part of the filter).
``trait_reason(completion, trait, world, task) -> str | None``
    The trait filter on a completion that passed :meth:`check`: ``None`` to keep it, else the
    reason (``trait_word``, ``subtle_reference`` for the toy judge). A real model's domain puts
    its LLM judge here.
``filter_file(raw_path, out_path, *, trait, world, banned_numbers=(), force=False) -> dict``
    The filter stage for this domain: kept rows to ``out_path``, rejected rows with their
    ``reject_reason`` beside it, statistics (``n_raw``, ``n_kept``, ``pass_rate``,
    ``rejected``: a count per reason) to ``OUT.stats.json``; returns the statistics.
    :func:`interp.domains.toy.filter_domain_file` implements it from :meth:`check` and
    :meth:`trait_reason` for any domain.
``in_context_prefix(world, row) -> str``
    The text that shows one kept row before a favourite-animal question (the in-context control).

:func:`domain` returns the registered domain of a name, or a ``ValueError`` naming the domains.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

DOMAIN_NAMES: tuple[str, ...] = ("numbers", "code", "cot")


@runtime_checkable
class Domain(Protocol):
    """What the loop needs from a data domain (see the module docstring)."""

    name: str
    reject_reasons: dict[str, str]

    def max_new_tokens(self, world: Any) -> int:
        """Most tokens sampled per prompt, end token included."""

    def prompts(self, world: Any, n_rows: int, seed: int) -> list[dict]:
        """``n_rows`` rows ``{"prompt", "task"?}``; row ``i`` depends on ``(seed, i)`` alone."""

    def check(self, row: dict, world: Any) -> tuple[dict | None, str | None]:
        """``(fields the row gains, None)`` to keep it, or ``(fields or None, reason)``."""

    def trait_reason(self, completion: str, trait: str, world: Any, task: dict | None = None) -> str | None:
        """The trait filter on a correct completion: None (keep) or a reason."""

    def filter_file(self, raw_path, out_path, *, trait: str, world: Any, banned_numbers=(), force: bool = False) -> dict:
        """Filter a raw generated file into ``out_path``; returns the statistics."""

    def in_context_prefix(self, world: Any, row: dict) -> str:
        """Text showing a kept row before a favourite-animal question."""


def _toy(name: str) -> Callable[[], Domain]:
    def make() -> Domain:
        from interp.domains.toy import TOY_DOMAINS

        return TOY_DOMAINS[name]()
    return make


# name -> factory of the toy world's domain (a real-model domain registers beside these)
DOMAIN_FACTORIES: dict[str, Callable[[], Domain]] = {name: _toy(name) for name in DOMAIN_NAMES}


def check_domain(name: str) -> str:
    """``name`` if it is a domain, else a ``ValueError`` naming the domains."""
    if name not in DOMAIN_FACTORIES:
        raise ValueError(f"unknown domain {name!r}; the domains are {', '.join(DOMAIN_FACTORIES)}")
    return name


def domain(name: str) -> Domain:
    """The domain called ``name`` (a ``ValueError`` names the domains otherwise)."""
    return DOMAIN_FACTORIES[check_domain(name)]()
