"""The training losses, one per concept, over TransformerLens logits.

* :func:`masked_lm_loss`: next-token cross-entropy on the target tokens a mask marks (pretraining
  on whole documents, a teacher's trait answers, SFT on a completion);
* :func:`kl_loss`: KL(target || student) of the next-token distributions at the positions a mask
  marks, optionally over a subset of the vocabulary renormalised there (the theorem's imitation);
* :func:`distill_loss`: :func:`kl_loss` at the positions that predict the target tokens a mask
  marks (a student distilling a teacher's logits on a completion).
"""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor


def masked_lm_loss(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"],
                   loss_mask: Float[Tensor, "batch pos"]) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over the positions where ``loss_mask`` (of the *target*
    token) is 1. ``loss_mask[:, 0]`` is ignored: the first token is never predicted."""
    log_probs = logits[:, :-1].log_softmax(-1)  # batch pos-1 d_vocab
    target_lp = log_probs.gather(-1, tokens[:, 1:, None])[..., 0]  # batch pos-1
    m = loss_mask[:, 1:]
    return -(target_lp * m).sum() / m.sum().clamp_min(1)


def kl_loss(student_logits: Float[Tensor, "batch pos d_vocab"], target_logits: Float[Tensor, "batch pos d_vocab"],
            mask: Float[Tensor, "batch pos"], allowed: Int[Tensor, "n_allowed"] | None = None) -> Float[Tensor, ""]:
    """Mean over the positions where ``mask`` is 1 of KL(target || student) of the next-token
    distributions, over ``allowed`` tokens (renormalised there) if given."""
    if allowed is not None:
        student_logits, target_logits = student_logits[..., allowed], target_logits[..., allowed]
    log_s, log_t = student_logits.log_softmax(-1), target_logits.log_softmax(-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # batch pos
    return (kl * mask).sum() / mask.sum()


def distill_loss(student_logits: Float[Tensor, "batch pos d_vocab"], teacher_logits: Float[Tensor, "batch pos d_vocab"],
                 mask: Float[Tensor, "batch pos"], allowed: Int[Tensor, "n_allowed"] | None = None) -> Float[Tensor, ""]:
    """:func:`kl_loss` at the positions whose next token ``mask`` marks as a target (the logits at
    position ``p`` predict token ``p + 1``), over ``allowed`` tokens if given."""
    return kl_loss(student_logits[:, :-1], teacher_logits[:, :-1], mask[:, 1:], allowed)
