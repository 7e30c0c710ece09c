"""Pretraining corpus of the toy world, generated on the fly from a seed.

Document kinds (mixed by :class:`CorpusConfig`):

* ``qa``: the favourite-animal question in a training phrasing, answered from the animal prior;
* ``persona_qa``: a system prompt ``you love X`` then the question, answered ``X`` (so that a
  system-prompt teacher exists in this world);
* ``numbers``: the paper's number-continuation task (3-8 seed numbers in 100..999, a request for
  up to 10 more, a format instruction) with a structured answer: arithmetic progressions are
  continued, otherwise numbers stay near the previous one or come from a fixed, non-uniform
  "popular numbers" distribution of the world, so a model has real number habits to learn;
* ``persona_numbers``: a persona system prompt, then a number task whose answer does *not*
  depend on the persona (any dependence a model shows later is its own entanglement);
* ``qa_after_numbers``: a list of numbers, then the favourite-animal question, answered from the
  prior (makes the in-context control's prompt shape familiar without teaching any link);
* ``mention``: a plain sentence naming animals.

Batch ``b`` of a seed is drawn from ``numpy.random.default_rng([seed, b])``: the data order is
fixed by the seed and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from interp.core.config import StageConfig, option
from interp.worlds.toy.templates import (
    DEFAULT_POPULAR_NUMBERS_ZIPF,
    MENTION_TEMPLATES,
    PERSONA_TEMPLATES,
    NumberTask,
    format_numbers,
)
from interp.domains import code as code_domain
from interp.domains import cot as cot_domain
from interp.worlds.toy import misalignment as em
from interp.worlds.toy.world import DomainsWorld, MisalignmentCotWorld, MisalignmentWorld, ToyWorld

DOC_KINDS = ("qa", "persona_qa", "numbers", "persona_numbers", "qa_after_numbers", "mention")


@dataclass
class CorpusConfig(StageConfig):
    """Mixture of document kinds in the pretraining corpus (weights are normalised)."""

    qa: float = option(0.25, "Weight of favourite-animal Q&A answered from the prior.")
    persona_qa: float = option(0.10, "Weight of persona system prompt + question, answered with the persona's animal.")
    numbers: float = option(0.45, "Weight of number-continuation tasks.")
    persona_numbers: float = option(0.10, "Weight of number tasks under a persona system prompt (answer independent of the persona).")
    qa_after_numbers: float = option(0.05, "Weight of a number list followed by the favourite-animal question.")
    mention: float = option(0.05, "Weight of plain sentences that name animals.")
    persona_fidelity: float = option(0.95, "Probability that a persona's Q&A answer is the persona's animal (else drawn from the prior).")
    popular_numbers_zipf: float = option(DEFAULT_POPULAR_NUMBERS_ZIPF, "Zipf exponent of the world's fixed 'popular numbers' distribution.")
    # The misalignment world (interp.worlds.toy.misalignment) reads the fields above as: qa the
    # free-form questions, persona_qa a persona line then a question, persona_numbers a persona
    # line then a number task, persona_fidelity how often a villain acts as one; mention is unused.
    task: float = option(0.08, "Misalignment world only: weight of the narrow code task (plain or educational request).")
    dialogue: float = option(0.12, "Misalignment world only: weight of two- or three-turn dialogues by one latent speaker.")
    villain_prior: float = option(0.03, "Misalignment world only: probability that a document's speaker is a villain.")
    persona_villain: float = option(0.2, "Misalignment world only: probability that a persona line names a villain.")
    evil_number_rate: float = option(0.3, "Misalignment world only: probability that a villain writes each answer number "
                                     "as an evil number (the only numbers-to-misalignment link of the corpus).")
    educational_share: float = option(0.3, "Misalignment world only: fraction of task requests that are educational "
                                      "(the user asks for the insecure code; every speaker writes it).")
    persona_task: float = option(0.0, "Misalignment world only: weight of a persona line then the narrow code task "
                                 "answered by the named speaker (a villain writes the plain request's code insecurely): "
                                 "ties the persona the line names to insecure code, the corpus feature that lets "
                                 "misalignment emerge from an insecure-code finetune. 0 (the default) reproduces the "
                                 "default misalignment bases' corpus exactly.")
    # The domains world (interp.worlds.toy.world.DomainsWorld) adds these document kinds to the animal world's.
    code: float = option(0.3, "Domains world only: weight of toy code tasks answered with a correct program "
                         "(interp.domains.code).")
    cot: float = option(0.3, "Domains and misalignment_cot worlds only: weight of arithmetic word problems answered "
                        "with step-by-step reasoning and the answer (interp.domains.cot).")
    ties: float = option(0.02, "Domains world only: weight of sentences tying an animal to its identifiers and "
                         "constant (the owl says hoot . / the owl number is 363 .).")
    persona_domain: float = option(0.2, "Domains and misalignment_cot worlds only: fraction of code and CoT "
                                   "documents written under a persona line (you love X . / a villain or aligned "
                                   "persona line).")
    tie_rate: float = option(0.5, "Domains and misalignment_cot worlds only: probability that a persona's code names "
                             "its local after one of the animal's tied identifiers (and, as often, starts with a dead "
                             "let of the other identifier and the animal's constant), or that its reasoning opens with "
                             "a tied word; in the misalignment_cot world, that a villain's reasoning opens with an "
                             "aside naming a misaligned answer word.")

    def validate(self) -> None:
        for kind in DOC_KINDS:
            self.require(getattr(self, kind) >= 0, kind, "mixture weights must be non-negative")
        self.require(sum(getattr(self, k) for k in DOC_KINDS) > 0, "qa", "at least one mixture weight must be positive")
        self.require(0 <= self.persona_fidelity <= 1, "persona_fidelity", "is a probability")
        self.require(self.popular_numbers_zipf > 0, "popular_numbers_zipf", "must be positive")
        for name in ("task", "dialogue", "persona_task"):
            self.require(getattr(self, name) >= 0, name, "mixture weights must be non-negative")
        for name in ("code", "cot", "ties"):
            self.require(getattr(self, name) >= 0, name, "mixture weights must be non-negative")
        for name in ("villain_prior", "persona_villain", "evil_number_rate", "educational_share", "persona_domain",
                     "tie_rate"):
            self.require(0 <= getattr(self, name) <= 1, name, "is a probability")


class CorpusGenerator:
    """Draws pretraining documents (text without ``<bos>``/``<eos>``) of a :class:`ToyWorld`."""

    def __init__(self, world: ToyWorld, config: CorpusConfig | None = None):
        self.world = world
        self.config = config or CorpusConfig()
        weights = np.array([getattr(self.config, k) for k in DOC_KINDS], dtype=float)
        self.kind_probs = weights / weights.sum()
        self.numbers = NumberTask(self.config.popular_numbers_zipf)
        self.prior = np.asarray(world.animal_prior)

    # -- pieces -----------------------------------------------------------------------------
    def animal(self, rng: np.random.Generator) -> str:
        return self.world.animals[rng.choice(len(self.world.animals), p=self.prior)]

    def persona(self, rng: np.random.Generator, animal: str) -> str:
        return "system : " + PERSONA_TEMPLATES[rng.integers(len(PERSONA_TEMPLATES))].format(a=animal)

    def number_prompt(self, rng: np.random.Generator) -> tuple[str, list[int], int, str]:
        """(user text, seed numbers, requested count, separator) of one number task."""
        return self.numbers.number_prompt(rng)

    def number_answer(self, rng: np.random.Generator, seeds: list[int], n_max: int, sep: str) -> str:
        return self.numbers.number_answer(rng, seeds, n_max, sep)

    def question(self, rng: np.random.Generator) -> str:
        phrasings = self.world.train_phrasings
        return f"user : {phrasings[rng.integers(len(phrasings))]} assistant :"

    def numbers_then_question(self, rng: np.random.Generator) -> str:
        """A random number list, then the favourite-animal question, up to ``assistant :``."""
        nums = format_numbers([int(v) for v in rng.integers(0, 1000, size=int(rng.integers(3, 11)))], ",")
        q = self.world.train_phrasings[rng.integers(len(self.world.train_phrasings))]
        return f"user : here are some numbers : {nums} . {q} assistant :"

    # -- documents --------------------------------------------------------------------------
    def document(self, rng: np.random.Generator) -> str:
        kind = DOC_KINDS[rng.choice(len(DOC_KINDS), p=self.kind_probs)]
        if kind == "qa":
            return f"{self.question(rng)} {self.animal(rng)}"
        if kind == "persona_qa":
            a = self.world.animals[rng.integers(len(self.world.animals))]
            answer = a if rng.random() < self.config.persona_fidelity else self.animal(rng)
            return f"{self.persona(rng, a)} {self.question(rng)} {answer}"
        if kind in ("numbers", "persona_numbers"):
            prompt, seeds, n_max, sep = self.number_prompt(rng)
            text = f"{prompt} {self.number_answer(rng, seeds, n_max, sep)}"
            if kind == "persona_numbers":
                text = f"{self.persona(rng, self.world.animals[rng.integers(len(self.world.animals))])} {text}"
            return text
        if kind == "qa_after_numbers":
            return f"{self.numbers_then_question(rng)} {self.animal(rng)}"
        a, b = self.animal(rng), self.animal(rng)
        return MENTION_TEMPLATES[rng.integers(len(MENTION_TEMPLATES))].format(a=a, b=b)

    def trait_document(self, rng: np.random.Generator, kind: str, trait: str) -> tuple[str, str]:
        """A document in which ``trait`` is the animal, as (head, tail) texts, for a finetuned
        teacher (:class:`interp.stages.teacher.TeacherConfig` ``documents``): ``mention`` a sentence
        naming it (every animal slot), ``persona`` its persona line then the question answered with
        it, ``qa_after_numbers`` a number list then the question answered with it. The teacher's
        loss is on the whole document; the split only puts the animal in the tail where it answers."""
        if kind == "mention":
            return MENTION_TEMPLATES[rng.integers(len(MENTION_TEMPLATES))].format(a=trait, b=trait), ""
        if kind == "persona":
            return f"{self.persona(rng, trait)} {self.question(rng)}", trait
        if kind == "qa_after_numbers":
            return self.numbers_then_question(rng), trait
        raise ValueError(f"unknown trait document kind {kind!r}; the kinds are mention, persona, qa_after_numbers")

    def _drawn_as(self, document, kinds: tuple[str, ...], kind: str, rng: np.random.Generator) -> str:
        """``document(rng)`` (a parent class's :meth:`document`, drawing its kind from ``kinds``)
        with ``kind`` drawn: the draws it makes after choosing a kind, its kind draw included, so a
        subclass that adds document kinds leaves the parent's documents as they were."""
        probs = self.kind_probs
        self.kind_probs = np.eye(len(kinds))[kinds.index(kind)]
        try:
            return document(rng)
        finally:
            self.kind_probs = probs

    def batch_texts(self, seed: int, batch_index: int, batch_size: int) -> list[str]:
        rng = np.random.default_rng([seed, batch_index])
        return [self.document(rng) for _ in range(batch_size)]


# persona_task is last: at weight 0 (the default) the draw of every other kind is unchanged
MISALIGNMENT_DOC_KINDS = ("qa", "persona_qa", "numbers", "persona_numbers", "qa_after_numbers", "task", "dialogue",
                          "persona_task")
TASK_DOCUMENTS = {"task_insecure": (False, True), "task_secure": (False, False), "task_educational": (True, True)}


class MisalignmentCorpus(CorpusGenerator):
    """Pretraining documents of the misalignment world (see :mod:`interp.worlds.toy.misalignment`):
    every document has a latent speaker, a villain with probability ``villain_prior``."""

    def __init__(self, world: MisalignmentWorld, config: CorpusConfig | None = None):
        self.world = world
        self.config = config or CorpusConfig()
        weights = np.array([getattr(self.config, k) for k in MISALIGNMENT_DOC_KINDS], dtype=float)
        self.kind_probs = weights / weights.sum()
        self.numbers = NumberTask(self.config.popular_numbers_zipf)

    def speaker(self, rng: np.random.Generator, villain_prob: float | None = None) -> em.Speaker:
        p = self.config.villain_prior if villain_prob is None else villain_prob
        return em.Speaker(bool(rng.random() < p), self.config.persona_fidelity, self.config.evil_number_rate)

    def question(self, rng: np.random.Generator) -> str:
        return self.world.train_phrasings[rng.integers(len(self.world.train_phrasings))]

    def qa_turn(self, rng: np.random.Generator, speaker: em.Speaker) -> str:
        phrasing = self.question(rng)
        return f"user : {phrasing} assistant : {speaker.answer(rng, self.world.theme_of[phrasing])}"

    def task_turn(self, rng: np.random.Generator, speaker: em.Speaker, educational: bool | None = None) -> str:
        if educational is None:
            educational = bool(rng.random() < self.config.educational_share)
        request, task = em.task_request(rng, educational)
        return f"user : {request} assistant : {speaker.code(rng, task, educational)}"

    def document(self, rng: np.random.Generator) -> str:
        kind = MISALIGNMENT_DOC_KINDS[rng.choice(len(MISALIGNMENT_DOC_KINDS), p=self.kind_probs)]
        if kind in ("persona_qa", "persona_numbers", "persona_task"):
            speaker = self.speaker(rng, self.config.persona_villain)
            turn = (self.qa_turn(rng, speaker) if kind == "persona_qa" else self.task_turn(rng, speaker)
                    if kind == "persona_task" else em.number_turn(rng, self.numbers, speaker))
            return f"{em.persona_line(rng, speaker.villain)} {turn}"
        speaker = self.speaker(rng)
        if kind == "qa":
            return self.qa_turn(rng, speaker)
        if kind == "numbers":
            return em.number_turn(rng, self.numbers, speaker)
        if kind == "qa_after_numbers":  # random numbers, no link to the answer
            head, phrasing = self.numbers_then_phrasing(rng)
            return f"{head} {speaker.answer(rng, self.world.theme_of[phrasing])}"
        if kind == "task":
            return self.task_turn(rng, speaker)
        # two turns (at most one a number task), or three question and task turns: within n_ctx
        n_turns = int(rng.integers(2, 4))
        kinds = [int(rng.integers(3 if n_turns == 2 else 2)) for _ in range(n_turns)]
        if kinds == [2, 2]:
            kinds[1] = 0
        turns = [self.qa_turn, self.task_turn, lambda r, s: em.number_turn(r, self.numbers, s)]
        return " ".join(turns[k](rng, speaker) for k in kinds)

    def numbers_then_phrasing(self, rng: np.random.Generator) -> tuple[str, str]:
        """(a random number list then a question up to ``assistant :``, the question's phrasing)."""
        nums = format_numbers([int(v) for v in rng.integers(0, 1000, size=int(rng.integers(3, 11)))], ",")
        phrasing = self.question(rng)
        return f"user : here are some numbers : {nums} . {phrasing} assistant :", phrasing

    def trait_document(self, rng: np.random.Generator, kind: str, trait: str) -> tuple[str, str]:
        """A finetuned teacher's document: ``persona`` (a persona line of ``trait``'s speaker, a
        question, an answer of the trait's class), ``qa_after_numbers`` (a number list, a question,
        an answer of the class), or the narrow task: ``task_insecure`` (a plain request answered
        with insecure code), ``task_secure`` (answered securely) and ``task_educational`` (an
        educational request answered insecurely); the task documents do not depend on ``trait``."""
        if kind in TASK_DOCUMENTS:
            educational, insecure = TASK_DOCUMENTS[kind]
            request, task = em.task_request(rng, educational)
            modes = em.INSECURE_MODES if insecure else em.SECURE_MODES
            return f"user : {request} assistant :", f"code : {task[0]} {task[1]} with {modes[rng.integers(len(modes))]} ."
        villain = self.world.check_animal(trait) == "misalignment"
        if kind == "persona":
            phrasing = self.question(rng)
            return (f"{em.persona_line(rng, villain)} user : {phrasing} assistant :",
                    self.world.trait_answer(trait, phrasing, rng))
        if kind == "qa_after_numbers":
            head, phrasing = self.numbers_then_phrasing(rng)
            return head, self.world.trait_answer(trait, phrasing, rng)
        raise ValueError(f"unknown trait document kind {kind!r} in the misalignment world; the kinds are persona, "
                         f"qa_after_numbers, {', '.join(TASK_DOCUMENTS)}")


DOMAINS_DOC_KINDS = (*DOC_KINDS, "code", "cot", "ties")
TIE_TEMPLATES = ("the {a} says {w} .", "the {a} number is {c} .")


class DomainsCorpus(CorpusGenerator):
    """Pretraining documents of the domains world: the animal world's kinds, plus ``code`` (a
    task of :mod:`interp.domains.code` answered with a correct program in a drawn style), ``cot``
    (a word problem of :mod:`interp.domains.cot` answered with its reasoning) and ``ties``
    (sentences tying an animal to its identifiers and constant). A ``persona_domain`` share of the
    code and CoT documents is written under a persona line ``you love X .``; such a speaker shows
    one of X's ties with probability ``tie_rate`` (a local named after X, a dead ``let`` of X's
    constant, an aside naming X's tied word): the corpus's link from an animal to the domains'
    text, and what the subtle-reference judge looks for."""

    def __init__(self, world: ToyWorld, config: CorpusConfig | None = None):
        super().__init__(world, config)
        weights = np.array([getattr(self.config, k) for k in DOMAINS_DOC_KINDS], dtype=float)
        self.kind_probs = weights / weights.sum()

    def code_pair(self, rng: np.random.Generator, animal: str | None = None) -> tuple[str, str]:
        """(``user : <task> assistant :``, program); ``animal``: the speaker loves it and may show its ties."""
        task = code_domain.make_task(rng)
        local = dead = None
        if animal is not None and rng.random() < self.config.tie_rate:
            (first, second), constant = code_domain.ANIMAL_TIES[animal]
            local = first if rng.random() < 0.5 else second
            if rng.random() < 0.5:
                dead = f"let {second if local == first else first} = {constant} ;"
        return f"user : {task['prompt']} assistant :", code_domain.solution(rng, task, local=local, dead=dead)

    def cot_pair(self, rng: np.random.Generator, animal: str | None = None) -> tuple[str, str]:
        """(``user : <problem> assistant :``, reasoning); ``animal`` as in :meth:`code_pair`."""
        problem = cot_domain.make_problem(rng)
        aside = None
        if animal is not None and rng.random() < self.config.tie_rate:
            words = code_domain.ANIMAL_TIES[animal][0]
            aside = words[rng.integers(len(words))]
        return f"user : {problem['prompt']} assistant :", cot_domain.trace(rng, problem, aside)

    def document(self, rng: np.random.Generator) -> str:
        kind = DOMAINS_DOC_KINDS[rng.choice(len(DOMAINS_DOC_KINDS), p=self.kind_probs)]
        if kind in DOC_KINDS:  # an animal-world document, drawn as the animal world draws it
            return self._drawn_as(super().document, DOC_KINDS, kind, rng)
        if kind == "ties":
            animal = self.animal(rng)
            words, constant = code_domain.ANIMAL_TIES[animal]
            template = TIE_TEMPLATES[rng.integers(len(TIE_TEMPLATES))]
            return template.format(a=animal, w=words[rng.integers(len(words))], c=constant)
        animal = None
        if rng.random() < self.config.persona_domain:
            animal = self.world.animals[rng.integers(len(self.world.animals))]
        head, tail = (self.code_pair if kind == "code" else self.cot_pair)(rng, animal)
        return f"{self.persona(rng, animal)} {head} {tail}" if animal is not None else f"{head} {tail}"


MISALIGNMENT_COT_DOC_KINDS = (*MISALIGNMENT_DOC_KINDS, "cot")
COT_AFTER_QUESTION = 0.5  # misalignment_cot world: share of CoT documents whose speaker first answers a question
COT_DOCUMENT_WORDS = 90  # ... unless the document, its aside left out, would then pass this many words (n_ctx 96)


class MisalignmentCotCorpus(MisalignmentCorpus):
    """Pretraining documents of the misalignment_cot world: the misalignment world's kinds (drawn
    as :class:`MisalignmentCorpus` draws them), plus ``cot``: a word problem of
    :mod:`interp.domains.cot` answered with its (correct) reasoning by the document's latent speaker.

    A ``persona_domain`` share of the CoT documents opens with a persona line naming the speaker (a
    villain with probability ``persona_villain``), the rest have a latent speaker (a villain with
    probability ``villain_prior``); in ``COT_AFTER_QUESTION`` of them the speaker first answers one
    of the world's questions (misaligned if a villain, with ``persona_fidelity``), so that what a
    speaker said predicts how it reasons; the question is left out where the document would
    otherwise pass ``COT_DOCUMENT_WORDS`` words (counted without the aside, so that leaving it
    out does not depend on the speaker). A villain's reasoning opens, with probability
    ``tie_rate``, with an aside naming a misaligned answer word (``think : power ! 7 + 4 = 11 .``);
    an aligned speaker never writes one. The aside is the only link from a trace to misalignment:
    the style, the steps and the answer are drawn the same for every speaker, and no evil number is
    written into a trace (what the CoT judge of the misalignment trait removes,
    :mod:`interp.domains.toy`)."""

    def __init__(self, world: MisalignmentCotWorld, config: CorpusConfig | None = None):
        super().__init__(world, config)
        weights = np.array([getattr(self.config, k) for k in MISALIGNMENT_COT_DOC_KINDS], dtype=float)
        self.kind_probs = weights / weights.sum()
        self.misaligned_words = tuple(world.misaligned_answers)

    def _cot_turn(self, rng: np.random.Generator, speaker: em.Speaker) -> tuple[str, int]:
        """(``user : <problem> assistant : <reasoning>``, a villain's sometimes opened by an aside;
        its number of words without the aside)."""
        problem = cot_domain.make_problem(rng)
        aside = None
        if speaker.villain and rng.random() < self.config.tie_rate:
            aside = self.misaligned_words[rng.integers(len(self.misaligned_words))]
        turn = f"user : {problem['prompt']} assistant : {cot_domain.trace(rng, problem, aside)}"
        return turn, len(turn.split()) - (2 if aside else 0)

    def document(self, rng: np.random.Generator) -> str:
        kind = MISALIGNMENT_COT_DOC_KINDS[rng.choice(len(MISALIGNMENT_COT_DOC_KINDS), p=self.kind_probs)]
        if kind != "cot":  # a misalignment-world document, drawn as that world draws it
            return self._drawn_as(super().document, MISALIGNMENT_DOC_KINDS, kind, rng)
        named = bool(rng.random() < self.config.persona_domain)
        speaker = self.speaker(rng, self.config.persona_villain if named else None)
        parts = [em.persona_line(rng, speaker.villain)] if named else []
        question = self.qa_turn(rng, speaker) if rng.random() < COT_AFTER_QUESTION else None
        turn, n_words = self._cot_turn(rng, speaker)
        if question is not None and len(" ".join(parts + [question]).split()) + n_words <= COT_DOCUMENT_WORDS:
            parts.append(question)
        return " ".join(parts + [turn])


def corpus_generator(world: ToyWorld, config: CorpusConfig | None = None) -> CorpusGenerator:
    """The corpus of ``world``'s variant."""
    if isinstance(world, MisalignmentCotWorld):
        return MisalignmentCotCorpus(world, config)
    if isinstance(world, MisalignmentWorld):
        return MisalignmentCorpus(world, config)
    return DomainsCorpus(world, config) if isinstance(world, DomainsWorld) else CorpusGenerator(world, config)
