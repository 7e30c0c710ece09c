"""Per-step alignment recording during student finetuning: ``alignment.jsonl``.

:class:`AlignmentRecorder` is a ``finetune_student`` callback. At every optimizer step it writes
one JSONL row, with every measurement in total (top-level keys), per parameter group
(``per_group``: ``embed``, ``pos_embed``, ``blocks.0.attn``, ``blocks.0.mlp``, ``blocks.0.ln1``,
..., ``unembed``) and per layer (``per_layer``: ``blocks.0``, ``blocks.1`` and the groups
outside the blocks, ``embed``, ``pos_embed``, ``ln_final``, ``unembed``).

With ``g`` the student's gradient at this step, ``Δ`` the optimizer's actual step (weights
after minus before), ``s = student - base`` (the student's movement from its own
initialization) and ``t`` the teacher direction (below):

================================ ==================================================================
key                              meaning
================================ ==================================================================
``grad_cos_teacher_dir``         cos(-g, t): where the loss pulls, against the teacher direction
``step_cos_teacher_dir``         cos(Δ, t): where the optimizer went (differs from the above for Adam)
``weight_cos``                   cos(s, t); this is also the fraction of the student's movement that
                                 lies along the teacher direction, ``movement_along_teacher / dist_to_base``
``dist_to_base``                 ‖s‖
``dist_to_teacher``              ‖s - t‖, the distance to ``base + t`` (the teacher itself for a
                                 shared-init student)
``dist_to_teacher_change``       ‖s - t‖ - ‖t‖: how much closer (negative) or farther the student is
                                 than its base was; exact even when tiny
``progress``                     <s, t> / ‖t‖²: 0 at the base, 1 when the student has come as far
                                 along the teacher direction as the teacher
``movement_along_teacher``       <s, t> / ‖t‖ (total only), the signed length of the student's movement
                                 along t; ``movement_off_teacher`` the length of the rest
``grad_norm``, ``step_norm``     ‖g‖, ‖Δ‖ (total only)
``grad_cos_trait_grad``          cos(-g, -∇L_trait), every ``trait_grad_every`` steps only
``step_cos_trait_grad``          cos(Δ, -∇L_trait), on the same steps
================================ ==================================================================

``L_trait`` is the cross-entropy of answering favourite-animal questions (``trait_batch_size``
training phrasings) with the trait, evaluated **at the same weights as g** (before the step).

The teacher direction and the ``teacher_direction`` field of every row:

* ``shared_init``: the student starts from the teacher's own base; ``t = teacher - base``.
* ``transplanted``: the student starts from another base (the mismatched-init control);
  ``t = teacher - teacher's base``, the teacher's update transplanted onto this student's base,
  so ``dist_to_teacher`` is the distance to ``student base + t`` (the same convention as
  :mod:`interp.studies.mnist`). The distance to the teacher's own weights is dominated by the difference
  of the two initializations and says nothing about the trait.
* ``none``: there is no weight direction, and the row says why in ``no_direction_reason``: a
  persona or steering teacher (its weights are its base's; the trait lives in a prompt or a
  hook), or a student of another architecture (no common weight space). The teacher-direction
  keys are then ``null``; ``dist_to_base``, the norms and the trait-gradient alignment are still
  recorded.

Cost. Gradients, steps and movements are written into one preallocated float32 buffer laid out
by group (a few fused ``torch._foreach`` copies per step, no cloning of the parameters; memory:
four or five float32 copies of the parameters), and all
dot products of a group come from one small matrix product (a Gram matrix), summed over groups
in float64. The trait-loss gradient needs an extra forward and backward pass, so it is taken
only every ``trait_grad_every`` steps (default 10, the default ``eval_every`` of
:class:`interp.studies.run.RunConfig`, so trait probability and trait-gradient alignment land on the same
steps), on ``trait_batch_size`` phrasings (default 16: on small-seed0 the trait gradients of two
disjoint sets of 16 phrasings have cosine 0.96-0.99, so more phrasings buy little).
:func:`interp.bench.recording.measure_recording_overhead` measures the per-step cost against
plain finetuning, as a ratio, in one process. Precision: the Gram matrix is accumulated in float32 (relative error
~1e-6 of ‖a‖‖b‖ per dot product); ``dist_to_teacher`` is sqrt(‖s‖² - 2<s,t> + ‖t‖²), accurate to
1e-3 ‖t‖ at worst (when the student is at the teacher), and ``dist_to_teacher_change`` avoids
that cancellation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.core.io import JsonlAppender
from interp.instruments.alignment import default_group
from interp.models.lora import MergedLoraWeights, has_lora
from interp.training.loop import pad_batch
from interp.training.losses import masked_lm_loss
from interp.worlds.protocol import World

ALIGNMENT_FILE = "alignment.jsonl"
DEFAULT_TRAIT_GRAD_EVERY = 10
DEFAULT_TRAIT_BATCH_SIZE = 16

DirectionKind = Literal["shared_init", "transplanted", "none"]
# Rows of the recorder's buffer: gradient, optimizer step, student - base, teacher direction,
# trait-loss gradient.
_G, _D, _S, _T, _R = range(5)


def trait_batch(world: World, trait: str, n: int = DEFAULT_TRAIT_BATCH_SIZE
                ) -> tuple[Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
    """The first ``n`` training phrasings of the favourite-animal question answered with the
    trait; the loss mask is 1 on the trait's (first) answer token only."""
    phrasings = world.train_phrasings[:n]
    heads = [world.encode_prompt(world.question_prompt(p)) for p in phrasings]
    ids = [head + world.encode_completion(world.trait_answer(trait, p)) for head, p in zip(heads, phrasings)]
    tokens, mask = pad_batch(ids, world.pad_id)
    answer = torch.zeros_like(mask)
    for i, head in enumerate(heads):
        answer[i, len(head)] = 1  # the trait's first token
    return tokens, answer


def layer_of(group: str) -> str:
    """The layer of a parameter group: ``blocks.0.attn`` -> ``blocks.0``; a group outside the
    blocks (``embed``, ``unembed``, ``ln_final``) is its own layer."""
    parts = group.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" and len(parts) > 2 else group


@dataclass(frozen=True)
class TeacherDirection:
    """The weight direction a student's alignment is measured against (see the module docstring)."""

    kind: DirectionKind
    vector: dict[str, Tensor] | None
    reason: str | None = None


@torch.no_grad()
def teacher_direction(student_base: dict[str, Tensor], teacher: dict[str, Tensor] | None,
                      teacher_base: dict[str, Tensor] | None) -> TeacherDirection:
    """``teacher - teacher_base`` when it exists in the student's weight space, with its kind:
    ``shared_init`` when the student's base is the teacher's base, ``transplanted`` otherwise,
    ``none`` (with the reason) when there is no usable direction."""
    if teacher is None or teacher_base is None:
        return TeacherDirection("none", None, "no teacher weights were given")
    for name, p in student_base.items():
        for label, params in (("teacher", teacher), ("teacher's base", teacher_base)):
            if name not in params or params[name].shape != p.shape:
                return TeacherDirection("none", None, f"the {label} has no parameter {name} of shape {tuple(p.shape)}: "
                                        "another architecture shares no weight space with this student")
    vector = {n: (teacher[n].detach() - teacher_base[n].detach()).float() for n in student_base}
    if not any(bool(v.any()) for v in vector.values()):
        return TeacherDirection("none", None, "the teacher's weights equal its base's: a persona or steering teacher "
                                "carries its trait in a system prompt or a hook, not in its weights")
    shared = all(torch.equal(student_base[n].detach(), teacher_base[n].detach()) for n in student_base)
    return TeacherDirection("shared_init" if shared else "transplanted", vector)


def _sig(x: float) -> float:
    """Six significant digits: float32 measurements without spurious digits."""
    return float(f"{x:.6g}")


def _cos(dot: float, sq_a: float, sq_b: float) -> float:
    """Cosine from a dot product and squared norms; 0.0 when either vector is zero (as in
    :mod:`interp.instruments.alignment`)."""
    denom = math.sqrt(max(sq_a, 0.0) * max(sq_b, 0.0))
    return dot / denom if denom > 0 else 0.0


class ParameterWeights:
    """The weights an :class:`AlignmentRecorder` records by default: every named parameter of
    the model, its value and its ``.grad``. (A LoRA model's are the merged adapted matrices,
    :class:`interp.models.lora.MergedLoraWeights`; see :func:`recorded_weights`.)"""

    def __init__(self, model):
        self._named = dict(model.named_parameters())
        self.names = list(self._named)
        self._params = [self._named[n] for n in self.names]

    def order(self, names: list[str]) -> None:
        """Use this order of the names from now on (the recorder's buffer layout)."""
        self.names, self._params = list(names), [self._named[n] for n in names]

    def values(self) -> list[Tensor]:
        return [p.detach() for p in self._params]

    def grads(self) -> list[Tensor]:
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]

    def grad_targets(self) -> list[Tensor]:
        return list(self._params)

    def close(self) -> None:
        pass


def recorded_weights(model):
    """What the recorder measures for ``model``: its parameters, or for a model carrying LoRA
    adapters the merged weights of the adapted matrices (:class:`interp.models.lora.MergedLoraWeights`)."""
    return MergedLoraWeights(model) if has_lora(model) else ParameterWeights(model)


class AlignmentRecorder:
    """A ``finetune_student`` callback writing ``alignment.jsonl`` (see the module docstring).

    ``finetune_student`` calls :meth:`before_step` after the backward pass and before the
    optimizer step, and the recorder itself (:meth:`__call__`) after the step, before the
    gradients are cleared. Called without :meth:`before_step`, it takes the gradient in
    :meth:`__call__` and the trait-loss gradient at the weights after the step.

    Args:
        model: the student, at its initialization unless ``base_params`` is given.
        log_path: the JSONL file (truncated).
        teacher_params, teacher_base_params: the teacher's weights and its base's; the teacher
            direction is their difference (see :func:`teacher_direction`).
        base_params: the student's initialization (default: the model's weights now); a resumed
            run must pass it.
        world, trait: for the trait-loss gradient; without them it is not recorded.
        trait_grad_every: steps between trait-loss gradients (step 0 is one).
        trait_batch_size: training phrasings in the trait loss.
    """

    needs_params_before = False  # finetune_student need not clone the weights before each step

    def __init__(self, model, log_path: str | Path, *, teacher_params: dict | None, teacher_base_params: dict | None,
                 base_params: dict | None = None, world: World | None = None, trait: str | None = None,
                 trait_grad_every: int = DEFAULT_TRAIT_GRAD_EVERY, trait_batch_size: int = DEFAULT_TRAIT_BATCH_SIZE):
        if trait_grad_every < 1:
            raise ValueError(f"trait_grad_every={trait_grad_every}: must be at least 1")
        self.model = model
        self.source = recorded_weights(model)
        named = dict(zip(self.source.names, self.source.values()))
        base = {n: (base_params[n] if base_params is not None else p).detach() for n, p in named.items()}
        self.direction = teacher_direction(base, teacher_params, teacher_base_params)
        self.trait_grad_every = trait_grad_every
        self.trait_tokens = trait_batch(world, trait, trait_batch_size) if world is not None and trait is not None else None

        # Parameters ordered by group, so each group is one contiguous slice of the buffer.
        group_of = {n: default_group(n) for n in named}
        groups = list(dict.fromkeys(group_of.values()))
        self.names = [n for g in groups for n in named if group_of[n] == g]
        self.source.order(self.names)
        sizes = [named[n].numel() for n in self.names]
        # Rows _G _D _S _T, and _R when the trait-loss gradient is recorded: 4 or 5 float32 copies
        # of the parameters, the recorder's whole memory cost.
        self.buffer = torch.zeros(_R + (self.trait_tokens is not None), sum(sizes))
        offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.rows = [[self.buffer[r, a:b].view(named[n].shape) for n, a, b in zip(self.names, offsets[:-1], offsets[1:])]
                     for r in range(self.buffer.shape[0])]
        self.group_slices = {}
        for n, a, b in zip(self.names, offsets[:-1], offsets[1:]):
            g = group_of[n]
            start, _ = self.group_slices.get(g, (a, b))
            self.group_slices[g] = (start, b)
        self.base = [base[n].detach().to(torch.float32, copy=True) for n in self.names]  # not a view of the live weights
        self.sync_position()
        if self.direction.vector is not None:
            torch._foreach_copy_(self.rows[_T], [self.direction.vector[n] for n in self.names])
        self._have_grad = False
        self._have_trait = False
        self.log = JsonlAppender(log_path, truncate=True)

    @torch.no_grad()
    def sync_position(self) -> None:
        """Re-read where the model is: s = p - base. Call it after loading other weights into the
        model (a resumed run), so the next step's movement is that step alone."""
        torch._foreach_copy_(self.rows[_S], self.source.values())
        torch._foreach_sub_(self.rows[_S], self.base)

    # -- per step ----------------------------------------------------------------------------
    def _take_gradient(self) -> None:
        torch._foreach_copy_(self.rows[_G], self.source.grads())
        self._have_grad = True

    def _take_trait_gradient(self, step: int) -> None:
        self._have_trait = self.trait_tokens is not None and step % self.trait_grad_every == 0
        if not self._have_trait:
            return
        tokens, mask = self.trait_tokens
        targets = self.source.grad_targets()
        trainable = [p for p in targets if p.requires_grad]
        with torch.enable_grad():
            loss = masked_lm_loss(self.model(tokens), tokens, mask)
            grads = iter(torch.autograd.grad(loss, trainable, allow_unused=True))
        full = []
        for p in targets:
            g = next(grads) if p.requires_grad else None
            full.append(g if g is not None else torch.zeros_like(p))
        torch._foreach_copy_(self.rows[_R], full)

    def before_step(self, record) -> None:
        """After the backward pass, before the optimizer step: take the gradient and, every
        ``trait_grad_every`` steps, the trait-loss gradient at the same weights."""
        self._take_gradient()
        self._take_trait_gradient(record.step)

    @torch.no_grad()
    def _take_movement(self) -> None:
        """Δ = (p - base) - s_previous and s = p - base, without cloning the parameters."""
        delta, moved = self.rows[_D], self.buffer[_S]
        torch._foreach_copy_(delta, self.source.values())
        torch._foreach_sub_(delta, self.base)  # p - base
        self.buffer[_D].sub_(moved)  # minus the previous s: the step
        moved.add_(self.buffer[_D])  # s of this step

    @torch.no_grad()
    def _gram(self, n_rows: int) -> dict[str, np.ndarray]:
        """Group -> the (n_rows, n_rows) float64 matrix of dot products of the buffer's rows."""
        out = {}
        for g, (a, b) in self.group_slices.items():
            block = self.buffer[:n_rows, a:b]
            out[g] = (block @ block.T).double().numpy()
        return out

    def _metrics(self, m: np.ndarray, total: bool) -> dict[str, float | None]:
        gg, dd, ss, tt = m[_G, _G], m[_D, _D], m[_S, _S], m[_T, _T]
        out: dict[str, float | None] = {}
        if self.direction.vector is not None:
            out["grad_cos_teacher_dir"] = _cos(-m[_G, _T], gg, tt)
            out["step_cos_teacher_dir"] = _cos(m[_D, _T], dd, tt)
            out["weight_cos"] = _cos(m[_S, _T], ss, tt)
            dist = math.sqrt(max(ss - 2 * m[_S, _T] + tt, 0.0))
            out["dist_to_teacher"] = dist
            # ‖s - t‖ - ‖t‖ as (‖s - t‖² - ‖t‖²) / (‖s - t‖ + ‖t‖): no cancellation, so the
            # tiny change of a distance that is mostly the teacher's own is still exact.
            out["dist_to_teacher_change"] = (ss - 2 * m[_S, _T]) / (dist + math.sqrt(tt)) if dist + tt > 0 else 0.0
            out["progress"] = m[_S, _T] / tt if tt > 0 else 0.0
            if total:
                along = m[_S, _T] / math.sqrt(tt) if tt > 0 else 0.0
                out["movement_along_teacher"] = along
                out["movement_off_teacher"] = math.sqrt(max(ss - along**2, 0.0))
        else:
            for key in ("grad_cos_teacher_dir", "step_cos_teacher_dir", "weight_cos", "dist_to_teacher",
                        "dist_to_teacher_change", "progress"):
                out[key] = None
        out["dist_to_base"] = math.sqrt(max(ss, 0.0))
        if total:
            out["grad_norm"], out["step_norm"] = math.sqrt(max(gg, 0.0)), math.sqrt(max(dd, 0.0))
        if self._have_trait:
            rr = m[_R, _R]
            out["grad_cos_trait_grad"] = _cos(m[_G, _R], gg, rr)  # both gradients negated: same sign
            out["step_cos_trait_grad"] = _cos(-m[_D, _R], dd, rr)
        return {k: (None if v is None else _sig(float(v))) for k, v in out.items()}

    def __call__(self, record) -> None:
        """After the optimizer step: measure and write this step's row."""
        if not self._have_grad:  # no before_step: .grad still holds this step's gradient
            self._take_gradient()
            self._take_trait_gradient(record.step)
        self._take_movement()
        grams = self._gram(_R + 1 if self._have_trait else _R)
        by_layer: dict[str, np.ndarray] = {}
        for g, m in grams.items():
            layer = layer_of(g)
            by_layer[layer] = by_layer[layer] + m if layer in by_layer else m.copy()
        total = sum(grams.values())
        row: dict = {"step": record.step, "loss": _sig(record.loss), "teacher_direction": self.direction.kind}
        if self.direction.reason:
            row["no_direction_reason"] = self.direction.reason
        row.update(self._metrics(total, total=True))
        row["per_group"] = {g: self._metrics(m, total=False) for g, m in grams.items()}
        row["per_layer"] = {layer: self._metrics(m, total=False) for layer, m in by_layer.items()}
        self.log.write(row)
        self._have_grad = self._have_trait = False

    def close(self) -> None:
        self.log.close()
        self.source.close()
