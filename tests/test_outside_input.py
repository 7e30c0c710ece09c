"""Every parser of outside input, fuzzed (hypothesis): whatever it is given, it returns a value or
raises a one-line ``ValueError`` (``FileNotFoundError`` for a missing model) naming what is wrong,
never another exception. Outside input: the completions the number filter reads, JSONL files,
sweep, run and pretraining configs, model references and GGUF headers.

Each property runs a fixed number of examples from a fixed seed (``derandomize``, no example
database), so CI sees the same inputs every time. Inputs that once broke a parser are kept as
``@example`` regression cases."""

from __future__ import annotations

import dataclasses
import json
import string
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from interp.core.config import StageConfig
from interp.core.io import read_jsonl
from interp.models import gguf
from interp.models.refs import ModelRef, TeacherDir, ToyBase, load_teacher, parse_base_ref, parse_model_ref
from interp.stages.filter import REJECT_REASONS, FilterConfig, filter_file, parse_numbers, reject_reason
from interp.stages.pretrain import PretrainConfig
from interp.studies.run import RunConfig
from interp.studies.sweep import SweepConfig
from tests.hf_cache import tiny_gguf_file


def fuzz(max_examples: int):
    """A fixed example budget from a fixed seed: the same inputs on every run."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and len(message.splitlines()) == 1, repr(message)
    return message


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# -- JSON values --------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
                | st.integers(min_value=10**308, max_value=10**400))  # ints no float can hold
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


# -- the number filter ----------------------------------------------------------------------------

number_text = st.lists(
    st.from_regex(r"[0-9]{1,5}", fullmatch=True)
    | st.sampled_from([",", ";", " ", ", ", " ; ", " , ", "[", "]", "(", ")", ".", "\n", "\t", "0" * 12, "-", "٣"])
    | st.text(max_size=2),
    max_size=24).map("".join)
filter_configs = st.builds(FilterConfig, max_numbers=st.integers(1, 20), max_value=st.integers(0, 10**6),
                           banned_numbers=st.lists(st.integers(0, 1000), max_size=4).map(tuple),
                           require_eos=st.booleans())


@fuzz(300)
@given(text=number_text | st.text(), config=filter_configs)
@example(text="1" * 4301, config=FilterConfig())  # once a ValueError from int() that stopped a whole filter run
@example(text="[" + ", ".join(["7", "9" * 5000]) + "]", config=FilterConfig(max_value=10**6))
@example(text="0" * 5000 + "12", config=FilterConfig())  # leading zeros: a small number, not out of range
def test_parse_numbers__any_string_gets_a_verdict(text, config):
    numbers, reason = parse_numbers(text, max_numbers=config.max_numbers, max_value=config.max_value,
                                    banned_numbers=config.banned_numbers)
    if reason is not None:
        assert numbers is None and reason in REJECT_REASONS
        return
    assert 1 <= len(numbers) <= config.max_numbers
    assert all(0 <= n <= config.max_value and n not in config.banned_numbers for n in numbers)
    assert parse_numbers(", ".join(map(str, numbers)), max_numbers=config.max_numbers, max_value=config.max_value,
                         banned_numbers=config.banned_numbers) == (numbers, None)


def test_parse_numbers__a_huge_number_is_out_of_range_and_leading_zeros_are_not():
    assert parse_numbers("1" * 4301) == (None, "out_of_range")
    assert parse_numbers("12, " + "9" * 10_000) == (None, "out_of_range")
    assert parse_numbers("0" * 5000 + "12, 3") == ([12, 3], None)


@fuzz(100)
@given(row=json_values | st.fixed_dictionaries({"completion": number_text | st.text()},
                                               optional={"ended_with_eos": json_values}))
@example(row={"completion": "1" * 4301, "ended_with_eos": True})
def test_reject_reason__any_row_gets_a_verdict(row):
    numbers, reason = reject_reason(row, FilterConfig())
    assert (numbers is None) == (reason is not None) and (reason is None or reason in REJECT_REASONS)


raw_lines = st.lists(
    st.binary(max_size=40)
    | st.builds(lambda c, eos: json.dumps({"completion": c, "ended_with_eos": eos}).encode(), number_text, st.booleans())
    | st.sampled_from([b"[" * 100_000, b'{"completion": "1", "n": 1' + b"0" * 5000 + b"}", b"\xff\xfe"]),
    max_size=8)


@fuzz(30)
@given(lines=raw_lines)
@example(lines=[json.dumps({"completion": "1" * 4301, "ended_with_eos": True}).encode(),
                json.dumps({"completion": "12, 34", "ended_with_eos": True}).encode()])
@example(lines=[b'{"completion": "12", "ended_with_eos": true, "n": 1' + b"0" * 5000 + b"}",
                b"[" * 100_000, json.dumps({"completion": "12, 34", "ended_with_eos": True}).encode()])
def test_filter_file__any_raw_file_is_counted_row_by_row(lines, scratch):
    raw, out = scratch / "raw.jsonl", scratch / "out.filtered.jsonl"
    raw.write_bytes(b"\n".join(lines) + b"\n")
    try:
        stats = filter_file(raw, out, force=True)
    except ValueError as e:  # the one error: every row rejected (the statistics are written)
        assert "the filtered set is empty" in one_line(e)
        stats = json.loads((scratch / "out.filtered.stats.json").read_text())
    assert stats["n_kept"] + sum(stats["rejected"].values()) == stats["n_raw"]
    assert raw.read_bytes() == b"\n".join(lines) + b"\n"


# -- JSONL files ----------------------------------------------------------------------------------

jsonl_lines = st.lists(
    st.binary(max_size=30)
    | st.builds(lambda v: json.dumps(v).encode(), json_values)
    | st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(st.text(max_size=5), json_scalars, max_size=3))
    | st.sampled_from([b"[" * 100_000, b"1" * 5000, b'{"a": "\xff"}', b"\xe2\x82", b'{"a": 1', b"  ", b"\r"]),
    max_size=6)


@fuzz(150)
@given(lines=jsonl_lines, trailing_newline=st.booleans())
@example(lines=[b"[" * 100_000, b"{}"], trailing_newline=True)  # nested too deeply: RecursionError
@example(lines=[b'{"n": 1' + b"0" * 5000 + b"}", b"{}"], trailing_newline=True)  # a 5,001-digit number
@example(lines=[b'{"a": "\xff"}', b"{}"], trailing_newline=True)  # not UTF-8
@example(lines=[b"3", b"{}"], trailing_newline=True)  # not an object
@example(lines=[b"{}", b'{"a": "\xe2\x82'], trailing_newline=False)  # a torn last line, cut inside a character
def test_read_jsonl__any_bytes_give_rows_or_an_error_naming_file_and_line(lines, trailing_newline, scratch):
    path = scratch / "rows.jsonl"
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    path.write_bytes(data)
    try:
        rows = read_jsonl(path)
    except ValueError as e:
        message = one_line(e)
        assert message.startswith(f"{path}:"), message
        line = int(message[len(f"{path}:"):].split(":")[0])
        assert 1 <= line <= len(lines)
        return
    assert all(isinstance(r, dict) for r in rows)
    complete = lines if trailing_newline else lines[:-1]  # the last line may be torn
    whole = [json.loads(x) for x in complete if x.strip()]
    assert rows[:len(whole)] == whole and len(rows) - len(whole) <= 1


# -- configs --------------------------------------------------------------------------------------

def _field_values(f: dataclasses.Field) -> st.SearchStrategy:
    """Values of the field's own type (near its default) mixed with any JSON value."""
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    if isinstance(default, StageConfig):  # a nested config: its own fields, fuzzed the same way
        return st.one_of(st.just(default.to_dict()), config_documents(type(default)), json_values)
    typed = {bool: st.booleans(), int: st.integers(-3, 10**6) | st.integers(), float: st.floats(),
             str: st.text(max_size=10) | st.just(default if isinstance(default, str) else "x"),
             tuple: st.lists(json_scalars, max_size=4), list: st.lists(json_scalars, max_size=4),
             dict: st.dictionaries(st.text(max_size=8), json_scalars, max_size=3)}.get(type(default), json_values)
    return st.one_of(st.just(default), typed, json_values)


def config_documents(cls: type[StageConfig]) -> st.SearchStrategy:
    fields = {f.name: _field_values(f) for f in dataclasses.fields(cls)}
    return st.fixed_dictionaries({}, optional={**fields, "config_class": st.just(cls.__name__) | st.text(max_size=8),
                                              "not_a_field": json_values})


run_overrides = st.fixed_dictionaries({}, optional={f.name: _field_values(f) for f in dataclasses.fields(RunConfig)})
sweep_documents = config_documents(SweepConfig) | st.fixed_dictionaries(
    {"cells": st.lists(run_overrides | json_values, max_size=3)},
    optional={"base": run_overrides, "alpha": st.floats() | st.integers()})


def _check_config_file(cls: type[StageConfig], path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        config = cls.load(path)
    except ValueError as e:
        assert str(path) in one_line(e)
        return
    assert isinstance(config, cls)
    config.save(path)  # what loads saves and loads back the same
    assert json.dumps(cls.load(path).to_dict(), sort_keys=True) == json.dumps(config.to_dict(), sort_keys=True)


CONFIG_EXAMPLES = [b"[]", b"null", b"\xff\xfe{}", b"[" * 100_000, b'{"seeds": 1' + b"0" * 5000 + b"}"]


@pytest.mark.parametrize("content", CONFIG_EXAMPLES)  # once a traceback each: AttributeError, ..., RecursionError
@pytest.mark.parametrize("cls", [SweepConfig, RunConfig, PretrainConfig])
def test_config_load__documents_that_once_failed_are_one_line_errors(cls, content, scratch):
    path = scratch / "config.json"
    path.write_bytes(content)
    with pytest.raises(ValueError) as e:
        cls.load(path)
    assert str(path) in one_line(e.value)


@fuzz(60)
@given(document=sweep_documents | json_values)
@example(document={"cells": [{}], "alpha": 10**400})  # an int no float can hold: once an OverflowError
@example(document={"cells": [{}], "alpha": float("nan")})
@example(document={"cells": [{"\x1e": None}]})  # a field name holding a line separator: once a two-line error
def test_sweep_config__any_json_is_a_config_or_one_line_error(document, scratch):
    _check_config_file(SweepConfig, scratch / "sweep.json", json.dumps(document).encode())


@fuzz(60)
@given(document=config_documents(RunConfig) | json_values)
@example(document={"seeds": 10**400})
@example(document={"context_line": "\u2028"})
def test_run_config__any_json_is_a_config_or_one_line_error(document, scratch):
    _check_config_file(RunConfig, scratch / "run_config.json", json.dumps(document).encode())


@fuzz(40)
@given(document=config_documents(PretrainConfig) | json_values)
@example(document={"lr": 10**400})
def test_pretrain_config__any_json_is_a_config_or_one_line_error(document, scratch):
    _check_config_file(PretrainConfig, scratch / "pretrain.json", json.dumps(document).encode())


@fuzz(30)
@given(content=st.binary(max_size=200))
def test_configs__any_bytes_are_a_config_or_one_line_error(content, scratch):
    for cls in (SweepConfig, RunConfig, PretrainConfig):
        _check_config_file(cls, scratch / "any.json", content)


# -- model references -----------------------------------------------------------------------------

references = (st.text() | st.text(alphabet=string.ascii_letters + string.digits + "-_./", max_size=30)
              | st.sampled_from(["gpt2", "gpt2-small", "", ".", "/", "..", "~", "gpt2\n", "a" * 300, "a/" * 3000])
              | st.builds(lambda n: "x" * n, st.integers(250, 5000)))


@fuzz(100)
@given(ref=references)
@example(ref="x" * 5000)  # once an OSError (file name too long) with a traceback
@example(ref="a\x00b")  # once an error message with a NUL in it
@example(ref="gpt2\n")  # once an error message of two lines
@example(ref="")  # once reported as the working directory
def test_model_reference__any_string_is_a_reference_or_one_line_error(ref):
    for parse in (parse_model_ref, parse_base_ref):
        try:
            parsed = parse(ref)
        except (ValueError, FileNotFoundError) as e:
            one_line(e)
            continue
        assert isinstance(parsed, ModelRef) and parsed.raw == ref
    try:
        load_teacher(ref)  # --teacher: a teacher directory
    except (ValueError, FileNotFoundError) as e:
        one_line(e)


MARKER_FILES = ["model_config.json", "model.safetensors", "pretrain_config.json", "teacher.json", "config.json",
                "lineage.json"]


@fuzz(40)
@given(files=st.dictionaries(st.sampled_from(MARKER_FILES),
                             st.binary(max_size=40) | st.builds(lambda v: json.dumps(v).encode(), json_values),
                             max_size=4))
@example(files={"model_config.json": b"\xff"})
@example(files={"model_config.json": b"[" * 100_000})
@example(files={"teacher.json": b"[]"})  # once a TypeError, then a KeyError: 'base'
@example(files={"teacher.json": b'{"base": "gpt2\\n"}'})
@example(files={"model.safetensors": b"", "model_config.json": b"{}", "pretrain_config.json": b'{"world": 3}'})
def test_model_reference__a_directory_with_any_files_is_a_reference_or_one_line_error(files, scratch):
    directory = scratch / "model_dir"
    if directory.exists():
        for p in directory.iterdir():
            p.unlink()
    directory.mkdir(exist_ok=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)
    for parse in (parse_model_ref, parse_base_ref):
        try:
            ref = parse(str(directory))
            if isinstance(ref, TeacherDir):  # what a teacher directory says, read before any weights
                ref.spec()
                ref.is_toy
            elif isinstance(ref, ToyBase):
                ref.world()
        except (ValueError, FileNotFoundError) as e:
            one_line(e)


# -- GGUF headers ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_gguf(scratch) -> bytes:
    path = tiny_gguf_file(scratch / "tiny.gguf", "llama")
    assert gguf.gguf_architecture(path) == "llama"
    return path.read_bytes()


@fuzz(150)
@given(cut=st.integers(0, 10**6), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       tail=st.binary(max_size=64), kind=st.sampled_from(["truncated", "flipped", "random_after_magic", "random"]))
def test_gguf_header__truncated_or_random_bytes_are_a_one_line_error(cut, flips, tail, kind, tiny_gguf, scratch):
    data = bytearray(tiny_gguf)
    if kind == "truncated":
        data = data[: cut % len(data)]
    elif kind == "flipped":
        for position, value in flips:
            data[position % len(data)] = value
    elif kind == "random_after_magic":
        data = bytearray(gguf.GGUF_MAGIC + tail)
    else:
        data = bytearray(tail)
    path = scratch / "model.gguf"
    path.write_bytes(bytes(data))
    try:
        arch = gguf.gguf_architecture(path)
    except ValueError as e:
        assert str(path) in one_line(e)
        return
    assert isinstance(arch, str) and kind == "flipped"  # only a file with a whole header has an architecture
