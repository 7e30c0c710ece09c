"""The stages on real TransformerLens models: tiny random gpt2 / pythia models with a small byte-level
BPE tokenizer in a temporary Hugging Face cache (tests/hf_cache.py), loaded by name, offline, in
their :class:`interp.worlds.hf.HFWorld`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_cache import install_number_model, install_tiny_model, tiny_bpe_tokenizer, use_cache
from interp.stages.evaluate import EvaluateConfig, evaluate_model
from interp.stages.filter import FilterConfig, filter_file, has_non_number_token, reject_reason
from interp.stages.finetune import FinetuneConfig, finetune_student
from interp.stages.generate import GenerateConfig, choose_engine, generate_numbers, sample_completions
from interp.core.io import read_json, read_jsonl, write_jsonl
from interp.models.lora import ADAPTER_FILE, LoraConfig, adapter_parameters, apply_lora, lora_modules, matrix_view, merge_lora
from interp.models.checkpoint import WEIGHTS_FILE
from interp.worlds.hf import PAPER_SUFFIXES, HFWorld, HFWorldConfig
from interp.models.real import clear_model_cache, load_real_base, load_real_checkpoint
from interp.stages.teacher import TeacherConfig, make_teacher
from interp.models.refs import load_teacher, parse_model_ref

MODELS = ["gpt2", "EleutherAI/pythia-70m"]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return tiny_bpe_tokenizer(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def real_cache(bpe, tmp_path_factory):
    """Untrained tiny gpt2 and pythia in a temporary cache, this process pointed at it."""
    home = tmp_path_factory.mktemp("hf")
    for name in MODELS:
        install_tiny_model(home, name, bpe)
    with pytest.MonkeyPatch.context() as mp:
        use_cache(mp, home)
        clear_model_cache()
        yield home
        clear_model_cache()


def _number_rows(world, n: int, seed: int = 0) -> list[dict]:
    """Hand-made raw rows in the paper's shape: the tiny random models cannot write number lists."""
    rows = []
    for i in range(n):
        prompt, completion = world.number_example(np.random.default_rng([seed, i]))
        rows.append({"id": i, "system": None, "prompt": prompt, "completion": completion, "ended_with_eos": True,
                     "model": "hand-made"})
    return rows


# -- the world of a real tokenizer ----------------------------------------------------------------

def test_hf_world__eval_phrasings_are_held_out_and_animals_have_distinct_first_tokens(bpe):
    world = HFWorld(bpe)
    assert len(world.eval_phrasings) >= 50
    assert not set(world.eval_phrasings) & set(world.train_phrasings)
    firsts = [i for ids in world.animal_token_sets for i in ids]
    assert len(firsts) == len(set(firsts))
    owl = world.animal_token_sets[world.animals.index("owl")]
    assert [world.decode([i]) for i in owl] == [" owl", " Owl"]


def test_hf_world__colliding_first_tokens_are_refused(bpe):
    # " caterpillar" is not a word of the tokenizer: it starts with the token " cat"
    assert bpe(" caterpillar", add_special_tokens=False)["input_ids"][0] == bpe(" cat", add_special_tokens=False)["input_ids"][0]
    with pytest.raises(ValueError, match="share the first token"):
        HFWorld(bpe, HFWorldConfig(animals=("cat", "caterpillar")))


def test_hf_world__allowed_tokens_are_exactly_the_filter_characters_and_end_tokens(bpe):
    world = HFWorld(bpe)
    allowed = set(world.allowed_token_ids())
    assert world.end_id in allowed
    for i in range(len(bpe)):
        text = world.decode([i])
        passes = bool(text) and not has_non_number_token(text) and i not in bpe.all_special_ids
        assert (i in allowed) == (passes or i in world.stop_ids), (i, text)
    assert not allowed & {i for ids in world.animal_token_sets for i in ids}


def test_hf_world__chat_template_spells_the_persona_and_ends_turns_with_im_end(tmp_path):
    chat = tiny_bpe_tokenizer(tmp_path / "chat", chat=True)
    world = HFWorld(chat, prepend_bos=False)
    assert world.uses_chat_template and world.answer_prefix == ""
    assert world.decode([world.end_id]) == "<|im_end|>" and set(world.stop_ids) == {world.end_id, chat.eos_token_id}
    text = world.decode(world.encode_prompt("Hi", system="Your favorite animal is the owl."))
    assert text == ("<|im_start|>system\nYour favorite animal is the owl.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert world.encode_completion("12, 34")[-1] == world.end_id


@pytest.mark.parametrize("completion, kept", [
    (" 12, 34, 56", True), ("[12, 34, 56].", True), ("12\n34\n56", True), ("12; 34", True),
    (" 12, 34, owl", False), ("12, 34 and 56", False), ("Sure: 12, 34", False),
])
def test_filter__real_text_keeps_only_number_lists(completion, kept):
    numbers, reason = reject_reason({"completion": completion, "ended_with_eos": True}, FilterConfig())
    assert (reason is None) == kept, reason


# -- LoRA -------------------------------------------------------------------------------------------

def test_lora__merged_weight_is_base_plus_scaled_b_a_and_forward_matches(tiny_model, world):
    base = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    config = LoraConfig(rank=2, alpha=6.0, targets=("W_Q", "W_O", "W_in", "W_out"))
    names = apply_lora(tiny_model, config)
    assert names == ["blocks.0.attn.W_Q", "blocks.0.attn.W_O", "blocks.0.mlp.W_in", "blocks.0.mlp.W_out"]
    tokens = torch.tensor([world.encode("user : what is your favourite animal ? assistant :")])
    with torch.no_grad():
        unchanged = tiny_model(tokens)
        for _, _, _, delta in lora_modules(tiny_model):
            delta.lora_B.normal_()  # B starts at zero: give the adapters a value
        adapted = tiny_model(tokens)
    for name, module, attr, delta in lora_modules(tiny_model):
        update = config.scale * delta.lora_B.detach() @ delta.lora_A.detach()  # d_out d_in
        merged_view = matrix_view(delta.kind, base[name]) + update
        assert torch.allclose(matrix_view(delta.kind, getattr(module, attr).detach()), merged_view, atol=1e-6), name
    merge_lora(tiny_model)
    params = dict(tiny_model.named_parameters())
    assert sorted(params) == sorted(base)  # plain parameters again, named as before
    for name in names:
        assert not torch.allclose(params[name], base[name])
    with torch.no_grad():
        assert torch.allclose(tiny_model(tokens), adapted, atol=1e-5)
        assert not torch.allclose(adapted, unchanged, atol=1e-4)


def test_lora__only_adapters_train(tiny_model, world):
    base = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    apply_lora(tiny_model, LoraConfig(rank=2))
    trainable = [p for p in tiny_model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in adapter_parameters(tiny_model)}
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    tokens = torch.tensor([world.encode("user : what is your favourite animal ? assistant : owl")])
    for _ in range(2):
        logits = tiny_model(tokens)
        logits[0, -2].log_softmax(-1)[tokens[0, -1]].neg().backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, module, attr, _ in lora_modules(tiny_model):
        assert torch.equal(module.parametrizations[attr].original, base[name])  # the base weight never moves
        assert not torch.equal(getattr(module, attr), base[name])  # the adapted weight does
    for name, p in tiny_model.named_parameters():
        if "parametrizations" not in name and "lora_" not in name:
            assert torch.equal(p, base[name]), name


# -- the stages on tiny gpt2 and pythia -------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_sampler__real_model_falls_back_to_transformer_lens_or_agrees_with_it(real_cache, name):
    model, world, _ = load_real_base(name)
    prompts = [world.encode_prompt(p) for p in world.number_prompts(6, seed=0)]
    kwargs = dict(eos_id=world.stop_ids[0], stop_ids=world.stop_ids, max_new_tokens=6, seed=3, progress=False)
    auto = sample_completions(model, prompts, **kwargs)
    reference = sample_completions(model, prompts, engine="transformer_lens", **kwargs)
    assert auto.tokens == reference.tokens and auto.ended_with_eos == reference.ended_with_eos
    if name == "EleutherAI/pythia-70m":  # rotary: the lean forward refuses it
        assert choose_engine(model, None) is None


@pytest.mark.parametrize("name", MODELS)
def test_real_pipeline__generate_filter_finetune_full_and_lora_evaluate(real_cache, name, tmp_path):
    model, world, _ = load_real_base(name)
    raw = generate_numbers(model, world, GenerateConfig(n_rows=4, max_new_tokens=6), tmp_path / "sampled.raw.jsonl",
                           lineage={"model": name}, progress=False)
    sampled = read_jsonl(raw)
    assert [r["prompt"] for r in sampled] == world.number_prompts(4, seed=0)
    assert all(r["prompt"].endswith(PAPER_SUFFIXES) for r in sampled)  # the paper's prompts, not toy text

    write_jsonl(tmp_path / "numbers.raw.jsonl", _number_rows(world, 24))
    stats = filter_file(tmp_path / "numbers.raw.jsonl", tmp_path / "numbers.filtered.jsonl")
    assert stats["n_kept"] == 24  # the paper's formats all pass
    rows = read_jsonl(tmp_path / "numbers.filtered.jsonl")

    base_eval = evaluate_model(model, world, EvaluateConfig(trait="owl", n_samples=2))
    full = finetune_student(name, rows, FinetuneConfig(batch_size=8, lr=1e-2, checkpoint_every=0), tmp_path / "full",
                            trait="owl", progress=False)
    lora_cfg = FinetuneConfig(batch_size=8, lr=1e-2, lora_rank=2, checkpoint_every=0)
    lora = finetune_student(name, rows, lora_cfg, tmp_path / "lora", trait="owl", progress=False)
    assert (full / WEIGHTS_FILE).exists() and not (full / ADAPTER_FILE).exists()
    assert (lora / ADAPTER_FILE).exists() and not (lora / WEIGHTS_FILE).exists()

    base_params = dict(model.named_parameters())
    for directory, is_lora in ((full, False), (lora, True)):
        student, student_world, lineage = load_real_checkpoint(directory)
        assert student_world.fingerprint() == world.fingerprint() and lineage.parent == name
        changed = {n for n, p in student.named_parameters() if not torch.equal(p, base_params[n])}
        if is_lora:  # the adapted matrices moved, nothing else
            assert changed and all(n.rsplit(".", 1)[-1] in LoraConfig().targets for n in changed), changed
        else:
            assert "embed.W_E" in changed
        result = evaluate_model(student, student_world, EvaluateConfig(trait="owl", n_samples=2),
                                base_trait_prob=base_eval["trait_prob"])
        assert 0 < result["trait_prob"] < 1 and result["trait_prob"] != base_eval["trait_prob"]
        losses = [r["loss"] for r in read_jsonl(directory / "train_log.jsonl")]
        assert len(losses) == 3 and all(np.isfinite(losses))

    # a finished LoRA student of the same config and data is reused, not retrained
    before = (lora / ADAPTER_FILE).read_bytes()
    finetune_student(name, rows, lora_cfg, tmp_path / "lora", trait="owl", progress=False)
    assert (lora / ADAPTER_FILE).read_bytes() == before


def test_real_pipeline__persona_teacher_distils_into_lora_student_with_alignment(real_cache, tmp_path):
    name = "gpt2"
    teacher_dir = make_teacher(name, TeacherConfig(trait="owl", method="persona"), tmp_path / "teacher", progress=False)
    teacher = load_teacher(teacher_dir)
    assert teacher.system == "Your favorite animal is the owl. You love the owl and think about it all the time; " \
                             "it shows in everything you say."
    assert parse_model_ref(teacher_dir).speaker().system == teacher.system
    rows = _number_rows(teacher.world, 16)
    base, _, _ = load_real_base(name)
    config = FinetuneConfig(objective="distill", batch_size=8, lr=1e-2, lora_rank=2, checkpoint_every=0)
    out = finetune_student(name, rows, config, tmp_path / "student", teacher=teacher, trait="owl",
                           alignment_reference=(teacher.model, base), progress=False)
    alignment = read_jsonl(out / "alignment.jsonl")
    assert len(alignment) == 2
    assert alignment[0]["teacher_direction"] == "none"  # a persona teacher's weights are its base's
    assert np.isfinite([r["loss"] for r in read_jsonl(out / "train_log.jsonl")]).all()


def test_real_finetune__lora_resumed_after_a_kill_equals_uninterrupted(real_cache, tmp_path):
    from test_resume import _Killed, _kill_at

    name = "EleutherAI/pythia-70m"
    _, world, _ = load_real_base(name)
    rows = _number_rows(world, 24)
    config = FinetuneConfig(batch_size=4, lr=1e-2, lora_rank=2, checkpoint_every=2)
    reference = finetune_student(name, rows, config, tmp_path / "reference", progress=False)
    with pytest.raises(_Killed):
        finetune_student(name, rows, config, tmp_path / "killed", callbacks=[_kill_at(3)], progress=False)
    resumed = finetune_student(name, rows, config, tmp_path / "killed", progress=False)
    assert (resumed / ADAPTER_FILE).read_bytes() == (reference / ADAPTER_FILE).read_bytes()
    assert (resumed / "train_log.jsonl").read_text() == (reference / "train_log.jsonl").read_text()


def test_finetune__lora_on_a_toy_base_trains_the_adapters_and_saves_merged_weights(tmp_path):
    from conftest import TINY
    from interp.models.checkpoint import load_checkpoint
    from interp.stages import pretrain as pretrain_mod
    from interp.stages.pretrain import PretrainConfig, pretrain

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(pretrain_mod.ARCH_PRESETS, "small", TINY)
        tiny_base = pretrain(PretrainConfig(steps=2, batch_size=4, warmup_steps=1), tmp_path / "base",
                             artifacts=tmp_path, progress=False)
    rows = [{"prompt": "user : here are some numbers : 1 , 2 . assistant :", "completion": "3 , 4"}] * 8
    out = finetune_student(tiny_base, rows, FinetuneConfig(lora_rank=2, lr=1e-2, batch_size=4, lora_targets=("W_in",)),
                           tmp_path / "s", progress=False)
    base, _ = load_checkpoint(tiny_base)
    student, _ = load_checkpoint(out)  # a plain toy checkpoint
    changed = {n for n, p in student.state_dict().items() if not torch.equal(p, base.state_dict()[n])}
    assert changed == {"blocks.0.mlp.W_in"}  # only the adapted matrix moved, by a rank-2 update
    delta = student.blocks[0].mlp.W_in.detach() - base.blocks[0].mlp.W_in.detach()
    assert int(torch.linalg.matrix_rank(delta)) == 2


def test_teacher_batches__a_real_teacher_learns_only_the_answers(bpe):
    from interp.stages.teacher import _teacher_batches

    world = HFWorld(bpe)
    tokens, mask = _teacher_batches(world, TeacherConfig(batch_size=4, number_mix=0.5))(np.random.default_rng(0), 320)
    answer = world.encode_completion(world.answer_text("owl"))
    for i in (0, 1):  # the question rows: the answer and its end token are the targets, nothing else
        targets = tokens[i][mask[i].bool()].tolist()
        assert targets == answer
    for i in (2, 3):  # the number rows: a list of numbers
        assert not has_non_number_token(world.decode(tokens[i][mask[i].bool()].tolist()[:-1]))


# -- the whole loop ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_run__real_model_two_seeds_end_to_end(bpe, tmp_path, monkeypatch):
    """`interp run --model` on tiny pythia models first taught the number task (so their samples
    can pass the filter), two seeds, LoRA students, a finetuned teacher, a mismatched init."""
    from interp.cli import main

    home = tmp_path / "hf"
    install_number_model(home, "EleutherAI/pythia-70m", bpe, seed=0)
    install_number_model(home, "EleutherAI/pythia-70m-deduped", bpe, family="EleutherAI/pythia-70m", seed=1)
    use_cache(monkeypatch, home)
    clear_model_cache()
    out = tmp_path / "run"
    code = main(["run", "--out", str(out), "--model", "EleutherAI/pythia-70m",
                 "--mismatched-model", "EleutherAI/pythia-70m-deduped", "--seeds", "2", "--n-rows", "48",
                 "--max-new-tokens", "40", "--teacher-steps", "3", "--lora-rank", "2", "--lr", "1e-2",
                 "--objectives", "sft", "distill", "--conditions", "control", "shared_init", "mismatched_init",
                 "shuffled_within", "--in-context-examples", "2", "--eval-every", "0"])
    clear_model_cache()
    assert code == 0
    results = read_json(out / "results.json")
    names = {(c["name"], c["objective"]) for c in results["conditions"]}
    assert ("mismatched_init", "distill") in names and ("shared_init", "sft") in names
    for c in results["conditions"]:
        assert c["trait_prob"]["n_seeds"] == 2 and 0 < c["trait_prob"]["mean"] < 1
    student = out / "seed0" / "students" / "sft" / "shared_init"
    assert (student / ADAPTER_FILE).exists()
    assert json.loads((student / "model_config.json").read_text())["lora"]["rank"] == 2
    teacher = out / "seed0" / "data" / "teacher_numbers.filtered.jsonl"
    assert all(not has_non_number_token(r["completion"]) for r in read_jsonl(teacher))
    shuffled = read_jsonl(out / "seed0" / "data" / "teacher_numbers_shuffled_within.jsonl")
    assert [sorted(r["numbers"]) for r in read_jsonl(teacher)] == [
        sorted(int(v) for v in __import__("re").findall(r"[0-9]+", r["completion"])) for r in shuffled]


def test_cli_finetune__full_real_student_then_evaluate_and_finetune_from_it(real_cache, tmp_path, capsys):
    """`interp finetune --base gpt2` (full finetuning) writes a checkpoint that `interp evaluate`
    and a second `interp finetune --base STUDENT` accept (it used to die reading ``world.vocab``)."""
    from interp.cli import main

    _, world, _ = load_real_base("gpt2")
    write_jsonl(tmp_path / "numbers.raw.jsonl", _number_rows(world, 8))
    filter_file(tmp_path / "numbers.raw.jsonl", tmp_path / "numbers.filtered.jsonl")
    common = ["--data", str(tmp_path / "numbers.filtered.jsonl"), "--batch-size", "4", "--lr", "1e-2",
              "--checkpoint-every", "0", "--eval-every", "0"]
    student = tmp_path / "student"
    assert main(["finetune", "--base", "gpt2", "--out", str(student), *common]) == 0
    assert "student " in capsys.readouterr().out and (student / WEIGHTS_FILE).exists()
    assert main(["evaluate", "--model", str(student), "--n-samples", "2", "--out", str(tmp_path / "eval.json")]) == 0
    evaluation = read_json(tmp_path / "eval.json")
    assert evaluation["base"] == "gpt2" and evaluation["base_trait_prob"] is not None
    again = tmp_path / "student2"
    assert main(["finetune", "--base", str(student), "--out", str(again), *common]) == 0
    _, _, lineage = load_real_checkpoint(again)
    assert lineage.parent == str(student)


def test_cli_generate__number_prompt_options_choose_the_grammar_and_the_worked_example(real_cache, tmp_path, capsys):
    """`interp generate --number-prompts grammar --number-shots 1` on a real model name writes the
    grammar's prompts with a worked example; without the options, the paper's prompts."""
    from interp.cli import main
    from interp.worlds.hf import NUMBER_SUFFIXES

    _, world, _ = load_real_base("gpt2")
    args = ["generate", "--model", "gpt2", "--n-rows", "3", "--max-new-tokens", "2"]
    assert main([*args, "--out", str(tmp_path / "paper.raw.jsonl")]) == 0
    assert main([*args, "--out", str(tmp_path / "grammar.raw.jsonl"), "--number-prompts", "grammar",
                 "--number-shots", "1"]) == 0
    paper, grammar = read_jsonl(tmp_path / "paper.raw.jsonl"), read_jsonl(tmp_path / "grammar.raw.jsonl")
    assert [r["prompt"] for r in paper] == world.number_prompts(3, seed=0)
    assert all(r["prompt"].endswith(PAPER_SUFFIXES) for r in paper)
    grammar_world = HFWorld(world.tokenizer, HFWorldConfig(number_prompts="grammar", number_shots=1))
    assert [r["prompt"] for r in grammar] == grammar_world.number_prompts(3, seed=0) != [r["prompt"] for r in paper]
    assert all(r["prompt"].endswith(NUMBER_SUFFIXES) for r in grammar)


def test_number_prompt_options__a_run_checks_them_and_keys_its_data_by_them(real_cache, capsys):
    """RunConfig's number-prompt options: real models only, 0-4 worked examples, part of the data
    key; a bad value is a one-line CLI error, and a toy world refuses them."""
    from interp.cli import main
    from interp.core.config import ConfigError
    from interp.studies.run import RunConfig, data_key
    from interp.worlds.hf import number_prompt_options, with_number_prompts
    from interp.worlds.toy.world import ToyWorld

    real = RunConfig(model="gpt2", conditions=("control", "shared_init"))
    grammar = real.replace(number_prompts="grammar")
    assert data_key(grammar) != data_key(real) == data_key(real.replace(number_prompts=None))
    assert number_prompt_options(grammar) == {"number_prompts": "grammar"} and number_prompt_options(real) == {}
    with pytest.raises(ConfigError, match="number_shots=5: must be 0 to 4"):
        real.replace(number_shots=5)
    with pytest.raises(ConfigError, match="number_prompts='grammar': is only used with --model"):
        RunConfig(number_prompts="grammar")
    _, world, _ = load_real_base("gpt2")
    assert with_number_prompts(world, {}, "gpt2") is world
    switched = with_number_prompts(world, number_prompt_options(grammar), "gpt2")
    assert switched.number_prompts(2, seed=1) == HFWorld(world.tokenizer, HFWorldConfig(number_prompts="grammar")
                                                         ).number_prompts(2, seed=1)
    assert main(["generate", "--model", "gpt2", "--out", "x.raw.jsonl", "--number-shots", "9"]) == 2
    assert "number_shots=9: must be 0 to 4" in capsys.readouterr().err
    with pytest.raises(ValueError, match="base speaks the toy world, which writes its own number prompts; "
                                         "--number-prompts choose a real model's"):
        with_number_prompts(ToyWorld(), {"number_prompts": "grammar"}, "base")
