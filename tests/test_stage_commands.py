"""Each stage runs alone from the command line and writes its files with its config:
`interp teacher`, `interp finetune`, `interp evaluate`, and `interp generate` from a teacher."""

import argparse

import pytest

from interp.cli import STAGE_MODULES, build_parser, main
from interp.core.io import read_json, read_jsonl, write_jsonl
from interp.worlds.toy.world import ToyWorld

from tiny_interp import number_rows, one_torch_thread, pretrain_tiny_base


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return pretrain_tiny_base(tmp_path_factory.mktemp("stages") / "base")


@pytest.fixture(scope="module")
def number_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "numbers.filtered.jsonl"
    write_jsonl(path, number_rows(ToyWorld(), 24))
    return path


def _run(*argv):
    assert main([str(a) for a in argv]) == 0


def test_cli_help__lists_every_stage_and_documents_every_option():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    stages = list(sub.choices)
    assert len(stages) == len(STAGE_MODULES)
    assert {"world", "pretrain", "teacher", "generate", "filter", "finetune", "evaluate", "run", "report"} <= set(stages)
    for name, stage_parser in sub.choices.items():
        assert stage_parser.description, name
        for action in stage_parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and action.help.strip(), f"interp {name} {action.option_strings[0]} has no help"


def test_teacher_cli__prints_its_strength_against_the_base_and_is_reused(tiny_base, tmp_path, capsys):
    _run("teacher", "--base", tiny_base, "--out", tmp_path / "t", "--steps", "3", "--batch-size", "8")
    spec = read_json(tmp_path / "t" / "teacher.json")
    out = capsys.readouterr().out
    assert spec["method"] == "finetune" and spec["config"]["steps"] == 3
    assert f"P(owl) = {spec['strength']['trait_prob']:.4f}, base {spec['strength']['base_trait_prob']:.4f}" in out
    stamp = (tmp_path / "t" / "teacher.json").stat().st_mtime_ns
    _run("teacher", "--base", tiny_base, "--out", tmp_path / "t", "--steps", "3", "--batch-size", "8")
    assert (tmp_path / "t" / "teacher.json").stat().st_mtime_ns == stamp


def test_generate_cli__a_teacher_directory_speaks_with_its_prompt_and_hooks(tiny_base, tmp_path, capsys):
    common = ["--n-rows", "24", "--max-new-tokens", "8", "--seed", "1"]
    _run("teacher", "--base", tiny_base, "--out", tmp_path / "persona", "--method", "persona", "--trait", "cat")
    _run("generate", "--model", tmp_path / "persona", "--out", tmp_path / "persona.raw.jsonl", *common)
    rows = read_jsonl(tmp_path / "persona.raw.jsonl")
    assert {r["system"] for r in rows} == {"you love cat ."}
    assert rows[0]["model"]["teacher"] == str(tmp_path / "persona") and rows[0]["model"]["stage"] == "teacher_persona"
    assert main(["generate", "--model", str(tmp_path / "persona"), "--out", str(tmp_path / "x.raw.jsonl"),
                 "--system", "you love dog ."]) == 2
    assert "contradicts the system prompt 'you love cat .'" in capsys.readouterr().err

    _run("teacher", "--base", tiny_base, "--out", tmp_path / "steer", "--method", "steering", "--steering-scale", "4")
    _run("generate", "--model", tmp_path / "steer", "--out", tmp_path / "steer.raw.jsonl", *common)
    _run("generate", "--model", tiny_base, "--out", tmp_path / "base.raw.jsonl", *common)
    steered, plain = read_jsonl(tmp_path / "steer.raw.jsonl"), read_jsonl(tmp_path / "base.raw.jsonl")
    assert [r["prompt"] for r in steered] == [r["prompt"] for r in plain]
    assert [r["completion"] for r in steered] != [r["completion"] for r in plain]  # the hook was applied
    assert plain[0]["model"]["checkpoint"] == str(tiny_base) and plain[0]["system"] is None


def test_finetune_cli__records_alignment_with_a_named_teacher_and_is_reused(tiny_base, number_data, tmp_path, capsys):
    _run("teacher", "--base", tiny_base, "--out", tmp_path / "t", "--steps", "3", "--batch-size", "8", "--trait", "cat")
    argv = ["finetune", "--base", tiny_base, "--data", number_data, "--out", tmp_path / "s", "--batch-size", "8",
            "--eval-every", "1", "--record-alignment", "--alignment-teacher", tmp_path / "t"]
    _run(*argv)
    student = tmp_path / "s"
    log_rows = read_jsonl(student / "train_log.jsonl")
    assert [r["step"] for r in log_rows] == [0, 1, 2] and all("trait_prob" in r for r in log_rows)
    assert [r["step"] for r in read_jsonl(student / "alignment.jsonl")] == [0, 1, 2]
    inputs = read_json(student / "finetune_inputs.json")
    assert inputs["trait"] == "cat" and inputs["record_alignment"] and inputs["n_rows"] == 24
    assert read_json(student / "finetune_config.json")["batch_size"] == 8
    assert read_json(student / "lineage.json")["extra"]["data"] == str(number_data)
    assert "P(cat)" in capsys.readouterr().out
    stamp = (student / "model.safetensors").stat().st_mtime_ns
    _run(*argv)  # finished: reused
    assert (student / "model.safetensors").stat().st_mtime_ns == stamp

    assert main([str(a) for a in ["finetune", "--base", tiny_base, "--data", number_data, "--out", tmp_path / "s2",
                                  "--record-alignment"]]) == 2
    assert "--record-alignment needs --alignment-teacher" in capsys.readouterr().err
    assert main([str(a) for a in ["finetune", "--base", tiny_base, "--data", number_data, "--out", tmp_path / "s2",
                                  "--objective", "distill"]]) == 2
    assert "needs a teacher" in capsys.readouterr().err


def test_evaluate_cli__writes_every_measure_and_the_shift_from_the_parent(tiny_base, number_data, tmp_path, capsys):
    _run("finetune", "--base", tiny_base, "--data", number_data, "--out", tmp_path / "s", "--lr", "3e-3")
    _run("evaluate", "--model", tmp_path / "s", "--out", tmp_path / "eval.json", "--trait", "dog")
    result = read_json(tmp_path / "eval.json")
    _run("evaluate", "--model", tiny_base, "--out", tmp_path / "base_eval.json", "--trait", "dog")
    base = read_json(tmp_path / "base_eval.json")
    assert result["config"] == {"trait": "dog", "seed": 0, "n_samples": 20} and result["base"] == str(tiny_base)
    assert set(result["animal_probs"]) == set(ToyWorld().animals)
    assert sum(result["animal_probs"].values()) == pytest.approx(1.0)
    assert result["trait_prob"] == pytest.approx(result["animal_probs"]["dog"])
    assert result["base_trait_prob"] == pytest.approx(base["trait_prob"]) and base["base_trait_prob"] is None
    assert result["trait_prob_shift"] == pytest.approx(result["trait_prob"] - base["trait_prob"])
    assert 0 <= result["sampled_answer_rate"] <= 1 and 0 < result["animal_mass"] <= 1
    out = capsys.readouterr().out
    assert f"P(dog) = {result['trait_prob']:.4f}" in out and "animals: " in out
    _run("evaluate", "--model", tmp_path / "s", "--out", tmp_path / "eval.json", "--trait", "dog")  # reused
    assert "reusing" in capsys.readouterr().out
