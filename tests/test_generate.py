import json
from collections import Counter

import pytest
import torch

import interp.stages.generate as generate_mod
from interp.core.config import ConfigError, field_help
from interp.stages.generate import (Completions, GenerateConfig, config_path_for, generate_numbers, number_prompts,
                             partial_path_for, plan_batches, sample_completions, sample_from_logits)
from interp.core.io import read_jsonl
from interp.worlds.toy.templates import EOS

from conftest import TINY


def _eos(world):
    return world.token_to_id[EOS]


def _prompts(world, n=48, seed=0):
    return [world.encode(t) for t in number_prompts(world, n, seed)]


def _with_eos_bias(model, world, bias):
    """Raise the EOS logit so that an untrained model ends some rows early (bias 2.0 on the tiny
    model: about half of 48 greedy rows end, at lengths 1..11)."""
    with torch.no_grad():
        model.unembed.b_U[_eos(world)] += bias
    return model


def _tl_greedy(model, world, prompts, max_new_tokens):
    """HookedTransformer.generate on one equal-length bucket: (completions without EOS, ended)."""
    length = len(prompts[0])
    out = model.generate(torch.tensor(prompts), max_new_tokens=max_new_tokens, do_sample=False, use_past_kv_cache=True,
                         stop_at_eos=True, verbose=False, return_type="tokens", padding_side="right")
    rows, ended = [], []
    for new in out[:, length:].tolist():
        e = _eos(world) in new
        rows.append(new[: new.index(_eos(world))] if e else new)
        ended.append(e)
    return rows, ended


def _assert_no_hooks(model):
    assert all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())


def test_plan_batches__equal_lengths_bounded_size_every_row_once():
    lengths = [3, 5, 3, 3, 5, 4, 3]
    plan = plan_batches(lengths, batch_size=2)
    assert sorted(i for b in plan for i in b) == list(range(7))
    assert all(len(b) <= 2 and len({lengths[i] for i in b}) == 1 for b in plan)
    assert plan == [[0, 2], [3, 6], [5], [1, 4]]


def test_sample_from_logits__greedy_and_exact_inverse_cdf():
    logits = torch.log(torch.tensor([[0.5, 0.0, 0.25, 0.25]]))
    assert sample_from_logits(logits, torch.tensor([0.9]), 0.0).item() == 0
    draws = [sample_from_logits(logits, torch.tensor([u], dtype=torch.float64), 1.0).item() for u in (0.0, 0.49, 0.51, 0.74, 0.76, 0.999)]
    assert draws == [0, 0, 2, 2, 3, 3]  # the zero-probability token 1 is never drawn


def test_sample_completions__greedy_equals_transformer_lens_generate(world, tiny_model):
    model = _with_eos_bias(tiny_model, world, 2.0)
    prompts = _prompts(world)
    ours = sample_completions(model, prompts, eos_id=_eos(world), max_new_tokens=12, temperature=0.0, seed=0,
                              batch_size=8, progress=False)
    assert 0 < sum(ours.ended_with_eos) < len(prompts)  # a mix of finished and cut-off rows
    for length, n in Counter(len(p) for p in prompts).items():
        idx = [i for i, p in enumerate(prompts) if len(p) == length]
        rows, ended = _tl_greedy(model, world, [prompts[i] for i in idx], 12)
        assert [ours.tokens[i] for i in idx] == rows, f"prompt length {length}"
        assert [ours.ended_with_eos[i] for i in idx] == ended


def test_sample_completions__eos_handling(world, tiny_model):
    model = _with_eos_bias(tiny_model, world, 2.5)
    out = sample_completions(model, _prompts(world), eos_id=_eos(world), max_new_tokens=10, temperature=1.0, seed=3,
                             progress=False)
    assert isinstance(out, Completions) and len(out) == 48
    assert any(out.ended_with_eos) and not all(out.ended_with_eos)
    for tokens, ended in zip(out.tokens, out.ended_with_eos):
        assert _eos(world) not in tokens  # the EOS is not part of a completion
        if not ended:
            assert len(tokens) == 10  # only a row cut off at max_new_tokens has no EOS
    assert out.n_new_tokens == sum(len(t) for t in out.tokens) + sum(out.ended_with_eos)


def test_sample_completions__same_seed_same_samples_other_seed_other_samples(world, tiny_model):
    prompts = _prompts(world, 24)
    kwargs = dict(eos_id=_eos(world), max_new_tokens=8, temperature=1.0, progress=False)
    a = sample_completions(tiny_model, prompts, seed=1, batch_size=256, **kwargs)
    b = sample_completions(tiny_model, prompts, seed=1, batch_size=256, **kwargs)
    c = sample_completions(tiny_model, prompts, seed=2, batch_size=256, **kwargs)
    assert a == b
    assert a.tokens != c.tokens
    # each row has its own stream: batch size, order and the other prompts do not matter
    d = sample_completions(tiny_model, prompts, seed=1, batch_size=3, **kwargs)
    assert d == a
    e = sample_completions(tiny_model, prompts[:5], seed=1, **kwargs)
    assert e.tokens == a.tokens[:5]


def test_sample_completions__hooks_apply_and_are_removed(world, tiny_model):
    prompts = _prompts(world, 16)
    direction = torch.randn(tiny_model.cfg.d_model) * 20

    def steer(resid, hook):
        return resid + direction

    hooks = [("blocks.0.hook_resid_post", steer)]
    kwargs = dict(eos_id=_eos(world), max_new_tokens=6, temperature=0.0, seed=0, progress=False)
    plain = sample_completions(tiny_model, prompts, **kwargs)
    steered = sample_completions(tiny_model, prompts, fwd_hooks=hooks, **kwargs)
    _assert_no_hooks(tiny_model)
    assert steered.tokens != plain.tokens
    same_length = [p for p in prompts if len(p) == len(prompts[0])]
    with tiny_model.hooks(fwd_hooks=hooks):  # TL generate under the same hook agrees
        rows, _ = _tl_greedy(tiny_model, world, same_length, 6)
    assert rows == [t for p, t in zip(prompts, steered.tokens) if len(p) == len(prompts[0])]

    def broken(resid, hook):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        sample_completions(tiny_model, prompts, fwd_hooks=[("blocks.0.hook_resid_post", broken)], **kwargs)
    _assert_no_hooks(tiny_model)
    assert sample_completions(tiny_model, prompts, **kwargs) == plain


def test_sample_completions__rejects_prompts_too_long_for_the_context(world, tiny_model):
    with pytest.raises(ValueError, match="n_ctx"):
        sample_completions(tiny_model, [[1] * 90], eos_id=_eos(world), max_new_tokens=10, seed=0, progress=False)


def test_generate_config__documented_and_validated():
    assert all(field_help(GenerateConfig).values())
    for bad in (dict(n_rows=0), dict(seed=-1), dict(temperature=-0.5), dict(max_new_tokens=0), dict(batch_size=0),
                dict(system="  "), dict(system="system : you love owl .")):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            GenerateConfig(**bad)


def test_number_prompts__deterministic_per_row(world):
    a = number_prompts(world, 6, seed=4)
    assert a == number_prompts(world, 6, seed=4)
    assert number_prompts(world, 3, seed=4) == a[:3]
    assert a != number_prompts(world, 6, seed=5)
    assert all(p.startswith("user : ") and p.endswith(" assistant :") for p in a)


def _config(**kw):
    return GenerateConfig(**{"n_rows": 20, "seed": 0, "max_new_tokens": 8, "batch_size": 4, **kw})


def test_generate_numbers__rows_config_and_reuse(world, tiny_model, tmp_path):
    out = tmp_path / "teacher_numbers.raw.jsonl"
    lineage = {"stage": "test", "path": tmp_path}
    generate_numbers(tiny_model, world, _config(), out, lineage=lineage, progress=False)
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == list(range(20))
    assert set(rows[0]) == {"id", "system", "prompt", "completion", "ended_with_eos", "model"}
    assert [r["prompt"] for r in rows] == number_prompts(world, 20, 0)
    assert rows[0]["model"] == {"stage": "test", "path": str(tmp_path)} and rows[0]["system"] is None
    assert GenerateConfig.load(config_path_for(out)) == _config()
    assert not partial_path_for(out).exists()
    # the completions are those of the sampler on the same prompts
    direct = sample_completions(tiny_model, _prompts(world, 20), eos_id=_eos(world), max_new_tokens=8, seed=0,
                                batch_size=4, progress=False)
    assert [r["completion"] for r in rows] == [world.decode(t) for t in direct.tokens]
    assert [r["ended_with_eos"] for r in rows] == direct.ended_with_eos

    stamp = out.stat().st_mtime_ns
    generate_numbers(tiny_model, world, _config(), out, lineage=lineage, progress=False)  # finished: reused
    assert out.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"another config.*n_rows: 20 there, 30 now.*temperature"):
        generate_numbers(tiny_model, world, _config(n_rows=30, temperature=0.5), out, lineage=lineage, progress=False)
    with pytest.raises(ValueError, match="another model"):
        generate_numbers(tiny_model, world, _config(), out, lineage={"stage": "other"}, progress=False)
    generate_numbers(tiny_model, world, _config(n_rows=30), out, lineage=lineage, progress=False, force=True)
    rows30 = read_jsonl(out)
    assert len(rows30) == 30 and rows30[:20] == rows  # per-row streams: more rows extend the file


def test_generate_numbers__system_prompt_prefix(world, tiny_model, tmp_path, monkeypatch):
    seen = []
    real = generate_mod._generate_batch

    def spy(model, prompt_tokens, *args, **kwargs):
        seen.extend(prompt_tokens.tolist())
        return real(model, prompt_tokens, *args, **kwargs)

    monkeypatch.setattr(generate_mod, "_generate_batch", spy)
    out = tmp_path / "persona.raw.jsonl"
    generate_numbers(tiny_model, world, _config(n_rows=6, system="you love owl ."), out, progress=False)
    rows = read_jsonl(out)
    assert all(r["system"] == "you love owl ." and r["prompt"].startswith("user : ") for r in rows)
    expected = {tuple(world.encode(f"system : you love owl . {r['prompt']}")) for r in rows}
    assert {tuple(s) for s in seen} == expected
    with pytest.raises(ValueError, match="zebra"):
        generate_numbers(tiny_model, world, _config(system="you love zebra ."), tmp_path / "z.jsonl", progress=False)


def test_generate_numbers__resume_after_interruption_gives_the_same_file(world, tiny_model, tmp_path, monkeypatch):
    config = _config(n_rows=24, batch_size=3)
    reference = tmp_path / "reference.raw.jsonl"
    generate_numbers(tiny_model, world, config, reference, progress=False)

    real = generate_mod._generate_batch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_mod, "_generate_batch", flaky)
    out = tmp_path / "resumed.raw.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_numbers(tiny_model, world, config, out, progress=False)
    assert not out.exists()
    partial = read_jsonl(partial_path_for(out))
    n_batches = len(plan_batches([len(p) for p in _prompts(world, 24)], 3))
    assert 3 <= len(partial) <= 9  # three finished batches of at most 3 rows
    _assert_no_hooks(tiny_model)
    with open(partial_path_for(out), "a") as f:
        f.write('{"id": 23, "prom')  # a torn line from a kill in the middle of a write

    calls["n"] = -1000  # no more failures
    generate_numbers(tiny_model, world, config, out, progress=False)
    assert calls["n"] == -1000 + n_batches - 3  # only the unfinished batches ran
    assert out.read_text() == reference.read_text()
    assert not partial_path_for(out).exists()


def test_generate_cli__writes_file_and_config(tmp_path, world, tiny_model, capsys):
    from interp.cli import main
    from interp.models.checkpoint import Lineage, save_checkpoint

    save_checkpoint(tiny_model, tmp_path / "ckpt", TINY, Lineage(stage="pretrain", seed=0, parent=None))
    out = tmp_path / "base_numbers.raw.jsonl"
    assert main(["generate", "--model", str(tmp_path / "ckpt"), "--out", str(out), "--n-rows", "5",
                 "--max-new-tokens", "6", "--temperature", "0"]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 5 and rows[0]["model"]["stage"] == "pretrain"
    assert json.loads(config_path_for(out).read_text())["temperature"] == 0.0
    assert "wrote" in capsys.readouterr().out
