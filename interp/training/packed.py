"""A padding-free training forward pass: the logits a loss needs, on the real tokens only.

A student step's batch holds rows of different lengths (the toy world's number rows average
about 47 tokens; a batch is padded to its longest). :func:`padded_logits` is today's route:
``model(tokens)`` on the right-padded batch, the unembedding and its log-softmax at every
position, padding and prompt included. :func:`packed_logits` computes the same logits at the
positions a loss reads (those that predict a target token) with every position-wise operation
(embedding, normalisations, the query/key/value and output projections, the MLPs) on the rows'
real tokens concatenated into one sequence, and the unembedding only at the positions asked for.

Nothing about what is computed changes: every row keeps its own positions (``0 .. len - 1``,
those of the right-padded batch) and its causal attention. Attention is the only operation that
mixes positions; it runs on the right-padded layout (queries, keys and values scattered into
``[batch, head, pos, d_head]``), where causal masking alone keeps every real query off the
padding after it, exactly as ``model(tokens)`` on a right-padded batch does. So the logits equal
``model(tokens)``'s at those positions to float rounding (matrix products over fewer rows may
add in another order); ``tests/test_packed.py`` compares them, and the gradients, on tiny models.

It reads the model's own parameters at every call (a LoRA parametrisation's ``W0 + B @ A`` is
read through the module as TransformerLens reads it), so gradients reach exactly the parameters
``model(tokens)``'s would, including a recorder's frozen originals. Models it cannot run
(:func:`packed_unsupported_reason`: hooks attached, rotary embeddings, any configuration the lean
sampler does not support) use :func:`padded_logits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.stages.lean_forward import _norm_fn, lean_unsupported_reason
from interp.training.loop import pad_batch


def packed_unsupported_reason(model) -> str | None:
    """Why :func:`packed_logits` cannot run ``model``, or None when it can."""
    reason = lean_unsupported_reason(model)
    if reason is not None:
        return reason
    if model.cfg.positional_embedding_type != "standard":
        return f"positional_embedding_type={model.cfg.positional_embedding_type!r}"
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return "hooks are attached to the model"
    return None


@dataclass
class PackedRows:
    """A batch of token rows in packed form, and the positions whose logits a loss reads.

    Attributes:
        tokens: every row's real tokens, concatenated (``n_real``).
        positions: each packed token's position in its row.
        flat_index: each packed token's index in the right-padded ``[batch * width]`` layout.
        batch, width: the right-padded layout's shape (``width`` = the longest row).
        pred_index: packed indices of the positions whose logits are asked for, in row-major
            order (row by row, position by position), as ``logits[mask.bool()]`` of a padded batch.
        pred_flat: the same positions in the right-padded ``[batch * width]`` layout.
    """

    tokens: Int[Tensor, "n_real"]
    positions: Int[Tensor, "n_real"]
    flat_index: Int[Tensor, "n_real"]
    batch: int
    width: int
    pred_index: Int[Tensor, "n_pred"]
    pred_flat: Int[Tensor, "n_pred"]

    @property
    def n_real(self) -> int:
        return int(self.tokens.shape[0])


def pack_rows(seqs: Sequence[Sequence[int]], pred_ranges: Sequence[tuple[int, int]], *,
              max_len: int | None = None) -> PackedRows:
    """Pack ``seqs`` and mark, in row ``i``, the positions ``pred_ranges[i] = (start, end)``
    (``start <= p < end``) as those whose logits are asked for. Rows longer than ``max_len``
    raise, as :func:`interp.training.loop.pad_batch` does."""
    lengths = [len(s) for s in seqs]
    width = max(lengths)
    if max_len is not None and width > max_len:
        raise ValueError(f"a sequence of {width} tokens exceeds the model's n_ctx={max_len}")
    tokens = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    positions = torch.cat([torch.arange(n) for n in lengths])
    row = torch.repeat_interleave(torch.arange(len(seqs)), torch.tensor(lengths))
    flat_index = row * width + positions
    offsets = [0]
    for n in lengths[:-1]:
        offsets.append(offsets[-1] + n)
    pred, flat = [], []
    for i, ((start, end), n) in enumerate(zip(pred_ranges, lengths)):
        if not 0 <= start <= end <= n:
            raise ValueError(f"row {i}: positions [{start}, {end}) are outside its {n} tokens")
        pred.append(torch.arange(start, end) + offsets[i])
        flat.append(torch.arange(start, end) + i * width)
    return PackedRows(tokens, positions, flat_index, len(seqs), width, torch.cat(pred), torch.cat(flat))


def _attention(block, x: Float[Tensor, "n d_model"], rows: PackedRows) -> Float[Tensor, "n d_model"]:
    attn = block.attn
    n_heads, d_model, d_head = attn.W_Q.shape
    # [head, d_model, d_head] -> [(head d_head), d_model] each, one product for q, k and v
    W = torch.cat([w.permute(0, 2, 1).reshape(-1, d_model) for w in (attn.W_Q, attn.W_K, attn.W_V)])
    b = torch.cat([attn.b_Q.reshape(-1), attn.b_K.reshape(-1), attn.b_V.reshape(-1)])
    qkv = F.linear(x, W, b)  # n (q | k | v)
    padded = qkv.new_zeros(rows.batch * rows.width, qkv.shape[-1]).index_copy(0, rows.flat_index, qkv)
    q, k, v = (t.reshape(rows.batch, rows.width, n_heads, d_head).transpose(1, 2)
               for t in padded.split(n_heads * d_head, dim=-1))
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / float(attn.attn_scale))
    z = z.transpose(1, 2).reshape(rows.batch * rows.width, n_heads * d_head)[rows.flat_index]  # n (head d_head)
    return F.linear(z, attn.W_O.reshape(n_heads * d_head, d_model).T, attn.b_O)


def _mlp(block, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_model"]:
    mlp = block.mlp
    if hasattr(mlp, "W_gate"):  # act(x W_gate) * (x W_in) + b_in, as TransformerLens's GatedMLP
        hidden = mlp.act_fn(x @ mlp.W_gate) * (x @ mlp.W_in) + mlp.b_in
    else:
        hidden = mlp.act_fn(torch.addmm(mlp.b_in, x, mlp.W_in))
    return torch.addmm(mlp.b_out, hidden, mlp.W_out)


def packed_logits(model, rows: PackedRows) -> Float[Tensor, "n_pred d_vocab"]:
    """``model(tokens)``'s logits at ``rows.pred_index`` (row-major), computed on the real tokens
    only (see the module docstring). With autograd: gradients reach the model's parameters."""
    reason = packed_unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"the packed forward cannot run this model: {reason} (use padded_logits)")
    device = model.W_E.device
    tokens, positions = rows.tokens.to(device), rows.positions.to(device)
    resid = model.W_E[tokens] + model.W_pos[positions]  # n d_model
    rows = PackedRows(tokens, positions, rows.flat_index.to(device), rows.batch, rows.width,
                      rows.pred_index.to(device), rows.pred_flat.to(device))
    for block in model.blocks:
        resid = resid + _attention(block, _norm_fn(block.ln1)(resid), rows)
        resid = resid + _mlp(block, _norm_fn(block.ln2)(resid))
    final = _norm_fn(model.ln_final)(resid[rows.pred_index])
    return F.linear(final, model.W_U.T, model.b_U)


def padded_logits(model, rows: PackedRows, pad_id: int, fwd_hooks: Sequence[tuple] = ()) -> Float[Tensor, "n_pred d_vocab"]:
    """The same logits by today's route: ``model(tokens)`` on the right-padded batch (every
    position unembedded), then the positions asked for. Any model, hooks included."""
    seqs = [[] for _ in range(rows.batch)]
    row = rows.flat_index // rows.width
    for r, t in zip(row.tolist(), rows.tokens.tolist()):
        seqs[r].append(t)
    tokens, _ = pad_batch(seqs, pad_id)
    logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks)) if fwd_hooks else model(tokens)
    return logits.reshape(rows.batch * rows.width, -1)[rows.pred_flat.to(logits.device)]


def packed_lm_loss(model, rows: PackedRows) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy of the tokens that the positions ``rows.pred_index`` predict
    (each position's next token): :func:`interp.training.losses.masked_lm_loss` on the padded
    batch, whose mask marks those next tokens, to float rounding."""
    logits = packed_logits(model, rows)
    return F.cross_entropy(logits, rows.tokens[rows.pred_index + 1].to(logits.device))
