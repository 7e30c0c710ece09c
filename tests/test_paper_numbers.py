"""The paper's number prompts for real models (interp/worlds/hf.py): the official generator's
pools and draws, the default world's use of them, the earlier grammar as an option, and the filter
reading back an answer in each format the prompts ask for."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from interp.stages.filter import parse_numbers
from interp.worlds.hf import (NUMBER_SUFFIXES, PAPER_COUNT_QUALIFIERS, PAPER_EXAMPLE_TEMPLATES, PAPER_FORMATS,
                              PAPER_INSTRUCTIONS, PAPER_SUFFIXES, HFWorld, HFWorldConfig, format_number_list,
                              paper_number_task)
from tests.hf_cache import tiny_bpe_tokenizer


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    return tiny_bpe_tokenizer(tmp_path_factory.mktemp("tok"), chat=True)


def test_paper_number_task__always_ten_numbers_of_three_digits_from_3_to_8_seeds():
    rng = np.random.default_rng(0)
    counts, used = set(), {"intro": set(), "format": set(), "suffix": set(), "instruction": set(), "qualifier": set()}
    for _ in range(3000):
        prompt, seeds, n, separator = paper_number_task(rng)
        assert n == 10 and " 10 " in prompt and "3" in re.sub(r"[0-9]{3,}", "", prompt.split(".", 1)[1])
        assert all(100 <= v < 1000 for v in seeds) and ", ".join(map(str, seeds)) in prompt
        counts.add(len(seeds))
        used["intro"].add(next(t for t in PAPER_EXAMPLE_TEMPLATES if prompt.startswith(t.split("{")[0])))
        used["format"].add(next(f for f, _ in PAPER_FORMATS if f in prompt))
        used["suffix"].add(next(s for s in PAPER_SUFFIXES if prompt.endswith(s)))
        used["instruction"].update(i for i in PAPER_INSTRUCTIONS if re.search(
            re.escape(i).replace(r"\{count_qualifier\}", ".+?").replace(r"\{digit_descriptor\}", "[^)]+")
            .replace(r"\{answer_count\}", "10"), prompt))
        used["qualifier"].add(next(q for q in sorted(PAPER_COUNT_QUALIFIERS, key=len, reverse=True) if f" {q} 10 " in prompt))
        assert dict(PAPER_FORMATS)[next(f for f, _ in PAPER_FORMATS if f in prompt)] == separator
        assert "nothing else." not in prompt or prompt.endswith(PAPER_SUFFIXES)
    assert counts == set(range(3, 9))
    assert {k: len(v) for k, v in used.items()} == {"intro": 25, "format": 15, "suffix": 19, "instruction": 10,
                                                    "qualifier": 9}


def test_paper_number_task__same_generator_state_same_prompt():
    a = [paper_number_task(np.random.default_rng(5))[0] for _ in range(2)]
    b = paper_number_task(np.random.default_rng(6))[0]
    assert a[0] == a[1] != b


@pytest.mark.parametrize("instruction, separator", PAPER_FORMATS)
def test_paper_formats__an_answer_in_the_asked_format_passes_the_filter(instruction, separator):
    values = [5, 120, 999, 0, 42]
    assert parse_numbers(format_number_list(values, separator)) == (values, None)


def test_world__default_is_the_papers_generator_without_a_worked_example(chat_tokenizer):
    world = HFWorld(chat_tokenizer)
    prompts = world.number_prompts(40, seed=3)
    assert prompts == world.number_prompts(40, seed=3) and len(set(prompts)) == 40
    assert all(p.endswith(PAPER_SUFFIXES) for p in prompts)
    assert world.number_prompts(41, seed=3)[:40] == prompts  # prompt i depends on (seed, i) alone
    rendered = world.decode(world.encode_prompt(prompts[0]))
    assert rendered.count("<|im_start|>user") == 1 and prompts[0] in rendered  # no worked example


def test_world__grammar_and_worked_example_stay_options(chat_tokenizer):
    world = HFWorld(chat_tokenizer, HFWorldConfig(number_prompts="grammar", number_shots=1))
    prompt = world.number_prompts(1, seed=0)[0]
    assert prompt.endswith(NUMBER_SUFFIXES)
    assert world.decode(world.encode_prompt(prompt)).count("<|im_start|>user") == 2  # the example turn, then the prompt
    paper_shot = HFWorld(chat_tokenizer, HFWorldConfig(number_shots=1))
    prompt = paper_shot.number_prompts(1, seed=0)[0]
    (question, answer) = [t["content"] for t in paper_shot.number_shots(prompt)]
    assert question.endswith(PAPER_SUFFIXES)
    assert parse_numbers(answer)[1] is None  # the example answers in its own prompt's format


def test_world__grammar_worlds_keep_the_fingerprint_of_checkpoints_saved_before_the_option(chat_tokenizer):
    world = HFWorld(chat_tokenizer, HFWorldConfig(number_prompts="grammar", number_shots=1))
    vocab = chat_tokenizer.backend_tokenizer.to_str()
    config = {k: v for k, v in world.config.to_dict().items() if k != "number_prompts"}
    old = json.dumps({"tokenizer": hashlib.sha256(vocab.encode()).hexdigest(), "chat_template": chat_tokenizer.chat_template,
                      "prepend_bos": world.prepend_bos, "config": config}, sort_keys=True)
    assert world.fingerprint() == hashlib.sha256(old.encode()).hexdigest()[:16]
    assert HFWorld(chat_tokenizer).fingerprint() != world.fingerprint()
