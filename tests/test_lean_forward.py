"""The lean cached forward reproduces TransformerLens's forward (logits, hooks) on every model
configuration it accepts, and refuses the ones it does not implement."""

import pytest
import torch

from interp.stages.generate import choose_engine, sample_completions
from interp.stages.lean_forward import LeanCachedForward, lean_hook_names, lean_hooks, lean_unsupported_reason
from interp.models.checkpoint import ModelConfig, build_model
from interp.worlds.toy.templates import EOS


def _randomize(model, seed=0):
    """Random values in every parameter (biases and norm weights too, which start at 0 and 1), so
    that a bias or scale the lean forward forgot shows in the logits."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.3 * noise if name.endswith(".w") else 0.2 * noise)  # norm scales near 1
    return model


def _hooked(cfg_kwargs, tokenizer, seed=0):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(**{"n_layers": 1, "d_model": 32, "n_heads": 4, "d_head": 8, "d_mlp": 64, "n_ctx": 64,
                                     "d_vocab": len(tokenizer), "act_fn": "gelu", **cfg_kwargs})
    torch.manual_seed(seed)
    return HookedTransformer(cfg, tokenizer=tokenizer).eval()


def _lean_logits_at_every_position(model, tokens, n_prompt, hooks=None):
    """The lean forward over ``tokens``: the prompt (first ``n_prompt`` positions) in one call, then
    one token per call; returns the logits at positions n_prompt-1 .. end, ``[batch, pos, d_vocab]``."""
    with torch.inference_mode():
        forward = LeanCachedForward(model, tokens.shape[0], tokens.shape[1], hooks)
        logits = [forward(tokens[:, :n_prompt])]
        logits += [forward(tokens[:, p:p + 1]) for p in range(n_prompt, tokens.shape[1])]
    return torch.stack(logits, 1)


def _lean_and_model_logits(model, tokens, n_prompt):
    """The lean forward's logits at positions n_prompt-1 .. end, and the model's own there."""
    ours = _lean_logits_at_every_position(model, tokens, n_prompt)
    with torch.no_grad():
        theirs = model(tokens)[:, n_prompt - 1:]
    return ours, theirs


def _tokens(tokenizer, batch=3, pos=12, seed=0):
    return torch.randint(0, len(tokenizer), (batch, pos), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_layers,normalization_type,act_fn", [
    (1, "LN", "gelu"), (2, "RMS", "relu"), (3, "LN", "gelu_new"), (2, "RMS", "silu"), (2, "LN", "relu")])
def test_lean_forward__logits_match_model_forward(tokenizer, n_layers, normalization_type, act_fn):
    config = ModelConfig(n_layers=n_layers, d_model=32, n_heads=4, d_mlp=64, n_ctx=32, act_fn=act_fn,
                         normalization_type=normalization_type)
    model = _randomize(build_model(config, tokenizer, seed=n_layers))
    assert lean_unsupported_reason(model) is None
    ours, theirs = _lean_and_model_logits(model, _tokens(tokenizer), n_prompt=5)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() < 1e-4 * theirs.abs().max()
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


@pytest.mark.parametrize("normalization_type", ["LNPre", "RMSPre", None])
def test_lean_forward__folded_and_absent_normalisation(tokenizer, normalization_type):
    # LNPre is what from_pretrained gives GPT-2 after folding the layer norms into the weights
    model = _randomize(_hooked({"n_layers": 2, "normalization_type": normalization_type, "act_fn": "gelu_new",
                                "original_architecture": "GPT2LMHeadModel"}, tokenizer))
    assert lean_unsupported_reason(model) is None
    ours, theirs = _lean_and_model_logits(model, _tokens(tokenizer, pos=10), n_prompt=4)
    assert (ours - theirs).abs().max() < 1e-4 * theirs.abs().max()


def test_lean_forward__hooks_see_and_change_the_same_activations(tokenizer):
    model = _randomize(build_model(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, n_ctx=32), tokenizer, seed=1))
    tokens = _tokens(tokenizer, batch=2, pos=9)
    gen = torch.Generator().manual_seed(5)
    names = lean_hook_names(2)
    vectors = {name: torch.randn(32, generator=gen) for name in names}
    seen: dict[str, list[tuple]] = {}

    def make_hook(name):
        def hook(x, hook):
            seen.setdefault(name, []).append((hook.name, tuple(x.shape)))
            return x + vectors[name] * (1 + torch.arange(x.shape[1])[:, None] % 2)  # depends on the batch's positions
        return hook

    # TransformerLens without a cache sees all positions at once; the position-dependent shift is
    # the same there only for a single call, so compare the prompt call and then single steps
    # through a position-independent hook.
    hooks = [(name, make_hook(name)) for name in names]
    with torch.inference_mode():
        forward = LeanCachedForward(model, 2, 9, lean_hooks(model, hooks))
        ours = forward(tokens)
        theirs = model.run_with_hooks(tokens, fwd_hooks=hooks)[:, -1]
    assert (ours - theirs).abs().max() < 1e-4 * theirs.abs().max()
    assert all(seen[n][0] == (n, (2, 9, 32)) for n in names)  # each hook, its own HookPoint, every position

    def steer(resid, hook):  # the steering teacher's hook: the same vector at every position
        return resid + vectors[hook.name]

    steering = [("blocks.0.hook_resid_post", steer), ("blocks.1.hook_mlp_out", steer)]
    ours = _lean_logits_at_every_position(model, tokens, 4, lean_hooks(model, steering))
    with torch.no_grad():
        theirs = model.run_with_hooks(tokens, fwd_hooks=steering)[:, 3:]
        plain = model(tokens)[:, 3:]
    assert (ours - theirs).abs().max() < 1e-4 * theirs.abs().max()
    assert (theirs - plain).abs().max() > 0.1  # the hook mattered, at every new position too
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())  # nothing was attached


def test_lean_forward__keep_rows_continues_the_kept_rows(tokenizer):
    model = _randomize(build_model(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, n_ctx=32), tokenizer, seed=2))
    tokens = _tokens(tokenizer, batch=4, pos=8)
    keep = torch.tensor([True, False, True, False])
    with torch.inference_mode():
        forward = LeanCachedForward(model, 4, 8)
        forward(tokens[:, :7])
        forward.keep_rows(keep)
        ours = forward(tokens[keep, 7:])
        theirs = model(tokens[keep])[:, -1]
    assert ours.shape == (2, len(tokenizer))
    assert (ours - theirs).abs().max() < 1e-4 * theirs.abs().max()


def test_lean_forward__rejects_what_it_does_not_implement(tokenizer):
    pythia_like = _hooked({"normalization_type": "LN", "positional_embedding_type": "rotary", "rotary_dim": 4,
                           "parallel_attn_mlp": True}, tokenizer)
    attn_only = _hooked({"normalization_type": "LN", "attn_only": True}, tokenizer)
    soft_cap = _hooked({"normalization_type": "RMS", "output_logits_soft_cap": 30.0}, tokenizer)
    for model, feature in ((pythia_like, "parallel_attn_mlp"), (attn_only, "attn_only"), (soft_cap, "soft_cap")):
        reason = lean_unsupported_reason(model)
        assert reason is not None and feature in reason
        with pytest.raises(ValueError, match=feature):
            LeanCachedForward(model, 1, 8)
    assert "HookedTransformer" in lean_unsupported_reason(torch.nn.Linear(2, 2))
    model = build_model(ModelConfig(n_layers=1, d_model=32, n_heads=4, d_mlp=64, n_ctx=16), tokenizer, seed=0)
    with pytest.raises(ValueError, match="n_ctx"):
        LeanCachedForward(model, 1, 17)
    with pytest.raises(ValueError, match="max_len"), torch.inference_mode():
        LeanCachedForward(model, 1, 4)(_tokens(tokenizer, batch=1, pos=5))


def test_choose_engine__falls_back_for_unsupported_models_and_hooks(world, tokenizer, tiny_model):
    pattern_hook = [("blocks.0.attn.hook_pattern", lambda pattern, hook: pattern)]
    assert choose_engine(tiny_model, None) == {}
    assert choose_engine(tiny_model, pattern_hook) is None  # a hook inside attention: TransformerLens
    assert choose_engine(tiny_model, [(lambda name: name.endswith("resid_post"), lambda x, hook: x)]) is not None
    assert choose_engine(tiny_model, None, "transformer_lens") is None
    with pytest.raises(ValueError, match="hook"):
        choose_engine(tiny_model, pattern_hook, "lean")
    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: x)]):
        assert choose_engine(tiny_model, None) is None  # attached hooks would be skipped by the lean forward
    with pytest.raises(ValueError, match="engine"):
        choose_engine(tiny_model, None, "vllm")
    attn_only = _hooked({"normalization_type": "LN", "attn_only": True}, tokenizer)
    assert choose_engine(attn_only, None) is None
    with pytest.raises(ValueError, match="attn_only"):
        choose_engine(attn_only, None, "lean")


def test_sample_completions__lean_and_transformer_lens_engines_agree(world, tokenizer, tiny_model):
    prompts = [world.encode(t) for t in ("user : 12 , 40 , 7 . assistant :", "user : 3 , 999 . assistant :",
                                         "user : 5 , 6 . assistant :")]
    kwargs = dict(eos_id=world.token_to_id[EOS], max_new_tokens=10, temperature=1.0, seed=4, progress=False)
    steer = [("blocks.0.hook_resid_post", lambda resid, hook: resid + 3.0)]
    for hooks in (None, steer):
        lean = sample_completions(tiny_model, prompts, engine="lean", fwd_hooks=hooks, **kwargs)
        reference = sample_completions(tiny_model, prompts, engine="transformer_lens", fwd_hooks=hooks, **kwargs)
        assert lean == reference
    # a model the lean forward does not support samples through TransformerLens under "auto"
    attn_only = _randomize(_hooked({"normalization_type": "LN", "attn_only": True}, tokenizer))
    auto = sample_completions(attn_only, prompts, **kwargs)
    assert auto == sample_completions(attn_only, prompts, engine="transformer_lens", **kwargs)
    assert [len(t) for t in auto.tokens] != [0, 0, 0]


def test_lean_forward__several_new_positions_after_a_cache(tokenizer):
    # a call of several tokens after the cache holds some: causal within the call, full over the cache
    model = _randomize(build_model(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, n_ctx=32), tokenizer, seed=3))
    tokens = _tokens(tokenizer, batch=2, pos=10)
    with torch.inference_mode():
        forward = LeanCachedForward(model, 2, 10)
        forward(tokens[:, :3])
        ours = forward(tokens[:, 3:7])
        theirs = model(tokens[:, :7])[:, -1]
    assert (ours - theirs).abs().max() < 1e-4 * theirs.abs().max()


def test_sample_completions__when_finished_rows_leave_the_batch_changes_no_sample(world, tiny_model, monkeypatch):
    import interp.stages.generate as generate_mod

    with torch.no_grad():
        tiny_model.unembed.b_U[world.token_to_id[EOS]] += 5.0  # rows end at many different steps
    prompts = [world.encode(t) for t in ("user : 12 , 40 , 7 . assistant :",) * 12]
    kwargs = dict(eos_id=world.token_to_id[EOS], max_new_tokens=12, temperature=1.0, seed=1, progress=False)
    results = []
    for fraction in (0.0, 0.3, 1.0):  # drop at once, in groups, only when all have ended
        monkeypatch.setattr(generate_mod, "DROP_FINISHED_FRACTION", fraction)
        for engine in ("lean", "transformer_lens"):
            results.append(sample_completions(tiny_model, prompts, engine=engine, **kwargs))
    assert 0 < sum(results[0].ended_with_eos) < len(prompts) and len({len(t) for t in results[0].tokens}) > 2
    assert all(r == results[0] for r in results[1:])


def test_lean_forward__in_place_hooks_change_activations_not_weights(tokenizer):
    model = _randomize(build_model(ModelConfig(n_layers=1, d_model=32, n_heads=4, d_mlp=64, n_ctx=32), tokenizer, seed=4))
    tokens = _tokens(tokenizer, batch=2, pos=6)
    W_pos = model.pos_embed.W_pos.detach().clone()

    def add_in_place(x, hook):
        x += 0.5

    hooks = [("hook_pos_embed", add_in_place), ("blocks.0.hook_resid_post", add_in_place)]
    ours = _lean_logits_at_every_position(model, tokens, 3, lean_hooks(model, hooks))
    with torch.no_grad():
        theirs = model.run_with_hooks(tokens, fwd_hooks=hooks)[:, 2:]
    assert (ours - theirs).abs().max() < 1e-4 * theirs.abs().max()
    assert torch.equal(model.pos_embed.W_pos, W_pos)


# -- modern decoder blocks: rotary positions, grouped-query attention, gated MLPs -----------------
LLAMA_LIKE = {"n_layers": 2, "normalization_type": "RMS", "act_fn": "silu", "positional_embedding_type": "rotary",
              "rotary_dim": 8, "n_key_value_heads": 2, "gated_mlp": True, "original_architecture": "LlamaForCausalLM"}
MODERN = {
    "llama": LLAMA_LIKE,
    "qwen2 (biased qkv, no gqa)": {**LLAMA_LIKE, "n_key_value_heads": None, "original_architecture": "Qwen2ForCausalLM"},
    "partial rotary, adjacent pairs": {**LLAMA_LIKE, "rotary_dim": 4, "rotary_adjacent_pairs": True},
}


@pytest.mark.parametrize("name", list(MODERN))
def test_lean_forward__modern_blocks_match_model_forward(tokenizer, name):
    model = _randomize(_hooked(MODERN[name], tokenizer))
    assert lean_unsupported_reason(model) is None
    ours, theirs = _lean_and_model_logits(model, _tokens(tokenizer, pos=11), n_prompt=4)
    assert (ours - theirs).abs().max() < 1e-4 * theirs.abs().max()
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_lean_forward__zero_biases_of_llama_blocks_are_skipped_exactly(tokenizer):
    """Llama-family checkpoints carry all-zero biases; the lean forward leaves them out (one pass
    less per product) and computes the same logits."""
    model = _randomize(_hooked(LLAMA_LIKE, tokenizer))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1].lstrip("_").startswith("b_"):
                p.zero_()
    block = LeanCachedForward(model, 1, 8).blocks[0]
    assert block.b_QKV is None and block.b_O is None and block.b_in is None and block.b_out is None
    ours, theirs = _lean_and_model_logits(model, _tokens(tokenizer, pos=11), n_prompt=4)
    assert (ours - theirs).abs().max() < 1e-4 * theirs.abs().max()
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def _left_padded(rows: list[torch.Tensor], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``lengths[i]`` tokens of each row, left-padded to the longest, and the prompt mask."""
    width = max(lengths)
    prompt = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, n) in enumerate(zip(rows, lengths)):
        prompt[i, width - n:] = row[:n]
        mask[i, width - n:] = 1
    return prompt, mask


@pytest.mark.parametrize("name", ["llama", "gpt2-like learned positions"])
def test_lean_forward__left_padded_rows_equal_each_row_alone(tokenizer, name):
    """A left-padded batch (prompt_mask 0 at the padding): every row's logits, at the prompt's end
    and at every decoding step, are those of the row run alone without padding; rows are dropped
    midway (keep_rows) as the sampler does."""
    cfg = MODERN["llama"] if name == "llama" else {"n_layers": 2, "normalization_type": "LN"}
    model = _randomize(_hooked(cfg, tokenizer))
    lengths, n_steps = [3, 7, 5], 4
    rows = [_tokens(tokenizer, batch=1, pos=n + n_steps, seed=i)[0] for i, n in enumerate(lengths)]
    width = max(lengths)
    prompt, mask = _left_padded(rows, lengths)
    with torch.inference_mode():
        forward = LeanCachedForward(model, 3, width + n_steps, prompt_mask=mask)
        ours = [forward(prompt)]
        alive = [0, 1, 2]
        for t in range(n_steps - 1):
            if t == 1:  # the second row finishes
                forward.keep_rows(torch.tensor([True, False, True]))
                alive = [0, 2]
            ours.append(forward(torch.stack([rows[i][lengths[i] + t] for i in alive])[:, None]))
        for i, (row, n) in enumerate(zip(rows, lengths)):
            alone = model(row[None])[0]
            steps = range(n_steps) if i != 1 else range(2)
            for t in steps:
                j = alive.index(i) if t >= 2 else i
                got = ours[t][j]
                want = alone[n - 1 + t]
                assert (got - want).abs().max() < 1e-4 * want.abs().max(), (name, i, t)


def test_sample_completions__modern_model_lean_and_transformer_lens_agree(world, tokenizer):
    """Prompts of different lengths on a rotary model share left-padded batches; the lean forward
    samples what TransformerLens's cached forward samples, greedy and at temperature 1."""
    from interp.stages.generate import padded_batches

    model = _randomize(_hooked(MODERN["llama"], tokenizer), seed=3)
    assert choose_engine(model, None) == {} and padded_batches(model)
    prompts = [world.encode(t) for t in ("user : 12 , 40 , 7 . assistant :", "user : 3 , 999 . assistant :",
                                         "user : 5 . assistant :", "user : 1 , 2 , 3 , 4 , 5 . assistant :")]
    assert len({len(p) for p in prompts}) > 1
    for temperature in (0.0, 1.0):
        kwargs = dict(eos_id=world.token_to_id[EOS], max_new_tokens=8, temperature=temperature, seed=2, progress=False)
        lean = sample_completions(model, prompts, engine="lean", **kwargs)
        reference = sample_completions(model, prompts, engine="transformer_lens", **kwargs)
        assert lean == reference, temperature
        assert any(len(t) > 2 for t in lean.tokens)


@pytest.mark.parametrize("name", ["llama", "gpt2-like learned positions"])
def test_lean_forward__packed_prompt_pass_with_a_shared_prefix_equals_each_row_alone(tokenizer, name):
    """The packed prompt pass (real tokens only, the rows' common prefix computed once) gives every
    row the logits of that row run alone, at the prompt's end and at each decoding step after it,
    as the padded pass does (``packed_prefill=False``)."""
    cfg = MODERN["llama"] if name == "llama" else {"n_layers": 2, "normalization_type": "LN"}
    model = _randomize(_hooked(cfg, tokenizer))
    shared = _tokens(tokenizer, batch=1, pos=4, seed=9)[0]
    lengths, n_steps = [6, 9, 5], 3
    rows = [torch.cat([shared, _tokens(tokenizer, batch=1, pos=n - 4 + n_steps, seed=i)[0]]) for i, n in enumerate(lengths)]
    width = max(lengths)
    prompt, mask = _left_padded(rows, lengths)
    results = {}
    for packed in (True, False):
        with torch.inference_mode():
            forward = LeanCachedForward(model, 3, width + n_steps, prompt_mask=mask, packed_prefill=packed)
            logits = [forward(prompt)]
            for t in range(n_steps - 1):
                logits.append(forward(torch.stack([rows[i][lengths[i] + t] for i in range(3)])[:, None]))
        results[packed] = torch.stack(logits, 1)  # batch step d_vocab
    for i, (row, n) in enumerate(zip(rows, lengths)):
        with torch.no_grad():
            want = model(row[None])[0, n - 1:n - 1 + n_steps]
        for packed, got in results.items():
            assert (got[i] - want).abs().max() < 1e-4 * want.abs().max(), (name, packed, i)


def test_lean_forward__packed_prompt_pass_refuses_a_mask_that_is_not_left_padding(tokenizer):
    model = _randomize(_hooked(MODERN["llama"], tokenizer))
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]])
    with torch.inference_mode(), pytest.raises(ValueError, match="not a left padding"):
        LeanCachedForward(model, 2, 6, prompt_mask=mask)(_tokens(tokenizer, batch=2, pos=4))
