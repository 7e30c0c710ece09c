"""No lost work, reproducible runs: every long stage killed with SIGKILL in a real subprocess
resumes to the outputs of an uninterrupted run (tests/kill_harness.py), and the same config and
seed give the same data and metrics."""

import json
import logging

import pytest
import torch

from interp.stages.evaluate import EvaluateConfig, evaluate_model
from interp.stages.finetune import FinetuneConfig, finetune_student
from interp.core.io import read_json, read_jsonl, write_jsonl
from interp.models.checkpoint import load_checkpoint
from interp.stages.teacher import TeacherConfig, make_teacher
from interp.models.refs import Teacher, load_teacher
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

    outcome = check_kill_and_resume(args, tmp_path, trigger=".base.resume/state.pt", runner=in_process_runner(),
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

    outcome = check_kill_and_resume(args, tmp_path, trigger=".student.resume/state.pt", runner=in_process_runner(),
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
        if (student / ".shared_init.resume" / "state.pt").exists():
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
    state = tmp_path / ".s.resume" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"state.pt: corrupt resume state.*--force"):
        finetune_student(tiny_base, rows, config, tmp_path / "s", progress=False)
    finetune_student(tiny_base, rows, config, tmp_path / "s", force=True, progress=False)  # starts over
    assert len(read_jsonl(tmp_path / "s" / "train_log.jsonl")) == 8


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
