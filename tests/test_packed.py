"""The padding-free training forward (interp.training.packed) gives model(tokens)'s logits and
gradients at the positions a loss reads, to float tolerance, on tiny models of every supported
configuration, LoRA adapters included."""

import pytest
import torch

from interp.models.checkpoint import ModelConfig, build_model
from interp.models.lora import LoraConfig, adapter_parameters, apply_lora
from interp.training.loop import pad_batch
from interp.training.packed import pack_rows, packed_logits, packed_unsupported_reason, padded_logits


def _randomize(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.3 * noise if name.endswith(".w") else 0.2 * noise)
    return model


def _rows(vocab, n=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 20, (n,), generator=gen).tolist()
    seqs = [torch.randint(1, vocab, (n_,), generator=gen).tolist() for n_ in lengths]
    ranges = [(int(torch.randint(0, n_ - 1, (1,), generator=gen)), n_ - 1) for n_ in lengths]
    return seqs, ranges


@pytest.mark.parametrize("normalization_type,act_fn,n_layers", [("LN", "gelu", 2), ("RMS", "relu", 1), ("LN", "silu", 3)])
def test_packed_logits__equal_the_padded_forward(tokenizer, normalization_type, act_fn, n_layers):
    model = _randomize(build_model(ModelConfig(n_layers=n_layers, d_model=32, n_heads=4, d_mlp=64, n_ctx=32,
                                               act_fn=act_fn, normalization_type=normalization_type), tokenizer, seed=1))
    seqs, ranges = _rows(model.cfg.d_vocab)
    rows = pack_rows(seqs, ranges)
    assert rows.n_real == sum(len(s) for s in seqs)
    with torch.no_grad():
        ours = packed_logits(model, rows)
        tokens, _ = pad_batch(seqs, 0)
        full = model(tokens)
    theirs = torch.cat([full[i, a:b] for i, (a, b) in enumerate(ranges)])
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(padded_logits(model, rows, pad_id=0).detach(), theirs)


def test_packed_logits__gradients_equal_the_padded_forward_with_lora(tokenizer):
    """The same loss through both routes gives the same gradient on every adapter and, for a
    recorder's frozen originals made to require a gradient, on the original weights."""
    grads = []
    for route in ("packed", "padded"):
        model = _randomize(build_model(ModelConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, n_ctx=32), tokenizer, seed=2))
        apply_lora(model, LoraConfig(rank=4, seed=0))
        with torch.no_grad():
            for p in adapter_parameters(model):
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
        originals = [model.blocks[0].attn.parametrizations.W_Q.original, model.blocks[1].mlp.parametrizations.W_in.original]
        for p in originals:
            p.requires_grad_(True)
        seqs, ranges = _rows(model.cfg.d_vocab, n=6, seed=3)
        rows = pack_rows(seqs, ranges)
        logits = packed_logits(model, rows) if route == "packed" else padded_logits(model, rows, pad_id=0)
        targets = torch.arange(logits.shape[0]) % logits.shape[1]
        torch.nn.functional.cross_entropy(logits, targets).backward()
        grads.append([p.grad.clone() for p in adapter_parameters(model)] + [p.grad.clone() for p in originals])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_pack_rows__marks_the_asked_positions_and_refuses_bad_ones():
    rows = pack_rows([[1, 2, 3], [4, 5]], [(1, 3), (0, 1)])
    assert rows.tokens.tolist() == [1, 2, 3, 4, 5]
    assert rows.positions.tolist() == [0, 1, 2, 0, 1]
    assert rows.pred_index.tolist() == [1, 2, 3]
    assert rows.flat_index.tolist() == [0, 1, 2, 3, 4] and rows.width == 3
    assert rows.pred_flat.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="outside"):
        pack_rows([[1, 2]], [(0, 3)])
    with pytest.raises(ValueError, match="n_ctx"):
        pack_rows([[1, 2, 3]], [(0, 1)], max_len=2)


def test_packed_unsupported_reason__names_hooks(tiny_model):
    assert packed_unsupported_reason(tiny_model) is None
    handle = tiny_model.blocks[0].hook_resid_pre.add_hook(lambda x, hook: x)
    try:
        assert "hooks" in packed_unsupported_reason(tiny_model)
        with pytest.raises(ValueError, match="padded_logits"):
            packed_logits(tiny_model, pack_rows([[1, 2]], [(0, 1)]))
    finally:
        tiny_model.reset_hooks()
