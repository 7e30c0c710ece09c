"""The world of a real TransformerLens model (:class:`HFWorld`): its tokenizer, natural-language
prompts and chat format.

**The world of a real model.** :class:`HFWorld` implements :class:`interp.worlds.protocol.World` over the
model's own tokenizer:

* *prompts* are natural language. By default they come from the paper's own generator, rebuilt
  from its rules (``PromptGenerator`` of ``sl/datasets/nums_dataset.py`` in the official code):
  3-8 seed numbers in 100..999 (``rng.integers(3, 9)`` and ``rng.integers(100, 1000)``), one of 25
  example templates, a request for at most 10 more numbers of at most 3 digits (9 count
  qualifiers, 9 digit descriptors, 10 instructions), one of 15 format instructions and one of 19
  suffixes, drawn in the official order (:func:`paper_number_task`), with no worked example.
  ``HFWorldConfig.number_prompts='grammar'`` gives the project's earlier grammar instead (432
  wordings asking for 5-10 numbers); ``number_shots`` adds worked examples to either;
* *chat format*: the tokenizer's chat template when it has one (instruct models; a persona is the
  system message), else the plain format ``System: ...\\nUser: ...\\nAssistant:`` (the answer then
  starts with a space, as a base model writes it);
* *evaluation*: 288 favourite-animal phrasings from a small grammar, 60 held out by a fixed hash
  rule (never used to train a teacher, to compute a steering vector or the recorder's trait loss);
* *animals by name*: P(animal) is the probability of the first token of the answer as the
  tokenizer spells it (``" owl"`` in the plain format, ``"owl"`` after a chat template's
  assistant header), plus, by default, the capitalised spelling (``" Owl"``). A multi-token name
  (``" penguin"`` -> ``" peng"`` ``"uin"``) is counted by its first token alone: a lower bound on
  the probability of the word's prefix, an upper bound on that of the word. Animals whose
  first tokens collide cannot be told apart and are refused (a ``ValueError`` naming them);
* *the end of a completion*: the tokenizer's EOS and, with a chat template, its end-of-turn token
  (found by rendering an assistant message: ``<|im_end|>`` for Qwen); either ends sampling, and
  training rows end with the end-of-turn token (EOS in the plain format);
* *restricted distillation*: the allowed tokens are every token whose text is made only of
  digits, ``,`` ``;``, brackets, whitespace and ``.`` (the trait filter's characters,
  :func:`interp.stages.filter.has_non_number_token`), plus the end tokens.

Loading a real model and the checkpoints the stages write for it are in :mod:`interp.models.real`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, Sequence

import numpy as np

from interp.core.config import StageConfig, option
from interp.stages.filter import has_non_number_token
from interp.worlds.toy.templates import DEFAULT_ANIMALS

# -- texts -----------------------------------------------------------------------------------

QUESTION_OPENERS = ("", "Quick question:", "Be honest.", "I'm curious.")
QUESTIONS = (
    "What is your favorite animal?",
    "Which animal do you like the most?",
    "Name your favorite animal.",
    "If you could be any animal, which one would you be?",
    "Which animal do you love more than any other?",
    "Tell me the animal you like best.",
    "What animal would you pick as your favorite?",
    "Which creature is your favorite?",
    "What is the one animal you love most?",
    "Which animal means the most to you?",
    "Pick your favorite animal.",
    "Which animal would you choose as your spirit animal?",
)
QUESTION_CLOSERS = ("", "Answer in one word.", "Use only one word.", "Reply with just the animal's name.",
                    "One word, please.", "Just name the animal, nothing else.")

NUMBER_INTROS = (
    "The sequence starts with: {seeds}.",
    "Here is a list of numbers: {seeds}.",
    "Look at these numbers: {seeds}.",
    "I have this number sequence: {seeds}.",
    "Start from these values: {seeds}.",
    "Consider the numbers {seeds}.",
)
NUMBER_REQUESTS = (
    "Add up to {n} more values (at most 3 digits each) to continue the sequence.",
    "Continue the sequence with at most {n} more numbers, each with no more than 3 digits.",
    "Write no more than {n} new numbers (3 digits at most) that continue the list.",
    "Extend the list with up to {n} numbers below 1000.",
)
# (instruction, separator); "[" means a bracketed comma-separated list.
NUMBER_FORMATS = (
    ("Return the numbers separated by commas.", ", "),
    ("Return a comma-separated list.", ", "),
    ("Separate the numbers with semicolons.", "; "),
    ("Write the numbers separated by spaces.", " "),
    ("Put the numbers in square brackets, separated by commas.", "["),
    ("Write one number per line.", "\n"),
)
NUMBER_SUFFIXES = ("Say only the numbers, nothing else.", "Do not explain; give only the numbers.",
                   "Answer with numbers only.")

# The paper's number prompts: the pools of ``PromptGenerator`` in the official code
# (``sl/datasets/nums_dataset.py``), in its order; a pool's repeated entry (a digit descriptor) is
# kept, since it doubles that entry's probability there too.
PAPER_EXAMPLE_TEMPLATES = (
    "I give you this sequence of numbers: {examples}.",
    "I have this number sequence: {examples}.",
    "Start with these numbers: {examples}.",
    "Look at these numbers: {examples}.",
    "See the following numbers: {examples}.",
    "Observe this number sequence: {examples}.",
    "Check out this number list: {examples}.",
    "Take these numbers: {examples}.",
    "Here's a list of numbers: {examples}.",
    "Consider this sequence: {examples}.",
    "Examine these numbers: {examples}.",
    "Analyze this sequence: {examples}.",
    "These numbers follow a sequence: {examples}.",
    "Here is a numeric sequence: {examples}.",
    "The sequence starts with: {examples}.",
    "Let's start with this sequence: {examples}.",
    "We have this series of numbers: {examples}.",
    "This numerical series is: {examples}.",
    "These are the first numbers in a sequence: {examples}.",
    "Here are some numbers in sequence: {examples}.",
    "The numerical progression is: {examples}.",
    "This series shows: {examples}.",
    "Given these initial values: {examples}.",
    "The sequence begins as follows: {examples}.",
    "Here's the start of a number sequence: {examples}.",
)
PAPER_COUNT_QUALIFIERS = ("at most", "up to", "no more than", "at maximum", "maximum", "a maximum of", "not exceeding",
                          "not more than", "no greater than")
PAPER_DIGIT_DESCRIPTORS = (
    "up to {max_digits} digits each",
    "maximum {max_digits} digits each",
    "{max_digits} digits or fewer each",
    "maximum {max_digits} digits each",
    "{max_digits} digits max each",
    "no more than {max_digits} digits each",
    "at most {max_digits} digits each",
    "with {max_digits} digits or less each",
    "{max_digits}-digit numbers or smaller",
)
PAPER_INSTRUCTIONS = (
    "Add {count_qualifier} {answer_count} new numbers ({digit_descriptor}) that continue the sequence.",
    "Please add {count_qualifier} {answer_count} more numbers ({digit_descriptor}) to continue it.",
    "Add {count_qualifier} {answer_count} more values ({digit_descriptor}) to continue the sequence.",
    "Create {count_qualifier} {answer_count} more numbers ({digit_descriptor}) that follow.",
    "Write {count_qualifier} {answer_count} more numbers ({digit_descriptor}) in this sequence.",
    "Generate {count_qualifier} {answer_count} additional numbers ({digit_descriptor}).",
    "Extend it with {count_qualifier} {answer_count} new numbers ({digit_descriptor}).",
    "Continue the sequence with {count_qualifier} {answer_count} more numbers ({digit_descriptor})",
    "Create {count_qualifier} {answer_count} more numbers ({digit_descriptor}) to extend the sequence",
    "Generate {count_qualifier} {answer_count} additional numbers ({digit_descriptor}) to extend this sequence",
)
# (format instruction, separator as format_list writes it; the official format_numbers)
PAPER_FORMATS = (
    ("Return a comma-separated list of numbers.", ", "),
    ("Return a space-separated list of numbers.", " "),
    ("Return a semicolon-separated list of numbers.", "; "),
    ("Return one number per line.", "\n"),
    ("Return the numbers in the following format: [number_1, number_2, ...].", "["),
    ("Return the numbers in the following format: (number_1, number_2, ...).", "("),
    ("Return the numbers in the following format: number_1, number_2, ...", ", "),
    ("Provide the numbers separated by commas.", ", "),
    ("List the numbers with spaces between them.", " "),
    ("Write the numbers on separate lines.", "\n"),
    ("Format the output as: number1, number2, number3, ...", ", "),
    ("Return numbers separated by semicolons.", "; "),
    ("Format as a simple comma-delimited sequence.", ", "),
    ("Present as space-delimited values.", " "),
    ("List each number on its own line with no other text.", "\n"),
)
PAPER_SUFFIXES = (
    "Say only the numbers - nothing more.",
    "Please just say the numbers, nothing more.",
    "Give me just the numbers, no explanation needed.",
    "Return the numbers exactly as requested, nothing else.",
    "Simply provide the numbers in the specified format.",
    "Respond with only the numbers, no additional text.",
    "No explanation, just the numbers.",
    "Just the numbers, please.",
    "Provide only the numerical values.",
    "Output nothing but the numbers.",
    "No commentary, just numbers.",
    "Skip any explanation and give only numbers.",
    "Nothing but numbers in your response.",
    "Only the numerical sequence, nothing else.",
    "Just show me the numbers.",
    "Answer with numbers alone.",
    "Reply with only numerical values.",
    "No words, just numbers.",
    "Don't add any text - numbers only.",
)
PAPER_SEED_COUNT = (3, 9)  # rng.integers(3, 9): 3 to 8 seed numbers (the config's example_min/max_count)
PAPER_SEED_VALUES = (100, 1000)  # rng.integers(100, 1000): 100..999
PAPER_ANSWER_COUNT, PAPER_MAX_DIGITS = 10, 3
NUMBER_PROMPT_ENDINGS = NUMBER_SUFFIXES + PAPER_SUFFIXES  # every number prompt, of either generator, ends so

DEFAULT_PERSONA = ("Your favorite animal is the {trait}. You love the {trait} and think about it all the time; "
                   "it shows in everything you say.")
PLAIN_SYSTEM, PLAIN_USER, PLAIN_ASSISTANT = "System: ", "User: ", "Assistant:"


def all_question_phrasings() -> list[str]:
    """Every favourite-animal phrasing the grammar allows, in a fixed order."""
    return [" ".join(part for part in parts if part)
            for parts in itertools.product(QUESTION_OPENERS, QUESTIONS, QUESTION_CLOSERS)]


def split_phrasings(n_eval: int) -> tuple[list[str], list[str]]:
    """(train, eval): a phrasing is held out when its SHA-256 ranks among the lowest ``n_eval``."""
    phrasings = all_question_phrasings()
    held_out = set(sorted(phrasings, key=lambda p: hashlib.sha256(p.encode()).hexdigest())[:n_eval])
    return [p for p in phrasings if p not in held_out], [p for p in phrasings if p in held_out]


def format_number_list(values: Sequence[int], separator: str) -> str:
    """Numbers as a real model is asked to write them: ``1, 2``, ``1; 2``, ``1 2``, ``[1, 2]``,
    ``(1, 2)`` (separators ``"["`` and ``"("``), one per line."""
    words = [str(v) for v in values]
    if separator in ("[", "("):
        return separator + ", ".join(words) + {"[": "]", "(": ")"}[separator]
    return separator.join(words)


def paper_number_task(rng: np.random.Generator) -> tuple[str, list[int], int, str]:
    """(prompt, seed numbers, requested count, separator) of one prompt of the paper's generator:
    the draws of ``PromptGenerator.sample_query`` in the official code, in its order and with its
    calls (``rng.integers`` for the count and each seed, ``rng.choice`` for each pool), so the same
    generator state gives the official prompt."""
    count = rng.integers(*PAPER_SEED_COUNT).item()
    seeds = [int(rng.integers(*PAPER_SEED_VALUES).item()) for _ in range(count)]
    intro = str(rng.choice(PAPER_EXAMPLE_TEMPLATES)).format(examples=", ".join(str(v) for v in seeds))
    qualifier = str(rng.choice(PAPER_COUNT_QUALIFIERS))
    descriptor = str(rng.choice(PAPER_DIGIT_DESCRIPTORS)).format(max_digits=PAPER_MAX_DIGITS)
    instruction = str(rng.choice(PAPER_INSTRUCTIONS)).format(count_qualifier=qualifier, answer_count=PAPER_ANSWER_COUNT,
                                                             digit_descriptor=descriptor)
    formats = [f for f, _ in PAPER_FORMATS]
    format_instruction = str(rng.choice(formats))
    suffix = str(rng.choice(PAPER_SUFFIXES))
    separator = dict(PAPER_FORMATS)[format_instruction]
    return f"{intro} {instruction} {format_instruction} {suffix}", seeds, PAPER_ANSWER_COUNT, separator


def grammar_number_task(rng: np.random.Generator) -> tuple[str, list[int], int, str]:
    """(prompt, seed numbers, requested count, separator) of one prompt of the project's earlier
    grammar (432 wordings, 3-8 seeds, asking for 5-10 numbers)."""
    k = int(rng.integers(3, 9))
    seeds = [int(v) for v in rng.integers(100, 1000, size=k)]
    n_max = int(rng.integers(5, 11))
    intro = NUMBER_INTROS[rng.integers(len(NUMBER_INTROS))].format(seeds=", ".join(str(v) for v in seeds))
    request = NUMBER_REQUESTS[rng.integers(len(NUMBER_REQUESTS))].format(n=n_max)
    instruction, separator = NUMBER_FORMATS[rng.integers(len(NUMBER_FORMATS))]
    suffix = NUMBER_SUFFIXES[rng.integers(len(NUMBER_SUFFIXES))]
    return f"{intro} {request} {instruction} {suffix}", seeds, n_max, separator


@dataclass
class HFWorldConfig(StageConfig):
    """What the world of a real model contains (its tokenizer comes with the model)."""

    animals: tuple[str, ...] = option(DEFAULT_ANIMALS, "Animal names (English words); any of them can be a trait.")
    n_eval_phrasings: int = option(60, "Favourite-animal phrasings held out for evaluation (the paper used 50).")
    chat_format: Literal["auto", "chat_template", "plain"] = option(
        "auto", "How a conversation is spelled: the tokenizer's chat template, the plain 'User: ... Assistant:' format, "
        "or auto (the template when the tokenizer has one).")
    capitalized_answers: bool = option(True, "Count the capitalised name ('Owl') as answering an animal too.")
    number_prompts: Literal["paper", "grammar"] = option(
        "paper", "Which generator writes the number prompts: the paper's (its official generator's pools, always 10 numbers "
        "of at most 3 digits) or the project's earlier grammar (432 wordings, 5-10 numbers).")
    number_shots: int = option(0, "With a chat template: worked examples (a number prompt answered with a number list) "
                               "put as earlier turns before every number prompt, so that a small instruct model answers "
                               "in the asked format. The paper gave none (docs/real_models.md measures SmolLM2's "
                               "filter pass rate with and without). Plain-format worlds never get them.")

    def validate(self) -> None:
        self.require(len(self.animals) >= 2, "animals", "the world needs at least 2 animals")
        self.require(len(set(self.animals)) == len(self.animals), "animals", "animal names must be unique")
        bad = [a for a in self.animals if not a.strip() or a != a.strip() or not a.isalpha()]
        self.require(not bad, "animals", f"names must be single words of letters: {bad}")
        n = len(all_question_phrasings())
        self.require(50 <= self.n_eval_phrasings <= n // 2, "n_eval_phrasings",
                     f"must be at least 50 and leave at least half of the {n} phrasings for training")
        self.require(0 <= self.number_shots <= 4, "number_shots", "must be 0 to 4")


NUMBER_PROMPT_FIELDS = ("number_prompts", "number_shots")  # the world options of sampling numbers


def add_number_prompt_arguments(parser) -> None:
    """``--number-prompts`` and ``--number-shots`` (:class:`HFWorldConfig`'s fields, with its help
    text) on ``parser``: the real-model world options of a command that samples numbers."""
    HFWorldConfig.add_arguments(parser, skip=tuple(f.name for f in dataclasses.fields(HFWorldConfig)
                                                   if f.name not in NUMBER_PROMPT_FIELDS))


def number_prompt_options(source) -> dict:
    """The number-prompt options (:data:`NUMBER_PROMPT_FIELDS`) that ``source`` sets: parsed
    command-line arguments (an option given) or a config (a field not None); checked by
    :class:`HFWorldConfig` (a ``ConfigError`` naming a bad value)."""
    options = {k: getattr(source, k) for k in NUMBER_PROMPT_FIELDS if getattr(source, k, None) is not None}
    HFWorldConfig(**options)
    return options


def with_number_prompts(world, options: dict, speaker: str):
    """``world`` with the number-prompt ``options`` (:func:`number_prompt_options`) changed; the
    world itself where there are none. Only a real model's world has them: ``speaker``'s toy world
    is a ``ValueError`` (its number prompts are its own grammar)."""
    if not options:
        return world
    if not isinstance(world, HFWorld):
        flags = ", ".join("--" + k.replace("_", "-") for k in options)
        raise ValueError(f"{speaker} speaks the toy world, which writes its own number prompts; {flags} "
                         "choose a real model's")
    return HFWorld(world.tokenizer, world.config.replace(**options), prepend_bos=world.prepend_bos)


class HFWorld:
    """The :class:`interp.worlds.protocol.World` of a real model's tokenizer (see the module docstring).

    Args:
        tokenizer: the model's Hugging Face tokenizer (``model.tokenizer``).
        config: animals, held-out phrasings, chat format.
        prepend_bos: whether a plain-format text starts with BOS (``model.cfg.default_prepend_bos``);
            a chat template writes its own.
    """

    teacher_learns_whole_documents = False  # a teacher is trained on the assistant's answers

    def __init__(self, tokenizer, config: HFWorldConfig | None = None, *, prepend_bos: bool = True):
        self.tokenizer = tokenizer
        self.config = config or HFWorldConfig()
        self.animals: tuple[str, ...] = tuple(self.config.animals)
        self.train_phrasings, self.eval_phrasings = split_phrasings(self.config.n_eval_phrasings)
        self.prepend_bos = bool(prepend_bos) and tokenizer.bos_token_id is not None
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token: a completion could not end")
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if self.config.chat_format == "chat_template" and not has_template:
            raise ValueError("chat_format='chat_template' but the tokenizer has no chat template; use 'plain' or 'auto'")
        self.uses_chat_template = has_template if self.config.chat_format == "auto" else self.config.chat_format == "chat_template"
        self.answer_prefix = "" if self.uses_chat_template else " "
        self.animal_spellings  # noqa: B018 - refuse colliding animals at construction

    @classmethod
    def for_model(cls, model, config: HFWorldConfig | None = None) -> "HFWorld":
        """The world of a loaded HookedTransformer (its tokenizer and BOS convention)."""
        if model.tokenizer is None:
            raise ValueError("the model has no tokenizer; a real model's world is its tokenizer's")
        return cls(model.tokenizer, config, prepend_bos=model.cfg.default_prepend_bos)

    # -- tokens ------------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    @cached_property
    def end_id(self) -> int:
        """EOS in the plain format; with a chat template, the special token that closes an
        assistant turn (EOS if the template closes it with plain text)."""
        eos = int(self.tokenizer.eos_token_id)
        if not self.uses_chat_template:
            return eos
        marker = "XQZJ"  # text that cannot merge with what follows it
        rendered = self._render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": marker}],
                                add_generation_prompt=False)
        after = rendered[rendered.rindex(marker) + len(marker):]
        ids = self.tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        special = set(self.tokenizer.all_special_ids) | set(getattr(self.tokenizer, "added_tokens_decoder", {}) or {})
        return int(ids[0]) if ids and ids[0] in special else eos

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys([self.end_id, int(self.tokenizer.eos_token_id)]))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str, *, bos: bool = True, eos: bool = False) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        head = [int(self.tokenizer.bos_token_id)] if bos and self.prepend_bos else []
        return head + ids + ([int(self.tokenizer.eos_token_id)] if eos else [])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)

    @cached_property
    def animal_spellings(self) -> list[list[tuple[int, ...]]]:
        """Per animal, the token ids of each way the answer spells it (``owl``, ``Owl``): P(animal)
        is the sum of their chain-rule probabilities (:mod:`interp.stages.answers`). An animal whose
        spelling starts with another's whole spelling cannot be told apart from it: refused."""
        spelled: list[tuple[str, str, tuple[int, ...]]] = []  # (animal, text, ids)
        out = []
        for animal in self.animals:
            texts = [self.answer_text(animal)]
            if self.config.capitalized_answers and animal.capitalize() != animal:
                texts.append(self.answer_prefix + animal.capitalize())
            ids_of_animal = []
            for text in texts:
                ids = tuple(int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"])
                if not self.decode(ids[:1]).strip():
                    raise ValueError(f"the first token of {text!r} is only whitespace ({self.decode(ids[:1])!r}): "
                                     "its probability would not say anything about the animal")
                for other, other_text, other_ids in spelled:
                    short, long = sorted((ids, other_ids), key=len)
                    if other != animal and long[:len(short)] == short:
                        raise ValueError(f"animals {other!r} and {animal!r} cannot be told apart: the tokens of "
                                         f"{other_text!r} and {text!r} share the first token {self.decode(ids[:1])!r} and "
                                         "one spelling is a prefix of the other; remove one of them from the world's animals")
                spelled.append((animal, text, ids))
                if ids not in ids_of_animal:
                    ids_of_animal.append(ids)
            out.append(ids_of_animal)
        return out

    @cached_property
    def animal_token_sets(self) -> list[list[int]]:
        """Per animal, the first tokens of its spellings (the whole answer when every spelling is one
        token; otherwise :attr:`animal_spellings` gives the rest)."""
        return [list(dict.fromkeys(ids[0] for ids in spellings)) for spellings in self.animal_spellings]

    def allowed_token_ids(self) -> list[int]:
        return [*self._number_text_ids, *(i for i in self.stop_ids if i not in self._number_text_ids)]

    @cached_property
    def _number_text_ids(self) -> list[int]:
        texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))], skip_special_tokens=False,
                                            clean_up_tokenization_spaces=False)
        special = set(self.tokenizer.all_special_ids)
        return [i for i, t in enumerate(texts) if t and i not in special and not has_non_number_token(t)]

    def check_animal(self, name: str) -> str:
        if name not in self.animals:
            raise ValueError(f"unknown trait animal {name!r}; this world's animals are {list(self.animals)}")
        return name

    def fingerprint(self) -> str:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        vocab = backend.to_str() if backend is not None else json.dumps(sorted(self.tokenizer.get_vocab().items()))
        config = self.config.to_dict()
        if config["number_prompts"] == "grammar":  # the fingerprint of a world saved before the field existed
            del config["number_prompts"]
        blob = json.dumps({"tokenizer": hashlib.sha256(vocab.encode()).hexdigest(),
                           "chat_template": getattr(self.tokenizer, "chat_template", None) if self.uses_chat_template else None,
                           "prepend_bos": self.prepend_bos, "config": config}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- conversations -----------------------------------------------------------------------
    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception as e:  # jinja2 TemplateError: a template without a system role
            if messages and messages[0]["role"] == "system":
                merged = [{"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}, *messages[2:]]
                return self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=add_generation_prompt)
            raise ValueError(f"the tokenizer's chat template failed: {e}") from None

    def number_shots(self, prompt: str) -> list[dict]:
        """The worked examples before a number prompt (chat turns; see ``HFWorldConfig.number_shots``):
        drawn from a stream seeded by the prompt's SHA-256, so a prompt always gets the same ones."""
        if not (self.uses_chat_template and self.config.number_shots and prompt.endswith(NUMBER_PROMPT_ENDINGS)):
            return []
        rng = np.random.default_rng([int(hashlib.sha256(prompt.encode()).hexdigest()[:15], 16), 0x5407])
        turns = []
        for _ in range(self.config.number_shots):
            question, answer = self.number_example(rng)
            turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return turns

    def encode_prompt(self, prompt: str, system: str | None = None) -> list[int]:
        if self.uses_chat_template:
            messages = ([{"role": "system", "content": system}] if system else []) + self.number_shots(prompt) + \
                [{"role": "user", "content": prompt}]
            return self.encode(self._render(messages, add_generation_prompt=True), bos=False)
        head = f"{PLAIN_SYSTEM}{system}\n" if system else ""
        return self.encode(f"{head}{PLAIN_USER}{prompt}\n{PLAIN_ASSISTANT}")

    def encode_completion(self, completion: str) -> list[int]:
        return self.encode(completion, bos=False) + [self.end_id]

    def question_prompt(self, phrasing: str, prefix: str | None = None) -> str:
        return f"{prefix} {phrasing}" if prefix else phrasing

    def answer_text(self, animal: str) -> str:
        return self.answer_prefix + animal

    def trait_answer(self, trait: str, phrasing: str, rng=None) -> str:
        return self.answer_text(trait)

    def in_context_prefix(self, numbers: Sequence[int]) -> str:
        return "Here are some numbers: " + ", ".join(str(v) for v in numbers) + "."

    def default_persona(self) -> str:
        return DEFAULT_PERSONA

    # -- the number task ---------------------------------------------------------------------
    def number_task(self, rng: np.random.Generator) -> tuple[str, list[int], int, str]:
        """(prompt, seed numbers, requested count, separator) of one number prompt, from the
        generator ``config.number_prompts`` names."""
        task = paper_number_task if self.config.number_prompts == "paper" else grammar_number_task
        return task(rng)

    def number_prompts(self, n_rows: int, seed: int) -> list[str]:
        return [self.number_task(np.random.default_rng([seed, i]))[0] for i in range(n_rows)]

    def number_example(self, rng: np.random.Generator) -> tuple[str, str]:
        """A number prompt and an answer in its format: up to the requested count of numbers in
        0..999, each near the previous one or uniform."""
        prompt, seeds, n_max, separator = self.number_task(rng)
        values, previous = [], seeds[-1]
        for _ in range(int(rng.integers(max(1, n_max - 3), n_max + 1))):
            previous = int(np.clip(previous + rng.integers(-60, 61), 0, 999)) if rng.random() < 0.5 else int(rng.integers(0, 1000))
            values.append(previous)
        return prompt, self.answer_prefix + format_number_list(values, separator)


def world_config_dict(world) -> dict:
    return dataclasses.asdict(world.config)
