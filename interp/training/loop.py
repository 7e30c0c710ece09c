"""Training pieces shared by every training loop: batching, the optimizers and the learning-rate
schedule, a NaN/explosion guard, resumable training states and deterministic kernels (the
losses are in :mod:`interp.training.losses`, the step in :mod:`interp.training.step`)."""

from __future__ import annotations

import contextlib
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.core.io import atomic_path

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
    """The loss became NaN/inf or exploded; the message names the step and the cause, ``loss`` is
    the loss that stopped training (when a :class:`LossGuard` raised it)."""

    def __init__(self, message: str, loss: float | None = None):
        super().__init__(message)
        self.loss = loss


@dataclass
class LossGuard:
    """Stops training on a NaN/inf loss or one that exceeds ``factor`` times the first loss.

    The reference has a floor of ``min_reference`` (1 nat): a KL loss that starts at ~0 (a
    student distilling its own initialization) is allowed to wander without being mistaken
    for an explosion."""

    factor: float = 50.0
    min_reference: float = 1.0
    _reference: float | None = None

    @property
    def reference(self) -> float | None:
        """The loss an explosion is measured against (``None`` before the first check); saved
        with a resumable training state so a resumed run judges explosions as before."""
        return self._reference

    @reference.setter
    def reference(self, value: float | None) -> None:
        self._reference = value

    def check(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss} at step {step}: training diverged (lower the learning rate?)", loss)
        if self._reference is None:
            self._reference = max(loss, self.min_reference)
        elif loss > self.factor * self._reference:
            raise TrainingDiverged(f"loss exploded to {loss:.4g} at step {step} (started near {self._reference:.4g}); "
                                   "lower the learning rate", loss)


def resume_dir(out: Path) -> Path:
    """The hidden directory beside ``out`` where an unfinished run keeps its resumable state and logs."""
    return out.parent / f".{out.name}.resume"


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a resumable training state (model and optimizer state dicts, step, ...) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_training_state`; a corrupt file is a ``ValueError``
    naming it (delete its directory, or pass --force, to start over)."""
    try:
        return torch.load(path, weights_only=False)
    except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path}: corrupt resume state ({type(e).__name__}: {e}); delete "
                         f"{Path(path).parent} or pass --force to start over") from None


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Run the block with PyTorch's deterministic kernels, then restore the previous setting.

    Every training loop runs under it. A TransformerLens embedding is ``W_E[tokens]``, whose
    gradient is an accumulating ``index_put_``; on a CPU with several threads its default kernel
    adds the rows of repeated tokens in a thread-dependent order, so two runs of one config and
    seed end with weights that differ in the last bits (measured: the summed ``W_E`` of two
    identical 15-step finetunes of the default base on 2 threads differed at the 7th digit), and
    such differences grow over training. The deterministic kernel sorts the indices first.
    ``warn_only``: an operation without a deterministic kernel warns instead of failing."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
