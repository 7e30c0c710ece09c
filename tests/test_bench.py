"""The bench module on tiny inputs: its statistics, its rows and its files. Nothing here asserts a
speed; the measured ratios are reported by ``interp bench``, not checked."""

import json
import os
import sys

import pytest
import torch

from interp.bench.suite import (DOCS_BEGIN, DOCS_END, RUN_PROCESS_FILE, BenchConfig, alternating, bench_audit, bench_finetune_steps, bench_generation,
                          bench_mnist, bench_sae, comparison, markdown_table, run_bench, run_command, sae_token_windows,
                          spread, whole_run_row, write_docs)
from interp.core.config import ConfigError
from interp.stages.generate import number_prompts
from interp.models.checkpoint import Lineage, build_model, save_checkpoint
from interp.stages.pretrain import PretrainConfig
from interp.models.checkpoint import PRETRAIN_CONFIG_FILE
from interp.worlds.toy.templates import EOS

from conftest import TINY


def test_spread__median_and_quartiles():
    s = spread([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["median"], s["q1"], s["q3"], s["n"]) == (3.0, 2.0, 4.0, 5)
    with pytest.raises(ValueError, match="no values"):
        spread([])


def test_alternating__sides_take_turns_going_first():
    calls = []
    ours, theirs = alternating(lambda: calls.append("s") or 1.0, lambda: calls.append("b") or 2.0, 3)
    assert calls == ["s", "b", "s", "b", "b", "s", "s", "b"]  # warm-up, then s first, b first, s first
    assert ours == [1.0] * 3 and theirs == [2.0] * 3


def test_comparison__per_repeat_ratio_and_targets():
    row = comparison("k", "t", "c", measure="x/s", subject=("ours", [4.0, 9.0]), baseline=("theirs", [2.0, 3.0]),
                     ratio="ours / theirs", higher_is_better=True,
                     target={"text": ">= 2x", "threshold": 2.0, "kind": "ratio_at_least"})
    assert row["ratio"]["values"] == [2.0, 3.0] and row["ratio"]["median"] == 2.5 and row["target"]["met"]
    slow = comparison("k", "t", "c", measure="s", subject=("with", [1.2]), baseline=("without", [1.0]), ratio="w/wo",
                      higher_is_better=False, target={"text": "< 10%", "threshold": 0.1, "kind": "overhead_below"})
    assert not slow["target"]["met"]
    fine = comparison("k", "t", "c", measure="s", subject=("with", [1.05]), baseline=("without", [1.0]), ratio="w/wo",
                      higher_is_better=False, target={"text": "< 10%", "threshold": 0.1, "kind": "overhead_below"})
    assert fine["target"]["met"]


def test_bench_generation__rows_and_greedy_check_on_a_tiny_model(world, tiny_model):
    prompts = [world.encode(t) for t in number_prompts(world, 12, 0)]
    rows = bench_generation(tiny_model, prompts, eos_id=world.token_to_id[EOS], batch_size=4, max_new_tokens=3,
                            repeats=1)
    assert [r["key"] for r in rows] == ["generation", "generation_engines"]
    main = rows[0]
    assert main["details"]["greedy_identical"] and main["details"]["greedy_rows"] == 12
    assert main["details"]["lean_forward_used"] and max(main["details"]["batch_sizes"]) <= 4
    assert main["subject"]["n"] == main["baseline"]["n"] == main["ratio"]["n"] == 1
    assert main["subject"]["median"] > 0 and main["baseline"]["median"] > 0
    assert main["target"]["threshold"] == 2.0 and isinstance(main["target"]["met"], bool)


def _tiny_base(tokenizer, world, path):
    model = build_model(TINY, tokenizer, seed=0)
    save_checkpoint(model, path, TINY, Lineage(stage="pretrain", seed=0, parent=None, world_fingerprint=world.fingerprint()))
    PretrainConfig(seed=0, arch="small").save(path / PRETRAIN_CONFIG_FILE)
    return path


@pytest.mark.slow
def test_bench_finetune_steps__recording_and_objective_rows(tokenizer, world, tmp_path):
    base = _tiny_base(tokenizer, world, tmp_path / "base")
    rows = bench_finetune_steps(base, tmp_path / "scratch", steps=4, batch_size=4, repeats=1)
    assert [r["key"] for r in rows] == ["recording", "distill", "distill_full"]
    recording = rows[0]
    assert recording["target"]["kind"] == "overhead_below"
    d = recording["details"]
    assert d["recording_step_seconds_with_trait_gradient"] > 0 and d["recording_step_seconds_other"] > 0
    assert all(r["subject"]["median"] > 0 for r in rows)
    assert not any((tmp_path / "scratch").iterdir())  # every timed student was removed


def test_bench_audit__audit_against_training_on_a_tiny_model(tokenizer, world, tmp_path):
    base = _tiny_base(tokenizer, world, tmp_path / "base")
    step, full = bench_audit(base, tmp_path / "scratch", n_rows=24, batch_size=8, repeats=1)
    assert [step["key"], full["key"]] == ["audit_step", "audit"]
    for row in (step, full):
        assert row["subject"]["median"] > 0 and row["baseline"]["median"] > 0
        assert row["ratio"]["median"] == pytest.approx(row["subject"]["median"] / row["baseline"]["median"])
        assert row["details"]["student_steps"] == 3
    # the step score's row carries its target (at most a third of training), checked against the median ratio
    assert step["target"]["kind"] == "ratio_at_most"
    assert step["target"]["met"] == (step["ratio"]["median"] <= step["target"]["threshold"])
    assert step["details"]["step_score_seconds_last"] > 0
    assert not any((tmp_path / "scratch").iterdir())  # the timed student was removed


def test_bench_mnist__batched_and_looped_rows():
    rows = bench_mnist(n_models=2, steps=2, hidden=(8,), repeats=1)
    assert [r["key"] for r in rows] == ["mnist_teacher", "mnist_student"]
    assert all(r["subject"]["median"] > 0 and r["baseline"]["median"] > 0 for r in rows)


@pytest.mark.slow
def test_bench_sae__both_routes_train_on_a_tiny_model(world, tiny_model):
    windows = sae_token_windows(world, 1024, 32)
    assert windows.shape == (32, 32)
    rows = bench_sae(tiny_model, windows, hook_name="blocks.0.hook_resid_post", n_tokens=512, expansion=2, k=4,
                     batch_tokens=128, repeats=1)
    assert rows[0]["key"] == "sae" and rows[0]["details"]["d_sae"] == 64
    assert rows[0]["subject"]["median"] > 0 and rows[0]["baseline"]["median"] > 0


def _fake_run(run_dir, wall_seconds):
    """A finished run's files, written at known times (seconds after the start)."""
    files = {"run_config.json": 0, "seed0/teacher/teacher.json": 100, "seed0/data/teacher_numbers.raw.jsonl": 130,
             "seed0/data/teacher_numbers.filtered.jsonl": 131, "seed0/students/sft/control/model.safetensors": 200,
             "seed0/students/sft/control/eval.json": 210, "seed0/students/distill/control/model.safetensors": 300,
             "results.json": 305}
    start = 1_700_000_000
    for name, offset in files.items():
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"wall_seconds": wall_seconds, "bases": {}, "config": {}}) if name == "results.json" else "{}")
        os.utime(path, (start + offset, start + offset))


def test_whole_run_row__reads_a_finished_run_and_splits_its_time(tmp_path):
    _fake_run(tmp_path / "run", 1300.0)
    row = whole_run_row("run_default", "default", None, tmp_path / "run", scratch=tmp_path, target_seconds=1200)
    assert row["wall_seconds"] == 1300.0 and row["peak_rss_mib"] is None and not row["target"]["met"]
    assert row["seconds_by_stage"] == {"teacher": 100, "students (distill)": 90, "students (sft)": 69,
                                       "generation": 30, "evaluation": 10, "summary": 5, "filter": 1}
    with pytest.raises(FileNotFoundError, match="results.json"):
        whole_run_row("run_default", "default", None, tmp_path / "nothing", scratch=tmp_path, target_seconds=None)
    # a run a bench ran keeps its measured wall time and peak memory beside it
    (tmp_path / "run" / RUN_PROCESS_FILE).write_text(json.dumps({"wall_seconds": 1100.0, "peak_rss_mib": 321.0}))
    row = whole_run_row("run_default", "default", None, tmp_path / "run", scratch=tmp_path, target_seconds=1200)
    assert row["wall_seconds"] == 1100.0 and row["peak_rss_mib"] == 321.0 and row["target"]["met"]


def test_run_command__exit_code_wall_time_and_own_peak_memory(tmp_path):
    big = run_command([sys.executable, "-c", "x = bytearray(80 * 2**20); x[::4096] = b'1' * len(x[::4096])"],
                      cwd=tmp_path, log_path=tmp_path / "big.log", threads=1)
    assert big["exit_code"] == 0 and big["wall_seconds"] > 0 and big["omp_num_threads"] == "1"
    assert big["peak_rss_mib"] >= 80
    small = run_command([sys.executable, "-c", "import sys; print('hi'); sys.exit(3)"], cwd=tmp_path,
                        log_path=tmp_path / "small.log")
    assert small["exit_code"] == 3 and small["peak_rss_mib"] < 50  # its own, not the bench process's (pytest: 200+ MiB)
    assert (tmp_path / "small.log").read_text() == "hi\n"


def test_write_docs__replaces_only_the_generated_block(tmp_path):
    path = tmp_path / "docs" / "benchmarks.md"
    path.parent.mkdir()
    write_docs(path, "first table\n")
    assert path.read_text().startswith("# Benchmarks") and "first table" in path.read_text()
    path.write_text(path.read_text().replace("# Benchmarks", "# Benchmarks\n\nHand-written intro.") + "\nAnalysis.\n")
    write_docs(path, "second table\n")
    text = path.read_text()
    assert "Hand-written intro." in text and "Analysis." in text and "second table" in text
    assert "first table" not in text and text.count(DOCS_BEGIN) == text.count(DOCS_END) == 1


def _bench_dict(rows):
    return {"finished": "now", "config": {"quick": True}, "model": "tiny", "load_average_start": [1.0],
            "load_average_end": [2.0], "rows": rows, "skipped": {"run_default": "--skip-default-run"},
            "machine": {"git_commit": None, "cpus_available": 2, "cpu_count": 2, "cpu_model": None, "torch_threads": 2,
                        "versions": {"torch": "t", "transformer-lens": "tl", "sae-lens": "sl"}}}


def test_markdown_table__says_when_a_target_is_missed_and_why(tmp_path):
    recording = comparison("recording", "Recording", "c", measure="s/step", subject=("with", [2.0]),
                           baseline=("without", [1.0]), ratio="with / without", higher_is_better=False,
                           target={"text": "overhead < 10%", "threshold": 0.1, "kind": "overhead_below"},
                           details={"recording_step_seconds_with_trait_gradient": 3.0, "recording_step_seconds_other": 1.5,
                                    "sft_step_seconds": 1.0, "trait_grad_every": 5})
    _fake_run(tmp_path / "run", 600.0)
    run = whole_run_row("run_quick", "`interp run --quick`", None, tmp_path / "run", scratch=tmp_path,
                        target_seconds=None)
    text = markdown_table(_bench_dict([recording, {"key": "sae", "title": "SAE", "error": "ValueError: boom"}, run]))
    assert "| Recording (s/step) |" in text and "**no**" in text and "overhead +100.0%" in text
    assert "failed: ValueError: boom" in text
    assert "10.0 min" in text and "teacher 33%" in text
    assert "`run_default` not measured: --skip-default-run" in text


def test_bench_config__validated_and_quick_preset():
    with pytest.raises(ConfigError, match="only"):
        BenchConfig(only=("generation", "bogus"))
    with pytest.raises(ConfigError, match="sae_tokens"):
        BenchConfig(sae_tokens=100)
    assert BenchConfig(**BenchConfig.quick_defaults()).repeats < BenchConfig().repeats


def test_run_bench__bad_default_run_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        run_bench(BenchConfig(only=("mnist",)), tmp_path / "b", default_run_dir=tmp_path, skip_default_run=True)
    with pytest.raises(FileNotFoundError, match="results.json"):
        run_bench(BenchConfig(only=("run_default",)), tmp_path / "b", default_run_dir=tmp_path / "missing")
    assert not (tmp_path / "b").exists()  # nothing written before the arguments were checked


def test_bench_cli__writes_json_markdown_and_docs(tmp_path, capsys):
    from interp.cli import main

    docs = tmp_path / "docs.md"
    code = main(["bench", "--out", str(tmp_path / "b"), "--quick", "--only", "mnist", "--repeats", "1",
                 "--mnist-models", "2", "--mnist-steps", "2", "--mnist-hidden", "8", "--threads", "1",
                 "--docs", str(docs)])
    assert code == 0
    bench = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [r["key"] for r in bench["rows"]] == ["mnist_teacher", "mnist_student"]
    assert bench["config"]["threads"] == 1 and bench["machine"]["torch_threads"] == 1 and bench["failed"] == []
    assert "MNIST teacher" in docs.read_text() and (tmp_path / "b" / "benchmarks.md").exists()
    assert "mnist_teacher: ratio" in capsys.readouterr().out
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # the bench changed this process's torch threads


def test_bench_update__keeps_other_benchmarks_rows(tmp_path):
    out = tmp_path / "b"
    common = dict(repeats=1, mnist_models=2, mnist_steps=2, mnist_hidden=(8,), threads=1)
    run_bench(BenchConfig(only=("mnist",), **common), out, progress=False)
    _fake_run(tmp_path / "run", 900.0)
    (tmp_path / "run" / RUN_PROCESS_FILE).write_text(json.dumps(
        {"wall_seconds": 900.0, "peak_rss_mib": 400.0, "user_cpu_seconds": 500.0, "system_cpu_seconds": 10.0,
         "omp_num_threads": "1"}))
    bench = run_bench(BenchConfig(only=("run_default",), **common), out, default_run_dir=tmp_path / "run", update=True,
                      docs=tmp_path / "docs.md", progress=False)
    assert [r["benchmark"] for r in bench["rows"]] == ["mnist", "mnist", "run_default"]
    assert len(bench["updates"]) == 1 and bench["updates"][0]["config"]["only"] == ["run_default"]
    assert json.loads((out / "bench.json").read_text())["rows"] == bench["rows"]
    text = (tmp_path / "docs.md").read_text()
    assert "MNIST teacher" in text and "| 15.0 min | 8.5 min (OMP_NUM_THREADS=1) | 400 MiB |" in text
    assert "Added later by `interp bench --update`" in text
    torch.set_num_threads(min(2, os.cpu_count() or 1))


def test_bench_executors__ray_against_the_pool_on_the_same_quick_run(tmp_path, monkeypatch):
    """The row times whole `interp run --quick` commands, one per executor and repeat, alternating
    which runs first, after the bases were made (both sides reuse them)."""
    import interp.bench.suite as suite
    import interp.studies.run as run_mod

    made, calls = [], []
    monkeypatch.setattr(run_mod, "_bases", lambda config, artifacts, **kw: made.append((config.quick, artifacts)))

    def fake_run_command(argv, *, cwd, log_path, threads=None, env_extra=None):
        calls.append(argv[argv.index("--executor") + 1])
        assert argv[argv.index("--artifacts") + 1] == str(tmp_path / "artifacts") and "--quick" in argv
        return {"exit_code": 0, "wall_seconds": 30.0 if calls[-1] == "ray" else 20.0, "log": str(log_path)}

    monkeypatch.setattr(suite, "run_command", fake_run_command)
    (row,) = suite.bench_executors(tmp_path / "artifacts", tmp_path, repeats=2)
    assert made == [(True, tmp_path / "artifacts")]
    assert calls == ["ray", "local", "local", "ray"]
    assert row["key"] == "run_quick_ray" and row["ratio"]["median"] == pytest.approx(1.5)
    assert not row["higher_is_better"] and row["subject"]["label"] == "Ray tasks"


def test_run_bench__ray_benchmark_skipped_without_ray(tmp_path, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    bench = run_bench(BenchConfig(only=("mnist", "run_quick_ray"), repeats=1, mnist_models=2, mnist_steps=2,
                                  mnist_hidden=(8,), threads=1), tmp_path / "b", progress=False)
    assert "pip install -e '.[ray]'" in bench["skipped"]["run_quick_ray"]
    assert [r["benchmark"] for r in bench["rows"]] == ["mnist", "mnist"]
    assert "`run_quick_ray` not measured: Ray is not installed" in (tmp_path / "b" / "benchmarks.md").read_text()
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # the bench changed this process's torch threads


def test_training_flops__equal_torch_flop_counter_on_the_packed_step(tokenizer):
    """The bench's FLOP count of a training step is the multiply-adds torch's FlopCounterMode counts
    on the packed forward and backward (which counts the weight products, not attention), plus the
    attention terms, and the sampler's count adds one position per fed-back token."""
    from torch.utils.flop_counter import FlopCounterMode

    from interp.bench.speed import block_macs_per_token, forward_macs, sampling_flops, training_flops
    from interp.training.packed import pack_rows, packed_logits

    model = build_model(TINY, tokenizer, seed=0)
    seqs = [[1] * 10, [2] * 7, [3] * 4]
    rows = pack_rows(seqs, [(0, 9), (2, 6), (0, 3)])
    with FlopCounterMode(display=False) as counter:
        packed_logits(model, rows).sum().backward()
    macs = forward_macs(model.cfg, [10, 7, 4], rows.pred_index.numel())
    ours = training_flops(model.cfg, [10, 7, 4], rows.pred_index.numel(), train_unembed=True, train_embed=True)
    assert ours - 2 * 3 * macs["attention"] == counter.get_total_flops()
    assert macs["attention"] == model.cfg.n_layers * 2 * model.cfg.d_model * (55 + 28 + 10)
    prompt = sum(forward_macs(model.cfg, [5], 1).values())  # the prompt pass, its last position unembedded
    fed_back = (model.cfg.n_layers * (block_macs_per_token(model.cfg) + 2 * model.cfg.d_model * 6)
                + model.cfg.d_model * model.cfg.d_vocab)  # the first new token at position 5, seeing 6 keys
    assert sampling_flops(model.cfg, [5], [2]) == 2 * (prompt + fed_back)


@pytest.mark.slow
def test_bench_speed__students_per_hour_and_limit_rows(tokenizer, world, tmp_path):
    from interp.bench.speed import bench_speed, limits_table

    base = _tiny_base(tokenizer, world, tmp_path / "base")
    rows = bench_speed(base, tmp_path / "scratch", student_rows=4, steps=2, batch_size=2, pretrain_steps=2,
                       sample_prompts=2, audit_rows=4, repeats=1, pretrain_batch_size=2, square=32)
    keys = [r["key"] for r in rows]
    assert keys == ["students_per_hour", "limit_student_packed", "limit_student_padded", "limit_pretrain_packed",
                    "limit_pretrain_padded", "limit_sampler", "limit_audit"]
    assert rows[0]["target"]["kind"] == "ratio_at_least" and rows[0]["subject"]["median"] > 0
    for r in rows[1:]:
        assert r["achieved_gflops"]["median"] > 0 and r["peak_gflops"] > 0
        assert r["fraction_of_peak"]["median"] == pytest.approx(r["achieved_gflops"]["median"] / r["peak_gflops"])
    packed, padded = rows[1], rows[2]
    assert packed["flops_per_call"] == padded["flops_per_call"]  # the same useful work on both engines
    assert packed["details"]["real_tokens_per_step"] <= packed["details"]["padded_positions_per_step"]
    table = "\n".join(limits_table(rows))
    assert "fraction of peak" in table and "Matmul peak by shape" in table
    assert not any((tmp_path / "scratch").iterdir())  # every timed student was removed
