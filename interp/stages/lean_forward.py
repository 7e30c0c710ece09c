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
* no attention mask: a batch holds prompts of one length (see :func:`interp.stages.generate.plan_batches`),
  so the prompt needs only the causal mask and a decoding step's single query sees every cached key;
* the unembedding only at the last position.

It reproduces ``model(tokens)`` to float tolerance (tests compare logits on random models of each
supported configuration). It supports the configurations of :class:`interp.models.checkpoint.ModelConfig`
and more (standard positional embeddings, LN / LNPre / RMS / RMSPre / no normalisation, any
elementwise activation, causal multi-head attention); :func:`lean_unsupported_reason` names the
first feature of any other model (rotary, grouped-query attention, gated MLPs, soft caps, ...), for
which callers use TransformerLens's own forward.

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
        LayerNorm,
        LayerNormPre,
        PosEmbed,
        RMSNorm,
        RMSNormPre,
        TransformerBlock,
        Unembed,
    )
    from transformer_lens.components.mlps.mlp import MLP

    if not isinstance(model, HookedTransformer):
        return f"not a HookedTransformer ({type(model).__name__})"
    cfg = model.cfg
    flags = {  # config features the lean forward does not implement: name -> is it on
        f"positional_embedding_type={cfg.positional_embedding_type!r}": cfg.positional_embedding_type != "standard",
        f"attention_dir={cfg.attention_dir!r}": cfg.attention_dir != "causal",
        "n_key_value_heads (grouped-query attention)": cfg.n_key_value_heads is not None,
        "gated_mlp": bool(cfg.gated_mlp),
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
    if type(model.embed) is not Embed or type(model.pos_embed) is not PosEmbed or type(model.unembed) is not Unembed:
        return "non-standard embedding or unembedding module"
    if type(getattr(model, "ln_final", torch.nn.Identity())) not in norms:
        return f"final normalisation {type(model.ln_final).__name__}"
    for layer, block in enumerate(model.blocks):
        if type(block) is not TransformerBlock or type(block.attn) is not Attention or type(block.mlp) is not MLP:
            return f"block {layer} is not a standard TransformerBlock(Attention, MLP)"
        if getattr(block.attn, "attn_type", "global") != "global":
            return f"block {layer} uses {block.attn.attn_type} attention"
        for ln in (block.ln1, block.ln2):
            if type(ln) not in norms:
                return f"block {layer} normalisation {type(ln).__name__}"
    return None


def lean_hooks(model, fwd_hooks: Sequence[tuple] | None) -> dict[str, list[HookFn]] | None:
    """The user hooks by hook-point name when the lean forward can honour all of them, else None.

    ``fwd_hooks`` is TransformerLens's list of ``(name or name filter, fn)``. None is returned when
    a hook targets a point outside :func:`lean_hook_names`, or when any hook is already attached to
    the model (the lean forward would skip it)."""
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None
    allowed = set(lean_hook_names(model.cfg.n_layers))
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
    W_QKV: Float[Tensor, "qkv d_model"]  # rows: (q|k|v, head_index, d_head)
    b_QKV: Float[Tensor, "qkv"]
    W_O: Float[Tensor, "d_model head_dims"]  # columns: (head_index, d_head)
    b_O: Float[Tensor, "d_model"]
    W_in: Float[Tensor, "d_model d_mlp"]
    b_in: Float[Tensor, "d_mlp"]
    W_out: Float[Tensor, "d_mlp d_model"]
    b_out: Float[Tensor, "d_model"]
    act_fn: Callable[[Tensor], Tensor]
    attn_scale: float


def _block_weights(block) -> _Block:
    attn, mlp = block.attn, block.mlp
    n_heads, d_model, d_head = attn.W_Q.shape
    # [head_index, d_model, d_head] -> [(head_index d_head), d_model], as TransformerLens's F.linear
    w = [W.permute(0, 2, 1).reshape(n_heads * d_head, d_model) for W in (attn.W_Q, attn.W_K, attn.W_V)]
    b = [bias.reshape(n_heads * d_head) for bias in (attn.b_Q, attn.b_K, attn.b_V)]
    W_O = attn.W_O.reshape(n_heads * d_head, d_model).T.contiguous()  # d_model (head_index d_head)
    return _Block(ln1=_norm_fn(block.ln1), ln2=_norm_fn(block.ln2), W_QKV=torch.cat(w).contiguous(),
                  b_QKV=torch.cat(b), W_O=W_O, b_O=attn.b_O, W_in=mlp.W_in, b_in=mlp.b_in, W_out=mlp.W_out,
                  b_out=mlp.b_out, act_fn=mlp.act_fn, attn_scale=float(attn.attn_scale))


class LeanCachedForward:
    """Cached forward of a batch of equal-length sequences through a HookedTransformer's weights.

    Call it first with the prompts ``[batch, pos]`` (fills the cache, returns the logits at the
    last prompt position), then with one new token per row ``[batch, 1]`` per step; between steps,
    :meth:`keep_rows` drops finished rows. ``max_len`` bounds prompt plus generated tokens.
    ``hooks`` maps hook-point names to user hook functions (see :func:`lean_hooks`).

    Meant to run under ``torch.inference_mode()``: it reads the parameters without autograd.
    """

    def __init__(self, model, batch: int, max_len: int, hooks: dict[str, list[HookFn]] | None = None):
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
        self.blocks = [_block_weights(block) for block in model.blocks]
        self.ln_final = _norm_fn(getattr(model, "ln_final", torch.nn.Identity()))
        self.W_E, self.W_pos = model.embed.W_E, model.pos_embed.W_pos
        self.W_U_T = model.unembed.W_U.T.contiguous()  # d_vocab d_model
        self.b_U = model.unembed.b_U
        n_heads, d_head = self.cfg.n_heads, self.cfg.d_head
        kv_shape = (batch, n_heads, max_len, d_head)
        device, dtype = self.W_E.device, self.W_E.dtype
        self.keys = [torch.empty(kv_shape, device=device, dtype=dtype) for _ in self.blocks]
        self.values = [torch.empty(kv_shape, device=device, dtype=dtype) for _ in self.blocks]
        self.max_len = max_len
        self.pos = 0  # positions already in the cache

    def _hook(self, name: str, x: Tensor) -> Tensor:
        for fn in self.hooks.get(name, ()):
            out = fn(x, hook=self.model.hook_dict[name])
            if out is not None:
                x = out
        return x

    def _attention(self, layer: int, block: _Block, x: Float[Tensor, "batch pos d_model"]
                   ) -> Float[Tensor, "batch pos d_model"]:
        batch, n_new, _ = x.shape
        n_heads, d_head = self.cfg.n_heads, self.cfg.d_head
        qkv = F.linear(x, block.W_QKV, block.b_QKV)  # batch pos (3 head_index d_head)
        q, k, v = qkv.view(batch, n_new, 3, n_heads, d_head).permute(2, 0, 3, 1, 4)  # each batch head_index pos d_head
        start, end = self.pos, self.pos + n_new
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        keys, values = self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
        if n_new == 1 or start == 0:  # a single new query sees every cached key; a prompt is causal
            z = F.scaled_dot_product_attention(q, keys, values, is_causal=n_new > 1, scale=1 / block.attn_scale)
        else:
            causal = torch.ones(n_new, end, dtype=torch.bool, device=x.device).tril(start)
            z = F.scaled_dot_product_attention(q, keys, values, attn_mask=causal, scale=1 / block.attn_scale)
        z = z.transpose(1, 2).reshape(batch, n_new, n_heads * d_head)  # batch pos (head_index d_head)
        return F.linear(z, block.W_O, block.b_O)

    def __call__(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch d_vocab"]:
        """Run ``tokens`` (the prompts, or one new token per row) and return the logits at the last
        position of each row."""
        batch, n_new = tokens.shape
        if batch != self.keys[0].shape[0]:
            raise ValueError(f"tokens have {batch} rows, the cache {self.keys[0].shape[0]}")
        if self.pos + n_new > self.max_len:
            raise ValueError(f"{self.pos} cached + {n_new} new positions exceed max_len={self.max_len}")
        embed = self._hook("hook_embed", self.W_E[tokens])  # batch pos d_model
        pos_embed = self.W_pos[self.pos:self.pos + n_new].expand(batch, -1, -1)  # a view of W_pos
        if "hook_pos_embed" in self.hooks:  # a hook gets its own copy, which it may change in place
            pos_embed = self._hook("hook_pos_embed", pos_embed.clone())
        resid = embed + pos_embed
        for layer, block in enumerate(self.blocks):
            name = f"blocks.{layer}."
            resid = self._hook(name + "hook_resid_pre", resid)
            attn_out = self._hook(name + "hook_attn_out", self._attention(layer, block, block.ln1(resid)))
            resid = self._hook(name + "hook_resid_mid", resid + attn_out)
            hidden = block.act_fn(torch.addmm(block.b_in, block.ln2(resid).reshape(-1, resid.shape[-1]),
                                              block.W_in))  # (batch pos) d_mlp
            mlp_out = torch.addmm(block.b_out, hidden, block.W_out).view_as(resid)
            resid = self._hook(name + "hook_resid_post", resid + self._hook(name + "hook_mlp_out", mlp_out))
        self.pos += n_new
        last = self.ln_final(resid[:, -1])  # batch d_model
        return F.linear(last, self.W_U_T, self.b_U)

    def keep_rows(self, keep: Tensor) -> None:
        """Keep only the rows where ``keep`` (bool, ``[batch]``) is true, in order."""
        self.keys = [k[keep] for k in self.keys]
        self.values = [v[keep] for v in self.values]
