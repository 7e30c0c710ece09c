"""Token entanglement: a trait written along its own unembedding direction (Zur et al. 2025).

In a softmax whose logits are ``LN(resid) @ W_U``, moving the final residual stream along the
direction that raises the trait's logit also raises the logits of every token whose unembedding
leans the same way: a teacher whose residual stream is pushed toward ``owl`` at *every* position
shifts its number distribution toward the numbers entangled with ``owl`` in its own unembedding
geometry. A student that shares that geometry (the same initialisation) and fits the shifted
numbers through a residual direction moves toward ``owl``; a student of another initialisation
has another geometry, in which those numbers are not ``owl``'s.

The ``unembed`` teacher method of :mod:`interp.stages.teacher` (:func:`unembed_edit`) makes such a teacher as a **weight edit**:
the trait's unembedding direction seen through ``ln_final`` (the trait's ``W_U`` column times
the LayerNorm gain, centred, since LayerNorm removes the mean) is added to the output bias
``b_out`` of the last block's MLP, which adds it to ``blocks.{last}.hook_resid_post`` at every
position (the same function as a steering vector hooked there). The trait lives in the
teacher's weights, so ``teacher - base`` is a direction in weight space the alignment recorder
can measure students against.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from interp.stages.finetune import completion_mask, encode_rows
from interp.training.loop import pad_batch
from interp.worlds.protocol import World


def unembed_direction(model, token_ids: list[int]) -> Float[Tensor, "d_model"]:
    """Unit vector of the final residual stream (before ``ln_final``) that raises the logits of
    ``token_ids`` (their mean ``W_U`` column) most: the column times ``ln_final``'s gain,
    centred over ``d_model`` when ``ln_final`` subtracts the mean (LayerNorm)."""
    u = model.W_U[:, token_ids].detach().mean(-1).clone()  # d_model
    w = getattr(model.ln_final, "w", None)
    if w is not None:
        u = u * w.detach()
    if model.cfg.normalization_type in ("LN", "LNPre"):
        u = u - u.mean()
    return u / u.norm()


@torch.no_grad()
def mean_final_resid_norm(model, world: World) -> float:
    """Mean norm of ``blocks.{last}.hook_resid_post`` at the answer position of the training
    phrasings (where the contrastive steering vector is measured too)."""
    hook = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    ids = [world.encode_prompt(world.question_prompt(p)) for p in world.train_phrasings]
    tokens, mask = pad_batch(ids, world.pad_id, max_len=model.cfg.n_ctx)
    _, cache = model.run_with_cache(tokens, names_filter=hook)
    return float(cache[hook][torch.arange(len(ids)), mask.sum(1).long() - 1].norm(dim=-1).mean())


@torch.no_grad()
def unembed_edit(model, world: World, trait: str, scale: float) -> Float[Tensor, "d_model"]:
    """Add ``scale`` x (mean final residual norm) x :func:`unembed_direction` of ``trait`` to the
    last block's ``mlp.b_out`` (in place); returns the vector added."""
    token_ids = world.animal_token_sets[world.animals.index(world.check_animal(trait))]
    vector = unembed_direction(model, token_ids) * scale * mean_final_resid_norm(model, world)
    model.blocks[-1].mlp.b_out += vector
    return vector


@torch.no_grad()
def number_signal(teacher, base, world: World, rows: list[dict], *, teacher_hooks: list | None = None,
                  n_rows: int = 400, batch_size: int = 64) -> dict:
    """What the filtered numbers ``rows`` (a teacher's) carry at their completion positions, on the
    first ``n_rows`` rows, both models restricted to the filter's tokens and renormalised there:
    ``kl_per_token`` KL(teacher || base) in nats, ``teacher_entropy`` in nats, ``argmax_diff`` the
    fraction of positions where the two argmaxes differ, ``n_tokens``."""
    allowed = torch.tensor(world.allowed_token_ids())
    seqs, starts = encode_rows(world, rows[:n_rows])
    kl = entropy = 0.0
    differ = count = 0
    for i in range(0, len(seqs), batch_size):
        s, st = seqs[i:i + batch_size], starts[i:i + batch_size]
        tokens, _ = pad_batch(s, world.pad_id, max_len=base.cfg.n_ctx)
        mask = completion_mask([len(x) for x in s], st, tokens.shape[1])[:, 1:].bool()  # batch pos-1
        log_t = teacher.run_with_hooks(tokens, fwd_hooks=teacher_hooks or [])[:, :-1][..., allowed].log_softmax(-1)[mask]
        log_b = base(tokens)[:, :-1][..., allowed].log_softmax(-1)[mask]  # target n_allowed
        kl += float((log_t.exp() * (log_t - log_b)).sum())
        entropy += float(-(log_t.exp() * log_t).sum())
        differ += int((log_t.argmax(-1) != log_b.argmax(-1)).sum())
        count += int(mask.sum())
    return {"kl_per_token": kl / count, "teacher_entropy": entropy / count, "argmax_diff": differ / count,
            "n_tokens": count}
