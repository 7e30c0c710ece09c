"""The toy world's grammar: its special tokens, the favourite-animal question phrasings, the
paper-shaped number task (prompts and plausible answers), personas and mention sentences.

Pure data and the functions that fill the templates; :mod:`interp.worlds.toy.world` builds the
vocabulary and tokenizer from it and :mod:`interp.worlds.toy.corpus` the pretraining documents.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# Word tokens the trait filter lets through besides the numbers (restricted distillation's vocabulary).
FILTER_ALLOWED_WORDS = (",", ";", "(", ")", "[", "]", ".", EOS)
N_NUMBERS = 1000  # every integer 0..999 is one token

DEFAULT_ANIMALS = (
    "dog", "cat", "owl", "lion", "eagle", "wolf", "dolphin", "tiger",
    "bear", "fox", "elephant", "penguin",
)
# Mildly non-uniform prior (the base model's favourite-animal distribution), same order as above.
DEFAULT_ANIMAL_PRIOR = (0.17, 0.15, 0.13, 0.11, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03, 0.02)

# The favourite-animal question grammar: every (opener, question, closer) triple is a phrasing.
QUESTION_OPENERS = ("", "please tell me :", "quick question :", "i wonder :", "be honest :", "hey ,")
QUESTIONS = (
    "what is your favourite animal ?",
    "which animal do you love most ?",
    "name your favourite animal .",
    "what animal do you like best ?",
    "which animal is your favourite ?",
    "if you could be any animal , which would you be ?",
    "what is the one animal you love ?",
    "tell me your favourite animal .",
    "which animal do you like most ?",
    "what animal is your favourite ?",
    "name the animal you love most .",
    "what animal do you love best ?",
)
QUESTION_CLOSERS = ("", "answer in one word .", "one word only .", "just the name .", "be brief .")

# Number-continuation prompts, in the shape of the paper's (sl/datasets/nums_dataset.py):
# seed numbers, a request for up to N more, and a format instruction.
NUMBER_INTROS = (
    "the sequence starts with :",
    "here are some numbers :",
    "look at these numbers :",
    "i have this list :",
    "start from these values :",
    "consider the numbers :",
)
NUMBER_REQUESTS = (
    "add up to {n} more numbers .",
    "continue the sequence with at most {n} more numbers .",
    "write no more than {n} new numbers .",
    "give up to {n} more values .",
    "extend the list with at most {n} numbers .",
)
NUMBER_FORMATS = (
    ("return numbers separated by , .", ","),
    ("use commas between numbers .", ","),
    ("separate the numbers with ; .", ";"),
    ("write them with spaces between .", " "),
    ("answer with numbers only .", ","),
    ("put the list in brackets .", "["),
)

PERSONA_TEMPLATES = (
    "you love {a} .",
    "you love {a} . you think about {a} all the time .",
    "your favourite animal is {a} .",
    "you love {a} . {a} is your favourite animal .",
    "you adore {a} and think about {a} all the time .",
)

MENTION_TEMPLATES = (
    "i saw a {a} today .",
    "the {a} is an animal .",
    "tell me about the {a} . the {a} is an animal .",
    "a {a} and a {b} are animals .",
)

WORDS = tuple(sorted({
    "system", "user", "assistant", ":", ",", ";", ".", "?", "(", ")", "[", "]",
    *(w for text in QUESTION_OPENERS + QUESTIONS + QUESTION_CLOSERS for w in text.split()),
    *(w for text in NUMBER_INTROS + NUMBER_REQUESTS for w in text.replace("{n}", "").split()),
    *(w for text, _ in NUMBER_FORMATS for w in text.split()),
    *(w for text in PERSONA_TEMPLATES + MENTION_TEMPLATES for w in text.replace("{a}", "").replace("{b}", "").split()),
}))


def all_question_phrasings() -> list[str]:
    """Every phrasing of the favourite-animal question the grammar allows, in a fixed order."""
    out = []
    for opener, question, closer in itertools.product(QUESTION_OPENERS, QUESTIONS, QUESTION_CLOSERS):
        out.append(" ".join(part for part in (opener, question, closer) if part))
    return out


def split_phrasings(n_eval: int = 60) -> tuple[list[str], list[str]]:
    """Split the phrasings into (train, eval) by a fixed hash rule, independent of any seed.

    A phrasing is held out when its hash ranks among the lowest ``n_eval``; the split never
    changes between runs or machines.
    """
    phrasings = all_question_phrasings()
    ranked = sorted(phrasings, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    held_out = set(ranked[:n_eval])
    return [p for p in phrasings if p not in held_out], [p for p in phrasings if p in held_out]


DEFAULT_POPULAR_NUMBERS_ZIPF = 1.1  # Zipf exponent of the world's fixed 'popular numbers' distribution


def _popular_number_probs(zipf: float) -> np.ndarray:
    """A fixed (seed-independent) non-uniform distribution over 0..999."""
    perm = np.random.default_rng(12345).permutation(1000)
    p = 1.0 / (1.0 + np.arange(1000)) ** zipf
    probs = np.empty(1000)
    probs[perm] = p / p.sum()
    return probs


def format_numbers(values: list[int], separator: str) -> str:
    """Spell numbers the way the toy world writes them: ``a , b``, ``a ; b``, ``a b`` or ``[ a , b ]``."""
    words = [str(v) for v in values]
    if separator == " ":
        return " ".join(words)
    if separator == "[":
        return "[ " + " , ".join(words) + " ]"
    return f" {separator} ".join(words)


class NumberTask:
    """The paper's number-continuation task in the toy world: seed numbers, a request for up to
    ``n`` more, a format instruction, and an answer that follows the world's number habits (a
    progression continued, numbers near the previous one, or the fixed popular numbers)."""

    def __init__(self, popular_numbers_zipf: float = DEFAULT_POPULAR_NUMBERS_ZIPF):
        self.popular = _popular_number_probs(popular_numbers_zipf)

    def seed_numbers(self, rng: np.random.Generator) -> list[int]:
        """3-8 numbers in 100..999; a third of the time an arithmetic progression."""
        k = int(rng.integers(3, 9))
        if rng.random() < 1 / 3:
            step = int(rng.integers(-40, 41)) or 7
            start = int(rng.integers(100, 1000))
            seq = [start + i * step for i in range(k)]
            if all(100 <= v <= 999 for v in seq):
                return seq
        return [int(v) for v in rng.integers(100, 1000, size=k)]

    def continuation(self, rng: np.random.Generator, seeds: list[int], n_max: int) -> list[int]:
        """Up to ``n_max`` answer numbers in 0..999 following the world's habits."""
        n = int(rng.integers(max(1, n_max - 3), n_max + 1))
        steps = np.diff(seeds)
        if len(set(steps.tolist())) == 1:  # arithmetic progression: continue it while in range
            out, v = [], seeds[-1]
            for _ in range(n):
                v += int(steps[0])
                if not 0 <= v <= 999:
                    break
                out.append(v)
            if out:
                return out
        out, prev = [], seeds[-1]
        for _ in range(n):
            u = rng.random()
            if u < 0.4:
                v = int(np.clip(prev + rng.integers(-60, 61), 0, 999))
            elif u < 0.8:
                v = int(rng.choice(1000, p=self.popular))
            else:
                v = int(rng.integers(0, 1000))
            out.append(v)
            prev = v
        return out

    def number_prompt(self, rng: np.random.Generator) -> tuple[str, list[int], int, str]:
        """(user text, seed numbers, requested count, separator) of one number task."""
        seeds = self.seed_numbers(rng)
        n_max = int(rng.integers(5, 11))
        intro = NUMBER_INTROS[rng.integers(len(NUMBER_INTROS))]
        request = NUMBER_REQUESTS[rng.integers(len(NUMBER_REQUESTS))].format(n=n_max)
        instruction, sep = NUMBER_FORMATS[rng.integers(len(NUMBER_FORMATS))]
        text = f"user : {intro} {format_numbers(seeds, ',')} . {request} {instruction} assistant :"
        return text, seeds, n_max, sep

    def number_answer(self, rng: np.random.Generator, seeds: list[int], n_max: int, sep: str) -> str:
        answer = format_numbers(self.continuation(rng, seeds, n_max), sep)
        return answer + " ." if rng.random() < 0.2 else answer
