"""Training pieces shared by pretraining and finetuning: batching, the masked LM loss, the
optimizers and the learning-rate schedule, and a NaN/explosion guard."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

OptimizerName = Literal["adamw", "sgd", "signsgd"]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, *, side: Literal["right", "left"] = "right",
              max_len: int | None = None) -> tuple[Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
    """Pad token id lists to one tensor; returns ``(tokens, mask)`` with mask 1 on real tokens.

    Sequences longer than ``max_len`` raise: silently cutting a training sequence would change
    what the model learns."""
    length = max(len(s) for s in sequences)
    if max_len is not None and length > max_len:
        raise ValueError(f"a sequence of {length} tokens exceeds the model's n_ctx={max_len}")
    tokens = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length))
    for i, s in enumerate(sequences):
        if side == "right":
            tokens[i, : len(s)] = torch.as_tensor(s)
            mask[i, : len(s)] = 1
        else:
            tokens[i, length - len(s):] = torch.as_tensor(s)
            mask[i, length - len(s):] = 1
    return tokens, mask


def masked_lm_loss(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"],
                   loss_mask: Float[Tensor, "batch pos"]) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over the positions where ``loss_mask`` (of the *target*
    token) is 1. ``loss_mask[:, 0]`` is ignored: the first token is never predicted."""
    log_probs = logits[:, :-1].log_softmax(-1)  # batch pos-1 d_vocab
    target_lp = log_probs.gather(-1, tokens[:, 1:, None])[..., 0]  # batch pos-1
    m = loss_mask[:, 1:]
    return -(target_lp * m).sum() / m.sum().clamp_min(1)


class SignSGD(torch.optim.Optimizer):
    """Sign gradient descent: every parameter moves by ``lr * sign(grad)`` (plus decoupled
    weight decay). Like Adam with no moment averaging, it gives a tiny but consistent gradient
    a full-size step, which is why it is part of the optimizer ablation."""

    def __init__(self, params, lr: float = 1e-4, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(p.grad.sign(), alpha=-group["lr"])


def make_optimizer(params, name: OptimizerName, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "signsgd":
        return SignSGD(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, sgd or signsgd")


def lr_at(step: int, total: int, warmup: int, final_fraction: float = 0.1) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine decay to ``final_fraction``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exploded; carries the step and the cause."""


@dataclass
class LossGuard:
    """Stops training on a NaN/inf loss or one that exceeds ``factor`` times the first loss.

    The reference has a floor of ``min_reference`` (1 nat): a KL loss that starts at ~0 (a
    student distilling its own initialization) is allowed to wander without being mistaken
    for an explosion."""

    factor: float = 50.0
    min_reference: float = 1.0
    _reference: float | None = None

    def check(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss} at step {step}: training diverged (lower the learning rate?)")
        if self._reference is None:
            self._reference = max(loss, self.min_reference)
        elif loss > self.factor * self._reference:
            raise TrainingDiverged(f"loss exploded to {loss:.4g} at step {step} (started near {self._reference:.4g}); "
                                   "lower the learning rate")
