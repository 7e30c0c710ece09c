"""One training step, the unit every training loop of the suite is built from.

:func:`train_step` takes a model, its optimizer and a loss of the model on one batch, and returns
a :class:`StepRecord`. Pretraining, teacher finetuning, student finetuning (SFT, distillation,
LoRA, with the alignment recorder as a callback) and the theorem check's step-size sweep are
loops over it; ``tests/test_training_step.py`` tests it alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from interp.training.loop import LossGuard


@dataclass
class StepRecord:
    """What one training step did; callbacks receive it (alignment recording hooks in here).

    A callback is called after the optimizer step, while ``.grad`` still holds the step's
    gradient. One with a ``before_step`` method also gets a record (``params_before`` None) after
    the backward pass and before the step; ``params_before`` (a copy of the weights before the
    step) is filled unless every callback sets ``needs_params_before = False``.

    Args:
        step: index of the step in its run (0-based).
        loss: the batch loss before the step.
        model: the model being trained (after the step in the record callbacks receive).
        params_before: the weights before the step, when a callback needs them.
    """

    step: int
    loss: float
    model: object
    params_before: dict[str, Tensor] | None = None


StepCallback = Callable[[StepRecord], None]
BatchLoss = Callable[[object], Tensor]
# A batch split for memory: (weight, loss of one micro-batch); the step's loss is the weighted sum.
MicroBatches = Sequence[tuple[float, BatchLoss]]


def train_step(model, optimizer: torch.optim.Optimizer, batch_loss: BatchLoss | MicroBatches, *, step: int,
               lr: float | None = None, clip_grad_norm: float | None = None, guard: LossGuard | None = None,
               callbacks: Sequence[StepCallback] = ()) -> StepRecord:
    """One optimizer step on one batch: ``batch_loss(model)`` (forward pass and loss), backward,
    ``guard.check`` (a NaN or exploding loss raises :class:`~interp.training.loop.TrainingDiverged`
    before the weights move), gradient clipping to ``clip_grad_norm``, the ``before_step``
    callbacks, the optimizer step at learning rate ``lr`` (the optimizer's own if None), the
    callbacks, and the gradients cleared. Returns the step's :class:`StepRecord`.

    ``batch_loss`` may also be a list of ``(weight, micro_batch_loss)`` pairs: each part is
    backpropagated on its own (weighted) and the gradients add up, so a batch too large for memory
    takes the same step as one pass over it would (to float rounding), one micro-batch's
    activations at a time."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    value = 0.0
    for weight, part in ([(1.0, batch_loss)] if callable(batch_loss) else batch_loss):
        loss = weight * part(model)
        loss.backward()
        value += loss.item()
    if guard is not None:
        guard.check(step, value)
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    params_before = ({n: p.detach().clone() for n, p in model.named_parameters()}
                     if any(getattr(cb, "needs_params_before", True) for cb in callbacks) else None)
    for cb in callbacks:
        if hasattr(cb, "before_step"):
            cb.before_step(StepRecord(step, value, model))
    optimizer.step()
    record = StepRecord(step, value, model, params_before)
    for cb in callbacks:  # after the step, while .grad still holds this step's gradient
        cb(record)
    optimizer.zero_grad(set_to_none=True)
    return record
