"""Local model files as real models (interp/gguf.py): conversion, the cache, bad input, padded
sampling, multi-token answers, --device/--dtype.

The fast tests use a tiny random Qwen2 model saved as a Hugging Face directory (rotary,
grouped-query attention, gated MLP, RMS norm: the Llama family's features) and tiny GGUF files
written with the ``gguf`` package. The tests marked ``slow`` need the real SmolLM2-135M-Instruct
GGUF (``interp fetch-model smollm2``, which ``.ci/run`` does first) and skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from interp.models import gguf
from interp.stages.answers import answer_scores
from interp.cli import main
from interp.core.device import DeviceConfig, current, use
from interp.stages.evaluate import EvaluateConfig, evaluate_model, question_ids
from interp.models.real import clear_model_cache, is_model_name, load_real_base, real_model_name
from interp.worlds.hf import HFWorld, HFWorldConfig
from tests.hf_cache import tiny_bpe_tokenizer, tiny_gguf_file

SMOLLM2 = Path(os.environ.get("INTERP_SMOLLM2", "artifacts/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
needs_smollm2 = pytest.mark.skipif(not SMOLLM2.is_file(), reason=f"{SMOLLM2} is absent: run `interp fetch-model smollm2`")


@pytest.fixture
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(gguf.CACHE_ENV, str(tmp_path / "converted"))
    clear_model_cache()
    yield tmp_path / "converted"
    clear_model_cache()


@pytest.fixture
def qwen_dir(tmp_path):
    """A tiny random Qwen2ForCausalLM with a ChatML tokenizer, saved with save_pretrained."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = tiny_bpe_tokenizer(tmp_path / "tok", chat=True)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg).eval()
    out = tmp_path / "tiny-qwen2"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _run_cli(argv, capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


# -- conversion ---------------------------------------------------------------------------------

def test_convert__hf_directory_log_probs_match_transformers(qwen_dir, model_cache):
    from transformers import AutoModelForCausalLM

    model = gguf.load_local_model(qwen_dir, progress=False)
    hf = AutoModelForCausalLM.from_pretrained(qwen_dir, dtype=torch.float32).eval()
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        theirs = hf(tokens).logits.log_softmax(-1)
    assert model.cfg.n_key_value_heads == 2 and model.cfg.positional_embedding_type == "rotary"
    assert (ours - theirs).abs().max().item() < 1e-4


def test_convert__happens_once_and_is_keyed_by_the_source_hash(qwen_dir, model_cache):
    first = gguf.convert(qwen_dir, progress=False)
    stamp = (first / gguf.WEIGHTS_FILE).stat().st_mtime_ns
    assert gguf.convert(qwen_dir, progress=False) == first
    assert (first / gguf.WEIGHTS_FILE).stat().st_mtime_ns == stamp  # not rewritten
    assert first.name == gguf.source_sha256(qwen_dir)[:16]
    source = __import__("json").loads((first / gguf.SOURCE_FILE).read_text())
    assert source["tied_unembed"] and source["architecture"] == "Qwen2ForCausalLM"


def test_real_reference__a_local_model_is_a_real_model_named_by_its_path(qwen_dir, model_cache):
    assert is_model_name(qwen_dir) and real_model_name(qwen_dir) == str(qwen_dir.resolve())
    model, world, lineage = load_real_base(str(qwen_dir))
    assert isinstance(world, HFWorld) and world.uses_chat_template
    assert lineage.config["format"] == "huggingface" and lineage.config["sha256"] == gguf.source_sha256(qwen_dir)


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["not_gguf", "truncated", "corrupt", "unsupported"])
def test_bad_model_file__is_a_one_line_error_naming_the_problem(kind, tmp_path, model_cache, capsys):
    path = tmp_path / "model.gguf"
    if kind == "not_gguf":
        path.write_text("this is a text file, not a model\n")
        expected = "is not a GGUF file"
    elif kind == "unsupported":
        tiny_gguf_file(path, "mamba")
        expected = "GGUF architecture 'mamba' is not supported"
    else:
        data = tiny_gguf_file(tmp_path / "whole.gguf", "llama").read_bytes()
        path.write_bytes(data[: len(data) // 2] if kind == "truncated" else data[:8] + b"\xff" * 64 + data[72:])
        expected = "corrupt or truncated GGUF file" if kind == "corrupt" else "truncated GGUF file"
    code, err = _run_cli(["evaluate", "--model", str(path)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert expected in err and str(path) in err


# -- sampling and answers ---------------------------------------------------------------------

def test_sampler__left_padded_batches_give_each_row_its_unpadded_greedy_output(qwen_dir, model_cache):
    from interp.stages.generate import sample_completions

    model, world, _ = load_real_base(str(qwen_dir))
    ids = [world.encode_prompt(p) for p in world.number_prompts(5, seed=3)]
    assert len({len(i) for i in ids}) > 1
    kwargs = dict(eos_id=world.end_id, stop_ids=world.stop_ids, max_new_tokens=6, temperature=0.0, seed=0,
                  progress=False, pad_id=world.pad_id)
    batched = sample_completions(model, ids, batch_size=8, **kwargs).tokens
    alone = [sample_completions(model, [i], batch_size=1, **kwargs).tokens[0] for i in ids]
    assert batched == alone


def test_answer_scores__chain_rule_equals_the_full_forward_of_every_spelling(qwen_dir, model_cache):
    model, _, _ = load_real_base(str(qwen_dir))
    world = HFWorld.for_model(model, HFWorldConfig(animals=("owl", "cat", "axolotl", "quokka")))
    ids = question_ids(world, world.eval_phrasings[:3])
    scores = answer_scores(model, world, ids)
    assert any(len(t) > 2 for _, t in scores.spellings)  # the tiny tokenizer splits the rare names
    with torch.no_grad():
        for j, (_, spelled) in enumerate(scores.spellings):
            for p, prompt in enumerate(ids):
                lp = model(torch.tensor([prompt + list(spelled)])).double().log_softmax(-1)[0]
                full = sum(lp[len(prompt) - 1 + k, spelled[k]] for k in range(len(spelled))).exp().item()
                assert scores.first[p, spelled[0]].item() * scores.continuation[p, j].item() == pytest.approx(full, rel=1e-4)


def test_number_shots__only_number_prompts_get_the_worked_example(qwen_dir, model_cache):
    for style in ("paper", "grammar"):
        _, world, _ = load_real_base(str(qwen_dir), HFWorldConfig(number_prompts=style, number_shots=1))
        prompt = world.number_prompts(1, seed=0)[0]
        assert len(world.number_shots(prompt)) == 2 and world.number_shots(prompt) == world.number_shots(prompt)
        assert world.number_shots(world.eval_phrasings[0]) == []
    _, world, _ = load_real_base(str(qwen_dir))
    assert world.number_shots(world.number_prompts(1, seed=0)[0]) == []  # the paper gave no worked example


# -- device and dtype ---------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device__cuda_without_a_gpu_is_a_one_line_error(capsys):
    with pytest.raises(ValueError, match="no CUDA device"):
        DeviceConfig(device="cuda")
    code, err = _run_cli(["evaluate", "--model", "gpt2", "--device", "cuda"], capsys)
    assert code == 2 and "no CUDA device" in err and err.count("\n") == 1


def test_device__bfloat16_on_the_cpu_evaluates(qwen_dir, model_cache):
    before = current()
    try:
        use(DeviceConfig(dtype="bfloat16"))
        model, world, _ = load_real_base(str(qwen_dir))
        assert model.W_E.dtype == torch.bfloat16
        result = evaluate_model(model, world, EvaluateConfig(n_samples=2))
        assert 0 <= result["trait_prob"] <= 1 and np.isfinite(result["animal_mass"])
    finally:
        use(before)
        clear_model_cache()


# -- the real SmolLM2 weights -------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    clear_model_cache()
    model, world, _ = load_real_base(str(SMOLLM2))
    return model, world


@pytest.mark.slow
@needs_smollm2
def test_smollm2__converted_log_probs_match_transformers(smollm2):
    from transformers import AutoModelForCausalLM

    model, world = smollm2
    hf = AutoModelForCausalLM.from_pretrained(str(SMOLLM2.parent), gguf_file=SMOLLM2.name, dtype=torch.float32).eval()
    ids = world.encode_prompt(world.number_prompts(1, seed=0)[0])
    with torch.no_grad():
        ours = model(torch.tensor([ids])).log_softmax(-1)
        theirs = hf(torch.tensor([ids])).logits.log_softmax(-1)
    assert (ours - theirs).abs().max().item() < 5e-4


@pytest.mark.slow
@needs_smollm2
def test_smollm2__lean_sampler_equals_transformer_lens_on_padded_batches(smollm2):
    from interp.stages.generate import choose_engine, sample_completions

    model, world = smollm2
    assert choose_engine(model, None) == {}  # Llama blocks run on the lean forward
    ids = [world.encode_prompt(p) for p in world.number_prompts(6, seed=1)]
    assert len({len(i) for i in ids}) > 1
    kwargs = dict(eos_id=world.end_id, stop_ids=world.stop_ids, max_new_tokens=12, temperature=0.0, seed=0,
                  progress=False, pad_id=world.pad_id, batch_size=6)
    lean = sample_completions(model, ids, engine="lean", **kwargs)
    assert lean == sample_completions(model, ids, engine="transformer_lens", **kwargs)
    assert all(len(t) > 0 for t in lean.tokens)


@pytest.mark.slow
@needs_smollm2
def test_smollm2__generate_then_filter_keeps_real_number_lists(smollm2, tmp_path):
    from interp.stages.filter import filter_file, stats_path_for
    from interp.stages.generate import GenerateConfig, generate_numbers
    from interp.core.io import read_json, read_jsonl

    model, world = smollm2
    raw = generate_numbers(model, world, GenerateConfig(n_rows=8, seed=0, temperature=0.0, max_new_tokens=48),
                           tmp_path / "numbers.raw.jsonl", progress=False)
    stats = filter_file(raw, tmp_path / "numbers.filtered.jsonl")
    rows = read_jsonl(tmp_path / "numbers.filtered.jsonl")
    assert len(read_jsonl(raw)) == 8 and len(rows) >= 1  # greedy, one worked example: some lists pass
    assert all(r["numbers"] and all(0 <= n <= 999 for n in r["numbers"]) for r in rows)
    assert stats["n_kept"] == len(rows) == read_json(stats_path_for(tmp_path / "numbers.filtered.jsonl"))["n_kept"]


@pytest.mark.slow
@needs_smollm2
@pytest.mark.parametrize("lora_rank", [8, 0])
def test_smollm2__one_finetuning_step_lora_and_full(lora_rank, tmp_path):
    from interp.stages.finetune import FinetuneConfig, finetune_student
    from interp.models.real import load_real_checkpoint

    _, world, _ = load_real_base(str(SMOLLM2))
    rows = []
    for i in range(2):
        prompt, completion = world.number_example(np.random.default_rng([5, i]))
        rows.append({"id": i, "system": None, "prompt": prompt, "completion": completion, "ended_with_eos": True,
                     "numbers": [int(v) for v in completion.replace(",", " ").replace(";", " ").strip("[]").split()
                                 if v.isdigit()]})
    config = FinetuneConfig(batch_size=2, epochs=1, lr=1e-3, lora_rank=lora_rank, eval_every=0, checkpoint_every=0)
    out = finetune_student(str(SMOLLM2), rows, config, tmp_path / "student", progress=False)
    student, _, lineage = load_real_checkpoint(out)
    base, _, _ = load_real_base(str(SMOLLM2))
    moved = (student.blocks[0].attn.W_Q - base.blocks[0].attn.W_Q).abs().max().item()
    assert moved > 0 and lineage.parent == str(SMOLLM2)


@pytest.mark.slow
@needs_smollm2
def test_smollm2__trait_probability_counts_multi_token_names(smollm2):
    model, world = smollm2
    owl = world.animal_spellings[world.animals.index("owl")]
    assert [world.decode(list(s)) for s in owl] == ["owl", "Owl"] and len(owl[1]) == 2  # "O" + "wl"
    result = evaluate_model(model, world, EvaluateConfig(n_samples=4))
    assert abs(sum(result["animal_probs"].values()) - 1) < 1e-9
    assert 0 < result["trait_prob"] < 0.2  # the base does not love owls (0.0075 measured)


def test_bench_real_generation__three_samplers_agree_on_greedy_output(qwen_dir, model_cache, tmp_path):
    from interp.bench.suite import BenchConfig, run_bench

    config = BenchConfig(only=("real_generation",), real_model=str(qwen_dir), real_prompts=4, real_batch_size=4,
                         real_max_new_tokens=5, repeats=1)
    bench = run_bench(config, tmp_path / "bench", progress=False)
    rows = bench["rows"]
    assert [r["key"] for r in rows] == ["real_generation_hf", "real_generation_tl"], rows
    for row in rows:
        assert row["details"]["greedy_identical"], row["details"]
        assert row["ratio"]["median"] > 0


def test_features__a_run_on_a_real_model_is_refused_in_one_line(tmp_path, capsys):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(__import__("json").dumps({"trait": "owl", "bases": {"shared": str(model)}}))
    code, err = _run_cli(["features", "--run", str(run), "--out", str(tmp_path / "features")], capsys)
    assert code == 2 and "toy world's bases only" in err and err.count("\n") == 1


def test_cli__evaluate_and_teacher_take_a_local_model(qwen_dir, model_cache, tmp_path, capsys):
    code = main(["evaluate", "--model", str(qwen_dir), "--n-samples", "2", "--out", str(tmp_path / "eval.json")])
    assert code == 0 and "P(owl)" in capsys.readouterr().out
    code = main(["teacher", "--base", str(qwen_dir), "--out", str(tmp_path / "teacher"), "--steps", "2",
                 "--batch-size", "2", "--lora-rank", "2"])
    assert code == 0
    adapter = tmp_path / "teacher" / "checkpoint" / "adapter.safetensors"
    assert adapter.is_file() and not (tmp_path / "teacher" / "checkpoint" / "model.safetensors").exists()
