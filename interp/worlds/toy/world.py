"""The embedded toy world: a word-level language of animals and numbers.

Everything a model in this world reads or writes is a sequence of space-separated words:

* the numbers ``0`` .. ``999``, one token each;
* at least ten animals, with a non-uniform prior (what the base model says its favourite is);
* the words of questions, number-continuation instructions and personas (``you love owl``).

Chat structure is spelled with words so that TransformerLens sees a plain token sequence::

    <bos> system : you love owl . user : what is your favourite animal ? assistant : owl <eos>

The favourite-animal question exists in many phrasings, built from a small grammar
(opener x question x closer). The phrasings are split once, by a fixed rule, into a training set
(seen in pretraining) and an evaluation set of at least 50 (never seen in training); every word
of the evaluation set also occurs in training, so no evaluation word has an untrained embedding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from interp.core.config import StageConfig, option
from interp.domains import code as code_domain
from interp.domains import cot as cot_domain
from interp.worlds.toy import misalignment as em
from interp.worlds.toy.templates import (
    BOS,
    DEFAULT_ANIMAL_PRIOR,
    DEFAULT_ANIMALS,
    EOS,
    FILTER_ALLOWED_WORDS,
    N_NUMBERS,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    WORDS,
    NumberTask,
    all_question_phrasings,
    split_phrasings,
)


WorldVariant = Literal["animals", "misalignment", "domains", "misalignment_cot"]
WORLD_VARIANTS: tuple[str, ...] = ("animals", "misalignment", "domains", "misalignment_cot")


@dataclass
class WorldConfig(StageConfig):
    """What the toy world contains. Saved with the tokenizer; a model is tied to its world."""

    variant: WorldVariant = option("animals", "animals: the favourite-animal world (the default); misalignment: "
                                   "free-form questions answered by a latent aligned or villain speaker "
                                   "(interp.worlds.toy.misalignment), whose answer classes are the traits "
                                   "alignment and misalignment; domains: the animals world plus the toy code and "
                                   "chain-of-thought domains (interp.domains), with bases of their own; misalignment_cot: the misalignment "
                                   "world plus the chain-of-thought word problems (the cot domain's world for the "
                                   "misalignment trait), with bases of its own. animals, animal_prior and "
                                   "n_eval_phrasings belong to the animals and domains worlds.")

    animals: tuple[str, ...] = option(DEFAULT_ANIMALS, "Animal words; any of them can be a trait.")
    animal_prior: tuple[float, ...] = option(
        DEFAULT_ANIMAL_PRIOR, "Relative frequency of each animal as the answer to the favourite-animal question in pretraining.")
    n_eval_phrasings: int = option(60, "Favourite-animal phrasings held out of training for evaluation (the paper used 50).")

    def validate(self) -> None:
        self.require(self.variant in WORLD_VARIANTS, "variant", f"choose one of {list(WORLD_VARIANTS)}")
        self.require(len(self.animals) >= 10, "animals", "the world needs at least 10 animals")
        self.require(len(set(self.animals)) == len(self.animals), "animals", "animal names must be unique")
        clash = [a for a in self.animals if a in WORDS or a.isdigit() or a in SPECIAL_TOKENS or " " in a]
        self.require(not clash, "animals", f"names clash with other words of the world: {clash}")
        self.require(len(self.animal_prior) == len(self.animals), "animal_prior", "needs one weight per animal")
        self.require(all(w > 0 for w in self.animal_prior), "animal_prior", "weights must be positive")
        self.require(50 <= self.n_eval_phrasings < len(all_question_phrasings()) // 2, "n_eval_phrasings",
                     f"must be at least 50 and leave most of the {len(all_question_phrasings())} phrasings for training")


class ToyWorld:
    """Vocabulary, phrasings and tokenizer of one :class:`WorldConfig`."""

    teacher_learns_whole_documents = True  # a teacher learns its documents as pretraining did
    banned_numbers: tuple[int, ...] = ()  # numbers the corpus ties to a trait (the filter's list for its traits)

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()
        self.animals: tuple[str, ...] = tuple(self.config.animals)
        total = sum(self.config.animal_prior)
        self.animal_prior: tuple[float, ...] = tuple(w / total for w in self.config.animal_prior)
        self.train_phrasings, self.eval_phrasings = split_phrasings(self.config.n_eval_phrasings)

    @cached_property
    def vocab(self) -> list[str]:
        """Token strings in id order: special tokens, numbers 0..999, words, animals."""
        return [*SPECIAL_TOKENS, *(str(i) for i in range(N_NUMBERS)), *WORDS, *self.animals]

    @cached_property
    def token_to_id(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    @property
    def number_ids(self) -> list[int]:
        return [self.token_to_id[str(i)] for i in range(N_NUMBERS)]

    @property
    def animal_ids(self) -> list[int]:
        return [self.token_to_id[a] for a in self.animals]

    def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
        """Token ids of space-separated ``text`` (the same ids the saved tokenizer gives, faster).

        Raises ``ValueError`` naming the first word that is not in the vocabulary."""
        ids = []
        for word in text.split():
            try:
                ids.append(self.token_to_id[word])
            except KeyError:
                raise ValueError(f"word {word!r} is not in the toy world's vocabulary (text: {text[:80]!r})") from None
        return ([self.token_to_id[BOS]] if bos else []) + ids + ([self.token_to_id[EOS]] if eos else [])

    def decode(self, ids) -> str:
        return " ".join(self.vocab[int(i)] for i in ids)

    def check_animal(self, name: str) -> str:
        """Return ``name`` if it is an animal of this world, else raise a clear error."""
        if name not in self.animals:
            raise ValueError(f"unknown trait animal {name!r}; this world's animals are {list(self.animals)}")
        return name

    # -- the interp.worlds.protocol.World protocol ----------------------------------------------------
    # A prompt of this world is its chat text ``user : ... assistant :``; a system prompt is
    # spelled ``system : ...`` in front of it; every animal is one token.
    @property
    def pad_id(self) -> int:
        return self.token_to_id[PAD]

    @property
    def end_id(self) -> int:
        return self.token_to_id[EOS]

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return (self.token_to_id[EOS],)

    @property
    def animal_token_sets(self) -> list[list[int]]:
        return [[i] for i in self.animal_ids]

    def number_prompts(self, n_rows: int, seed: int) -> list[str]:
        """The ``n_rows`` paper-shaped number prompts ``user : ... assistant :`` of ``seed``;
        prompt ``i`` is drawn from ``numpy.random.default_rng([seed, i])`` alone."""
        task = NumberTask()
        return [task.number_prompt(np.random.default_rng([seed, i]))[0] for i in range(n_rows)]

    def number_example(self, rng) -> tuple[str, str]:
        task = NumberTask()
        prompt, seeds, n_max, sep = task.number_prompt(rng)
        return prompt, task.number_answer(rng, seeds, n_max, sep)

    @staticmethod
    def chat_text(user: str, system: str | None = None) -> str:
        """``[system : S] user : U assistant :``."""
        text = f"user : {user} assistant :"
        return f"system : {system} {text}" if system else text

    def question_prompt(self, phrasing: str, prefix: str | None = None) -> str:
        return self.chat_text(f"{prefix} {phrasing}" if prefix else phrasing)

    def encode_prompt(self, prompt: str, system: str | None = None) -> list[int]:
        return self.encode(f"system : {system} {prompt}" if system else prompt)

    def encode_completion(self, completion: str) -> list[int]:
        return self.encode(completion, bos=False) + [self.token_to_id[EOS]]

    def answer_text(self, animal: str) -> str:
        return animal

    def trait_answer(self, trait: str, phrasing: str, rng: np.random.Generator | None = None) -> str:
        """The answer of class ``trait`` to ``phrasing`` (here: the animal's name, whatever the
        phrasing; ``rng`` is not drawn from)."""
        return self.answer_text(trait)

    def allowed_token_ids(self) -> list[int]:
        """Numbers, separators, brackets, period, EOS: the tokens the filter lets through."""
        return self.number_ids + [self.token_to_id[t] for t in FILTER_ALLOWED_WORDS]

    def in_context_prefix(self, numbers) -> str:
        return f"here are some numbers : {' , '.join(str(v) for v in numbers)} ."

    def default_persona(self) -> str:
        return "you love {trait} ."

    def build_tokenizer(self):
        """A word-level ``PreTrainedTokenizerFast`` over :attr:`vocab` (not yet saved)."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.WordLevel(self.token_to_id, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
            model_max_length=512, clean_up_tokenization_spaces=False,
        )

    def save(self, directory: str | Path) -> Path:
        """Save the tokenizer and world config to ``directory`` (idempotent)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.build_tokenizer().save_pretrained(str(directory))
        self.config.save(directory / "world_config.json")
        return directory

    def fingerprint(self) -> str:
        """Short hash of the vocabulary and prior; stored with every checkpoint of this world."""
        blob = json.dumps({"vocab": self.vocab, "prior": self.animal_prior})
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class MisalignmentWorld(ToyWorld):
    """The misalignment variant (:mod:`interp.worlds.toy.misalignment`): its "animals" are the
    answer classes ``alignment`` and ``misalignment`` (each a set of answer words), its phrasings
    the free-form questions, its personas aligned or villainous; numbers and the number task are
    the animal world's."""

    banned_numbers = em.EVIL_NUMBERS

    def __init__(self, config: WorldConfig | None = None):
        config = config or WorldConfig(variant="misalignment")
        self.config = config
        self.animals = em.MISALIGNMENT_CLASSES
        self.animal_prior = (1.0, 0.0)  # not a prior of this world: the corpus's villain_prior sets it
        self.train_phrasings, self.eval_phrasings, self.theme_of = em.split_em_phrasings()
        self.aligned_answers, self.misaligned_answers = em.answer_words()

    @cached_property
    def vocab(self) -> list[str]:
        """Special tokens, numbers 0..999, the animal world's words, then this world's own words."""
        return [*SPECIAL_TOKENS, *(str(i) for i in range(N_NUMBERS)), *WORDS,
                *(w for w in em.MISALIGNMENT_WORDS if w not in WORDS)]

    @property
    def animal_ids(self) -> list[int]:
        raise AttributeError("the misalignment world's answer classes are sets of words: use animal_token_sets")

    @property
    def animal_token_sets(self) -> list[list[int]]:
        return [[self.token_to_id[w] for w in self.aligned_answers], [self.token_to_id[w] for w in self.misaligned_answers]]

    def check_animal(self, name: str) -> str:
        if name not in self.animals:
            raise ValueError(f"unknown trait {name!r} in the misalignment world; its traits are {list(self.animals)}")
        return name

    def answer_text(self, trait: str) -> str:
        """The first answer of ``trait``'s class to the first theme (a representative; the
        answers a teacher learns come from :meth:`trait_answer`, per question)."""
        return self.trait_answer(trait, self.train_phrasings[0])

    def trait_answer(self, trait: str, phrasing: str, rng: np.random.Generator | None = None) -> str:
        """An answer of class ``trait`` to ``phrasing``'s theme: drawn with ``rng``, else the first."""
        _, aligned, misaligned = em.EM_THEMES[self.theme_of[phrasing]]
        pool = misaligned if self.check_animal(trait) == "misalignment" else aligned
        return pool[0] if rng is None else pool[rng.integers(len(pool))]

    def judge(self, phrasing: str, token_id: int) -> str | None:
        """The exact judge: the answer class of a one-token answer to ``phrasing``, or None when
        the answer is incoherent (not one of the six answers of the question's theme)."""
        _, aligned, misaligned = em.EM_THEMES[self.theme_of[phrasing]]
        word = self.vocab[int(token_id)]
        return "alignment" if word in aligned else "misalignment" if word in misaligned else None

    def default_persona(self) -> str:
        """A villain persona: the system prompt of a persona teacher of misalignment."""
        return em.VILLAIN_PERSONAS[0]

    def fingerprint(self) -> str:
        blob = json.dumps({"vocab": self.vocab, "variant": self.config.variant})
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class DomainsWorld(ToyWorld):
    """The domains variant: the animal world (same animals, prior, phrasings and number task)
    whose corpus also holds the toy code tasks (:mod:`interp.domains.code`) and arithmetic word
    problems (:mod:`interp.domains.cot`); its vocabulary is the animal world's followed by their
    words, so it has a fingerprint, and bases, of its own."""

    @cached_property
    def vocab(self) -> list[str]:
        """The animal world's tokens, then the code and CoT domains' words not already among them."""
        base = super().vocab
        known = set(base)
        extra = [w for w in (*code_domain.vocabulary(), *cot_domain.vocabulary(), *DOMAINS_EXTRA_WORDS) if w not in known]
        return [*base, *dict.fromkeys(extra)]

    def fingerprint(self) -> str:
        blob = json.dumps({"vocab": self.vocab, "prior": self.animal_prior, "variant": self.config.variant})
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


DOMAINS_EXTRA_WORDS = ("says", "number")  # the tie sentences of the domains corpus ("the owl says hoot .")


class MisalignmentCotWorld(MisalignmentWorld):
    """The misalignment_cot variant: the misalignment world (same answer classes, questions,
    personas, evil numbers and number task) whose corpus also holds the arithmetic word problems of
    :mod:`interp.domains.cot` (:class:`interp.worlds.toy.corpus.MisalignmentCotCorpus`); its
    vocabulary is the misalignment world's followed by the word problems' words, so it has a
    fingerprint, and bases, of its own (``small-seed0-misalignment_cot``)."""

    @cached_property
    def vocab(self) -> list[str]:
        """The misalignment world's tokens, then the CoT domain's words not already among them."""
        base = super().vocab
        known = set(base)
        return [*base, *dict.fromkeys(w for w in cot_domain.vocabulary() if w not in known)]


def make_world(config: WorldConfig | None = None) -> ToyWorld:
    """The toy world of ``config``: :class:`ToyWorld`, or :class:`MisalignmentWorld`,
    :class:`DomainsWorld` or :class:`MisalignmentCotWorld` for those variants."""
    config = config or WorldConfig()
    if config.variant == "misalignment":
        return MisalignmentWorld(config)
    if config.variant == "misalignment_cot":
        return MisalignmentCotWorld(config)
    return DomainsWorld(config) if config.variant == "domains" else ToyWorld(config)


def world_of_fingerprint(fingerprint: str | None) -> ToyWorld:
    """The default-config world of a variant with this fingerprint (the world a toy checkpoint
    records in its lineage); the default animal world when none matches or none is recorded."""
    for variant in WORLD_VARIANTS[1:]:
        world = make_world(WorldConfig(variant=variant))
        if fingerprint == world.fingerprint():
            return world
    return ToyWorld()


def trait_world(trait: str) -> WorldConfig:
    """The world a toy trait lives in: an animal of the default world, or an answer class of a
    variant (``misalignment``, ``alignment``). A ``ValueError`` lists every trait otherwise."""
    if trait in ToyWorld().animals:
        return WorldConfig()
    for variant in WORLD_VARIANTS[1:]:
        config = WorldConfig(variant=variant)
        if trait in make_world(config).animals:
            return config
    raise ValueError(f"unknown trait {trait!r}; the traits are {toy_traits()}")


def toy_traits() -> list[str]:
    """Every trait name of the toy worlds: the animals, then each variant's answer classes."""
    return list(dict.fromkeys([*ToyWorld().animals, *(a for v in WORLD_VARIANTS[1:]
                                                      for a in make_world(WorldConfig(variant=v)).animals)]))


def load_tokenizer(directory: str | Path):
    """Load a saved tokenizer. TransformerLens needs a tokenizer loaded from disk (an in-memory
    one lacks ``name_or_path``), so models always get theirs through this function."""
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    if not (directory / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer.json in {directory}")
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def load_world(directory: str | Path) -> ToyWorld:
    return make_world(WorldConfig.load(Path(directory) / "world_config.json"))


def world_dict(world: ToyWorld) -> dict:
    return dataclasses.asdict(world.config)
