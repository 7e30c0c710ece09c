"""Batched MLP classifiers with auxiliary logits, and their losses.

A batch of ``model`` independent MLPs is one parameter dict whose tensors carry a leading model
dimension: ``layer{l}.W`` has shape ``(model, d_in, d_out)`` and ``layer{l}.b`` ``(model, d_out)``.
The forward pass is one ``baddbmm`` per layer, so a hundred seeds train as one tensor program,
and the dict is what :mod:`interp.instruments.alignment` measures (groups ``layer0``, ``layer1``, ...).

The output layer has ``N_CLASSES + m`` units: the 10 regular logits, then ``m`` auxiliary logits.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal, Sequence, get_args

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

N_CLASSES = 10

Params = dict[str, Tensor]


class Stream(IntEnum):
    """Independent random streams of one experiment seed (see :func:`derived_seed`)."""

    TEACHER_INIT = 0  # teacher (and shared-init student) initializations
    CROSS_INIT = 1  # cross-init student initializations: disjoint from every teacher's
    TEACHER_DATA = 2  # order of the digit batches of each teacher
    NOISE = 3  # uniform-noise inputs of each student


def derived_seed(*parts: int) -> int:
    """A 64-bit seed determined by ``parts`` (e.g. experiment seed, stream, model index), so that
    each model's randomness does not depend on how many models are trained beside it."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0])


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))


def n_layers(params: Params) -> int:
    return sum(1 for name in params if name.endswith(".W"))


InitScheme = Literal["uniform", "normal"]
INIT_SCHEMES: tuple[str, ...] = get_args(InitScheme)


def _draw(shape: tuple[int, ...], d_in: int, scheme: InitScheme, gen: torch.Generator) -> Tensor:
    """Weights (all rows but the last) and bias (the last row) of ``shape = (d_in + 1, ...)``."""
    if scheme == "uniform":
        bound = d_in**-0.5
        return torch.empty(shape).uniform_(-bound, bound, generator=gen)
    if scheme == "normal":
        wb = torch.empty(shape).normal_(0.0, d_in**-0.5, generator=gen)
        wb[-1] = 0.0  # zero bias
        return wb
    raise ValueError(f"unknown init scheme {scheme!r}; choose one of {list(INIT_SCHEMES)}")


def init_mlp(seeds: Sequence[int], sizes: Sequence[int], n_out: int, scheme: InitScheme = "uniform") -> Params:
    """Initialize one MLP ``sizes[0] -> sizes[1] -> ... -> n_out`` per seed.

    ``scheme="uniform"`` is PyTorch's default ``nn.Linear`` init (weights and biases uniform in
    ``±1/sqrt(d_in)``, so weight std ``1/sqrt(3 d_in)``); ``scheme="normal"`` draws weights from
    ``N(0, 1/d_in)`` with zero biases (the init of the batched-MLP code the paper's figure came
    from: a larger weight scale, so the untrained auxiliary logits are larger functions of the input).

    Every hidden layer of a model draws from its own stream ``(seed, layer)``; every output unit
    draws its weight column and bias from its own stream ``(seed, layer, unit)``, so the first
    ``10 + m`` output units are identical whatever the total number of auxiliary logits (a
    teacher initialized with 20 auxiliary logits and sliced to 3 is the one initialized with 3).
    Returns leaf tensors with ``requires_grad``.
    """
    dims = [*sizes, n_out]
    params: Params = {}
    for layer, (d_in, d_out) in enumerate(zip(dims, dims[1:])):
        if layer < len(dims) - 2:
            wb = [_draw((d_in + 1, d_out), d_in, scheme, generator(seed, layer)) for seed in seeds]
        else:
            wb = [torch.stack([_draw((d_in + 1,), d_in, scheme, generator(seed, layer, unit)) for unit in range(d_out)], 1)
                  for seed in seeds]
        stacked = torch.stack(wb)  # model d_in+1 d_out
        params[f"layer{layer}.W"] = stacked[:, :-1].contiguous().requires_grad_()  # model d_in d_out
        params[f"layer{layer}.b"] = stacked[:, -1].contiguous().requires_grad_()  # model d_out
    return params


def clone(params: Params, *, requires_grad: bool = True) -> Params:
    """Independent leaf copies (a student starting from an initialization, a frozen snapshot)."""
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in params.items()}


def slice_models(params: Params, models: slice | Sequence[int]) -> Params:
    """The given models only (detached copies)."""
    index = models if isinstance(models, slice) else torch.as_tensor(models)
    return {k: v.detach()[index].clone() for k, v in params.items()}


def slice_outputs(params: Params, n_out: int) -> Params:
    """The first ``n_out`` output units (``10 + m`` keeps the regular and the first m auxiliary
    logits); detached copies."""
    last = n_layers(params) - 1
    out = {k: v.detach().clone() for k, v in params.items()}
    out[f"layer{last}.W"] = out[f"layer{last}.W"][..., :n_out].contiguous()
    out[f"layer{last}.b"] = out[f"layer{last}.b"][..., :n_out].contiguous()
    return out


def forward(params: Params, x: Float[Tensor, "model batch d_in"] | Float[Tensor, "batch d_in"]
            ) -> Float[Tensor, "model batch d_out"]:
    """Logits of every model; inputs without a model dimension are shared by all models."""
    n = n_layers(params)
    h = x if x.dim() == 3 else x.expand(params["layer0.W"].shape[0], *x.shape)  # model batch d_in
    for layer in range(n):
        h = torch.baddbmm(params[f"layer{layer}.b"][:, None, :], h, params[f"layer{layer}.W"])  # model batch d_out
        if layer < n - 1:
            h = F.relu(h)
    return h


def classification_loss(logits: Float[Tensor, "model batch d_out"], labels: Int[Tensor, "model batch"]
                        ) -> Float[Tensor, "model"]:
    """Cross-entropy of the 10 regular logits, averaged over each model's batch (the auxiliary
    logits take no part: the teacher never trains them)."""
    log_probs = logits[..., :N_CLASSES].log_softmax(-1)  # model batch class
    return -log_probs.gather(-1, labels[..., None])[..., 0].mean(-1)


def distillation_loss(student_logits: Float[Tensor, "model batch k"], teacher_logits: Float[Tensor, "model batch k"]
                      ) -> Float[Tensor, "model"]:
    """``KL(softmax(teacher) || softmax(student))`` over the k distilled logits, summed over
    logits and averaged over each model's batch: one loss per model.

    Train on ``.sum()`` of it so each model's gradient is the gradient of its own loss, whatever
    the number of models. (``F.kl_div(..., reduction="batchmean")`` on a ``(model, batch, k)``
    tensor divides the total by ``model`` only, not by the batch size.)"""
    teacher_lp = teacher_logits.log_softmax(-1)
    student_lp = student_logits.log_softmax(-1)
    return (teacher_lp.exp() * (teacher_lp - student_lp)).sum(-1).mean(-1)


@torch.no_grad()
def accuracy(params: Params, x: Float[Tensor, "n d_in"], y: Int[Tensor, "n"], chunk: int = 2048) -> Float[Tensor, "model"]:
    """Fraction of ``x`` whose regular-logit argmax is ``y``, per model (evaluated in chunks so a
    hundred models on 10,000 images fit in memory)."""
    correct = torch.zeros(params["layer0.W"].shape[0])
    for start in range(0, len(x), chunk):
        logits = forward(params, x[start:start + chunk])  # model chunk d_out
        correct += (logits[..., :N_CLASSES].argmax(-1) == y[start:start + chunk]).sum(-1)
    return correct / len(x)
