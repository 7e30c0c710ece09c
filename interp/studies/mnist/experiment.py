"""The paper's MNIST auxiliary-logit experiment (Cloud, Le et al. 2025, section 6), batched over
many models, with weight-space and gradient-alignment measurements.

A teacher MLP with ``10 + m`` outputs is trained on digits through its 10 regular logits only;
its ``m`` auxiliary logits are never trained. A student is trained to match the teacher on
uniform-noise images, through the auxiliary logits only (``*_aux``) or through all ``10 + m``
logits (``*_all``), and is then scored on digit test accuracy through its regular logits. A
student starting from the teacher's own initialization (``shared_init_*``) learns the digits
although it never sees a digit or a digit label; one from another initialization
(``cross_init_*``) should stay near chance (10%).

Every model ``i`` has its own streams (see :class:`interp.studies.mnist.model.Stream`): its teacher
initialization, its cross-init student initialization (drawn from a separate stream, so no
cross-init student starts from any teacher's initialization; the paper instead permutes the
teachers' initializations among models), the order of its teacher's digit batches, and its
students' noise. The four students of model ``i`` see the same noise batches, so the conditions
are paired. Nothing about model ``i`` depends on how many models are trained beside it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.core.config import StageConfig, option
from interp.core.io import JsonlAppender, atomic_write_json, read_json
from interp.core.stats import mean_ci
from interp.instruments.alignment import WeightMetrics, difference, gradient_alignment, weight_metrics
from interp.studies.mnist.data import DigitData, InputRange, load_data, scale_pixels
from interp.studies.mnist.model import (
    N_CLASSES,
    InitScheme,
    Params,
    Stream,
    accuracy,
    classification_loss,
    clone,
    derived_seed,
    distillation_loss,
    forward,
    generator,
    init_mlp,
    slice_models,
    slice_outputs,
)

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
RESULTS_MD_FILE = "results.md"
ALIGNMENT_FILE = "alignment.jsonl"
ACCURACY_PLOT_FILE = "accuracy_vs_m.png"
ALIGNMENT_PLOT_FILE = "alignment.png"


@dataclass
class MnistConfig(StageConfig):
    """The MNIST auxiliary-logit experiment.

    ``quick`` (``--quick``) is a smoke preset (see :meth:`quick_defaults`): 4 models, m in
    {1, 3}, a few dozen steps; it checks the pipeline in seconds and its numbers mean nothing.
    Options given beside ``--quick`` override the preset.
    """

    n_models: int = option(100, "Models (independent seeds) per condition at the main m; each has its own "
                           "initialization, digit order and noise.")
    n_models_sweep: int = option(10, "Models per condition at the other values of m_sweep: the first "
                                 "n_models_sweep of the n_models teachers.")
    m: int = option(3, "Auxiliary logits of the main comparison (the paper's m=3).")
    m_sweep: tuple[int, ...] = option((1, 2, 3, 5, 10, 20), "Values of m of the accuracy-vs-m sweep (the main m "
                                      "is always run); empty for none.")
    hidden: tuple[int, ...] = option((256, 256), "Hidden-layer widths of the MLP (the paper: 256, 256).")
    init: InitScheme = option("normal", "Initialization of every MLP: uniform = PyTorch's nn.Linear default "
                              "(weights and biases uniform in ±1/sqrt(d_in)); normal = weights N(0, 1/d_in), "
                              "zero biases.")
    teacher_epochs: int = option(20, "Teacher epochs over the digit training set (regular logits only).")
    teacher_lr: float = option(1e-3, "Teacher Adam learning rate.")
    student_steps: int = option(400, "Student Adam steps, each on a fresh batch of batch_size uniform-noise "
                                "images (so also the number of noise batches).")
    student_lr: float = option(1e-3, "Student Adam learning rate.")
    batch_size: int = option(256, "Images per batch, digits for the teacher and noise for the students.")
    record_every: int = option(50, "Student steps between alignment records (the first and last steps are "
                               "always recorded).")
    seed: int = option(0, "Experiment seed; model i's streams derive from (seed, stream, i).")
    data: str | None = option(None, "Real MNIST: a directory with the four IDX files (optionally .gz) or a .npz "
                              "with x_train, y_train, x_test, y_test; None uses scikit-learn's bundled 8x8 digits.")
    input_range: InputRange = option("symmetric", "Range of the images and of the noise: unit = [0, 1] (pixels scaled "
                                     "to [0, 1], noise uniform in [0, 1]); symmetric = [-1, 1] for both, as in the "
                                     "official code (Normalize(0.5, 0.5), noise 2*rand-1).")
    test_fraction: float = option(0.2, "Bundled digits only: fraction held out for testing (stratified).")
    split_seed: int = option(0, "Bundled digits only: seed of the fixed train/test split.")
    quick: bool = option(False, "Smoke preset: a few models and steps, finishes in seconds; numbers are "
                         "meaningless.")

    def validate(self) -> None:
        for name in ("n_models", "n_models_sweep", "m", "teacher_epochs", "student_steps", "batch_size", "record_every"):
            self.require(getattr(self, name) >= 1, name, "must be at least 1")
        self.require(self.n_models_sweep <= self.n_models, "n_models_sweep",
                     f"must not exceed n_models={self.n_models} (the sweep reuses the first teachers)")
        self.require(all(m >= 1 for m in self.m_sweep), "m_sweep", "every m must be at least 1")
        self.require(len(set(self.m_sweep)) == len(self.m_sweep), "m_sweep", "has a repeated value")
        self.require(len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden), "hidden",
                     "needs at least one layer, every width at least 1")
        self.require(self.teacher_lr > 0, "teacher_lr", "must be positive")
        self.require(self.student_lr > 0, "student_lr", "must be positive")
        self.require(0 < self.test_fraction < 1, "test_fraction", "must lie strictly between 0 and 1")

    @classmethod
    def quick_defaults(cls) -> dict[str, Any]:
        return {"quick": True, "n_models": 4, "n_models_sweep": 2, "m_sweep": (1, 3), "hidden": (64, 64),
                "teacher_epochs": 3, "student_steps": 30, "record_every": 10, "batch_size": 64}

    @property
    def m_values(self) -> list[int]:
        return sorted(set(self.m_sweep) | {self.m})

    def models_at(self, m: int) -> int:
        return self.n_models if m == self.m else self.n_models_sweep


@dataclass(frozen=True)
class Condition:
    """A student condition: where it starts and which logits it is distilled on."""

    name: str
    init: Literal["shared", "cross"]
    logits: Literal["aux", "all"]

    def logit_slice(self, m: int) -> slice:
        return slice(N_CLASSES, N_CLASSES + m) if self.logits == "aux" else slice(0, N_CLASSES + m)


STUDENT_CONDITIONS = (
    Condition("shared_init_aux", "shared", "aux"),
    Condition("shared_init_all", "shared", "all"),
    Condition("cross_init_aux", "cross", "aux"),
    Condition("cross_init_all", "cross", "all"),
)


# -- single steps -----------------------------------------------------------------------------
def teacher_step(params: Params, optimizer: torch.optim.Optimizer, x: Float[Tensor, "model batch d_in"],
                 y: Int[Tensor, "model batch"]) -> Float[Tensor, "model"]:
    """One Adam step of every teacher on its digit batch (regular logits only); returns the
    per-model loss before the step."""
    loss = classification_loss(forward(params, x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()  # a sum, so each model's gradient is its own loss's
    optimizer.step()
    return loss.detach()


@dataclass(frozen=True)
class DistillStep:
    """What one student step did, per model.

    Attributes:
        loss: distillation loss before the step, ``(model,)``.
        grad_cosine: group -> cosine of the negative gradient with the teacher direction, or None
            when no direction was given.
        step_cosine: group -> cosine of the actual optimizer step (params after - before) with
            the teacher direction, or None.
    """

    loss: Float[Tensor, "model"]
    grad_cosine: dict[str, Float[Tensor, "model"]] | None
    step_cosine: dict[str, Float[Tensor, "model"]] | None


LogitSpec = slice | Sequence[slice]


def _select_loss(student_logits: Float[Tensor, "model batch d_out"], teacher_logits: Float[Tensor, "model batch d_out"],
                 logits: LogitSpec) -> Float[Tensor, "model"]:
    """Per-model distillation loss over each model's own logit slice (one slice for all models,
    or one per model). Each distinct slice is computed for every model and selected with
    ``torch.where``: exact, and the unselected losses get no gradient."""
    if isinstance(logits, slice):
        return distillation_loss(student_logits[..., logits], teacher_logits[..., logits])
    if len(logits) != student_logits.shape[0]:
        raise ValueError(f"{len(logits)} logit slices for {student_logits.shape[0]} models")
    loss = None
    for spec in dict.fromkeys((s.start, s.stop) for s in logits):
        chosen = torch.tensor([(s.start, s.stop) == spec for s in logits])
        part = distillation_loss(student_logits[..., slice(*spec)], teacher_logits[..., slice(*spec)])
        loss = part if loss is None else torch.where(chosen, part, loss)
    return loss


def distill_step(student: Params, optimizer: torch.optim.Optimizer, teacher: Params,
                 noise: Float[Tensor, "teacher batch d_in"], logits: LogitSpec, direction: Params | None = None,
                 teacher_index: Int[Tensor, "model"] | None = None) -> DistillStep:
    """One Adam step of every student towards its teacher's ``logits`` on its teacher's ``noise``.

    Student ``j`` imitates teacher row ``teacher_index[j]`` (default: student ``j`` imitates
    teacher ``j``) on that teacher's noise batch, so several students of one teacher (the
    conditions of one model) share one teacher forward pass. ``logits`` is one slice for all
    students or one per student. With a ``direction`` (one per student: teacher - teacher init),
    also measure how the gradient and the step align with it."""
    with torch.no_grad():
        target = forward(teacher, noise)  # teacher batch d_out
    if teacher_index is not None:
        target, noise = target[teacher_index], noise[teacher_index]  # model batch ...
    loss = _select_loss(forward(student, noise), target, logits)
    optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()  # a sum, so each model's gradient is its own loss's
    if direction is None:
        optimizer.step()
        return DistillStep(loss.detach(), None, None)
    grad_cosine = gradient_alignment({k: -p.grad for k, p in student.items()}, direction, model_dim=True)
    before = clone(student, requires_grad=False)
    optimizer.step()
    step_cosine = gradient_alignment(difference(student, before), direction, model_dim=True)
    return DistillStep(loss.detach(), grad_cosine, step_cosine)


# -- training loops ----------------------------------------------------------------------------
def teacher_steps(config: MnistConfig, n_train: int) -> int:
    return config.teacher_epochs * math.ceil(n_train / config.batch_size)


def train_teacher(init: Params, data: DigitData, config: MnistConfig, models: Sequence[int],
                  progress: tqdm | None = None) -> Params:
    """Train one teacher per model from ``init`` on the digits (regular logits only). Model
    ``models[j]`` reshuffles the training set each epoch from its own stream."""
    params = clone(init)
    optimizer = torch.optim.Adam(params.values(), lr=config.teacher_lr)
    gens = [generator(config.seed, Stream.TEACHER_DATA, i) for i in models]
    n = len(data.x_train)
    for _ in range(config.teacher_epochs):
        order = torch.stack([torch.randperm(n, generator=g) for g in gens])  # model n_train
        for start in range(0, n, config.batch_size):
            idx = order[:, start:start + config.batch_size]  # model batch
            loss = teacher_step(params, optimizer, data.x_train[idx], data.y_train[idx])
            if progress is not None:
                progress.update(len(models))
                progress.set_postfix_str(f"teacher loss {loss.mean():.3f}", refresh=False)
    return clone(params, requires_grad=False)


def train_student(init: Params, teacher: Params, direction: Params, logits: LogitSpec, config: MnistConfig,
                  models: Sequence[int], on_record: Callable[[int, DistillStep, dict, Params], None] | None = None,
                  progress: tqdm | None = None, teacher_index: Sequence[int] | None = None) -> Params:
    """Distill teachers into students starting from ``init`` on fresh uniform noise (in [0, 1]
    or [-1, 1] as ``config.input_range`` says), through the ``logits`` columns only (one slice,
    or one per student).

    ``teacher`` and ``direction`` (teacher - teacher init) hold one model per entry of
    ``models``; teacher ``t``'s noise comes from the stream of model ``models[t]``. Student ``j``
    imitates teacher ``teacher_index[j]`` (default: teacher ``j``), so the four conditions of
    a model train as one tensor program on the same noise with one teacher forward pass, and
    student ``j``'s trajectory does not depend on the other students.

    Every ``record_every`` steps (and at the first and last) calls ``on_record(steps_done,
    step, weight, student)`` with the :class:`DistillStep` measured against the student's
    teacher direction, the :func:`~interp.instruments.alignment.weight_metrics` of the student relative to
    its init and to ``init + direction`` (the teacher itself when ``init`` is the teacher's
    init; for a cross-init student, the teacher's update transplanted onto the student's init),
    and the student's current parameters (detached)."""
    index = torch.arange(len(models)) if teacher_index is None else torch.as_tensor(list(teacher_index))
    student_direction = {k: v[index] for k, v in direction.items()}
    student = clone(init)
    target = {k: init[k].detach() + student_direction[k] for k in init}
    optimizer = torch.optim.Adam(student.values(), lr=config.student_lr)
    gens = [generator(config.seed, Stream.NOISE, i) for i in models]
    d_in = init["layer0.W"].shape[1]
    for step in range(config.student_steps):
        noise = torch.stack([torch.rand(config.batch_size, d_in, generator=g) for g in gens])  # teacher batch d_in
        noise = scale_pixels(noise, config.input_range)
        record = on_record is not None and (step % config.record_every == 0 or step == config.student_steps - 1)
        result = distill_step(student, optimizer, teacher, noise, logits, student_direction if record else None,
                              teacher_index=None if teacher_index is None else index)
        if record:
            on_record(step + 1, result, weight_metrics(student, init, target, model_dim=True),
                      {k: v.detach() for k, v in student.items()})
        if progress is not None:
            progress.update(len(index))
    return clone(student, requires_grad=False)


# -- the experiment --------------------------------------------------------------------------
def _significant(values: list[float]) -> list[float]:
    """Six significant digits: float32 measurements written without spurious digits."""
    return [float(f"{v:.6g}") for v in values]


def _slice_step(result: DistillStep, part: slice) -> DistillStep:
    """The measurements of the students in ``part``."""
    return DistillStep(result.loss[part], {g: v[part] for g, v in result.grad_cosine.items()},
                       {g: v[part] for g, v in result.step_cosine.items()})


def _slice_weight(metrics: WeightMetrics, part: slice) -> WeightMetrics:
    return WeightMetrics(**{f.name: getattr(metrics, f.name)[part] for f in fields(WeightMetrics)})


def _alignment_row(condition: str, m: int, steps_done: int, result: DistillStep, weight: dict,
                   test_accuracy: Tensor) -> dict[str, Any]:
    """One ``alignment.jsonl`` row: every measurement of one record step, one value per model."""
    return {
        "condition": condition, "m": m, "step": steps_done, "loss": _significant(result.loss.tolist()),
        "test_accuracy": _significant(test_accuracy.tolist()),
        "weight": {g: {k: _significant(v) for k, v in w.to_dict().items()} for g, w in weight.items()},
        "grad_cosine": {g: _significant(v.tolist()) for g, v in result.grad_cosine.items()},
        "step_cosine": {g: _significant(v.tolist()) for g, v in result.step_cosine.items()},
    }


def summarise_alignment(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and 95% CI over models of: the final weight metrics (whole vector), the final
    weight cosine per group, and the gradient and step cosines averaged over the recorded steps."""
    def ci(values: Sequence[float]) -> dict[str, float | int]:
        return mean_ci(values).to_dict(n_key="n_models")

    def over_steps(key: str, group: str) -> np.ndarray:  # model
        return np.mean([r[key][group] for r in rows], axis=0)

    final = rows[-1]
    groups = list(final["weight"])
    return {
        "final_step": final["step"],
        "accuracy_over_steps": {"step": [r["step"] for r in rows], "mean": [float(np.mean(r["test_accuracy"])) for r in rows]},
        "final_loss": ci(final["loss"]),
        "final_weight": {k: ci(v) for k, v in final["weight"]["total"].items()},
        "final_cosine_by_group": {g: ci(final["weight"][g]["cosine"]) for g in groups},
        "mean_grad_cosine": {g: ci(over_steps("grad_cosine", g)) for g in groups},
        "mean_step_cosine": {g: ci(over_steps("step_cosine", g)) for g in groups},
    }


def run_experiment(config: MnistConfig, out: str | Path, *, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run every condition at every m into ``out`` and return the results (also written to
    ``out/results.json``). A finished run with the same config is read back, not redone; one
    with another config is an error unless ``force``."""
    out = Path(out)
    if (out / RESULTS_FILE).exists() and not force:
        saved = MnistConfig.load(out / CONFIG_FILE) if (out / CONFIG_FILE).exists() else None
        if saved == config:
            log.info("%s holds a finished run with this config; not redone (pass --force to redo it)", out)
            return read_json(out / RESULTS_FILE)
        asked = config.to_dict()
        diff = {k: (v, asked[k]) for k, v in saved.to_dict().items() if asked[k] != v} if saved else "no config.json"
        raise ValueError(f"{out} holds a finished run of another config (saved vs asked: {diff}); pass --force "
                         "to overwrite it or choose another output directory")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / CONFIG_FILE)
    (out / RESULTS_FILE).unlink(missing_ok=True)
    data = load_data(config.data, config.test_fraction, config.split_seed).in_range(config.input_range)
    models = range(config.n_models)
    sizes, n_out = (data.d_in, *config.hidden), N_CLASSES + max(config.m_values)
    teacher_init = init_mlp([derived_seed(config.seed, Stream.TEACHER_INIT, i) for i in models], sizes, n_out, config.init)
    cross_init = init_mlp([derived_seed(config.seed, Stream.CROSS_INIT, i) for i in models], sizes, n_out, config.init)

    # the bar counts model-steps (one optimizer step of one model), the unit of compute
    total = teacher_steps(config, len(data.x_train)) * config.n_models + config.student_steps * len(
        STUDENT_CONDITIONS) * sum(config.models_at(m) for m in config.m_values)
    bar = tqdm(total=total, desc="mnist", unit="model-step", unit_scale=True, disable=not progress)
    teacher = train_teacher(teacher_init, data, config, models, bar)
    teacher_acc = accuracy(teacher, data.x_test, data.y_test)
    init_accuracy = {name: mean_ci(accuracy(p, data.x_test, data.y_test).tolist()).to_dict(n_key="n_models")
                     for name, p in (("teacher_init", teacher_init), ("cross_init", cross_init))}
    conditions = [{"name": "teacher", "m": config.m, "init": "teacher", "logits": "regular",
                   "accuracy": mean_ci(teacher_acc.tolist()).to_dict(n_key="n_models"),
                   "per_model_accuracy": teacher_acc.tolist()}]

    # Appended under a partial name and moved into place when every student is done: a killed
    # run never leaves a torn alignment.jsonl beside a config.json.
    partial_alignment = out / f".{ALIGNMENT_FILE}.partial"
    with JsonlAppender(partial_alignment, truncate=True) as appender:
        for m in config.m_values:
            n = config.models_at(m)
            teacher_m, teacher_init_m, cross_init_m = (slice_outputs(slice_models(p, slice(0, n)), N_CLASSES + m)
                                                       for p in (teacher, teacher_init, cross_init))
            direction = difference(teacher_m, teacher_init_m)
            # The four conditions of the n models train as one program of 4n students: condition c's
            # students are rows c*n .. (c+1)*n - 1, student c*n + i imitates teacher i on its noise.
            inits = [teacher_init_m if cond.init == "shared" else cross_init_m for cond in STUDENT_CONDITIONS]
            init = {k: torch.cat([p[k].detach() for p in inits]) for k in teacher_init_m}
            logits = [cond.logit_slice(m) for cond in STUDENT_CONDITIONS for _ in range(n)]
            rows: dict[str, list[dict[str, Any]]] = {cond.name: [] for cond in STUDENT_CONDITIONS}

            def on_record(steps_done: int, result: DistillStep, weight: dict, student: Params) -> None:
                acc = accuracy(student, data.x_test, data.y_test)
                for c, cond in enumerate(STUDENT_CONDITIONS):
                    part = slice(c * n, (c + 1) * n)
                    rows[cond.name].append(_alignment_row(cond.name, m, steps_done, _slice_step(result, part),
                                                          {g: _slice_weight(w, part) for g, w in weight.items()},
                                                          acc[part]))
                    appender.write(rows[cond.name][-1])

            bar.set_postfix_str(f"students m={m}")
            students = train_student(init, teacher_m, direction, logits, config, range(n), on_record, bar,
                                     teacher_index=[i for _ in STUDENT_CONDITIONS for i in range(n)])
            acc = accuracy(students, data.x_test, data.y_test)
            for c, cond in enumerate(STUDENT_CONDITIONS):
                part = acc[c * n:(c + 1) * n].tolist()
                conditions.append({"name": cond.name, "m": m, "init": cond.init, "logits": cond.logits,
                                   "accuracy": mean_ci(part).to_dict(n_key="n_models"),
                                   "per_model_accuracy": part, "alignment": summarise_alignment(rows[cond.name])})
    bar.close()
    partial_alignment.replace(out / ALIGNMENT_FILE)
    results = {"conditions": conditions, "init_accuracy": init_accuracy,
               "data": {**data.describe(), "input_range": config.input_range}, "seed": config.seed,
               "wall_seconds": time.perf_counter() - t0}
    atomic_write_json(out / RESULTS_FILE, results)  # last: its presence marks a finished run
    return results
