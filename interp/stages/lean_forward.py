"""A lean cached forward pass over a HookedTransformer's own weights, for sampling.

At the size of the toy models (2 layers, d_model 128, batch 256) a decoding step is a handful
of small matrix products, and TransformerLens's forward adds a fixed cost to each of them: some
sixty module calls with hook points, a key-value cache that grows by ``torch.cat``, attention
masks rebuilt at every step, the unembedding weight transposed and copied at every call.
:class:`LeanCachedForward` computes the same function with explicit tensor operations on the
model's parameters (read at construction; nothing is copied into a second model):

* one fused ``[3 * n_heads * d_head, d_model]`` projection for queries, keys and values, and each
  normalisation as one fused call (``F.layer_norm`` / ``F.rms_norm``);
* a key-value cache preallocated for the whole sequence, written in place (``[batch, head_index,
  pos, d_head]``), so that a step attends over a slice and nothing is concatenated;
* no attention mask for prompts of one length (the toy world's batches, see
  :func:`interp.stages.generate.plan_batches`): the prompt needs only the causal mask and a decoding
  step's single query sees every cached key. Left-padded batches (a real tokenizer gives nearly
  every prompt its own length) pass ``prompt_mask``: padded keys are masked and positions count from
  each row's first real token, as TransformerLens and transformers do. Their prompt pass is packed
  (without hooks): the projections and MLPs run on the real tokens only, the rows' common prefix
  (a chat template's system turn) once, and attention runs per row; the cache ends in the same
  left-padded layout;
* the unembedding only at the last position.

Modern decoder blocks are supported too (Llama / SmolLM2, Qwen2, Mistral): rotary position
embeddings (read from the attention module's own sin/cos tables), grouped-query attention (the
cache holds the key-value heads only; ``scaled_dot_product_attention(enable_gqa=True)`` repeats
them as TransformerLens's ``repeat_interleave`` does) and gated MLPs.

It reproduces ``model(tokens)`` to float tolerance (tests compare logits on random models of each
supported configuration). It supports the configurations of :class:`interp.models.checkpoint.ModelConfig`
and more (standard or rotary positional embeddings, LN / LNPre / RMS / RMSPre / no normalisation,
any elementwise activation, plain or gated MLPs, causal multi-head or grouped-query attention);
:func:`lean_unsupported_reason` names the first feature of any other model (soft caps, local
attention, post-norm blocks, dynamic NTK rotary, ...), for which callers use TransformerLens's own
forward.

Hooks: the lean pass calls user hook functions at the residual-stream hook points listed in
:data:`LEAN_HOOK_NAMES` (``hook_embed``, ``hook_pos_embed``, ``blocks.{L}.hook_resid_pre``,
``hook_attn_out``, ``hook_resid_mid``, ``hook_mlp_out``, ``hook_resid_post``), with the same
arguments TransformerLens gives them (``fn(activation, hook=the HookPoint)``; a returned tensor
replaces the activation) and on the same positions (every prompt position in the first call, the
new position at each step). Hooks at any other point, or hooks already attached to the model,
make :func:`lean_hooks` return None so that the caller falls back to TransformerLens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

# Hook points the lean forward calls user hooks at: (block-level names use {layer}).
LEAN_TOP_HOOK_NAMES = ("hook_embed", "hook_pos_embed")
LEAN_BLOCK_HOOK_NAMES = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")


def lean_hook_names(n_layers: int) -> tuple[str, ...]:
    """Every hook-point name the lean forward honours, for a model of ``n_layers`` blocks."""
    return LEAN_TOP_HOOK_NAMES + tuple(f"blocks.{layer}.{name}" for layer in range(n_layers)
                                       for name in LEAN_BLOCK_HOOK_NAMES)


HookFn = Callable[..., Tensor | None]


def lean_unsupported_reason(model) -> str | None:
    """Why :class:`LeanCachedForward` cannot run ``model`` (the first unsupported feature), or
    None when it can."""
    from transformer_lens import HookedTransformer
    from transformer_lens.components import (
        Attention,
        Embed,
        GroupedQueryAttention,
        LayerNorm,
        LayerNormPre,
        PosEmbed,
        RMSNorm,
        RMSNormPre,
        TransformerBlock,
        Unembed,
    )
    from transformer_lens.components.mlps.gated_mlp import GatedMLP
    from transformer_lens.components.mlps.mlp import MLP

    if not isinstance(model, HookedTransformer):
        return f"not a HookedTransformer ({type(model).__name__})"
    cfg = model.cfg
    flags = {  # config features the lean forward does not implement: name -> is it on
        f"positional_embedding_type={cfg.positional_embedding_type!r}":
            cfg.positional_embedding_type not in ("standard", "rotary"),
        "use_dynamic_ntk_rope": bool(getattr(cfg, "use_dynamic_ntk_rope", False)),
        f"attention_dir={cfg.attention_dir!r}": cfg.attention_dir != "causal",
        "attn_only": bool(cfg.attn_only),
        "parallel_attn_mlp": bool(cfg.parallel_attn_mlp),
        "use_local_attn": bool(cfg.use_local_attn),
        "use_attn_result": bool(cfg.use_attn_result),
        "use_split_qkv_input": bool(cfg.use_split_qkv_input),
        "use_attn_in": bool(cfg.use_attn_in),
        "use_hook_mlp_in": bool(cfg.use_hook_mlp_in),
        "use_qk_norm": bool(getattr(cfg, "use_qk_norm", False)),
        "use_normalization_before_and_after": bool(getattr(cfg, "use_normalization_before_and_after", False)),
        "use_attention_sinks": bool(getattr(cfg, "use_attention_sinks", False)),
        "use_logn_attn": bool(getattr(cfg, "use_logn_attn", False)),
        "clip_qkv": getattr(cfg, "clip_qkv", None) is not None,
        "post_embedding_ln": bool(getattr(cfg, "post_embedding_ln", False)),
        "attn_scores_soft_cap": (cfg.attn_scores_soft_cap or -1) > 0,
        "output_logits_soft_cap": (cfg.output_logits_soft_cap or -1) > 0,
        "load_in_4bit": bool(cfg.load_in_4bit),
        f"n_devices={cfg.n_devices}": cfg.n_devices != 1,
        f"dtype={cfg.dtype}": cfg.dtype not in (torch.float32, torch.float64),
        "a layer-norm activation (solu_ln)": cfg.act_fn is not None and cfg.is_layer_norm_activation(),
    }
    on = [name for name, is_on in flags.items() if is_on]
    if on:
        return f"unsupported config: {on[0]}"
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    if cfg.original_architecture in POST_NORM_ARCHITECTURES:
        return f"post-norm architecture {cfg.original_architecture}"
    norms = (LayerNorm, LayerNormPre, RMSNorm, RMSNormPre, torch.nn.Identity)
    rotary = cfg.positional_embedding_type == "rotary"
    if type(model.embed) is not Embed or type(model.unembed) is not Unembed or (
            not rotary and type(model.pos_embed) is not PosEmbed):
        return "non-standard embedding or unembedding module"
    if type(getattr(model, "ln_final", torch.nn.Identity())) not in norms:
        return f"final normalisation {type(model.ln_final).__name__}"
    for layer, block in enumerate(model.blocks):
        attention = GroupedQueryAttention if cfg.n_key_value_heads is not None else Attention
        mlp = GatedMLP if cfg.gated_mlp else MLP
        if type(block) is not TransformerBlock or _plain_type(block.attn) is not attention or _plain_type(block.mlp) is not mlp:
            return (f"block {layer} is not a standard TransformerBlock({attention.__name__}, {mlp.__name__})")
        if rotary and not (0 < cfg.rotary_dim <= cfg.d_head and hasattr(block.attn, "rotary_cos")):
            return f"block {layer}: rotary_dim={cfg.rotary_dim} with d_head={cfg.d_head}"
        if getattr(block.attn, "attn_type", "global") != "global":
            return f"block {layer} uses {block.attn.attn_type} attention"
        for ln in (block.ln1, block.ln2):
            if type(ln) not in norms:
                return f"block {layer} normalisation {type(ln).__name__}"
    return None


def _plain_type(module) -> type:
    """The module's class, that of the module before ``torch.nn.utils.parametrize`` subclassed it (a
    LoRA adapter's parametrisation, :mod:`interp.models.lora`: its weights read as ``W0 + delta``)."""
    from torch.nn.utils import parametrize

    return type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)


def lean_hooks(model, fwd_hooks: Sequence[tuple] | None) -> dict[str, list[HookFn]] | None:
    """The user hooks by hook-point name when the lean forward can honour all of them, else None.

    ``fwd_hooks`` is TransformerLens's list of ``(name or name filter, fn)``. None is returned when
    a hook targets a point outside :func:`lean_hook_names`, or when any hook is already attached to
    the model (the lean forward would skip it)."""
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None
    allowed = set(lean_hook_names(model.cfg.n_layers))
    if model.cfg.positional_embedding_type == "rotary":
        allowed.discard("hook_pos_embed")  # a rotary model has no positional embedding to hook
    out: dict[str, list[HookFn]] = {}
    for name, fn in fwd_hooks or ():
        names = [name] if isinstance(name, str) else [n for n in model.hook_dict if name(n)]
        if any(n not in allowed for n in names):
            return None
        for n in names:
            out.setdefault(n, []).append(fn)
    return out


def _norm_fn(module) -> Callable[[Tensor], Tensor]:
    """The model's LN / LNPre / RMS / RMSPre / Identity module as one fused torch call: the
    function TransformerLens computes in several steps (centre, divide by sqrt(mean square + eps),
    scale, shift), equal to float rounding."""
    from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

    if isinstance(module, LayerNorm):
        return lambda x: F.layer_norm(x, x.shape[-1:], module.w, module.b, module.eps)
    if isinstance(module, LayerNormPre):
        return lambda x: F.layer_norm(x, x.shape[-1:], None, None, module.eps)
    if isinstance(module, RMSNorm):
        return lambda x: F.rms_norm(x, x.shape[-1:], module.w, module.eps)
    if isinstance(module, RMSNormPre):
        return lambda x: F.rms_norm(x, x.shape[-1:], None, module.eps)
    if isinstance(module, torch.nn.Identity):
        return lambda x: x
    raise ValueError(f"the lean forward has no normalisation {type(module).__name__}")


@dataclass
class _Block:
    """One block's weights in the layouts the lean forward multiplies with."""

    ln1: Callable[[Tensor], Tensor]
    ln2: Callable[[Tensor], Tensor]
    W_QKV: Float[Tensor, "qkv d_model"]  # rows: q (head_index, d_head), then k and v (kv_head, d_head)
    b_QKV: Float[Tensor, "qkv"] | None  # None: an all-zero bias of a gated (Llama-family) block, skipped
    W_O: Float[Tensor, "d_model head_dims"]  # columns: (head_index, d_head)
    b_O: Float[Tensor, "d_model"] | None
    W_in: Float[Tensor, "d_model d_mlp"]
    b_in: Float[Tensor, "d_mlp"] | None
    W_out: Float[Tensor, "d_mlp d_model"]
    b_out: Float[Tensor, "d_model"] | None
    act_fn: Callable[[Tensor], Tensor]
    attn_scale: float
    n_kv_heads: int
    W_gate_in: Float[Tensor, "two_d_mlp d_model"] | None = None  # gated MLP: [W_gate | W_in]^T, one product for both
    W_out_T: Float[Tensor, "d_model d_mlp"] | None = None  # gated MLP: W_out in F.linear's layout
    rotary_cos: Float[Tensor, "n_ctx rotary_dim"] | None = None
    rotary_sin: Float[Tensor, "n_ctx rotary_dim"] | None = None


def _block_weights(block, max_len: int) -> _Block:
    attn, mlp = block.attn, block.mlp
    n_heads, d_model, d_head = attn.W_Q.shape
    # Grouped-query attention keeps one key and value per key-value head (the unexpanded weights).
    W_K, W_V, b_K, b_V = ((attn._W_K, attn._W_V, attn._b_K, attn._b_V) if hasattr(attn, "_W_K")
                          else (attn.W_K, attn.W_V, attn.b_K, attn.b_V))
    n_kv = W_K.shape[0]
    # [head_index, d_model, d_head] -> [(head_index d_head), d_model], as TransformerLens's F.linear
    w = [W.permute(0, 2, 1).reshape(-1, d_model) for W in (attn.W_Q, W_K, W_V)]
    b = [bias.reshape(-1) for bias in (attn.b_Q, b_K, b_V)]
    W_O = attn.W_O.reshape(n_heads * d_head, d_model).T.contiguous()  # d_model (head_index d_head)
    cos = sin = None
    gated = hasattr(mlp, "W_gate")

    def nonzero(bias):  # Llama-family checkpoints carry all-zero biases: adding them is exact, and costs a pass
        return None if gated and not bool(bias.any()) else bias

    if getattr(attn.cfg, "positional_embedding_type", "standard") == "rotary":
        if attn.rotary_cos.shape[0] < max_len:
            attn._extend_rotary_embeddings(max_len)  # TransformerLens's own (lazy) extension of its tables
        cos, sin = attn.rotary_cos, attn.rotary_sin
    return _Block(ln1=_norm_fn(block.ln1), ln2=_norm_fn(block.ln2), W_QKV=torch.cat(w).contiguous(),
                  b_QKV=nonzero(torch.cat(b)), W_O=W_O, b_O=nonzero(attn.b_O), W_in=mlp.W_in,
                  b_in=nonzero(mlp.b_in), W_out=mlp.W_out, b_out=nonzero(mlp.b_out), act_fn=mlp.act_fn,
                  attn_scale=float(attn.attn_scale), n_kv_heads=n_kv,
                  W_gate_in=torch.cat([mlp.W_gate, mlp.W_in], dim=1).T.contiguous() if gated else None,
                  W_out_T=mlp.W_out.T.contiguous() if gated else None,
                  rotary_cos=cos, rotary_sin=sin)


class LeanCachedForward:
    """Cached forward of a batch of sequences through a HookedTransformer's weights.

    Call it first with the prompts ``[batch, pos]`` (fills the cache, returns the logits at the
    last prompt position), then with one new token per row ``[batch, 1]`` per step; between steps,
    :meth:`keep_rows` drops finished rows. ``max_len`` bounds prompt plus generated tokens.
    ``hooks`` maps hook-point names to user hook functions (see :func:`lean_hooks`).
    ``prompt_mask`` (``[batch, prompt_pos]``, 0 at left padding) marks the padding of a left-padded
    batch: padded keys are never attended to and each row's positions start at its first real
    token (TransformerLens's ``get_offset_position_ids``, transformers' position ids); None: every
    row has the same length.

    Meant to run under ``torch.inference_mode()``: it reads the parameters without autograd.
    """

    def __init__(self, model, batch: int, max_len: int, hooks: dict[str, list[HookFn]] | None = None,
                 prompt_mask: Int[Tensor, "batch pos"] | None = None, packed_prefill: bool = True):
        reason = lean_unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"the lean forward cannot run this model: {reason}")
        if max_len > model.cfg.n_ctx:
            raise ValueError(f"max_len={max_len} exceeds the model's n_ctx={model.cfg.n_ctx}")
        self.model, self.cfg = model, model.cfg
        self.hooks = dict(hooks or {})
        unknown = set(self.hooks) - set(lean_hook_names(self.cfg.n_layers))
        if unknown:
            raise ValueError(f"the lean forward cannot call hooks at {sorted(unknown)}")
        self.rotary = self.cfg.positional_embedding_type == "rotary"
        self.blocks = [_block_weights(block, max_len) for block in model.blocks]
        self.ln_final = _norm_fn(getattr(model, "ln_final", torch.nn.Identity()))
        self.W_E = model.embed.W_E
        self.W_pos = None if self.rotary else model.pos_embed.W_pos
        self.W_U_T = model.unembed.W_U.T.contiguous()  # d_vocab d_model
        self.b_U = model.unembed.b_U
        d_head = self.cfg.d_head
        device, dtype = self.W_E.device, self.W_E.dtype
        self.keys = [torch.empty((batch, b.n_kv_heads, max_len, d_head), device=device, dtype=dtype)
                     for b in self.blocks]
        self.values = [torch.empty_like(k) for k in self.keys]
        self.max_len = max_len
        self.packed_prefill = packed_prefill
        self.pos = 0  # positions already in the cache
        self.key_mask = None  # batch max_len (bool): which cached positions may be attended to
        self.next_position = None  # batch: the position id of each row's next token
        if prompt_mask is not None:
            if prompt_mask.shape[0] != batch or prompt_mask.shape[1] > max_len:
                raise ValueError(f"prompt_mask {tuple(prompt_mask.shape)} does not fit batch={batch}, max_len={max_len}")
            self.key_mask = torch.ones((batch, max_len), dtype=torch.bool, device=device)
            self.key_mask[:, : prompt_mask.shape[1]] = prompt_mask.to(device).bool()

    def _hook(self, name: str, x: Tensor) -> Tensor:
        for fn in self.hooks.get(name, ()):
            out = fn(x, hook=self.model.hook_dict[name])
            if out is not None:
                x = out
        return x

    def _positions(self, batch: int, n_new: int, device) -> Int[Tensor, "batch pos"] | None:
        """Position ids of the new tokens per row, or None when every row counts from the cache start."""
        if self.key_mask is None:
            return None
        if self.pos == 0:  # the prompt: count from each row's first real token (pads get 0)
            ids = self.key_mask[:, :n_new].long().cumsum(1) - 1
            self.next_position = ids[:, -1] + 1
            return ids.clamp_min(0)
        ids = self.next_position[:, None] + torch.arange(n_new, device=device)
        self.next_position = self.next_position + n_new
        return ids

    @staticmethod
    def _rotary_tables(block: _Block, positions: Tensor | None, start: int, n_new: int) -> tuple[Tensor, Tensor]:
        """cos and sin at the new positions: ``pos rd``, or ``batch 1 pos rd`` per row."""
        if positions is None:
            return block.rotary_cos[start:start + n_new], block.rotary_sin[start:start + n_new]
        return block.rotary_cos[positions][:, None], block.rotary_sin[positions][:, None]

    def _rotate(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotary embedding of ``x`` (batch head pos d_head), as TransformerLens's ``apply_rotary``."""
        rd = self.cfg.rotary_dim
        x_rot, x_pass = x[..., :rd], x[..., rd:]
        if self.cfg.rotary_adjacent_pairs:
            flip = torch.stack([-x_rot[..., 1::2], x_rot[..., ::2]], dim=-1).flatten(-2)
        else:
            half = rd // 2
            flip = torch.cat([-x_rot[..., half:], x_rot[..., :half]], dim=-1)
        rotated = x_rot * cos + flip * sin
        return rotated if x_pass.shape[-1] == 0 else torch.cat([rotated, x_pass], dim=-1)

    def _mask(self, n_new: int, device) -> Tensor | None:
        """The attention mask of this call, shared by every layer (None: causal or full, see
        :meth:`_attention`)."""
        start, end = self.pos, self.pos + n_new
        if self.key_mask is not None:
            mask = self.key_mask[:, None, None, :end]  # batch 1 1 key
            if n_new > 1:  # causal too; a padded query attends to itself so that no row of the softmax is empty
                causal = torch.ones(n_new, end, dtype=torch.bool, device=device).tril(start)
                itself = torch.zeros_like(causal)
                itself[:, start:end] = torch.eye(n_new, dtype=torch.bool, device=device)
                mask = (mask & causal) | itself
            return mask
        if n_new > 1 and start > 0:
            return torch.ones(n_new, end, dtype=torch.bool, device=device).tril(start)
        return None

    def _qkv(self, block: _Block, x: Float[Tensor, "batch pos d_model"],
             rotary: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values (``batch head pos d_head``), queries and keys rotated by
        ``rotary`` (the cos and sin tables at the positions of ``x``; None: no rotary)."""
        batch, n_new, _ = x.shape
        n_heads, n_kv, d_head = self.cfg.n_heads, block.n_kv_heads, self.cfg.d_head
        qkv = F.linear(x, block.W_QKV, block.b_QKV)  # batch pos (q | k | v)
        q, k, v = qkv.split([n_heads * d_head, n_kv * d_head, n_kv * d_head], dim=-1)
        q = q.view(batch, n_new, n_heads, d_head).transpose(1, 2)  # batch head_index pos d_head
        k = k.view(batch, n_new, n_kv, d_head).transpose(1, 2)
        v = v.view(batch, n_new, n_kv, d_head).transpose(1, 2)
        if rotary is not None:  # one gather of the tables for queries and keys
            q, k = self._rotate(q, *rotary), self._rotate(k, *rotary)
        return q, k, v

    def _attention(self, layer: int, block: _Block, x: Float[Tensor, "batch pos d_model"],
                   positions: Tensor | None, mask: Tensor | None) -> Float[Tensor, "batch pos d_model"]:
        batch, n_new, _ = x.shape
        n_heads, n_kv, d_head = self.cfg.n_heads, block.n_kv_heads, self.cfg.d_head
        start, end = self.pos, self.pos + n_new
        q, k, v = self._qkv(block, x, self._rotary_tables(block, positions, start, n_new) if self.rotary else None)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        keys, values = self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
        gqa = dict(enable_gqa=True) if n_kv != n_heads else {}
        if mask is None:  # a single new query sees every cached key; a prompt is causal
            z = F.scaled_dot_product_attention(q, keys, values, is_causal=n_new > 1, scale=1 / block.attn_scale, **gqa)
        else:
            z = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=1 / block.attn_scale, **gqa)
        z = z.transpose(1, 2).reshape(batch, n_new, n_heads * d_head)  # batch pos (head_index d_head)
        return F.linear(z, block.W_O, block.b_O)

    def _mlp(self, block: _Block, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        flat = x.reshape(-1, x.shape[-1])  # (batch pos) d_model
        if block.W_gate_in is None:
            hidden = block.act_fn(torch.addmm(block.b_in, flat, block.W_in))  # (batch pos) d_mlp
            return torch.addmm(block.b_out, hidden, block.W_out).view_as(x)
        # act(x W_gate) * (x W_in) + b_in, as TransformerLens's GatedMLP, in F.linear's weight layout
        gate, linear = F.linear(flat, block.W_gate_in).chunk(2, dim=-1)
        hidden = block.act_fn(gate) * linear
        if block.b_in is not None:
            hidden = hidden + block.b_in
        return F.linear(hidden, block.W_out_T, block.b_out).view_as(x)

    def __call__(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch d_vocab"]:
        """Run ``tokens`` (the prompts, or one new token per row) and return the logits at the last
        position of each row."""
        batch, n_new = tokens.shape
        if batch != self.keys[0].shape[0]:
            raise ValueError(f"tokens have {batch} rows, the cache {self.keys[0].shape[0]}")
        if self.pos + n_new > self.max_len:
            raise ValueError(f"{self.pos} cached + {n_new} new positions exceed max_len={self.max_len}")
        if self.pos == 0 and n_new > 1 and self.key_mask is not None and self.packed_prefill and not self.hooks:
            return self._prefill_packed(tokens)
        positions = self._positions(batch, n_new, tokens.device)
        mask = self._mask(n_new, tokens.device)
        resid = self._hook("hook_embed", self.W_E[tokens])  # batch pos d_model
        if self.W_pos is not None:
            if positions is None:
                pos_embed = self.W_pos[self.pos:self.pos + n_new].expand(batch, -1, -1)  # a view of W_pos
            else:
                pos_embed = self.W_pos[positions]
            if "hook_pos_embed" in self.hooks:  # a hook gets its own copy, which it may change in place
                pos_embed = self._hook("hook_pos_embed", pos_embed.clone())
            resid = resid + pos_embed
        for layer, block in enumerate(self.blocks):
            name = f"blocks.{layer}."
            resid = self._hook(name + "hook_resid_pre", resid)
            attn_out = self._hook(name + "hook_attn_out", self._attention(layer, block, block.ln1(resid), positions, mask))
            resid = self._hook(name + "hook_resid_mid", resid + attn_out)
            mlp_out = self._mlp(block, block.ln2(resid))
            resid = self._hook(name + "hook_resid_post", resid + self._hook(name + "hook_mlp_out", mlp_out))
        self.pos += n_new
        last = self.ln_final(resid[:, -1])  # batch d_model
        return F.linear(last, self.W_U_T, self.b_U)

    def _prefill_packed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch d_vocab"]:
        """The prompt pass of a left-padded batch on the real tokens only, the shared prefix once.

        Position-wise work (embedding, normalisations, projections, MLPs) runs on one packed
        sequence: the rows' common prefix once, then each row's own suffix, no padding. Attention runs
        per row: the prefix causally on itself, each suffix on the prefix and causally on itself.
        The keys and values land in the cache in the left-padded layout of ``prompt_mask`` (each row's
        prompt at its last positions), so the decoding steps are those of :meth:`__call__`. Only
        without hooks (a hook would see packed activations, not ``[batch, pos, d_model]`` ones)."""
        batch, width = tokens.shape
        device = tokens.device
        real = self.key_mask[:, :width]
        lengths = real.sum(1)
        if not bool((real == (torch.arange(width, device=device) >= (width - lengths)[:, None])).all()):
            raise ValueError("prompt_mask is not a left padding (zeros, then ones, in every row)")
        rows = [tokens[i, width - int(n):] for i, n in enumerate(lengths.tolist())]
        shortest = min(len(r) for r in rows)
        # the common prefix, leaving every row at least one token of its own (its last logit)
        heads = torch.stack([r[:shortest - 1] for r in rows])  # batch shortest-1
        differs = (heads != heads[:1]).any(0).nonzero()
        prefix = int(differs[0]) if len(differs) else shortest - 1
        packed = torch.cat([rows[0][:prefix]] + [r[prefix:] for r in rows])  # n_packed
        suffix_len = (lengths - prefix).tolist()
        starts = [prefix + s for s in np.cumsum([0] + suffix_len[:-1]).tolist()]  # each row's suffix in `packed`
        positions = torch.cat([torch.arange(prefix, device=device)] +
                              [torch.arange(prefix, int(n), device=device) for n in lengths.tolist()])
        # packed index of every (row, cache slot < width): the prefix, then the row's suffix; padding
        # slots read token 0's keys and values (finite, and masked by key_mask)
        slot = torch.arange(width, device=device)[None, :] - (width - lengths)[:, None]  # position in the row
        suffix_start = torch.tensor(starts, device=device)[:, None] + slot - prefix
        source = torch.where(slot < prefix, slot, suffix_start).clamp(0, len(packed) - 1)  # batch width
        n_heads, d_head = self.cfg.n_heads, self.cfg.d_head
        resid = self.W_E[packed][None]  # 1 n_packed d_model
        if self.W_pos is not None:
            resid = resid + self.W_pos[positions][None]
        for layer, block in enumerate(self.blocks):
            n_kv = block.n_kv_heads
            rotary = (block.rotary_cos[positions], block.rotary_sin[positions]) if self.rotary else None
            q, k, v = (t[0] for t in self._qkv(block, block.ln1(resid), rotary))  # head n_packed d_head
            self.keys[layer][:, :, :width] = k[:, source].transpose(0, 1)  # batch kv_head width d_head
            self.values[layer][:, :, :width] = v[:, source].transpose(0, 1)
            gqa = dict(enable_gqa=True) if n_kv != n_heads else {}
            scale = 1 / block.attn_scale
            z = torch.empty_like(q)  # head n_packed d_head
            if prefix:
                z[:, :prefix] = F.scaled_dot_product_attention(
                    q[None, :, :prefix], k[None, :, :prefix], v[None, :, :prefix], is_causal=True, scale=scale, **gqa)[0]
            for i, (start, n) in enumerate(zip(starts, suffix_len)):
                n_row = prefix + n  # the row's keys: its last n_row cache slots
                keys = self.keys[layer][i:i + 1, :, width - n_row:width]
                values = self.values[layer][i:i + 1, :, width - n_row:width]
                causal = None if prefix == 0 else torch.ones(n, n_row, dtype=torch.bool, device=device).tril(prefix)
                z[:, start:start + n] = F.scaled_dot_product_attention(
                    q[None, :, start:start + n], keys, values, attn_mask=causal, is_causal=prefix == 0,
                    scale=scale, **gqa)[0]
            z = z.transpose(0, 1).reshape(1, -1, n_heads * d_head)
            resid = resid + F.linear(z, block.W_O, block.b_O)
            resid = resid + self._mlp(block, block.ln2(resid))
        self.pos = width
        self.next_position = lengths.clone()
        last = torch.tensor([s + n - 1 for s, n in zip(starts, suffix_len)], device=device)
        return F.linear(self.ln_final(resid[0, last]), self.W_U_T, self.b_U)

    def keep_rows(self, keep: Tensor) -> None:
        """Keep only the rows where ``keep`` (bool, ``[batch]``) is true, in order."""
        self.keys = [k[keep] for k in self.keys]
        self.values = [v[keep] for v in self.values]
        if self.key_mask is not None:
            self.key_mask = self.key_mask[keep]
            self.next_position = self.next_position[keep]
