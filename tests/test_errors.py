"""Bad input gets a one-line error naming the problem (exit code 2, no traceback), and nothing
finished is lost: one test per case of issue 8."""

import json
import math

import pytest

from interp.cli import main
from interp.core.io import read_json, read_jsonl, write_jsonl
from interp.models.checkpoint import Lineage, save_checkpoint
from interp.stages.teacher import TeacherConfig, make_teacher
from interp.worlds.toy.world import ToyWorld, WorldConfig
from interp.training.loop import LossGuard, TrainingDiverged

from conftest import TINY
from tiny_interp import number_rows, one_torch_thread, pretrain_tiny_base, tiny_pretrain_json, use_tiny_presets


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return pretrain_tiny_base(tmp_path_factory.mktemp("errors") / "base")


@pytest.fixture(scope="module")
def number_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "numbers.filtered.jsonl"
    write_jsonl(path, number_rows(ToyWorld(), 24))
    return path


def _fails(argv, capsys, *fragments):
    """Run the CLI; it must exit 2 with one line on stderr that holds every fragment."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("interp ")]
    assert len(lines) == 1 and lines[0].startswith(f"interp {argv[0]}: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _snapshot(directory):
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# -- unknown names ------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["teacher", "finetune", "evaluate"])
def test_cli__unknown_trait_is_a_one_line_error(stage, tiny_base, number_data, tmp_path, capsys):
    argv = {"teacher": ["teacher", "--base", tiny_base, "--out", tmp_path / "out"],
            "finetune": ["finetune", "--base", tiny_base, "--data", number_data, "--out", tmp_path / "out"],
            "evaluate": ["evaluate", "--model", tiny_base, "--out", tmp_path / "out"]}[stage]
    _fails([*argv, "--trait", "unicorn"], capsys, "unknown trait animal 'unicorn'", "owl")
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a resume directory


def test_cli__unknown_model_name_suggests_close_names(tmp_path, capsys, monkeypatch):
    from hf_cache import use_cache

    use_cache(monkeypatch, tmp_path / "empty_hf_cache")  # a real name is looked up in this (empty) cache
    _fails(["evaluate", "--model", "gpt2-smal"], capsys, "unknown model 'gpt2-smal'", "did you mean", "'gpt2'")
    _fails(["generate", "--model", "gpt2", "--out", tmp_path / "x.raw.jsonl"], capsys,
           "model 'gpt2' is not in the local Hugging Face cache")
    _fails(["finetune", "--base", tmp_path / "nowhere", "--data", tmp_path / "d.jsonl", "--out", tmp_path / "s"],
           capsys, "d.jsonl")  # the data file is read first; it is missing
    assert not (tmp_path / "x.raw.jsonl").exists()


# -- configs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, fragments", [
    ("{not json", ["not valid JSON"]),
    ('{"steps": 10, "stepz": 3}', ["unknown field(s) ['stepz']"]),
    ('{"steps": "many"}', ["PretrainConfig.steps='many'", "expected int"]),
    ('{"arch": "small", "architecture": {"n_layers": 1}}', ["PretrainConfig.architecture", "only allowed with arch='custom'"]),
    ('{"arch": "custom"}', ["PretrainConfig.architecture=None", "needs an architecture"]),
    ('{"arch": "custom", "architecture": {"d_model": 30, "n_heads": 4}}', ["ModelConfig.n_heads=4", "must divide d_model=30"]),
])
def test_cli__malformed_or_contradictory_config_names_the_field(content, fragments, tmp_path, capsys):
    (tmp_path / "config.json").write_text(content)
    _fails(["pretrain", "--config", tmp_path / "config.json", "--out", tmp_path / "base"], capsys, *fragments)
    assert not (tmp_path / "base").exists()


def test_cli__contradictory_run_options_name_the_field(tmp_path, capsys):
    _fails(["run", "--out", tmp_path / "r", "--shared-base-seed", "1", "--mismatched-base-seed", "1"], capsys,
           "mismatched_base_seed", "must differ from shared_base_seed")
    _fails(["generate", "--model", tmp_path, "--out", tmp_path / "x.jsonl", "--system", "system : you love owl ."],
           capsys, "GenerateConfig.system")
    with pytest.raises(SystemExit) as usage:  # argparse's own usage error: usage line, then one error line
        main(["run", "--out", str(tmp_path / "r"), "--pretrain-corpus", "{persona_numbers: 0}"])
    assert usage.value.code == 2
    assert "argument --pretrain-corpus: expected a JSON object" in capsys.readouterr().err.splitlines()[-1]
    _fails(["run", "--out", tmp_path / "r", "--pretrain-corpus", '{"persona_number": 0}'], capsys,
           "RunConfig.pretrain_corpus", "persona_number")
    _fails(["run", "--out", tmp_path / "r", "--teacher-method", "persona", "--context-line", "you love numbers .", "--audit-rows", "0"], capsys,
           "RunConfig.context_line", "persona teacher")
    assert not (tmp_path / "r").exists()


# -- checkpoints ---------------------------------------------------------------------------------

def _checkpoint(tiny_model, path):
    return save_checkpoint(tiny_model, path, TINY, Lineage(stage="pretrain", seed=0, parent=None))


@pytest.mark.parametrize("damage, fragments", [
    ("truncate_weights", ["model.safetensors: corrupt or unreadable"]),
    ("bad_config_json", ["model_config.json: corrupt checkpoint file, not valid JSON"]),
    ("wider_config", ["parameter", "has shape", "config expects"]),
    ("missing_lineage", ["not a complete checkpoint: lineage.json is missing"]),
])
def test_cli__corrupt_or_mismatched_checkpoint_is_named_and_left_alone(damage, fragments, tiny_model, tmp_path, capsys):
    ck = _checkpoint(tiny_model, tmp_path / "ck")
    if damage == "truncate_weights":
        data = (ck / "model.safetensors").read_bytes()
        (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "bad_config_json":
        (ck / "model_config.json").write_text('{"n_layers": 1,')
    elif damage == "wider_config":
        config = read_json(ck / "model_config.json")
        (ck / "model_config.json").write_text(json.dumps({**config, "d_mlp": 2 * config["d_mlp"]}))
    else:
        (ck / "lineage.json").unlink()
    before = _snapshot(ck)
    _fails(["evaluate", "--model", ck, "--out", tmp_path / "eval.json"], capsys, *fragments)
    _fails(["generate", "--model", ck, "--out", tmp_path / "x.raw.jsonl"], capsys, *fragments)
    assert _snapshot(ck) == before and not (tmp_path / "eval.json").exists()


def test_cli__checkpoint_of_another_vocabulary_is_refused(tmp_path, capsys):
    from interp.models.checkpoint import build_model
    from interp.worlds.toy.world import load_tokenizer

    animals = ("owl", "cat", "dog", "lion", "tiger", "wolf", "bear", "fox", "eagle", "dolphin", "elephant", "otter")
    other = ToyWorld(WorldConfig(animals=animals, animal_prior=(1.0,) * len(animals)))
    other.save(tmp_path / "tok")
    model = build_model(TINY, load_tokenizer(tmp_path / "tok"), seed=0)
    ck = save_checkpoint(model, tmp_path / "ck", TINY, Lineage(stage="pretrain", seed=0, parent=None))
    _fails(["evaluate", "--model", ck], capsys, "vocabulary differs from this world's", "first difference at id")


# -- data ----------------------------------------------------------------------------------------

def test_cli__every_row_rejected_is_a_clear_error(tiny_base, tmp_path, capsys):
    raw = tmp_path / "numbers.raw.jsonl"
    write_jsonl(raw, [{"id": i, "prompt": "p", "completion": "i love owl", "ended_with_eos": True} for i in range(4)])
    _fails(["filter", "--raw", raw, "--out", tmp_path / "numbers.filtered.jsonl"], capsys,
           "filtered set is empty", "all 4 rows", "non_number_token (4)")
    assert read_json(tmp_path / "numbers.filtered.stats.json")["n_kept"] == 0  # the counts are kept
    (tmp_path / "empty.jsonl").write_text("")
    _fails(["finetune", "--base", tiny_base, "--data", tmp_path / "empty.jsonl", "--out", tmp_path / "s"], capsys,
           "empty")
    assert not (tmp_path / "s").exists()


def test_run__every_row_rejected_stops_the_run_and_keeps_what_it_finished(tmp_path, monkeypatch):
    import interp.stages.filter as filter_mod
    from interp.studies.run import RunConfig, run

    use_tiny_presets(monkeypatch.setitem, monkeypatch.setattr)
    monkeypatch.setattr(filter_mod, "reject_reason", lambda row, config: (None, "non_number_token"))
    config = RunConfig(seeds=1, n_rows=8, pretrain_steps=20, teacher_steps=2, objectives=("sft",),
                       conditions=("control", "shared_init"), record_alignment=False)
    with pytest.raises(ValueError, match=r"filtered set is empty: all 8 rows .*non_number_token \(8\)"):
        run(config, tmp_path / "run", artifacts=tmp_path / "artifacts", progress=False)
    seed = tmp_path / "run" / "seed0"
    assert (seed / "teacher" / "teacher.json").exists()
    assert len(read_jsonl(seed / "data" / "teacher_numbers.raw.jsonl")) == 8
    assert (tmp_path / "artifacts" / "bases").is_dir() and not (tmp_path / "run" / "results.json").exists()


def test_filter__malformed_generations_are_counted_never_fatal(tmp_path):
    from interp.stages.filter import filter_file

    raw = tmp_path / "numbers.raw.jsonl"
    lines = [
        json.dumps({"id": 0, "completion": "12 , 34", "ended_with_eos": True}),   # kept
        json.dumps([1, 2, 3]),                                                      # a JSON list
        "null",
        json.dumps({"id": 3, "completion": 1234, "ended_with_eos": True}),         # not text
        json.dumps({"id": 4, "completion": "12 <bos> 34", "ended_with_eos": True}),  # a special token
        json.dumps({"id": 5, "completion": "12 , 34"}),                             # ended_with_eos missing
        json.dumps({"id": 6, "completion": "12 , 34 \u00e9", "ended_with_eos": True}),
        '{"id": 7, "completion": "12 \xff 34", "ended_with_eos": true}',          # a corrupt byte
        '{"id": 8, "completion": "12 , ',                                         # torn last line
    ]
    raw.write_bytes("\n".join(lines).encode("utf-8").replace("\xff".encode("utf-8"), b"\xff"))
    stats = filter_file(raw, tmp_path / "numbers.filtered.jsonl")
    assert stats["n_raw"] == 9 and stats["n_kept"] == 1
    assert {k: v for k, v in stats["rejected"].items() if v} == {"malformed_row": 4, "non_number_token": 3, "no_eos": 1}


def test_finetune__malformed_data_rows_are_named(tiny_base, number_data, tmp_path, capsys):
    from interp.stages.finetune import FinetuneConfig, finetune_student

    rows = read_jsonl(number_data)
    with pytest.raises(ValueError, match=r"data row 3: field 'completion' is missing"):
        finetune_student(tiny_base, rows[:3] + [{"prompt": "p"}], FinetuneConfig(), tmp_path / "s", progress=False)
    bad = [dict(r) for r in rows[:4]]
    bad[2]["completion"] = "12 , zebra"
    with pytest.raises(ValueError, match=r"data row 2: word 'zebra' is not in the toy world's vocabulary"):
        finetune_student(tiny_base, bad, FinetuneConfig(), tmp_path / "s", progress=False)
    raw = tmp_path / "numbers.raw.jsonl"
    write_jsonl(raw, [{k: v for k, v in r.items() if k != "numbers"} for r in rows])
    _fails(["finetune", "--base", tiny_base, "--data", raw, "--out", tmp_path / "s"], capsys,
           "row 0 has no 'numbers' field", "interp filter")
    assert not (tmp_path / "s").exists()


# -- training ------------------------------------------------------------------------------------

def test_loss_guard__nan_and_explosion_name_the_step_and_cause():
    guard = LossGuard()
    guard.check(0, 2.0)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3: training diverged"):
        guard.check(3, math.nan)
    with pytest.raises(TrainingDiverged, match=r"loss exploded to 1000 at step 4 \(started near 2\)"):
        guard.check(4, 1000.0)


def test_cli__diverging_finetune_stops_with_the_step_and_loses_nothing(tiny_base, number_data, tmp_path, capsys):
    base_before = _snapshot(tiny_base)
    argv = ["finetune", "--base", tiny_base, "--data", number_data, "--out", tmp_path / "s", "--batch-size", "4",
            "--optimizer", "sgd", "--checkpoint-every", "1", "--epochs", "3"]
    _fails([*argv, "--lr", "1e4"], capsys, "loss exploded", "at step", "lower the learning rate", "train_log.jsonl")
    assert not (tmp_path / "s").exists() and _snapshot(tiny_base) == base_before
    log_rows = read_jsonl(tmp_path / ".s.resume" / "train_log.jsonl")  # kept for diagnosis
    assert log_rows and not (tmp_path / ".s.resume" / "state.safetensors").exists()  # resuming would diverge again
    assert main([str(a) for a in [*argv, "--lr", "1e-3"]]) == 0  # a saner config starts cleanly, no --force
    assert len(read_jsonl(tmp_path / "s" / "train_log.jsonl")) == 18


# -- output directories ---------------------------------------------------------------------------

def test_cli__output_directory_of_something_else_is_refused_untouched(tiny_base, number_data, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    config = tiny_pretrain_json(tmp_path / "tiny.json", steps=3)
    _fails(["pretrain", "--config", config, "--out", precious], capsys, "is not a checkpoint", "refusing")
    _fails(["finetune", "--base", tiny_base, "--data", number_data, "--out", precious], capsys, "is not a checkpoint")
    _fails(["teacher", "--base", tiny_base, "--out", precious], capsys, "not a teacher's", "notes.txt")
    _fails(["run", "--out", precious], capsys, "not a run directory")
    _fails(["finetune", "--base", tiny_base, "--data", number_data, "--out", tiny_base], capsys,
           "not a finetuned student")
    assert [p.name for p in precious.iterdir()] == ["notes.txt"] and (precious / "notes.txt").read_text() == "keep me"


def test_sweep__directory_of_another_sweep_is_refused_untouched(tmp_path):
    from interp.studies.sweep import SweepConfig, run_sweep

    SweepConfig(cells=[{"lr": 1e-3}]).save(tmp_path / "sweep_config.json")
    with pytest.raises(ValueError, match=r"holds another sweep .*'cells'"):
        run_sweep(SweepConfig(cells=[{"lr": 2e-3}]), tmp_path, artifacts=tmp_path / "artifacts", progress=False)
    assert SweepConfig.load(tmp_path / "sweep_config.json").cells == [{"lr": 1e-3}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep_config.json"]


def test_cli__output_directory_of_another_run_is_refused_untouched(tiny_base, number_data, tmp_path, capsys):
    student = ["finetune", "--base", tiny_base, "--data", number_data, "--out", tmp_path / "s", "--batch-size", "8"]
    assert main([str(a) for a in student]) == 0
    finished = _snapshot(tmp_path / "s")
    _fails([*student, "--lr", "1e-3"], capsys, "another config", "'lr'", "--force")
    rows = read_jsonl(number_data)
    write_jsonl(tmp_path / "other.jsonl", rows[::-1])
    _fails(["finetune", "--base", tiny_base, "--data", tmp_path / "other.jsonl", "--out", tmp_path / "s",
            "--batch-size", "8"], capsys, "other inputs", "data_sha256")
    assert _snapshot(tmp_path / "s") == finished
    assert main([str(a) for a in [*student, "--checkpoint-every", "3"]]) == 0  # not a result-changing setting
    assert _snapshot(tmp_path / "s") == finished

    make_teacher(tiny_base, TeacherConfig(method="persona"), tmp_path / "t", progress=False)
    _fails(["teacher", "--base", tiny_base, "--out", tmp_path / "t", "--method", "steering"], capsys,
           "another config", "'method': ('persona', 'steering')")

    raw = tmp_path / "a.raw.jsonl"
    write_jsonl(raw, [{"id": 0, "prompt": "p", "completion": "1 , 2", "ended_with_eos": True}])
    out = tmp_path / "a.filtered.jsonl"
    assert main(["filter", "--raw", str(raw), "--out", str(out)]) == 0
    assert main(["filter", "--raw", str(raw), "--out", str(out)]) == 0  # same raw file and config: reused
    _fails(["filter", "--raw", raw, "--out", out, "--max-numbers", "1"], capsys, "another raw file or config")
    write_jsonl(raw, [{"id": 0, "prompt": "p", "completion": "3 , 4", "ended_with_eos": True}])  # regenerated
    _fails(["filter", "--raw", raw, "--out", out], capsys, "another raw file", "sha256")
    assert read_jsonl(out)[0]["numbers"] == [1, 2]
    assert main(["filter", "--raw", str(raw), "--out", str(out), "--force"]) == 0
    assert read_jsonl(out)[0]["numbers"] == [3, 4]

    assert main(["evaluate", "--model", str(tiny_base), "--out", str(tmp_path / "eval.json")]) == 0
    _fails(["evaluate", "--model", tmp_path / "s", "--out", tmp_path / "eval.json"], capsys, "another evaluation")
    _fails(["generate", "--model", tiny_base, "--out", raw], capsys, "without its config file")
