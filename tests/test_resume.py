"""No lost work, reproducible runs: every long stage killed with SIGKILL in a real subprocess
resumes to the outputs of an uninterrupted run (tests/kill_harness.py), and the same config and
seed give the same data and metrics."""

import json
import logging
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from interp.stages.evaluate import EvaluateConfig, evaluate_model
from interp.cli import main
from interp.stages.finetune import FinetuneConfig, finetune_student
from interp.core.io import read_json, read_jsonl, write_jsonl
from interp.models.checkpoint import load_checkpoint
from interp.stages.teacher import TeacherConfig, make_teacher
from interp.models.refs import Teacher, load_teacher
from interp.training.loop import (LEGACY_TRAINING_STATE_FILE, TRAINING_STATE_FILE, load_training_state,
                                  save_training_state)
from interp.worlds.toy.world import ToyWorld

from kill_harness import (INTERP, assert_close_json, assert_same_checkpoint, assert_same_jsonl, check_kill_and_resume,
                          in_process_runner, run_to_completion)
from tiny_interp import number_rows, one_torch_thread, pretrain_tiny_base, tiny_pretrain_json, use_tiny_presets


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return pretrain_tiny_base(tmp_path_factory.mktemp("resume") / "base")


@pytest.fixture(scope="module")
def tiny_teacher(tiny_base, tmp_path_factory):
    return make_teacher(tiny_base, TeacherConfig(steps=4, batch_size=8), tmp_path_factory.mktemp("teacher") / "t",
                        progress=False)


@pytest.fixture(scope="module")
def number_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "numbers.filtered.jsonl"
    write_jsonl(path, number_rows(ToyWorld(), 160))
    return path


# -- killed subprocesses ----------------------------------------------------------------------

def test_pretrain__killed_subprocess_resumes_to_the_same_base(tmp_path):
    config = tiny_pretrain_json(tmp_path / "tiny.json", steps=120, batch_size=8, checkpoint_every=10)

    def args(out):
        return ["pretrain", "--config", str(config), "--out", str(out / "base"), "--artifacts", str(out / "artifacts")]

    def compare(reference, resumed):
        assert_same_checkpoint(reference / "base", resumed / "base")
        assert_same_jsonl(reference / "base" / "pretrain_log.jsonl", resumed / "base" / "pretrain_log.jsonl")
        assert_close_json(read_json(reference / "base" / "pretrain_summary.json"),
                          read_json(resumed / "base" / "pretrain_summary.json"))
        assert not (resumed / ".base.resume").exists()

    outcome = check_kill_and_resume(args, tmp_path, trigger=".base.resume/state.safetensors", runner=in_process_runner(),
                                    compare=compare)
    assert [r["step"] for r in read_jsonl(outcome.resumed / "base" / "pretrain_log.jsonl")] == list(range(120))


def test_generate__killed_subprocess_resumes_to_the_same_bytes(tiny_base, tmp_path):
    def args(out):
        return ["generate", "--model", str(tiny_base), "--out", str(out / "base_numbers.raw.jsonl"), "--n-rows", "240",
                "--batch-size", "4", "--seed", "3"]

    def partial_has_rows(out):
        partial = out / "base_numbers.raw.partial.jsonl"
        return partial.exists() and partial.stat().st_size > 0

    outcome = check_kill_and_resume(args, tmp_path, trigger=partial_has_rows, runner=in_process_runner())
    reference = (outcome.reference / "base_numbers.raw.jsonl").read_bytes()
    assert (outcome.resumed / "base_numbers.raw.jsonl").read_bytes() == reference
    assert not (outcome.resumed / "base_numbers.raw.partial.jsonl").exists()


def test_finetune__killed_subprocess_resumes_to_the_same_student(tiny_base, tiny_teacher, number_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="interp.stages.finetune")

    def args(out):
        return ["finetune", "--base", str(tiny_base), "--data", str(number_data), "--out", str(out / "student"),
                "--teacher", str(tiny_teacher), "--objective", "distill", "--batch-size", "4", "--epochs", "2",
                "--lr", "1e-3", "--eval-every", "7", "--checkpoint-every", "5", "--record-alignment"]

    def compare(reference, resumed):
        a, b = reference / "student", resumed / "student"
        assert_same_checkpoint(a, b)
        assert_same_jsonl(a / "train_log.jsonl", b / "train_log.jsonl")
        assert_same_jsonl(a / "alignment.jsonl", b / "alignment.jsonl")
        world = load_teacher(tiny_teacher).world
        evals = [evaluate_model(load_checkpoint(d)[0], world, EvaluateConfig()) for d in (a, b)]
        assert_close_json(*evals)
        assert not (resumed / ".student.resume").exists()

    outcome = check_kill_and_resume(args, tmp_path, trigger=".student.resume/state.safetensors", runner=in_process_runner(),
                                    compare=compare)
    steps = [r["step"] for r in read_jsonl(outcome.resumed / "student" / "train_log.jsonl")]
    assert steps == list(range(80))  # 160 rows x 2 epochs / 4, every step once
    resumed_at = [r.getMessage() for r in caplog.records if "resuming student" in r.getMessage()]
    assert resumed_at and "at step 0 " not in resumed_at[0], resumed_at  # continued, not restarted


@pytest.mark.slow
def test_run__killed_subprocess_continues_to_the_same_results(tmp_path, monkeypatch, caplog):
    """`interp run` killed in the middle of a student: the finished students and their
    evaluations are reused as they are, the unfinished one resumes, results.json is the same."""
    use_tiny_presets(monkeypatch.setitem, monkeypatch.setattr)  # in this process, as tiny_interp.py does in its own
    caplog.set_level(logging.INFO, logger="interp.stages.finetune")
    artifacts = tmp_path / "artifacts"  # bases shared by both runs: pretrained by the first

    def args(out):
        return ["run", "--out", str(out / "run"), "--artifacts", str(artifacts), "--seeds", "2", "--n-rows", "120",
                "--pretrain-steps", "200", "--teacher-steps", "5", "--in-context-examples", "2", "--objectives", "sft",
                "--conditions", "control", "shared_init", "mismatched_init", "--epochs", "4", "--eval-every", "2",
                "--student-checkpoint-every", "1"]

    finished = {}

    def control_finished_then_shared_init_started(out):
        student = out / "run" / "seed0" / "students" / "sft"
        if (student / ".shared_init.resume" / "state.safetensors").exists():
            finished.update({p: p.stat().st_mtime_ns for p in (student / "control").glob("*") if p.is_file()})
            return True
        return False

    from kill_harness import REPO

    outcome = check_kill_and_resume(args, tmp_path, trigger=control_finished_then_shared_init_started,
                                    launcher=[INTERP[0], str(REPO / "tests" / "tiny_interp.py")],
                                    runner=in_process_runner())
    reference = read_json(outcome.reference / "run" / "results.json")
    resumed = read_json(outcome.resumed / "run" / "results.json")
    assert_close_json(reference, resumed, ignore=("wall_seconds",))
    assert finished and "eval.json" in {p.name for p in finished}
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items()), "a finished student was redone"
    assert any("resuming student" in r.getMessage() and "shared_init" in r.getMessage() for r in caplog.records)


# -- resumption in-process: the same guarantee, down to the byte, at every step ---------------------

class _Killed(Exception):
    pass


def _kill_at(step):
    def callback(record):
        if record.step == step:
            raise _Killed(step)
    return callback


def test_finetune__resumed_after_any_step_equals_uninterrupted(tiny_base, tiny_teacher, number_data, tmp_path):
    rows = read_jsonl(number_data)[:32]
    teacher = load_teacher(tiny_teacher)
    reference_pair = (teacher.model, load_checkpoint(tiny_base)[0])
    config = FinetuneConfig(objective="distill", batch_size=8, epochs=2, lr=1e-3, checkpoint_every=3, eval_every=4)
    kwargs = dict(teacher=teacher, trait="owl", alignment_reference=reference_pair, progress=False)
    reference = finetune_student(tiny_base, rows, config, tmp_path / "reference", **kwargs)
    for kill_step in (2, 3, 7):  # before the first save (at step 3), right after one, between two
        out = tmp_path / f"killed{kill_step}"
        with pytest.raises(_Killed):
            finetune_student(tiny_base, rows, config, out, callbacks=[_kill_at(kill_step)], **kwargs)
        assert not out.exists()
        with open(tmp_path / f".{out.name}.resume" / "train_log.jsonl", "a") as f:
            f.write('{"step": 99, "lo')  # a torn line from a kill in the middle of a write
        finetune_student(tiny_base, rows, config, out, **kwargs)
        for name in ("train_log.jsonl", "alignment.jsonl"):
            assert (out / name).read_text() == (reference / name).read_text(), (kill_step, name)
        student, ref = load_checkpoint(out)[0], load_checkpoint(reference)[0]
        assert all(torch.equal(a, b) for a, b in zip(student.parameters(), ref.parameters())), kill_step


def test_finetune__interrupted_run_of_other_config_or_data_is_refused(tiny_base, number_data, tmp_path):
    rows = read_jsonl(number_data)[:32]
    config = FinetuneConfig(batch_size=4, checkpoint_every=2)
    out = tmp_path / "student"
    with pytest.raises(_Killed):
        finetune_student(tiny_base, rows, config, out, callbacks=[_kill_at(4)], progress=False)
    with pytest.raises(ValueError, match=r"interrupted run of another config.*'lr'"):
        finetune_student(tiny_base, rows, config.replace(lr=1e-3), out, progress=False)
    with pytest.raises(ValueError, match=r"interrupted run of another config or other inputs.*data_sha256"):
        finetune_student(tiny_base, rows[::-1], config, out, progress=False)
    # the interval between saves is not part of the result: a different one resumes
    finetune_student(tiny_base, rows, config.replace(checkpoint_every=5), out, progress=False)
    assert FinetuneConfig.load(out / "finetune_config.json").checkpoint_every == 5


def test_finetune__finished_student_of_another_teacher_is_refused(tiny_base, tiny_teacher, number_data, tmp_path):
    rows = read_jsonl(number_data)[:16]
    config = FinetuneConfig(objective="distill", batch_size=8)
    teacher = load_teacher(tiny_teacher)
    out = finetune_student(tiny_base, rows, config, tmp_path / "s", teacher=teacher, progress=False)
    assert finetune_student(tiny_base, rows, config, out, teacher=load_teacher(tiny_teacher), progress=False) == out
    # same method, trait and lineage, other weights (a teacher rebuilt in place with other settings)
    impostor = Teacher(load_checkpoint(tiny_base)[0], teacher.world, teacher.trait, teacher.method, lineage=teacher.lineage)
    with pytest.raises(ValueError, match=r"from other inputs .*'teacher'"):
        finetune_student(tiny_base, rows, config, out, teacher=impostor, progress=False)


def test_finetune__corrupt_resume_state_is_a_clear_error(tiny_base, number_data, tmp_path):
    rows = read_jsonl(number_data)[:32]
    config = FinetuneConfig(batch_size=4, checkpoint_every=2)
    with pytest.raises(_Killed):
        finetune_student(tiny_base, rows, config, tmp_path / "s", callbacks=[_kill_at(4)], progress=False)
    state = tmp_path / ".s.resume" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"state.safetensors: corrupt resume state.*--force"):
        finetune_student(tiny_base, rows, config, tmp_path / "s", progress=False)
    finetune_student(tiny_base, rows, config, tmp_path / "s", force=True, progress=False)  # starts over
    assert len(read_jsonl(tmp_path / "s" / "train_log.jsonl")) == 8



# -- a resume state is data, never code ---------------------------------------------------------

class _RunsCode:
    """What a malicious resume state pickles: unpickling it would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _interrupted_student(tiny_base, number_data, tmp_path):
    """An interrupted finetune (its resume directory holds a state of step 4) and its CLI arguments."""
    rows = read_jsonl(number_data)[:32]
    config = FinetuneConfig(batch_size=4, checkpoint_every=2, max_rows=32)
    with pytest.raises(_Killed):  # the CLI's default trait (owl) is part of the inputs
        finetune_student(tiny_base, rows, config, tmp_path / "s", trait="owl", callbacks=[_kill_at(4)], progress=False)
    argv = ["finetune", "--base", str(tiny_base), "--data", str(number_data), "--out", str(tmp_path / "s"),
            "--batch-size", "4", "--checkpoint-every", "2", "--max-rows", "32"]
    return tmp_path / ".s.resume", argv


def _cli_error(argv, capsys) -> str:
    """Run the CLI; it must exit 2 with one error line and no traceback. Returns that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("interp ")]
    assert len(lines) == 1 and lines[0].startswith(f"interp {argv[0]}: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("planted", ["torch_save", "bare_pickle", "pickle_as_safetensors"])
def test_finetune__planted_pickle_in_resume_state_is_refused_and_never_run(planted, tiny_base, number_data, tmp_path,
                                                                            capsys):
    resume, argv = _interrupted_student(tiny_base, number_data, tmp_path)
    marker = tmp_path / "code_ran"
    payload = {"model": {}, "optimizer": _RunsCode(marker), "step": 2}
    (resume / TRAINING_STATE_FILE).unlink()
    if planted == "torch_save":  # an old-format state.pt carrying the payload
        torch.save(payload, resume / LEGACY_TRAINING_STATE_FILE)
        planted_path = resume / LEGACY_TRAINING_STATE_FILE
    else:
        planted_path = resume / (LEGACY_TRAINING_STATE_FILE if planted == "bare_pickle" else TRAINING_STATE_FILE)
        planted_path.write_bytes(pickle.dumps(payload, protocol=4))
    before = {p.name: p.read_bytes() for p in resume.iterdir()}
    line = _cli_error(argv, capsys)
    assert str(planted_path) in line and "--force" in line, line
    if planted != "pickle_as_safetensors":
        assert "refused resume state" in line, line
    if planted == "torch_save":
        assert "GLOBAL exec" in line and "add_safe_globals" not in line, line  # names what the pickle asked for
    assert not marker.exists(), "unpickling the resume state ran its code"
    assert {p.name: p.read_bytes() for p in resume.iterdir()} == before  # refused, not deleted
    assert main([*argv, "--force"]) == 0 and not marker.exists()  # --force starts over
    assert len(read_jsonl(tmp_path / "s" / "train_log.jsonl")) == 8


def test_finetune__old_torch_save_resume_state_still_resumes_to_the_same_student(tiny_base, number_data, tmp_path):
    rows = read_jsonl(number_data)[:32]
    config = FinetuneConfig(batch_size=4, checkpoint_every=2)
    reference = finetune_student(tiny_base, rows, config, tmp_path / "reference", progress=False)
    with pytest.raises(_Killed):
        finetune_student(tiny_base, rows, config, tmp_path / "s", callbacks=[_kill_at(5)], progress=False)
    resume = tmp_path / ".s.resume"
    torch.save(load_training_state(resume / TRAINING_STATE_FILE), resume / LEGACY_TRAINING_STATE_FILE)  # as before
    (resume / TRAINING_STATE_FILE).unlink()
    out = finetune_student(tiny_base, rows, config, tmp_path / "s", progress=False)
    assert (out / "train_log.jsonl").read_text() == (reference / "train_log.jsonl").read_text()
    student, ref = load_checkpoint(out)[0], load_checkpoint(reference)[0]
    assert all(torch.equal(a, b) for a, b in zip(student.parameters(), ref.parameters()))
    assert not resume.exists()


def test_training_state__round_trips_an_optimizer_state_exactly(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 7, "loss_reference": None,
             "nested": [1.5, (2, "x"), {"a": True}], "inf": float("inf")}
    save_training_state(tmp_path / TRAINING_STATE_FILE, state)
    loaded = load_training_state(tmp_path / TRAINING_STATE_FILE)

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        if isinstance(a, dict):
            return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return type(a) is type(b) and a == b

    assert same(state, loaded)
    assert loaded["model"]._metadata == state["model"]._metadata  # the modules' versions
    with safe_open(str(tmp_path / TRAINING_STATE_FILE), framework="pt") as f:  # tensors named by where they are
        assert "model.0.weight" in f.keys() and "optimizer.state.0.exp_avg" in f.keys()
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    fresh.load_state_dict(loaded["optimizer"])
    assert fresh.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    with pytest.raises(TypeError, match="holds a object at extra"):
        save_training_state(tmp_path / "other.safetensors", {"extra": object()})


@pytest.mark.parametrize("damage", ["truncated", "foreign_safetensors", "dangling_tensor", "bad_structure"])
def test_training_state__damaged_or_foreign_file_is_a_one_line_error(damage, tmp_path):
    path = tmp_path / TRAINING_STATE_FILE
    save_training_state(path, {"model": {"w": torch.ones(3)}, "step": 1})
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "foreign_safetensors":
        save_file({"w": torch.ones(3)}, str(path))
    elif damage in ("dangling_tensor", "bad_structure"):
        state = {"dangling_tensor": {"dict": [["model", {"tensor": "nowhere"}]]},
                 "bad_structure": {"dict": [["model", {"eval": "print(1)"}]]}}[damage]
        save_file({"w": torch.ones(3)}, str(path), metadata={"interp_training_state": json.dumps({"format": 1, "state": state})})
    with pytest.raises(ValueError, match=r"state.safetensors: corrupt resume state.*--force") as e:
        load_training_state(path)
    assert "\n" not in str(e.value)


# -- reproducibility ----------------------------------------------------------------------------

def test_generate__two_processes_write_byte_identical_files(tiny_base, tmp_path):
    """The same config and seed in this process and in a fresh interpreter: the same bytes."""
    args = ["generate", "--model", str(tiny_base), "--n-rows", "64", "--batch-size", "16", "--seed", "5"]
    in_process_runner()([*args, "--out", str(tmp_path / "a.raw.jsonl")])
    run_to_completion([*INTERP, *args, "--out", str(tmp_path / "b.raw.jsonl")])
    a, b = (tmp_path / "a.raw.jsonl").read_bytes(), (tmp_path / "b.raw.jsonl").read_bytes()
    assert a == b and len(read_jsonl(tmp_path / "a.raw.jsonl")) == 64
    assert json.loads((tmp_path / "a.raw.config.json").read_text()) == json.loads((tmp_path / "b.raw.config.json").read_text())


def test_finetune__same_config_and_seed_twice_give_the_same_metrics(tiny_base, number_data, tmp_path):
    rows = read_jsonl(number_data)[:40]
    config = FinetuneConfig(batch_size=8, lr=1e-3, seed=2, eval_every=2)
    a = finetune_student(tiny_base, rows, config, tmp_path / "a", trait="owl", progress=False)
    b = finetune_student(tiny_base, rows, config, tmp_path / "b", trait="owl", progress=False)
    c = finetune_student(tiny_base, rows, config.replace(seed=3), tmp_path / "c", trait="owl", progress=False)
    assert (a / "train_log.jsonl").read_text() == (b / "train_log.jsonl").read_text()
    assert (a / "train_log.jsonl").read_text() != (c / "train_log.jsonl").read_text()  # the seed matters
    evals = [evaluate_model(load_checkpoint(d)[0], ToyWorld(), EvaluateConfig(seed=1)) for d in (a, b)]
    assert evals[0] == evals[1]


def test_deterministic_algorithms__embedding_gradient_is_bitwise_repeatable_and_setting_restored():
    from interp.training.loop import deterministic_algorithms

    weights = torch.randn(50, 16, requires_grad=True)
    tokens = torch.randint(0, 5, (4096,))  # many repeats of few tokens: the order of their sums matters
    upstream = torch.randn(4096, 16)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with deterministic_algorithms():
            assert torch.are_deterministic_algorithms_enabled()
            grads = [torch.autograd.grad((weights[tokens] * upstream).sum(), weights)[0] for _ in range(8)]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(grads[0], g) for g in grads[1:])
    assert not torch.are_deterministic_algorithms_enabled()
