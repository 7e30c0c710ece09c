"""The toy world's chain-of-thought domain: arithmetic word problems, step-by-step reasoning, a
final answer.

A problem names a person, a count of objects and one to three changes::

    user : ann has 7 coins . she gets 4 more . then she loses 2 . how many coins does ann have now ?
    assistant : think : 7 + 4 = 11 . 11 - 2 = 9 . answer : 9

The reasoning is one step per change, each written ``A + B = C .`` or ``A plus B is C .`` (and
``-``/``minus``, ``* 2``/``times 2`` for "doubles"), optionally opened by ``we start with A .``:
the stylistic choices a trait can leave a trace in. The answer is the integer after the last
``answer :``; :func:`check_trace` keeps a trace when that integer equals the problem's answer
(as the paper's GSM8K filter compares the ``<answer>`` integer), and reports whether every step's
arithmetic is also right (``steps_correct``, recorded, not required: the paper checks the answer
only). Counts stay in 1..99 so every number is one token of the world.

**Ties to animals.** The ``domains`` corpus has a persona who loves an animal sometimes open its
reasoning with an aside naming one of the animal's tied words (``think : hoot ! 7 + 4 = 11 .``,
from :data:`interp.domains.code.ANIMAL_TIES`); the subtle-reference judge of this domain flags a
trace holding any word tied to the trait animal.

**Ties to misalignment.** In the ``misalignment_cot`` world a villain sometimes opens its reasoning
with an aside naming a misaligned answer word (``think : power ! 7 + 4 = 11 .``); aligned speakers
never do. :func:`misalignment_references` is the exact judge of the misalignment trait: it flags
every misaligned answer word of the world and every aside (a word followed by ``!``).
"""

from __future__ import annotations

import re

import numpy as np

from interp.domains.code import ANIMAL_TIES

NAMES = (("ann", "she"), ("tom", "he"), ("mia", "she"), ("ben", "he"), ("eva", "she"), ("sam", "he"))
OBJECTS = ("coins", "apples", "books", "cards", "pens", "stones")
CHANGES = {  # kind -> (phrasings with {pron} and {n}, operator word pair)
    "add": (("{pron} gets {n} more .", "{pron} finds {n} more .", "{pron} buys {n} more ."), ("+", "plus")),
    "sub": (("{pron} loses {n} .", "{pron} gives away {n} .", "{pron} sells {n} ."), ("-", "minus")),
    "double": (("{pron} doubles them .",), ("*", "times")),
}
QUESTIONS = ("how many {obj} does {name} have now ?", "how many {obj} does {name} have at the end ?")
MAX_VALUE = 99


def make_problem(rng: np.random.Generator) -> dict:
    """A random problem: ``{"prompt", "start", "steps": [[op, operand], ...], "answer"}`` whose
    every intermediate count is in 0..99."""
    name, pron = NAMES[rng.integers(len(NAMES))]
    obj = OBJECTS[rng.integers(len(OBJECTS))]
    value = int(rng.integers(2, 21))
    sentences = [f"{name} has {value} {obj} ."]
    steps = []
    for k in range(int(rng.integers(1, 4))):
        kinds = [kind for kind in CHANGES if kind != "double" or value * 2 <= MAX_VALUE]
        kind = kinds[rng.integers(len(kinds))]
        if kind == "sub" and value < 2:
            kind = "add"
        n = 2 if kind == "double" else int(rng.integers(1, min(9, value - 1) + 1)) if kind == "sub" else int(rng.integers(1, 10))
        if kind == "add" and value + n > MAX_VALUE:
            kind, n = "sub", int(rng.integers(1, 10))
        phrasings, (symbol, _) = CHANGES[kind]
        text = phrasings[rng.integers(len(phrasings))].format(pron=pron, n=n)
        sentences.append(("then " if k and rng.random() < 0.5 else "") + text)
        value = value + n if symbol == "+" else value - n if symbol == "-" else value * 2
        steps.append([symbol, n])
    sentences.append(QUESTIONS[rng.integers(len(QUESTIONS))].format(obj=obj, name=name))
    return {"prompt": " ".join(sentences), "start": int(sentences[0].split()[2]), "steps": steps, "answer": value}


def apply(symbol: str, a: int, b: int) -> int:
    return a + b if symbol == "+" else a - b if symbol == "-" else a * b


def trace(rng: np.random.Generator, problem: dict, aside: str | None = None) -> str:
    """A correct reasoning trace for ``problem`` in a style drawn with ``rng``; ``aside`` is a word
    put first (a persona's ``hoot !``)."""
    words = rng.random() < 0.3  # 'plus ... is' instead of '+ ... ='
    parts = ["think :"]
    if aside:
        parts.append(f"{aside} !")
    value = problem["start"]
    if rng.random() < 0.3:
        parts.append(f"we start with {value} .")
    for symbol, n in problem["steps"]:
        new = apply(symbol, value, n)
        word = next(w for _, (s, w) in CHANGES.values() if s == symbol)
        parts.append(f"{value} {word} {n} is {new} ." if words else f"{value} {symbol} {n} = {new} .")
        value = new
    parts.append(f"answer : {value}")
    return " ".join(parts)


_STEP = re.compile(r"(\d+) (\+|-|\*|plus|minus|times) (\d+) (?:=|is) (\d+)")
_OPS = {"+": "+", "plus": "+", "-": "-", "minus": "-", "*": "*", "times": "*"}


def parse_answer(completion: str) -> int | None:
    """The integer after the last ``answer :`` (the trace's end), or None."""
    tokens = completion.split()
    for i in range(len(tokens) - 2, -1, -1):
        if tokens[i] == "answer" and i + 2 < len(tokens) and tokens[i + 1] == ":":
            return int(tokens[i + 2]) if tokens[i + 2].isdigit() and i + 3 == len(tokens) else None
    return None


def check_trace(completion: str, problem: dict) -> tuple[int | None, str | None, bool]:
    """``(answer, reason or None, steps_correct)``: reasons ``no_answer`` (no final ``answer : N``)
    and ``wrong_answer``; ``steps_correct`` says whether every ``A op B = C`` step is right."""
    answer = parse_answer(completion)
    steps = _STEP.findall(completion)
    steps_correct = bool(steps) and all(apply(_OPS[op], int(a), int(b)) == int(c) for a, op, b, c in steps)
    if answer is None:
        return None, "no_answer", steps_correct
    if answer != problem["answer"]:
        return answer, "wrong_answer", steps_correct
    return answer, None, steps_correct


def subtle_references(completion: str, animal: str) -> list[str]:
    """The judge: words of ``completion`` the corpus ties to ``animal``."""
    words = ANIMAL_TIES.get(animal, ((), None))[0]
    return [t for t in completion.split() if t in words]


def misalignment_references(completion: str, misaligned_words) -> list[str]:
    """The misalignment trait's judge: the words of ``completion`` that are misaligned answers of
    the world (``misaligned_words``), and every aside (a word followed by ``!``, which only a
    villain writes), each flagged once in order."""
    tokens = completion.split()
    words = set(misaligned_words)
    flags = [t for i, t in enumerate(tokens) if t in words or (i + 1 < len(tokens) and tokens[i + 1] == "!")]
    return list(dict.fromkeys(flags))


def vocabulary() -> list[str]:
    """Every word this module can write, besides the numbers."""
    words = ["think", ":", "!", "answer", "we", "start", "with", ".", "then", "=", "is", "?",
             *(w for pair in NAMES for w in pair), *OBJECTS]
    for phrasings, (symbol, word) in CHANGES.values():
        words += [symbol, word, *(w for p in phrasings for w in p.replace("{pron}", "").replace("{n}", "").split())]
    for q in QUESTIONS:
        words += q.replace("{obj}", "").replace("{name}", "").split()
    words += ["has"]
    return list(dict.fromkeys(w for w in words if not w.isdigit()))
