"""LoRA adapters on a HookedTransformer's weight matrices (``peft`` does not know TL modules).

Every weight of a HookedTransformer is used as ``x @ W``, with some dimensions of ``W`` reading
the input and the others writing the output:

=========== ================================= ============ ============================
weight      shape                             input dims   output dims
=========== ================================= ============ ============================
``W_Q``     ``[head_index, d_model, d_head]``  ``d_model``  ``head_index, d_head``
``W_K``     (``_W_K`` under grouped-query attention: ``[n_key_value_heads, d_model, d_head]``)
``W_V``     as ``W_K``
``W_O``     ``[head_index, d_head, d_model]``  ``head_index, d_head``  ``d_model``
``W_in``    ``[d_model, d_mlp]``                ``d_model``  ``d_mlp``
``W_gate``  ``[d_model, d_mlp]`` (gated MLPs)   ``d_model``  ``d_mlp``
``W_out``   ``[d_mlp, d_model]``                ``d_mlp``    ``d_model``
=========== ================================= ============ ============================

:func:`matrix_view` flattens a weight into the usual ``[d_out, d_in]`` matrix ``M`` of the
linear map, and LoRA adds ``scale * B @ A`` to it (``A: [rank, d_in]``, ``B: [d_out, rank]``,
``scale = alpha / rank``), as in Hu et al. (2021) and ``peft``: ``A`` starts uniform in
``±1/sqrt(d_in)`` (Kaiming, from a generator seeded by :attr:`LoraConfig.seed` and the weight's
name), ``B`` at zero, so an adapted model starts equal to its base.

The adapters are ``torch.nn.utils.parametrize`` parametrisations of the model's own weight
parameters: ``block.attn.W_Q`` reads as ``W_Q0 + delta`` everywhere TransformerLens uses it (the
forward, ``OV``/``QK``, hooks), the original weight is kept frozen in
``block.attn.parametrizations.W_Q.original``, and only ``lora_A``/``lora_B`` train.
:func:`merge_lora` writes ``W_Q0 + delta`` into a plain parameter again (for evaluation and
sampling, and for the lean sampler that reads the weights once).

Alignment recording (:mod:`interp.instruments.recording`) of a LoRA student is over the **merged weights of
the adapted matrices** (:class:`MergedLoraWeights`): the movement ``W - W0 = scale * B @ A`` and
the gradient ``dL/dW`` of each adapted matrix, named as the base model names the matrix, so a
teacher's direction restricted to those matrices is comparable; the adapter parameters
themselves are not recorded.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from jaxtyping import Float
from torch import Tensor, nn
from torch.nn.utils import parametrize

from interp.core.config import StageConfig, option

ADAPTER_FILE = "adapter.safetensors"
LORA_TARGETS = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out")
KNOWN_TARGETS = LORA_TARGETS + ("W_gate",)
# weight name -> (input dims, output dims) of ``x @ W`` (see the module docstring)
_DIMS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "W_Q": ((1,), (0, 2)), "W_K": ((1,), (0, 2)), "W_V": ((1,), (0, 2)),
    "W_O": ((0, 1), (2,)),
    "W_in": ((0,), (1,)), "W_gate": ((0,), (1,)), "W_out": ((0,), (1,)),
}
_SUBMODULE = {"W_Q": "attn", "W_K": "attn", "W_V": "attn", "W_O": "attn", "W_in": "mlp", "W_gate": "mlp", "W_out": "mlp"}


@dataclass
class LoraConfig(StageConfig):
    """Low-rank adapters on chosen weight matrices of every block."""

    rank: int = option(8, "Rank r of each adapter (B @ A with A: [r, d_in], B: [d_out, r]).")
    alpha: float = option(16.0, "Scale numerator: the update is (alpha / rank) * B @ A.")
    targets: tuple[str, ...] = option(LORA_TARGETS, f"Weights to adapt in every block, of {list(KNOWN_TARGETS)}.")
    seed: int = option(0, "Seed of the adapters' A initialisation (B starts at zero).")

    def validate(self) -> None:
        self.require(self.rank >= 1, "rank", "must be at least 1")
        self.require(self.alpha > 0, "alpha", "must be positive")
        self.require(len(self.targets) > 0, "targets", "name at least one weight")
        bad = [t for t in self.targets if t not in KNOWN_TARGETS]
        self.require(not bad, "targets", f"unknown {bad}; choose from {list(KNOWN_TARGETS)}")
        self.require(len(set(self.targets)) == len(self.targets), "targets", "are repeated")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def require_lora_options(config: StageConfig) -> None:
    """Check the ``lora_alpha`` and ``lora_targets`` options of a stage config that builds a
    :class:`LoraConfig` from them (the finetune stage, the audit's LoRA student)."""
    config.require(config.lora_alpha > 0, "lora_alpha", "must be positive")
    bad = [t for t in config.lora_targets if t not in KNOWN_TARGETS]
    config.require(bool(config.lora_targets) and not bad and len(set(config.lora_targets)) == len(config.lora_targets),
                   "lora_targets", f"name distinct weights of {list(KNOWN_TARGETS)} (got {list(config.lora_targets)})")


def _kind(attr: str) -> str:
    return attr.lstrip("_")


def matrix_view(kind: str, weight: Tensor) -> Float[Tensor, "d_out d_in"]:
    """The ``[d_out, d_in]`` matrix of the linear map ``x @ weight`` (``kind``: ``W_Q``, ``W_O``, ...)."""
    ins, outs = _DIMS[kind]
    d_in = math.prod(weight.shape[d] for d in ins)
    d_out = math.prod(weight.shape[d] for d in outs)
    return weight.permute(*outs, *ins).reshape(d_out, d_in)


def from_matrix_view(kind: str, matrix: Float[Tensor, "d_out d_in"], shape: torch.Size) -> Tensor:
    """Inverse of :func:`matrix_view`: a ``[d_out, d_in]`` matrix back in the weight's own layout."""
    ins, outs = _DIMS[kind]
    permuted = matrix.reshape(*(shape[d] for d in outs), *(shape[d] for d in ins))
    order = outs + ins  # permuted dim j is weight dim order[j]
    return permuted.permute(*[order.index(d) for d in range(len(shape))])


class LoraDelta(nn.Module):
    """Parametrisation ``W -> W + scale * (B @ A)`` of one weight, in its own layout."""

    def __init__(self, kind: str, shape: torch.Size, rank: int, scale: float, generator: torch.Generator,
                 dtype: torch.dtype, device):
        super().__init__()
        ins, outs = _DIMS[kind]
        d_in = math.prod(shape[d] for d in ins)
        d_out = math.prod(shape[d] for d in outs)
        self.kind, self.shape, self.scale = kind, torch.Size(shape), scale
        bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform_(a=sqrt(5)), as peft initialises A
        a = (torch.rand(rank, d_in, generator=generator, dtype=torch.float32) * 2 - 1) * bound
        self.lora_A = nn.Parameter(a.to(dtype=dtype, device=device))  # rank d_in
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank, dtype=dtype, device=device))  # d_out rank

    def delta(self) -> Tensor:
        """``scale * B @ A`` in the weight's layout."""
        return from_matrix_view(self.kind, self.scale * (self.lora_B @ self.lora_A), self.shape)

    def forward(self, original: Tensor) -> Tensor:
        return original + self.delta()


def _targets(model, targets: tuple[str, ...]) -> Iterator[tuple[str, nn.Module, str]]:
    """(name, module, attribute) of every weight to adapt, in block order; a target that no
    block has (``W_gate`` without a gated MLP) is a ``ValueError``."""
    found = {t: 0 for t in targets}
    for layer, block in enumerate(model.blocks):
        for target in targets:
            module = getattr(block, _SUBMODULE[target], None)
            if module is None:
                continue
            for attr in (target, "_" + target):  # grouped-query attention keeps W_K / W_V as _W_K / _W_V
                if isinstance(module._parameters.get(attr), nn.Parameter) or parametrize.is_parametrized(module, attr):
                    found[target] += 1
                    yield f"blocks.{layer}.{_SUBMODULE[target]}.{attr}", module, attr
                    break
    missing = [t for t, n in found.items() if n == 0]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not weights of this model's blocks (e.g. W_gate needs a gated MLP)")


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def apply_lora(model, config: LoraConfig) -> list[str]:
    """Freeze every parameter of ``model`` and add adapters to ``config.targets`` in every block;
    returns the adapted weights' names (``blocks.0.attn.W_Q``, ...). The model's function is
    unchanged until the adapters train (``B`` is zero)."""
    if has_lora(model):
        raise ValueError("the model already carries LoRA adapters")
    for p in model.parameters():
        p.requires_grad_(False)
    names = []
    for name, module, attr in list(_targets(model, config.targets)):
        weight = getattr(module, attr)
        delta = LoraDelta(_kind(attr), weight.shape, config.rank, config.scale, _generator(config.seed, name),
                          weight.dtype, weight.device)
        parametrize.register_parametrization(module, attr, delta)
        names.append(name)
    model.lora_config = config
    return names


def has_lora(model) -> bool:
    return getattr(model, "lora_config", None) is not None


def lora_modules(model) -> Iterator[tuple[str, nn.Module, str, LoraDelta]]:
    """(weight name, module, attribute, adapter) of every adapted weight."""
    for layer, block in enumerate(model.blocks):
        for sub in ("attn", "mlp"):
            module = getattr(block, sub, None)
            if module is None or not parametrize.is_parametrized(module):
                continue
            for attr, plist in module.parametrizations.items():
                for p in plist:
                    if isinstance(p, LoraDelta):
                        yield f"blocks.{layer}.{sub}.{attr}", module, attr, p


def adapter_parameters(model) -> list[nn.Parameter]:
    """The trainable parameters of a LoRA model: every ``lora_A`` and ``lora_B``."""
    return [p for _, _, _, delta in lora_modules(model) for p in (delta.lora_A, delta.lora_B)]


def adapter_state_dict(model) -> dict[str, Tensor]:
    """``{"blocks.0.attn.W_Q.lora_A": ..., ...}``: the adapters alone (what a LoRA checkpoint saves)."""
    out = {}
    for name, _, _, delta in lora_modules(model):
        out[f"{name}.lora_A"] = delta.lora_A.detach().clone().contiguous()
        out[f"{name}.lora_B"] = delta.lora_B.detach().clone().contiguous()
    return out


@torch.no_grad()
def load_adapter_state_dict(model, state: dict[str, Tensor], source: str | Path = "adapters") -> None:
    """Load adapters saved by :func:`adapter_state_dict` into a model with the same adapters;
    missing, unexpected or misshapen entries are a ``ValueError`` naming them and ``source``."""
    expected = {}
    for name, _, _, delta in lora_modules(model):
        expected[f"{name}.lora_A"] = delta.lora_A
        expected[f"{name}.lora_B"] = delta.lora_B
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source}: adapters missing {missing[:5]} / unexpected {unexpected[:5]} for this model and "
                         "LoRA config")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise ValueError(f"{source}: adapter {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        expected[k].copy_(v)


@torch.no_grad()
def merge_lora(model) -> None:
    """Replace every adapted weight by the plain parameter ``W0 + scale * B @ A`` (trainable, as a
    loaded model's weights are) and drop the adapters."""
    for _, module, attr, _ in list(lora_modules(model)):
        parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    for p in model.parameters():
        p.requires_grad_(True)
    model.lora_config = None


class MergedLoraWeights:
    """The weights :class:`interp.instruments.recording.AlignmentRecorder` records for a LoRA model: the
    merged value ``W0 + scale * B @ A`` of every adapted matrix and the gradient ``dL/dW``.

    The frozen originals are made to require a gradient (``dL/dW0 = dL/dW``, since ``W = W0 +
    delta``), so a backward pass fills ``original.grad``; the optimizer holds only the adapters
    (:func:`adapter_parameters`), so the originals never move, and :meth:`grads` clears what it
    read (the optimizer would not)."""

    def __init__(self, model):
        self._entries = {name: (module, attr) for name, module, attr, _ in lora_modules(model)}
        self.order(list(self._entries))
        for p in self._originals:
            p.requires_grad_(True)

    def order(self, names: list[str]) -> None:
        """Use this order of the names from now on (the recorder's buffer layout)."""
        self.names = list(names)
        self._modules = [self._entries[n] for n in self.names]
        self._originals = [module.parametrizations[attr].original for module, attr in self._modules]

    def values(self) -> list[Tensor]:
        with torch.no_grad():
            return [getattr(module, attr).detach() for module, attr in self._modules]

    def grads(self) -> list[Tensor]:
        out = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._originals]
        for p in self._originals:
            p.grad = None
        return out

    def grad_targets(self) -> list[Tensor]:
        """The leaves whose gradient is ``dL/dW`` (for ``torch.autograd.grad``)."""
        return list(self._originals)

    def close(self) -> None:
        for p in self._originals:
            p.requires_grad_(False)
            p.grad = None
