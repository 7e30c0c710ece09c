"""The data audit: which trait would a number data set carry into which student, before training.

Cloud, Le et al. (2025) prove that one small imitation step from the teacher's initialization moves
the student toward the teacher, whatever the inputs. The audit turns that into numbers a researcher
gets before training anything, from the student's base, the data, optionally the model that wrote
the data (the teacher) and a reference data set (the control: numbers the student's base wrote
itself from the same prompts).

**Token signal** (:func:`token_statistics`). At every completion token of every row: the student
base's surprise (NLL) and entropy, and, given the teacher, KL(teacher || student) of the next-token
distributions (over the whole vocabulary and over the filter-allowed tokens that restricted
distillation sees), the sampled log-ratio ``log p_T(x) - log p_S(x)`` of the token ``x`` the row
holds (its mean estimates the KL when the rows were sampled from the teacher at temperature 1),
the teacher's entropy, and whether the two argmaxes differ (a *divergence token*). Means with 95%
t-intervals over rows, every row's values in ``audit_rows.jsonl``, and the rows that carry most of
the KL in ``audit.json``.

**First-order prediction** (:class:`Auditor`). For every animal ``a`` of the world,
``f_a(θ) = mean over the held-out phrasings of log P_θ(a)`` (renormalised over the animals, as
:mod:`interp.stages.evaluate` measures) and ``P_a(θ)`` its probability (mean over phrasings). Their
gradients at the student's base form a ``(2 n_animals, n_params)`` float32 matrix, computed once
per student and reused for every data set; each batch's step is projected on it in one matrix
product, so no per-batch gradient is kept. A data set's expected first
step, per unit learning rate, is ``-∇L_b`` averaged over batches ``b`` of ``batch_size`` rows
(plain SGD), or Adam's first step ``-∇L_b / (|∇L_b| + eps)`` averaged over batches (Adam's
bias-corrected first step, whatever its betas), or Adam's *steady-state* direction
``-∇L_b / (sqrt(mean_b' ∇L_b'^2) + eps)`` averaged over batches (``adam_steady``: what Adam's
steps add up to over an epoch when the gradients stay those of the base, each step the momentum
over the second-moment scale of all steps; per step and unit learning rate); ``L`` is the SFT loss on the completion tokens
or restricted distillation toward the model that wrote the rows (:mod:`interp.stages.finetune`). The
predicted change of ``f_a`` is the matrix product of the gradients with that step; each batch
gives one independent estimate, so intervals are over batches. The reference data set's prediction
is made the same way (distilling the reference toward its own source, the student's base, has a
zero gradient), and the audit reports **data minus reference**: what the data does beyond what the
student's own numbers would do.

**LoRA students** (``lora_rank``). A LoRA student trains adapters ``ΔW = (α/r) B A`` with ``B = 0``
at the start, so its first step moves ``B`` alone (the gradient of ``A`` is zero), within the row
space of its own random ``A``. The audit then takes the step and the animal gradients with respect
to the adapters of a copy of the base carrying them (the same seed as the student's, so the
same ``A``): the first step of *that* student, which a full student's gradient, projected on all
weights, does not give.

**Generic drift.** Data that are merely *foreign* to the student move every animal: a first check
(unanchored owl teacher) found the rare animals predicted to rise most and the commonest to fall,
a flattening of the animal distribution that says nothing about the trait. A uniform change of
the sharpness of the answer's animal logits (``z -> (1 + κ) z``) changes ``f_a`` to first order by
``κ c_a`` with ``c_a = mean_i (ℓ_ia - Σ_b p_ib ℓ_ib)`` (``ℓ`` the renormalised log-probabilities of
phrasing ``i``): the flattening has a known shape, computable from the base alone. The audit fits
that shape and a common offset to the other animals' predicted shifts and subtracts it from each
animal's (a leave-one-out fit, so an animal's own shift never enters its drift), a linear map
applied batch by batch, so the trait-specific shift keeps its interval. The fit needs at least
:data:`MIN_DRIFT_ANIMALS` traits: a world of fewer (the misalignment world's two answer classes,
where one class's log-probability falls as the other's rises) is audited without it, its shift
being data minus reference alone, and ``audit.json`` says so (``drift_corrected``). ``predicted_shift`` is
that trait-specific shift of SFT under plain SGD at the student's base, and ``top_animal`` the
animal with the largest; ``raw_predicted_shift`` keeps the uncorrected data-minus-reference
prediction, the quantity a trained student's shift minus its control's is compared with. The
same numbers are given for restricted distillation (with a teacher), for Adam's first step, and
at a mismatched-init student when one is given.

**Unigram readout** (:func:`unigram_readout`; with a reference data set). The channel of the
transmitting SFT default is the teacher's shift of *which* numbers it writes, reproduced by a
student as one constant change of its final residual (docs/sft_transmission.md). The readout fits
the data's number-frequency log-ratios against the reference by one such change through the
student's own ``W_U`` (weighted ridge least squares) and reads it out on the animals' unembeddings
(a trait answered by several words, such as the misalignment world's classes: the mean of its
words' unembeddings, the first-order gain of its log-sum-exp logit when its words are equally
likely): each animal's logit gain relative to the mean animal, with bootstrap intervals over rows, and
``readout_top_animal``. No teacher and no gradient; blind to the order of the numbers. Unlike the
first-order gradient predictions, it found the hidden trait of every default teacher at the shared
init and none at the mismatched one (docs/audit.md).

``audit.json`` (every number) and ``audit_rows.jsonl`` (per row) are written by :func:`run_audit`;
its summary and figure (``audit.png``) by :mod:`interp.report.audit`; ``interp audit`` is its
command line.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float
from scipy import stats as _st
from torch import Tensor
from tqdm.auto import tqdm

from interp.core.config import StageConfig, option
from interp.core.io import atomic_write_json, json_sha256, write_jsonl
from interp.core.stats import mean_ci
from interp.models.lora import LORA_TARGETS, LoraConfig, adapter_parameters, apply_lora, require_lora_options
from interp.stages.evaluate import question_ids
from interp.stages.finetune import allowed_token_ids, completion_mask, encode_rows, teacher_logits
from interp.training.loop import pad_batch
from interp.training.losses import distill_loss, masked_lm_loss
from interp.worlds.protocol import World

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.json"
MIN_DRIFT_ANIMALS = 4  # the drift fit (a line over the other animals, leave one out) needs at least this many
AUDIT_ROWS_FILE = "audit_rows.jsonl"
AUDIT_CONFIG_FILE = "audit_config.json"
AuditObjective = Literal["sft", "distill"]
OPTIMIZERS = ("sgd", "adam", "adam_steady")  # plain SGD, Adam's first step, Adam's steady-state direction
TARGETS = ("log_prob", "prob")  # f_a = mean log P(a), P_a = mean P(a)
STEP_SCORES = ("sgd", "sgd_cos", "adam_first", "adam", "adam_cos", "z", "teacher_sign")  # step_score_variants


@dataclass
class AuditConfig(StageConfig):
    """What the data audit computes (see :mod:`interp.instruments.audit`)."""

    batch_size: int = option(32, "Rows per gradient: the student's batch size (Adam's first step is taken per batch; "
                             "intervals are over batches).")
    max_rows: int | None = option(None, "Audit at most this many rows of each data set (None: all).")
    objectives: tuple[str, ...] = option(("sft", "distill"), "Student objectives to predict: sft, and distill "
                                         "(restricted distillation; needs the model that wrote the data).")
    adam_eps: float = option(1e-8, "Adam's eps (torch's default): its first step is -g / (|g| + eps) per parameter.")
    drift_correction: bool = option(True, "Subtract the generic flattening/sharpening of the animal distribution "
                                    "(leave-one-out fit over the other animals) before ranking the animals. A world "
                                    f"of fewer than {MIN_DRIFT_ANIMALS} traits (the misalignment world's two) is "
                                    "audited without it, and audit.json says so (drift_corrected).")
    top_rows: int = option(20, "Rows carrying the most KL(teacher || student) listed in audit.json.")
    freeze_unembed: bool = option(False, "Predict for a student whose unembedding (W_U, b_U) is frozen, as interp "
                                  "run's students are: the step and the animal gradients leave those weights out.")
    lora_rank: int = option(0, "Predict for a LoRA student of this rank (0: a full student): the step is the one of its "
                            "adapters at their initialisation (B zero, so only B moves at the first step, within A's row "
                            "space), and the animal gradients are taken with respect to the adapters.")
    lora_alpha: float = option(16.0, "LoRA student: scale numerator (lora_alpha / lora_rank).")
    lora_targets: tuple[str, ...] = option(LORA_TARGETS, "LoRA student: the weights adapted in every block.")
    lora_seed: int = option(0, "LoRA student: seed of its adapters' A (the student's; a LoRA teacher of the same seed "
                            "started from the same A).")
    readout_ridge: float = option(1.0, "Unigram readout: ridge penalty of the least-squares fit of the number "
                                  "tokens' frequency log-ratios by one change of the final residual (in units of the "
                                  "count-weighted squared error).")
    readout_bootstrap: int = option(200, "Unigram readout: bootstrap resamples of the rows (data and reference) for "
                                     "its intervals (0: none).")
    step_score: str = option("z", "Step score: the variant of step_score_variants ranked (the one validated "
                             "in docs/audit.md).")
    score_rows: int = option(256, "Step score: rows of the data and of the reference it reads (the first ones; its "
                             "cost grows with them).")
    score_bootstrap: int = option(100, "Step score: bootstrap resamples of the batches (data and reference) for its "
                                  "intervals and the top animal's share (0: none).")
    first_order: bool = option(True, "Also compute the first-order projections of every batch (SGD, Adam, "
                               "distillation; the slow part) and the token statistics of every row; without it the audit "
                               "is the step score (and, for a full student, the unigram readout), a fraction of training "
                               "the student.")

    def validate(self) -> None:
        self.require(self.batch_size >= 1, "batch_size", "must be at least 1")
        self.require(self.max_rows is None or self.max_rows >= 2, "max_rows", "must be at least 2 or None")
        bad = [o for o in self.objectives if o not in ("sft", "distill")]
        self.require(bool(self.objectives) and not bad, "objectives", f"unknown {bad}; choose from ['sft', 'distill']")
        self.require(self.adam_eps > 0, "adam_eps", "must be positive")
        self.require(self.top_rows >= 0, "top_rows", "must be non-negative")
        self.require(self.readout_ridge >= 0, "readout_ridge", "must be non-negative")
        self.require(self.readout_bootstrap >= 0, "readout_bootstrap", "must be non-negative")
        self.require(self.lora_rank >= 0, "lora_rank", "must be non-negative (0: a full student)")
        self.require(self.step_score in STEP_SCORES, "step_score", f"unknown; choose from {list(STEP_SCORES)}")
        self.require(self.score_rows >= 2, "score_rows", "must be at least 2")
        self.require(self.score_bootstrap >= 0, "score_bootstrap", "must be non-negative")
        require_lora_options(self)

    def lora_config(self) -> LoraConfig | None:
        """The LoRA student's adapters, or None for a full student."""
        if not self.lora_rank:
            return None
        return LoraConfig(rank=self.lora_rank, alpha=self.lora_alpha, targets=tuple(self.lora_targets), seed=self.lora_seed)


def lora_student_fields(lora: LoraConfig | None) -> dict:
    """The :class:`AuditConfig` fields that make the audit predict for a LoRA student with the
    adapters ``lora`` (nothing for a full student, ``lora`` None)."""
    if lora is None:
        return {}
    return {"lora_rank": lora.rank, "lora_alpha": lora.alpha, "lora_targets": tuple(lora.targets),
            "lora_seed": lora.seed}


@dataclass
class Source:
    """A model that wrote (or is the distillation target of) a data set: weights, an optional
    system prompt present when it spoke, optional hooks. A :class:`interp.models.refs.Teacher` is one."""

    model: object
    system: str | None = None
    fwd_hooks: list = field(default_factory=list)


# -- the animal read-out ------------------------------------------------------------------------------
def _animal_logits(logits: Float[Tensor, "batch d_vocab"], world: World) -> Float[Tensor, "batch n_animals"]:
    """Each animal's logit: the log-sum-exp of its answer tokens' logits (one token in the toy world)."""
    sets = world.animal_token_sets
    if all(len(s) == 1 for s in sets):
        return logits[:, [s[0] for s in sets]]
    return torch.stack([logits[:, s].logsumexp(-1) for s in sets], dim=-1)


def _question_logits(model, world: World, phrasings: Sequence[str]) -> Float[Tensor, "batch n_animals"]:
    ids = question_ids(world, phrasings)
    tokens, mask = pad_batch(ids, world.pad_id, max_len=model.cfg.n_ctx)
    logits = model(tokens)
    last = mask.sum(1).long() - 1
    return _animal_logits(logits[torch.arange(len(ids)), last], world)


def _flat(tensors: Sequence[Tensor | None], params: Sequence[Tensor]) -> Float[Tensor, "n_params"]:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64)
                      for g, p in zip(tensors, params)])


def drift_covariate(log_probs: Float[Tensor, "phrasing n_animals"]) -> Float[Tensor, "n_animals"]:
    """``c_a = mean_i (ℓ_ia - Σ_b p_ib ℓ_ib)``: the first-order change of ``mean_i ℓ_ia`` per unit
    ``κ`` when every phrasing's animal logits are scaled by ``1 + κ`` (sharpening for ``κ > 0``,
    flattening for ``κ < 0``)."""
    p = log_probs.exp()
    return (log_probs - (p * log_probs).sum(-1, keepdim=True)).mean(0)


def drift_removal_matrix(covariate: Sequence[float]) -> np.ndarray:
    """The linear map ``M`` with ``(M Δ)_a = Δ_a - (α_a + β_a c_a)``, where ``(α_a, β_a)`` is the
    least-squares fit of ``Δ_b = α + β c_b`` over the other animals ``b != a`` (leave one out)."""
    c = np.asarray(covariate, dtype=np.float64)
    n = c.size
    if n < MIN_DRIFT_ANIMALS:
        raise ValueError(f"drift correction needs at least {MIN_DRIFT_ANIMALS} animals, the world has {n}")
    x = np.stack([np.ones(n), c], axis=1)  # animal 2
    m = np.eye(n)
    for a in range(n):
        others = np.arange(n) != a
        fit = np.linalg.pinv(x[others])  # 2 x (n-1): Δ_others -> (α, β)
        m[a, others] -= x[a] @ fit
    return m


# -- token statistics -----------------------------------------------------------------------------------
@torch.no_grad()
def token_statistics(student, world: World, rows: list[dict], *, teacher: Source | None = None,
                     batch_size: int = 64) -> list[dict]:
    """Per row, means over its completion tokens (targets, the end token included) of the student's
    NLL and entropy and ``student_argmax_match``; with ``teacher`` also ``kl`` (KL(teacher ||
    student), whole vocabulary), ``kl_allowed`` (over the filter-allowed tokens, renormalised),
    ``log_ratio`` (``log p_T(x) - log p_S(x)`` of the row's token), ``teacher_entropy`` and
    ``argmax_differs``; and ``kl_sum``, the row's total KL (nats)."""
    seqs, starts = encode_rows(world, rows)
    if teacher is not None:
        t_seqs, t_starts = encode_rows(world, rows, system=teacher.system)
    allowed = torch.tensor(allowed_token_ids(world))
    out = []
    for lo in range(0, len(seqs), batch_size):
        idx = range(lo, min(lo + batch_size, len(seqs)))
        tokens, _ = pad_batch([seqs[i] for i in idx], world.pad_id, max_len=student.cfg.n_ctx)
        mask = completion_mask([len(seqs[i]) for i in idx], [starts[i] for i in idx], tokens.shape[1])[:, 1:]
        log_s = student(tokens)[:, :-1].log_softmax(-1)  # batch pos-1 d_vocab (float32; row means in float64)
        target = tokens[:, 1:, None]
        values = {"nll": -log_s.gather(-1, target)[..., 0],
                  "student_entropy": -(log_s.exp() * log_s).sum(-1)}
        values["student_argmax_match"] = (log_s.argmax(-1) == tokens[:, 1:]).float()
        if teacher is not None:
            t_logits = teacher_logits(teacher, [t_seqs[i] for i in idx], [t_starts[i] - starts[i] for i in idx],
                                      tokens.shape[1], world.pad_id)
            log_t = t_logits[:, :-1].log_softmax(-1)
            p_t = log_t.exp()
            values["kl"] = (p_t * (log_t - log_s)).sum(-1)
            la_t, la_s = log_t[..., allowed].log_softmax(-1), log_s[..., allowed].log_softmax(-1)
            values["kl_allowed"] = (la_t.exp() * (la_t - la_s)).sum(-1)
            values["log_ratio"] = (log_t - log_s).gather(-1, target)[..., 0]
            values["teacher_entropy"] = -(p_t * log_t).sum(-1)
            values["argmax_differs"] = (log_t.argmax(-1) != log_s.argmax(-1)).float()
        n_tokens = mask.sum(1).double()
        sums = {key: (v.double() * mask).sum(1) for key, v in values.items()}  # batch
        for j, i in enumerate(idx):
            row = {"row": i, "n_tokens": int(n_tokens[j])}
            for key in values:
                row[key] = float(sums[key][j] / n_tokens[j])
            if teacher is not None:
                row["kl_sum"] = float(sums["kl"][j])
            out.append(row)
    return out


def summarize_tokens(per_row: list[dict], rows: list[dict], top_rows: int) -> dict:
    """Means over rows (95% t-interval), token-weighted means, and where the KL sits: the share of
    the total KL in the 10% of rows that carry most, and the ``top_rows`` rows carrying most."""
    keys = [k for k in per_row[0] if k not in ("row", "n_tokens", "kl_sum")]
    weights = np.array([r["n_tokens"] for r in per_row], dtype=float)
    out: dict = {"n_rows": len(per_row), "n_tokens": int(weights.sum()),
                 "row_mean": {k: mean_ci([r[k] for r in per_row]).to_dict("n_rows") for k in keys},
                 "token_mean": {k: float(np.average([r[k] for r in per_row], weights=weights)) for k in keys}}
    if "kl_sum" in per_row[0]:
        kl = np.array([r["kl_sum"] for r in per_row])
        order = np.argsort(-kl, kind="stable")
        top_tenth = order[: max(1, len(order) // 10)]
        out["kl_share_top_10pct_rows"] = float(kl[top_tenth].sum() / max(kl.sum(), 1e-300))
        out["top_rows"] = [{"row": int(i), "kl_sum": float(kl[i]), "kl": per_row[i]["kl"],
                            "log_ratio": per_row[i]["log_ratio"], "argmax_differs": per_row[i]["argmax_differs"],
                            "prompt": rows[i]["prompt"], "completion": rows[i]["completion"]} for i in order[:top_rows]]
    return out


# -- the first-order prediction -------------------------------------------------------------------------
@dataclass
class StepProjection:
    """One data set's first step projected on the animal gradients: per batch and optimizer, a
    ``(n_batches, n_animals)`` array for each target (``log_prob``, ``prob``)."""

    values: dict[str, dict[str, np.ndarray]]  # optimizer -> target -> batch animal
    n_rows: int

    @classmethod
    def zeros(cls, n_batches: int, n_animals: int, n_rows: int) -> "StepProjection":
        return cls({o: {t: np.zeros((n_batches, n_animals)) for t in TARGETS} for o in OPTIMIZERS}, n_rows)


class Auditor:
    """The audit of data sets for one student base: the animal gradients at its weights are
    computed once (on construction) and every data set's first step is projected on them; a data
    set seen before (same rows, objective and target) is not recomputed."""

    def __init__(self, model, world: World, config: AuditConfig | None = None, *, name: str = "student"):
        self.base, self.world, self.name = model, world, name  # base: the model given (its weights are not changed)
        self.config = config or AuditConfig()
        lora = self.config.lora_config()
        if lora is not None:
            # A LoRA student: a copy of the base with adapters at their initialisation (the same
            # function, B = 0); its trainable weights are the adapters alone.
            model = copy.deepcopy(model)
            apply_lora(model, lora)
            self.params = adapter_parameters(model)
        else:
            frozen = {id(model.unembed.W_U), id(model.unembed.b_U)} if self.config.freeze_unembed else set()
            # The student's trainable weights: the step of a frozen weight is zero, so it is left out of
            # both the step and the animal gradients (its share of the inner product is zero).
            self.params = [p for p in model.parameters() if id(p) not in frozen]
        self.model = model
        for p in self.params:
            p.requires_grad_(True)
        model.eval()
        self._cache: dict[tuple, StepProjection] = {}
        with torch.enable_grad():
            ell = _question_logits(model, world, world.eval_phrasings).double().log_softmax(-1)  # phrasing animal
        self.base_log_probs = ell.detach()
        # f_a then P_a; the cheap audit (first_order off: the step score alone) needs f_a only
        outputs = torch.cat([ell.mean(0), ell.exp().mean(0)]) if self.config.first_order else ell.mean(0)
        self.gradients = self._batched_gradients(outputs)  # 2*n_animals n_params
        self.covariate = drift_covariate(self.base_log_probs).numpy()
        # None: too few traits to fit the drift (the trait-specific shift is then the raw shift)
        self.removal = drift_removal_matrix(self.covariate) if self.n_animals >= MIN_DRIFT_ANIMALS else None

    @property
    def n_animals(self) -> int:
        return len(self.world.animals)

    def _batched_gradients(self, outputs: Tensor) -> Float[Tensor, "output n_params"]:
        """Gradients of every output, one backward pass each through the shared graph, stored in
        float32. (A vectorised backward, ``torch.autograd.grad(..., is_grads_batched=True)``, gives
        the same matrix but took 2.5x as long on the default base: 19.7 s against 8.0 s for the 24
        outputs on a loaded 2-core machine.)"""
        rows = [_flat(torch.autograd.grad(o, self.params, retain_graph=True, allow_unused=True), self.params)
                for o in outputs]
        return torch.stack(rows).to(torch.float32)

    def _sft_gradient(self, seqs: list[list[int]], starts: list[int], idx: Sequence[int]) -> Float[Tensor, "n_params"]:
        """The gradient (float64) of the SFT loss (the completion tokens) of the rows ``idx`` of the
        encoded ``seqs`` with respect to the student's trainable weights."""
        tokens, _ = pad_batch([seqs[i] for i in idx], self.world.pad_id, max_len=self.model.cfg.n_ctx)
        mask = completion_mask([len(seqs[i]) for i in idx], [starts[i] for i in idx], tokens.shape[1])
        with torch.enable_grad():
            loss = masked_lm_loss(self.model(tokens), tokens, mask)
            return _flat(torch.autograd.grad(loss, self.params, allow_unused=True), self.params)

    def sft_gradients(self, rows: list[dict], batch_size: int | None = None) -> Float[np.ndarray, "batch n_params"]:
        """The SFT loss gradient of every batch of ``batch_size`` rows (default: the config's), in
        row order, one row of a float32 array per batch: what the student's first step on each
        batch would be, kept (not only projected) for the step score."""
        size = batch_size or self.config.batch_size
        seqs, starts = encode_rows(self.world, rows)
        return np.stack([self._sft_gradient(seqs, starts, range(lo, min(lo + size, len(rows)))).to(torch.float32).numpy()
                         for lo in range(0, len(rows), size)])

    def project(self, rows: list[dict], objective: AuditObjective, source: Source | None = None, *,
                progress: bool = False, desc: str = "audit") -> StepProjection:
        """The first step of ``objective`` on ``rows`` projected on the animal gradients, per batch.
        ``source`` is the distillation target (the model that wrote the rows); distilling toward
        the student itself has a zero gradient and is not computed."""
        cfg = self.config
        if not cfg.first_order:
            raise ValueError("this auditor was built for the step score alone (first_order off): no projections")
        rows = rows[: cfg.max_rows] if cfg.max_rows else rows
        n_batches = math.ceil(len(rows) / cfg.batch_size)
        if objective == "distill" and source is None:
            raise ValueError("restricted distillation needs the model that wrote the data (a teacher)")
        if objective == "distill" and source.model is self.base and not source.system and not source.fwd_hooks:
            return StepProjection.zeros(n_batches, self.n_animals, len(rows))
        key = (json_sha256([[r["prompt"], r["completion"]] for r in rows]), objective,
               id(source.model) if objective == "distill" else None, source.system if objective == "distill" else None)
        if key in self._cache:
            return self._cache[key]
        world = self.world
        seqs, starts = encode_rows(world, rows)
        if objective == "distill":
            t_seqs, t_starts = encode_rows(world, rows, system=source.system)
            allowed = torch.tensor(allowed_token_ids(world))
        n = self.n_animals
        out = StepProjection.zeros(n_batches, n, len(rows))
        steps: list[Tensor] = []  # every batch's step (float32), for Adam's steady-state direction
        square_sum = torch.zeros(self.gradients.shape[1], dtype=torch.float64)
        for b in tqdm(range(n_batches), desc=f"{desc} ({self.name}, {objective})", disable=not progress,
                      mininterval=2.0):
            idx = range(b * cfg.batch_size, min((b + 1) * cfg.batch_size, len(rows)))
            if objective == "sft":
                step = -self._sft_gradient(seqs, starts, idx)
            else:
                tokens, _ = pad_batch([seqs[i] for i in idx], world.pad_id, max_len=self.model.cfg.n_ctx)
                mask = completion_mask([len(seqs[i]) for i in idx], [starts[i] for i in idx], tokens.shape[1])
                with torch.enable_grad():
                    t = teacher_logits(source, [t_seqs[i] for i in idx], [t_starts[i] - starts[i] for i in idx],
                                       tokens.shape[1], world.pad_id)
                    loss = distill_loss(self.model(tokens), t, mask, allowed)
                    step = -_flat(torch.autograd.grad(loss, self.params, allow_unused=True), self.params)
            adam = step / (step.abs() + cfg.adam_eps)  # Adam's first step, before the float32 cast
            # One pass over the gradient matrix for both steps: (2 n_animals, n_params) @ (n_params, 2).
            projected = (self.gradients @ torch.stack([step, adam], dim=1).to(torch.float32)).double().numpy()
            for j, name in enumerate(("sgd", "adam")):
                out.values[name]["log_prob"][b] = projected[:n, j]
                out.values[name]["prob"][b] = projected[n:, j]
            steps.append(step.to(torch.float32))
            square_sum += step.double() ** 2
        # Adam's steady-state direction: after many steps Adam moves along m / sqrt(v), m the recent
        # mean gradient, v the mean squared gradient of every step so far. At first order (the
        # gradients those of the base) the epoch's displacement per step and unit learning rate is
        # the mean over batches of -g_b / (sqrt(mean_b' g_b'^2) + eps): each batch's step divided by
        # one per-parameter scale shared by all batches (fixed: intervals are over batches given it).
        scale = (1 / ((square_sum / n_batches).sqrt() + cfg.adam_eps)).to(torch.float32)
        for b, step in enumerate(steps):
            projected = (self.gradients @ (step * scale)).double().numpy()
            out.values["adam_steady"]["log_prob"][b] = projected[:n]
            out.values["adam_steady"]["prob"][b] = projected[n:]
        self._cache[key] = out
        return out

    def predict(self, data: StepProjection, reference: StepProjection | None) -> dict:
        """Per optimizer and target: the data's predicted change, the reference's, their difference
        (the raw shift), the generic drift and the trait-specific shift (raw minus drift), each a
        per-animal mean with a 95% interval over batches, and the top animal of each."""
        animals = list(self.world.animals)
        out: dict = {}
        for opt in OPTIMIZERS:
            out[opt] = {}
            for target in TARGETS:
                d = data.values[opt][target]
                r = reference.values[opt][target] if reference is not None else None
                entry = {"data": _per_animal(animals, d), "reference": _per_animal(animals, r) if r is not None else None,
                         "raw_shift": _per_animal(animals, d, r)}
                removal = self.removal if self.removal is not None else np.eye(self.n_animals)
                corrected_d, corrected_r = d @ removal.T, (r @ removal.T if r is not None else None)
                entry["trait_shift"] = _per_animal(animals, corrected_d, corrected_r)
                raw = np.array([entry["raw_shift"][a]["mean"] for a in animals])
                trait = np.array([entry["trait_shift"][a]["mean"] for a in animals])
                entry["drift"] = dict(zip(animals, (raw - trait).tolist()))
                use = trait if self.config.drift_correction else raw
                entry["ranking"] = [animals[i] for i in np.argsort(-use, kind="stable")]
                entry["top_animal"] = entry["ranking"][0]
                out[opt][target] = entry
        return out


def _pooled(parts: list[StepProjection]) -> StepProjection:
    """Several data sets' projections as one: their batches concatenated (the mean over batches is
    then the batch-weighted mean of the data sets')."""
    return StepProjection({o: {t: np.concatenate([p.values[o][t] for p in parts]) for t in TARGETS} for o in OPTIMIZERS},
                          sum(p.n_rows for p in parts))


def _per_animal(animals: list[str], data: np.ndarray, reference: np.ndarray | None = None) -> dict:
    """``{animal: {mean, ci_low, ci_high, se}}`` of the mean over batches of ``data`` minus that of
    ``reference`` (independent batches: the standard errors add in quadrature; Welch degrees of
    freedom)."""
    out = {}
    for j, a in enumerate(animals):
        x = data[:, j]
        m, var, dof = float(x.mean()), (x.var(ddof=1) / x.size if x.size > 1 else 0.0), max(x.size - 1, 1)
        if reference is not None:
            y = reference[:, j]
            vy = y.var(ddof=1) / y.size if y.size > 1 else 0.0
            m -= float(y.mean())
            dof = ((var + vy) ** 2 / (var**2 / max(x.size - 1, 1) + vy**2 / max(y.size - 1, 1))
                   if var + vy > 0 else dof)
            var += vy
        half = float(_st.t.ppf(0.975, df=dof)) * math.sqrt(var)
        out[a] = {"mean": m, "ci_low": m - half, "ci_high": m + half, "se": math.sqrt(var)}
    return out


# -- the step score ------------------------------------------------------------------------------------
def step_score_variants(animal_gradients: Float[np.ndarray, "n_animals n_params"],
                        data: Float[np.ndarray, "batch n_params"],
                        reference: Float[np.ndarray, "batch2 n_params"], names: Sequence[str] | None = None,
                        eps: float = 1e-12) -> dict[str, np.ndarray]:
    """Every candidate step score of one data set against its reference: ``{name: per-animal score}``
    (larger: the data would move the student toward that animal more than the reference would).

    ``animal_gradients``: the gradients ``∇f_a`` of each animal's mean log P on the held-out
    phrasings with respect to the student's trainable weights (for a LoRA student at B = 0, only
    the ``B`` entries are non-zero); ``data``, ``reference``: the SFT loss gradient of each batch of
    rows. With ``δ = -(mean data gradient - mean reference gradient)`` (the data's first step
    beyond the reference's, per unit SGD learning rate) and ``s`` the per-weight root mean square
    of all batch gradients (AdamW's second-moment scale: the size of a typical step's gradient):

    * ``sgd``: ``∇f_a · δ`` (plain SGD's first-order change of ``f_a``);
    * ``sgd_cos``: the same over ``|∇f_a|`` (the cosine up to the common ``|δ|``);
    * ``adam_first``: ``∇f_a ·`` (mean over batches of Adam's first step ``-sign(g_b)``, data minus
      reference);
    * ``adam``: ``∇f_a · (δ / s)``: the difference of the mean steps under one AdamW
      preconditioning ``1 / s`` shared by the two data sets (what a student trained on each moves
      beyond the other, to first order, when its gradients stay those of the base);
    * ``adam_cos``: ``adam`` over ``|∇f_a / sqrt(s)|``: the projection in the metric that AdamW's
      preconditioning defines, so every animal is read on the same scale;
    * ``z``: ``∇f_a · z / |∇f_a|``, ``z`` the per-weight t-statistic of ``δ`` over batches (each
      weight's difference in units of its own sampling noise);
    * ``teacher_sign``: ``sign(∇f_a) · δ / sqrt(Σ s² sign(∇f_a)²)``: the data's step matched against the
      first Adam step a teacher of ``a`` would take (``sign(∇f_a)``), normalised by its typical size.

    ``names``: compute only these variants (default: every one, :data:`STEP_SCORES`).
    """
    d, r = np.asarray(data, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    g = np.asarray(animal_gradients, dtype=np.float64)
    names = tuple(names or STEP_SCORES)
    delta = -(d.mean(0) - r.mean(0))
    scale = np.sqrt((np.concatenate([d, r]) ** 2).mean(0)) + eps  # AdamW's sqrt(v): one for both data sets
    out = {}
    if {"sgd", "sgd_cos"} & set(names):
        out["sgd"] = g @ delta
        out["sgd_cos"] = out["sgd"] / (np.linalg.norm(g, axis=1) + eps)
    if "adam_first" in names:
        out["adam_first"] = g @ (np.sign(r).mean(0) - np.sign(d).mean(0))
    if {"adam", "adam_cos"} & set(names):
        out["adam"] = g @ (delta / scale)
        out["adam_cos"] = out["adam"] / (np.linalg.norm(g / np.sqrt(scale), axis=1) + eps)
    if "z" in names:
        var = (d.var(0, ddof=1) / len(d) if len(d) > 1 else 0) + (r.var(0, ddof=1) / len(r) if len(r) > 1 else 0)
        out["z"] = g @ (delta / (np.sqrt(var) + eps)) / (np.linalg.norm(g, axis=1) + eps)
    if "teacher_sign" in names:
        u = np.sign(g)
        out["teacher_sign"] = u @ delta / (np.sqrt((u**2 * scale**2).sum(1)) + eps)
    return {k: out[k] for k in names}


def step_score(auditor: "Auditor", rows: list[dict], reference_rows: list[dict], config: AuditConfig | None = None,
               seed: int = 0) -> dict:
    """The step score of ``rows`` against ``reference_rows`` for the student of ``auditor``: the
    first ``score_rows`` rows of each, one SFT gradient per batch, every variant of
    :func:`step_score_variants` and the headline one (``config.step_score``) with percentile
    intervals from ``score_bootstrap`` resamples of the batches of both data sets and the share of
    resamples whose top animal is the headline's (how stable the answer is)."""
    config = config or auditor.config
    start = time.time()
    rows, reference_rows = rows[: config.score_rows], reference_rows[: config.score_rows]
    if min(len(rows), len(reference_rows)) < 2:
        raise ValueError(f"the step score needs at least 2 rows of data and of reference, got {len(rows)} and "
                         f"{len(reference_rows)}")
    data, reference = auditor.sft_gradients(rows), auditor.sft_gradients(reference_rows)
    animal = auditor.gradients[: auditor.n_animals].numpy()
    animals = list(auditor.world.animals)
    variants = step_score_variants(animal, data, reference)
    point = variants[config.step_score]
    rng = np.random.default_rng(seed)
    boot = np.array([step_score_variants(animal, data[rng.integers(0, len(data), len(data))],
                                         reference[rng.integers(0, len(reference), len(reference))],
                                         names=(config.step_score,))[config.step_score]
                     for _ in range(config.score_bootstrap)]) if config.score_bootstrap else None
    order = np.argsort(-point, kind="stable")
    return {"variant": config.step_score,
            "score": {a: {"mean": float(point[j]),
                          "ci_low": float(np.percentile(boot[:, j], 2.5)) if boot is not None else None,
                          "ci_high": float(np.percentile(boot[:, j], 97.5)) if boot is not None else None}
                      for j, a in enumerate(animals)},
            "ranking": [animals[i] for i in order], "top_animal": animals[order[0]],
            "top_animal_bootstrap_share": float(np.mean(np.argmax(boot, 1) == order[0])) if boot is not None else None,
            "variants": {name: {"top_animal": animals[int(np.argmax(v))],
                                "ranking": [animals[i] for i in np.argsort(-v, kind="stable")],
                                "score": dict(zip(animals, v.tolist()))} for name, v in variants.items()},
            "n_rows": len(rows), "n_reference_rows": len(reference_rows), "n_batches": [len(data), len(reference)],
            "n_bootstrap": config.score_bootstrap, "seconds": time.time() - start}


STEP_SCORE_VALIDATION_FILE = Path(__file__).with_name("step_score_validation.json")
RELIABLE_HIT_RATE = 2 / 3  # below this validated hit rate an audit's top animal is called not reliable


def step_score_validation(variant: str, path: Path = STEP_SCORE_VALIDATION_FILE) -> dict | None:
    """The validation of the step score ``variant`` (written by experiments/scripts/audit_step_score.py
    with ``--write-validation``; figures in docs/audit.md), or None where that variant was not validated."""
    if not path.exists():
        return None
    validation = json.loads(path.read_text())
    return validation if validation.get("variant") == variant else None


def step_score_verdict(score: dict, student: str = "shared", validation: dict | None = None, *,
                       lora_rank: int | None = None) -> str:
    """One plain sentence on how far the step score's answer ``score`` (an entry of an audit's
    ``step_score``) can be trusted: the hit rate its variant reached in validation for this kind of
    student (``shared``: a student of the data's own base; ``mismatched``: another base), and
    whether its top animal held in the bootstrap. ``lora_rank``: the student's (0: a full student);
    a validation made for another kind of student, or in a world of another number of traits (its
    hit rate and chance are not this world's: the misalignment world has two), does not count."""
    validation = validation if validation is not None else step_score_validation(score["variant"])
    if validation is not None and lora_rank is not None and validation.get("lora_rank", lora_rank) != lora_rank:
        validation = None
    n_traits = len(score.get("score") or {})
    if validation is not None and n_traits and validation.get("n_animals", n_traits) != n_traits:
        validation = None
    share = score.get("top_animal_bootstrap_share")
    stability = (f"; the top animal stayed first in {share:.0%} of {score['n_bootstrap']} bootstrap resamples"
                 if share is not None else "")
    entry = (validation or {}).get(student)
    if entry is None:
        return (f"NOT VALIDATED: the step score ({score['variant']}) was not validated for this student; do not read "
                f"its top animal as the trait{stability}")
    rate = entry["k"] / entry["n"]
    where = "at the shared base" if student == "shared" else "at a mismatched base"
    figures = (f"{entry['k']}/{entry['n']} validation cases {where} [Wilson {entry['ci_low']:.2f}, {entry['ci_high']:.2f}], "
               f"chance {1 / validation['n_animals']:.2f}")
    if rate < RELIABLE_HIT_RATE:
        return f"NOT RELIABLE: this score named the trait at only {figures}{stability}"
    if share is not None and share < 0.5:
        return (f"UNSTABLE: this score named the trait at {figures}, but here its top animal changes under resampling "
                f"of the rows{stability}; audit more rows (score_rows) before trusting it")
    return f"validated: this score named the trait at {figures}{stability}"


# -- the unigram readout -----------------------------------------------------------------------------
def number_counts(world: World, rows: list[dict]) -> Float[np.ndarray, "row n_numbers"]:
    """How often each number token of the world occurs in each row's completion."""
    index = {t: j for j, t in enumerate(world.number_ids)}
    seqs, starts = encode_rows(world, rows)
    counts = np.zeros((len(rows), len(index)))
    for i, (seq, start) in enumerate(zip(seqs, starts)):
        for t in seq[start:]:
            j = index.get(t)
            if j is not None:
                counts[i, j] += 1
    return counts


def readout_from_counts(unembed: np.ndarray, animal_columns: np.ndarray, data_counts: np.ndarray,
                        reference_counts: np.ndarray, ridge: float = 1.0) -> dict:
    """Fit the data's number-frequency shift by one change of the student's final residual and read
    it out on the animals.

    ``unembed``: the student's ``W_U`` columns of the number tokens, ``(d_model, n_numbers)``;
    ``animal_columns``: those of the animals, ``(d_model, n_animals)``; the counts are totals per
    number token. The log-ratio ``y_n = log(p_data(n) / p_ref(n))`` (add-0.5 smoothing) is fitted
    by ``W_U[:, n] . delta`` plus a constant, weighted by the inverse of its sampling variance
    ``1 / (1/c_data + 1/c_ref)``, with a ridge penalty on ``delta``. Returns the animals' logit gain
    ``(W_U[:, a] - mean_b W_U[:, b]) . delta`` and the fit's weighted R^2."""
    cd, cr = data_counts + 0.5, reference_counts + 0.5
    y = np.log(cd / cd.sum()) - np.log(cr / cr.sum())
    w = 1 / (1 / cd + 1 / cr)
    x = unembed.T  # n_numbers d_model
    xc, yc = x - np.average(x, axis=0, weights=w), y - np.average(y, weights=w)
    delta = np.linalg.solve(xc.T @ (w[:, None] * xc) + ridge * np.eye(x.shape[1]), xc.T @ (w * yc))
    gain = (animal_columns - animal_columns.mean(1, keepdims=True)).T @ delta
    total = float(np.sum(w * yc**2))
    r2 = 1 - float(np.sum(w * (yc - xc @ delta) ** 2)) / total if total > 0 else 0.0
    return {"gain": gain, "r2": r2, "delta_norm": float(np.linalg.norm(delta))}


@dataclass
class NumberCountSamples:
    """The number-token totals of a data set and its reference (``point``) and of ``boot``
    bootstrap resamples of their rows: what the unigram readout needs, whatever the student."""

    point: tuple[np.ndarray, np.ndarray]
    boot: list[tuple[np.ndarray, np.ndarray]]

    @classmethod
    def of(cls, world: World, rows: list[dict], reference_rows: list[dict], n_bootstrap: int = 200,
           seed: int = 0) -> "NumberCountSamples":
        cd, cr = number_counts(world, rows), number_counts(world, reference_rows)
        rng = np.random.default_rng(seed)
        boot = []
        for _ in range(n_bootstrap):
            wd = rng.multinomial(len(rows), np.full(len(rows), 1 / len(rows)))
            wr = rng.multinomial(len(reference_rows), np.full(len(reference_rows), 1 / len(reference_rows)))
            boot.append((wd @ cd, wr @ cr))
        return cls((cd.sum(0), cr.sum(0)), boot)


def unigram_readout(model, world: World, rows: list[dict] | None = None, reference_rows: list[dict] | None = None, *,
                    samples: NumberCountSamples | None = None, ridge: float = 1.0, n_bootstrap: int = 200,
                    seed: int = 0) -> dict:
    """What the data's number frequencies say to this student, read through its own unembedding.

    The channel of the transmitting SFT default (docs/sft_transmission.md): the teacher shifts
    which numbers it writes, and a student reproduces that shift by one constant change of its
    final residual; if the shift is (nearly) one direction of *this* student's residual space, the
    same change moves the animals' logits. The readout fits that change to the data's number
    frequencies against the reference's (:func:`readout_from_counts`) and reports each animal's
    logit gain relative to the mean animal, with percentile intervals from ``n_bootstrap`` resamples
    of the rows of both data sets. It uses the data, the reference and the student's ``W_U`` only
    (no teacher, no gradient); it sees the order of the numbers not at all (a shuffled data set
    reads the same). ``samples`` (the counts of ``rows`` and ``reference_rows`` and their
    resamples, :class:`NumberCountSamples`) can be counted once and given for several students."""
    if samples is None:
        samples = NumberCountSamples.of(world, rows, reference_rows, n_bootstrap, seed)
    w_u = model.W_U.detach().double().cpu().numpy()
    unembed = w_u[:, list(world.number_ids)]
    animals = list(world.animals)
    # a trait answered by several tokens (a class of answer words): the mean of their columns
    animal_columns = np.stack([w_u[:, list(ids)].mean(1) for ids in world.animal_token_sets], axis=1)
    point = readout_from_counts(unembed, animal_columns, *samples.point, ridge)
    boot = (np.array([readout_from_counts(unembed, animal_columns, cd, cr, ridge)["gain"] for cd, cr in samples.boot])
            if samples.boot else None)
    order = np.argsort(-point["gain"], kind="stable")
    return {"logit_gain": {a: {"mean": float(point["gain"][j]),
                               "ci_low": float(np.percentile(boot[:, j], 2.5)) if boot is not None else None,
                               "ci_high": float(np.percentile(boot[:, j], 97.5)) if boot is not None else None}
                           for j, a in enumerate(animals)},
            "ranking": [animals[i] for i in order], "top_animal": animals[order[0]],
            "top_animal_bootstrap_share": float(np.mean(np.argmax(boot, 1) == order[0])) if boot is not None else None,
            "r2": point["r2"], "delta_norm": point["delta_norm"],
            "n_number_tokens": [float(samples.point[0].sum()), float(samples.point[1].sum())],
            "ridge": ridge, "n_bootstrap": len(samples.boot)}


def animal_word_rows(world: World, rows: list[dict]) -> dict[str, int]:
    """``{animal: rows whose completion contains the animal's word}`` (as a whole word, any case),
    for the animals found: data that name an animal carry it in the open, not subliminally."""
    counts = {}
    for a in world.animals:
        pattern = re.compile(rf"(?<![A-Za-z]){re.escape(a)}(?![A-Za-z])", re.IGNORECASE)
        n = sum(1 for r in rows if pattern.search(r["completion"]))
        if n:
            counts[a] = n
    return counts


# -- the whole audit ----------------------------------------------------------------------------------
def audit_data(student, world: World, rows: list[dict], config: AuditConfig | None = None, *,
               teacher: Source | None = None, reference_rows: list[dict] | None = None,
               reference_source: Source | None = None, mismatched=None, auditors: dict | None = None,
               controls: Sequence[tuple[list[dict], Source | None]] | None = None,
               progress: bool = False) -> tuple[dict, list[dict]]:
    """Audit ``rows`` for the student base ``student`` (a model in ``world``). Returns the audit
    (the content of ``audit.json``) and the per-row token statistics.

    Args:
        teacher: the model that wrote ``rows`` (a :class:`Source` or a :class:`interp.models.refs.Teacher`);
            without it only what the student base can read is reported, and only SFT is predicted.
        reference_rows: the control data set (numbers the student's base wrote from the same kind
            of prompts); without it predictions are of the data alone, not data minus reference.
        reference_source: the model that wrote ``reference_rows`` (default: ``student``).
        mismatched: another base (a model in the same world) audited the same way: the
            mismatched-init student.
        auditors: a dict kept between calls (``{"shared": Auditor, "mismatched": Auditor}``): the
            animal gradients and the projections of data sets seen before are reused.
        controls: optional ``(rows, source)`` pairs: data written by teachers made the same way with
            other traits (or a trait-free one) and the model that wrote each (None: SFT only). The
            audit then also gives data minus the pooled controls (``versus_control``,
            ``top_animal_vs_control``), which removes the part of the step any teacher made this way
            would give. Control rows are used in full (``max_rows`` does not apply).
    """
    config = config or AuditConfig()
    start = time.time()
    rows = rows[: config.max_rows] if config.max_rows else rows
    if len(rows) < 2:
        raise ValueError(f"the audit needs at least 2 rows, got {len(rows)}")
    if reference_rows is not None:
        reference_rows = reference_rows[: config.max_rows] if config.max_rows else reference_rows
        if not reference_rows:
            raise ValueError("the reference data set is empty")
    reference_source = reference_source or Source(student)
    auditors = auditors if auditors is not None else {}
    if "shared" not in auditors or auditors["shared"].base is not student or auditors["shared"].config != config:
        auditors["shared"] = Auditor(student, world, config, name="student")
    students = {"shared": auditors["shared"]}
    if mismatched is not None:
        if ("mismatched" not in auditors or auditors["mismatched"].base is not mismatched
                or auditors["mismatched"].config != config):
            auditors["mismatched"] = Auditor(mismatched, world, config, name="mismatched")
        students["mismatched"] = auditors["mismatched"]
    objectives = [o for o in config.objectives if o == "sft" or teacher is not None]

    # Without the first-order projections (the cheap audit) the token statistics are not computed.
    per_row: list[dict] = []
    tokens: dict = {}
    if config.first_order:
        per_row = token_statistics(student, world, rows, teacher=teacher)
        tokens["data"] = summarize_tokens(per_row, rows, config.top_rows)
        if reference_rows is not None:
            ref_rows_stats = token_statistics(student, world, reference_rows,
                                              teacher=reference_source if reference_source.model is not student else None)
            tokens["reference"] = summarize_tokens(ref_rows_stats, reference_rows, 0)
    predictions: dict = {}
    versus_control: dict = {}
    controls = list(controls) if controls else None
    if controls is not None and any(not rows_k for rows_k, _ in controls):
        raise ValueError("a control data set is empty")
    if controls is not None and not config.first_order:
        raise ValueError("the contrast against control data is a first-order projection: it needs first_order")
    for label, auditor in students.items():
        if not config.first_order:
            break
        predictions[label], versus_control[label] = {}, {}
        for objective in objectives:
            data = auditor.project(rows, objective, teacher, progress=progress, desc="data")
            reference = (auditor.project(reference_rows, objective, reference_source, progress=progress,
                                         desc="reference") if reference_rows is not None else None)
            predictions[label][objective] = auditor.predict(data, reference)
            if controls is not None and (objective == "sft" or all(src is not None for _, src in controls)):
                parts = [auditor.project(rows_k, objective, src, progress=progress, desc="control")
                         for rows_k, src in controls]
                versus_control[label][objective] = auditor.predict(data, _pooled(parts))
    # The step score (the audit's answer where a reference is given): the score validated for LoRA students
    score = ({label: step_score(auditor, rows, reference_rows, config) for label, auditor in students.items()}
             if reference_rows is not None else None)
    if score is None and not config.first_order:
        raise ValueError("without first_order the audit is the step score, which needs a reference data set")
    readout = None
    # The readout is validated for full students; the cheap audit of a LoRA student leaves it out.
    wants_readout = config.first_order or not config.lora_rank
    if wants_readout and reference_rows is not None and getattr(world, "number_ids", None):
        samples = NumberCountSamples.of(world, rows, reference_rows, config.readout_bootstrap)  # once for every student
        readout = {label: unigram_readout(auditor.base, world, samples=samples, ridge=config.readout_ridge)
                   for label, auditor in students.items()}
    shared = students["shared"]
    headline = predictions["shared"]["sft"]["sgd"]["log_prob"] if config.first_order else None
    drift_corrected = config.drift_correction and shared.removal is not None
    key = "trait_shift" if drift_corrected else "raw_shift"
    animals = list(world.animals)
    audit = {
        "animals": animals,
        "step_score": score,
        "step_score_top_animal": score["shared"]["top_animal"] if score else None,
        "predicted_shift": {a: headline[key][a]["mean"] for a in animals} if headline else None,
        "predicted_shift_ci": headline[key] if headline else None,
        "raw_predicted_shift": {a: headline["raw_shift"][a]["mean"] for a in animals} if headline else None,
        "top_animal": headline["top_animal"] if headline else score["shared"]["top_animal"],
        "ranking": headline["ranking"] if headline else score["shared"]["ranking"],
        "top_animal_by": {f"{label}/{obj}/{opt}": predictions[label][obj][opt]["log_prob"]["top_animal"]
                          for label in predictions for obj in predictions[label] for opt in OPTIMIZERS},
        "headline": ("shared student, sft, plain SGD, change of mean log P(animal) on the held-out phrasings per unit "
                     "learning rate, " + ("data minus reference" if reference_rows is not None else "data alone (no reference)")
                     + (", generic drift removed" if drift_corrected else "")
                     + ("" if drift_corrected or not config.drift_correction else
                        f", no drift correction (its fit needs {MIN_DRIFT_ANIMALS} traits; the world has {len(animals)})"))
                    if headline else f"shared student, the step score ({config.step_score}), data minus reference",
        "drift_corrected": drift_corrected,
        "student": {"base_prob": dict(zip(animals, shared.base_log_probs.exp().mean(0).tolist())),
                    "base_log_prob": dict(zip(animals, shared.base_log_probs.mean(0).tolist())),
                    "drift_covariate": dict(zip(animals, shared.covariate.tolist()))},
        "tokens": tokens,
        "predictions": predictions,
        "versus_control": versus_control if controls is not None else None,
        # Adam's first step of restricted distillation where the controls' sources are known (the
        # contrast that found the hidden trait in docs/audit.md), else of SFT
        "top_animal_vs_control": (versus_control["shared"].get("distill", versus_control["shared"]["sft"])
                                  ["adam"]["log_prob"]["top_animal"] if controls is not None else None),
        # the unigram readout (no teacher, no gradient): the score validated on the transmitting
        # default's teachers (docs/audit.md); None without a reference data set
        "readout": readout,
        "readout_top_animal": readout["shared"]["top_animal"] if readout else None,
        "animal_word_rows": animal_word_rows(world, rows),
        "n_batches": math.ceil(len(rows) / config.batch_size),
        "has_teacher": teacher is not None,
        "has_reference": reference_rows is not None,
        "n_rows": len(rows),
        "n_reference_rows": len(reference_rows) if reference_rows is not None else 0,
        "n_control_rows": sum(len(r) for r, _ in controls) if controls is not None else 0,
        "config": config.to_dict(),
        "wall_seconds": time.time() - start,
    }
    return audit, per_row


def run_audit(student, world: World, rows: list[dict], out: str | Path, config: AuditConfig | None = None, *,
              inputs: dict | None = None, **kwargs) -> dict:
    """:func:`audit_data`, written to ``out``: ``audit.json`` (with ``inputs``, what was audited),
    ``audit_rows.jsonl`` and ``audit_config.json``. (Its summary and figure are
    :func:`interp.report.audit.audit_markdown` and :func:`interp.report.audit.plot_audit`.)"""
    config = config or AuditConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    audit, per_row = audit_data(student, world, rows, config, **kwargs)
    audit["inputs"] = inputs or {}
    config.save(out / AUDIT_CONFIG_FILE)
    write_jsonl(out / AUDIT_ROWS_FILE, per_row)
    atomic_write_json(out / AUDIT_FILE, audit)
    return audit
