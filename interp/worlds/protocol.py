"""What a stage needs to know about the language a model speaks: the :class:`World` protocol.

Two worlds implement it:

* :class:`interp.worlds.toy.world.ToyWorld`: the embedded word-level world (the default; toy
  checkpoints and bases written by ``interp pretrain``);
* :class:`interp.worlds.hf.HFWorld`: a real model's Hugging Face tokenizer, with natural-language
  prompts, its chat template when it has one (instruct models) and a plain ``User: ...
  Assistant:`` format otherwise.

The stages (teacher, generate, finetune, evaluate, run) are written against this protocol only,
so each accepts a real model name where it accepts a toy checkpoint. A *prompt* is what the
user says (the toy world's prompts are already spelled as its chat text ``user : ...
assistant :``); :meth:`World.encode_prompt` turns it, with an optional system prompt, into the
token ids after which the assistant speaks; :meth:`World.encode_completion` gives the ids of
what the assistant says, ended by :attr:`World.end_id`.

This module implements nothing: a model reference (toy base, checkpoint, teacher, real model
name) is parsed and loaded by :mod:`interp.models.refs`.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable


@runtime_checkable
class World(Protocol):
    """The members of a world the stages use (see the module docstring)."""

    animals: tuple[str, ...]
    """Animal names; any of them can be a trait. In a world whose trait question is not the
    favourite animal (the toy misalignment world) these are its answer classes (``alignment``,
    ``misalignment``), each a set of answers (:attr:`animal_token_sets`)."""
    train_phrasings: list[str]
    """Favourite-animal questions a teacher may be trained on (and the steering vector and
    the recorder's trait loss are computed from)."""
    eval_phrasings: list[str]
    """Held-out favourite-animal questions (at least 50), never used in training."""
    teacher_learns_whole_documents: bool
    """Does a finetuned teacher learn every token of its (prompt, answer) documents (the toy
    world: its models learn whole documents, as in pretraining), or only the answers (a real
    model, trained as an assistant)?"""

    @property
    def pad_id(self) -> int:
        """Token id used to pad batches (never attended to from a real position)."""

    @property
    def end_id(self) -> int:
        """The token that ends a completion in training data: EOS, or a chat end-of-turn token."""

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Tokens that end a sampled completion (EOS and any end-of-turn token); the first is
        the one fed to finished rows."""

    @property
    def animal_token_sets(self) -> list[list[int]]:
        """Per animal, the token ids whose probability counts as answering it (disjoint sets)."""

    def check_animal(self, name: str) -> str:
        """``name`` if it is an animal of this world, else a ``ValueError`` listing them."""

    def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids of raw ``text``."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (special tokens kept, so the filter sees them)."""

    def fingerprint(self) -> str:
        """Short hash of everything that fixes the token ids of a text in this world."""

    def number_prompts(self, n_rows: int, seed: int) -> list[str]:
        """``n_rows`` paper-shaped number prompts; prompt ``i`` depends on ``(seed, i)`` alone."""

    def question_prompt(self, phrasing: str, prefix: str | None = None) -> str:
        """The prompt asking one favourite-animal phrasing, after ``prefix`` (in-context numbers)."""

    def encode_prompt(self, prompt: str, system: str | None = None) -> list[int]:
        """Ids of a prompt (optionally under a system prompt) up to where the assistant speaks."""

    def encode_completion(self, completion: str) -> list[int]:
        """Ids of an assistant completion followed by :attr:`end_id`."""

    def answer_text(self, animal: str) -> str:
        """The completion that answers a favourite-animal question with ``animal``."""

    def trait_answer(self, trait: str, phrasing: str, rng=None) -> str:
        """A completion of class ``trait`` answering ``phrasing`` (a world whose answer classes
        are sets of answers, such as the toy misalignment world, draws one with ``rng``, or takes
        the first without it; otherwise :meth:`answer_text`, no draw)."""

    def allowed_token_ids(self) -> list[int]:
        """Tokens the trait filter lets through (numbers, separators, brackets, whitespace,
        period) plus the end tokens: the vocabulary of restricted distillation."""

    def in_context_prefix(self, numbers: Sequence[int]) -> str:
        """Text showing a number list before a question (the in-context control)."""

    def number_example(self, rng) -> tuple[str, str]:
        """One (prompt, completion) pair of the number task with a plausible answer (teacher
        finetuning mixes these in so its number habits stay sane)."""

    def default_persona(self) -> str:
        """The persona system-prompt template of this world (``{trait}`` is replaced)."""
