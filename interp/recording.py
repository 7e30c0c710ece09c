"""Per-step alignment recording during student finetuning.

At every step the :class:`AlignmentRecorder` writes one JSONL row with, in total and per
parameter group (``blocks.0.attn``, ``blocks.0.mlp``, ``embed``, ``unembed``, ...):

* ``grad_cos_teacher_dir``: cos(−gradient, teacher − base), the direction the loss pulls in;
* ``step_cos_teacher_dir``: cos(optimizer step, teacher − base), where the optimizer went;
* ``weight_cos``: cos(student − base, teacher − base), and the distances to teacher and base,
  and ``progress`` (movement along the teacher direction relative to the teacher's own);

and every ``trait_grad_every`` steps ``grad_cos_trait_grad``: cos(−gradient, −∇ trait loss), the
alignment of the student's gradient with the gradient of the teacher's trait loss (cross-entropy
of answering the favourite-animal question with the trait) at the student's current weights.

"base" is the student's own initialization; "teacher − base" is the teacher's movement from
its initialization. For a mismatched-init student the two initializations differ, which is the
point of the comparison; for a student of another architecture, or a teacher that is its base
plus a prompt or hook (persona, steering), there is no weight direction and only the trait-loss
gradient alignment is recorded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from interp.alignment import TOTAL, gradient_alignment, weight_metrics
from interp.evaluate import question_prompt
from interp.io import JsonlAppender
from interp.toy.world import EOS, PAD, ToyWorld
from interp.training import masked_lm_loss, pad_batch

ALIGNMENT_FILE = "alignment.jsonl"


def trait_batch(world: ToyWorld, trait: str, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Favourite-animal questions (training phrasings) answered with the trait; loss mask on the answer."""
    texts = [question_prompt(p) for p in world.train_phrasings[:n]]
    ids = [world.encode(t) + [world.token_to_id[trait], world.token_to_id[EOS]] for t in texts]
    tokens, mask = pad_batch(ids, world.token_to_id[PAD])
    answer = torch.zeros_like(mask)
    for i, seq in enumerate(ids):
        answer[i, len(seq) - 2] = 1  # the trait token
    return tokens, answer


class AlignmentRecorder:
    """A ``finetune_student`` callback writing ``alignment.jsonl`` (see the module docstring)."""

    def __init__(self, model, log_path: str | Path, *, teacher_params: dict | None, teacher_base_params: dict | None,
                 world: ToyWorld | None = None, trait: str | None = None, trait_grad_every: int = 5):
        self.params = dict(model.named_parameters())
        self.base = {n: p.detach().clone() for n, p in self.params.items()}
        same_shapes = teacher_params is not None and all(
            n in teacher_params and teacher_params[n].shape == p.shape for n, p in self.params.items())
        self.teacher_dir = None
        self.teacher = None
        if same_shapes and teacher_base_params is not None:
            direction = {n: (teacher_params[n] - teacher_base_params[n]).detach() for n in self.params}
            if any(d.abs().max() > 0 for d in direction.values()):
                self.teacher_dir = direction
                # Where the teacher sits relative to this student's base: base + teacher direction.
                self.teacher = {n: self.base[n] + direction[n] for n in self.params}
        self.trait_grad_every = trait_grad_every
        self.trait_tokens = trait_batch(world, trait) if world is not None and trait is not None else None
        self.model = model
        self.log = JsonlAppender(log_path, truncate=True)

    def _trait_gradient(self) -> dict[str, torch.Tensor]:
        tokens, mask = self.trait_tokens
        loss = masked_lm_loss(self.model(tokens), tokens, mask)
        names = [n for n, p in self.params.items() if p.requires_grad]
        grads = torch.autograd.grad(loss, [self.params[n] for n in names], allow_unused=True)
        return {n: (-g if g is not None else torch.zeros_like(self.params[n])) for n, g in zip(names, grads)}

    def __call__(self, record) -> None:
        grads = {n: -p.grad for n, p in self.params.items() if p.grad is not None}
        row: dict = {"step": record.step, "loss": record.loss}
        per_group: dict[str, dict] = {}

        def put(key: str, values: dict) -> None:
            row[key] = float(values[TOTAL])
            for g, v in values.items():
                if g != TOTAL:
                    per_group.setdefault(g, {})[key] = float(v)

        if self.teacher_dir is not None:
            put("grad_cos_teacher_dir", gradient_alignment(grads, {n: self.teacher_dir[n] for n in grads}))
            if record.params_before is not None:
                step = {n: self.params[n].detach() - record.params_before[n] for n in grads}
                put("step_cos_teacher_dir", gradient_alignment(step, {n: self.teacher_dir[n] for n in grads}))
            current = {n: p.detach() for n, p in self.params.items()}
            metrics = weight_metrics(current, self.base, self.teacher)
            total = metrics[TOTAL]
            row.update(weight_cos=total.cosine, dist_to_teacher=total.dist_student_teacher,
                       dist_to_base=total.dist_student_base, progress=total.progress)
            for g, m in metrics.items():
                if g != TOTAL:
                    per_group.setdefault(g, {})["weight_cos"] = m.cosine
        if self.trait_tokens is not None and record.step % self.trait_grad_every == 0:
            trait_dir = self._trait_gradient()
            put("grad_cos_trait_grad", gradient_alignment(grads, {n: trait_dir[n] for n in grads}))
        row["per_group"] = per_group
        self.log.write(row)

    def close(self) -> None:
        self.log.close()
