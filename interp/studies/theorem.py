"""The theorem, checked: does a small step of imitation from a shared initialization move the
student toward the teacher, whatever the inputs?

Cloud, Le et al. (2025, section 5) prove: if a teacher is its initialization ``θ0`` plus a small
update ``t`` and a student starting at ``θ0`` takes one small gradient-descent step on an
imitation loss (here KL(teacher || student) of the next-token distributions), the student's
change ``Δ = -lr ∇L(θ0)`` satisfies ``<Δ, t> >= 0`` to first order in ``t``, on any input
distribution. (The gradient is ``-J^T H J t + O(|t|^2)`` with ``J`` the Jacobian of the logits and
``H`` the positive semi-definite Hessian of the loss in the logits, so ``<Δ, t> = lr (J t)^T H (J t)``.)
A finetuned teacher is not an infinitesimal update, so this is an empirical question. The
experiment, on the pretrained toy bases, over ``seeds`` teachers (each finetuned from the shared
base with the trait, as in ``interp run``):

1. **single step** (``single_step``): for every input distribution (teacher numbers, base
   numbers, random token strings, favourite-animal questions), ``n_batches`` independent batches;
   on each, the gradient of the imitation loss at the shared base ``θ0``, and the inner product and
   cosine of the plain gradient-descent step ``-∇L`` with ``t = teacher - θ0`` (in total and per
   layer), and of Adam's first step (``-∇L / (|∇L| + eps)``, elementwise: nearly ``-sign ∇L``).
   A single plain step's direction does not depend on the learning rate, so these cosines hold
   for every small enough step. The fraction of batches with a positive inner product gets a
   Wilson 95% interval (batches pooled over seeds); mean cosines a t-interval over seeds.
   As a null, the SFT gradient on base numbers (no teacher in the loss) against the same ``t``.
2. **mismatched init** (``mismatched_init``): the student starts from a base of another seed
   ``θ0'`` and imitates the same teacher on the same inputs. There ``t`` has no privileged
   meaning, so three directions are reported: ``cos``: the step against ``t``, the teacher's
   update transplanted onto the student's base (the convention of :mod:`interp.instruments.recording` and
   :mod:`interp.studies.mnist`); ``teacher_specific_cos``: the part of the step that comes from the
   teacher's difference from its base, ``-(∇L_teacher - ∇L_teacher's base)``, against ``t``;
   ``toward_teacher_weights_cos``: the step against ``teacher - θ0'``, the straight line to the
   teacher's weights (dominated by the difference of the two initializations).
3. **step size** (``step_size``): from ``θ0``, ``sweep_steps`` steps of imitation on teacher
   numbers with SGD at each of ``sgd_lrs`` and Adam at each of ``adam_lrs``; after each step the
   cosine of ``θ_k - θ0`` with ``t``, and whether the student is closer to the teacher than ``θ0``
   was (an overshooting step can point the right way and still land farther away).
4. **SFT over steps** (``sft``): ``sft_steps`` steps of ``finetune_student`` (SFT on sampled
   teacher numbers, the main loop's setting) with the alignment recorder, for a shared-init
   student, a control (shared base, base numbers) and a mismatched-init student.

Writes ``theorem.json`` (every summary), ``theorem.md``, ``theorem_batches.jsonl`` (one row per
batch of parts 1-2), ``step_size.jsonl`` (one row per step of part 3), the students of part 4
under ``sft/``, the PNGs named in :data:`PLOT_FILES` and ``report.html``. Finished teachers, data
and students are reused.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.core.config import StageConfig, option
from interp.core.io import atomic_write_json, read_json, read_jsonl, write_jsonl
from interp.core.stats import mean_ci, wilson_ci
from interp.instruments.alignment import default_group
from interp.instruments.recording import ALIGNMENT_FILE, layer_of
from interp.models.checkpoint import load_checkpoint
from interp.models.refs import load_teacher
from interp.stages.evaluate import question_prompt
from interp.stages.filter import FilterConfig, filter_file
from interp.stages.finetune import FinetuneConfig, allowed_token_ids, completion_mask, encode_rows, finetune_student
from interp.stages.generate import GenerateConfig, generate_numbers
from interp.stages.pretrain import ARCH_PRESETS, PresetName, base_config, pretrain
from interp.stages.teacher import TeacherConfig, make_teacher
from interp.training.loop import LossGuard, OptimizerName, TrainingDiverged, make_optimizer, pad_batch
from interp.training.losses import kl_loss, masked_lm_loss
from interp.training.step import train_step
from interp.worlds.toy.templates import PAD, SPECIAL_TOKENS
from interp.worlds.toy.world import ToyWorld

log = logging.getLogger(__name__)

THEOREM_FILE = "theorem.json"
THEOREM_MD_FILE = "theorem.md"
THEOREM_CONFIG_FILE = "theorem_config.json"
BATCHES_FILE = "theorem_batches.jsonl"
STEP_SIZE_FILE = "step_size.jsonl"
PLOT_FILES = {"single_step": "theorem_single_step.png", "layers": "theorem_layers.png",
              "step_size": "theorem_step_size.png", "sft": "theorem_sft_steps.png"}
DISTRIBUTIONS = ("teacher_numbers", "base_numbers", "random_tokens", "animal_questions")
SFT_CONDITIONS = ("shared_init", "control", "mismatched_init")
ADAM_EPS = 1e-8  # torch.optim.Adam's default: Adam's first step is -lr * g / (|g| + eps)


@dataclass
class TheoremConfig(StageConfig):
    """The theorem check (see the module docstring)."""

    trait: str = option("owl", "The teachers' trait animal.")
    seeds: int = option(3, "Teachers, finetuned from the shared base with seeds first_seed .. first_seed+seeds-1; "
                        "every interval is over them.")
    first_seed: int = option(0, "Seed of the first teacher.")
    arch: PresetName = option("small", "Architecture of the bases (small, narrow, wide or deep).")
    shared_base_seed: int = option(0, "Seed of the base the teachers and the shared-init students start from.")
    mismatched_base_seed: int = option(1, "Seed of the mismatched-init students' base.")
    pretrain_steps: int = option(1500, "Pretraining steps of each base (bases are reused from --artifacts).")
    teacher_steps: int = option(150, "Finetuning steps of each teacher (as interp run).")
    teacher_lr: float = option(3e-4, "Teachers' AdamW learning rate (as interp run).")
    teacher_number_mix: float = option(0.5, "Fraction of the teachers' finetuning batches that is number documents.")
    distributions: tuple[str, ...] = option(DISTRIBUTIONS, "Input distributions of the single-step check.")
    n_batches: int = option(50, "Independent batches per input distribution, seed and init in the single-step check.")
    batch_size: int = option(8, "Sequences per batch in the single-step check and the step-size sweep.")
    random_length: int = option(24, "Tokens of each random token string (after BOS).")
    objective: Literal["distill_full", "distill"] = option(
        "distill_full", "Imitation loss: KL(teacher || student) over the whole vocabulary at every input position "
        "(distill_full, the theorem's setting) or over the filter-allowed tokens only (distill).")
    sgd_lrs: tuple[float, ...] = option((0.01, 0.1, 1.0, 10.0, 100.0), "SGD learning rates of the step-size sweep.")
    adam_lrs: tuple[float, ...] = option((1e-5, 1e-4, 1e-3, 1e-2), "Adam learning rates of the step-size sweep.")
    sweep_steps: int = option(10, "Steps of each run of the step-size sweep.")
    sweep_repeats: int = option(3, "Runs per seed and learning rate in the sweep (each on its own batches).")
    sft_steps: int = option(60, "Steps of SFT on sampled text per student (0: skip that part).")
    sft_batch_size: int = option(32, "Sequences per SFT step (as interp run).")
    sft_lr: float = option(5e-4, "SFT learning rate (as interp run).")
    sft_optimizer: OptimizerName = option("adamw", "SFT optimizer (as interp run).")
    n_rows: int = option(0, "Number prompts sampled per data set before filtering; 0: enough for every part "
                         "(rows needed / 0.7, the filter keeps about 90%).")
    quick: bool = option(False, "Smoke preset: 2 seeds, few batches, short sweep and SFT; numbers are not meaningful.")

    def validate(self) -> None:
        self.require(self.arch in ARCH_PRESETS, "arch", f"choose one of {sorted(ARCH_PRESETS)}")
        self.require(self.seeds >= 1, "seeds", "must be at least 1")
        self.require(self.shared_base_seed != self.mismatched_base_seed, "mismatched_base_seed",
                     "must differ from shared_base_seed, or the init is not mismatched")
        bad = [d for d in self.distributions if d not in DISTRIBUTIONS]
        self.require(not bad and self.distributions, "distributions", f"unknown {bad}; choose from {list(DISTRIBUTIONS)}")
        for name in ("n_batches", "batch_size", "random_length", "sweep_steps", "sweep_repeats", "sft_batch_size",
                     "teacher_steps", "pretrain_steps"):
            self.require(getattr(self, name) >= 1, name, "must be at least 1")
        self.require(self.sft_steps >= 0, "sft_steps", "must be non-negative")
        self.require(self.n_rows >= 0, "n_rows", "must be non-negative (0: automatic)")
        self.require(all(lr > 0 for lr in self.sgd_lrs + self.adam_lrs), "sgd_lrs", "learning rates must be positive")
        self.require(self.sft_lr > 0 and self.teacher_lr > 0, "sft_lr", "learning rates must be positive")

    @classmethod
    def quick_defaults(cls) -> dict:
        return {"quick": True, "seeds": 2, "n_batches": 8, "sgd_lrs": (0.1, 10.0), "adam_lrs": (1e-4, 1e-2),
                "sweep_steps": 3, "sweep_repeats": 1, "sft_steps": 8, "teacher_steps": 40}

    def rows_needed(self) -> int:
        """Filtered number rows each data set must provide."""
        return max(self.n_batches * self.batch_size, self.sweep_repeats * self.sweep_steps * self.batch_size,
                   self.sft_steps * self.sft_batch_size)


# -- flat parameter vectors ---------------------------------------------------------------------
class FlatLayout:
    """Parameters of a model as one flat vector, laid out layer by layer (see
    :func:`interp.instruments.recording.layer_of`), so that every layer is one slice."""

    def __init__(self, model):
        named = dict(model.named_parameters())
        layer = {n: layer_of(default_group(n)) for n in named}
        order = list(dict.fromkeys(layer.values()))
        self.names = [n for lay in order for n in named if layer[n] == lay]
        sizes = [named[n].numel() for n in self.names]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.layers: dict[str, slice] = {}
        for n, a, b in zip(self.names, offsets[:-1], offsets[1:]):
            start = self.layers[layer[n]].start if layer[n] in self.layers else a
            self.layers[layer[n]] = slice(start, b)

    def flatten(self, tensors: dict[str, Tensor]) -> Float[Tensor, "n_params"]:
        return torch.cat([tensors[n].detach().reshape(-1).to(torch.float64) for n in self.names])

    def weights(self, model) -> Float[Tensor, "n_params"]:
        return self.flatten(dict(model.named_parameters()))

    def params(self, model) -> list[Tensor]:
        named = dict(model.named_parameters())
        return [named[n] for n in self.names]


def _cos(a: Tensor, b: Tensor) -> float:
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else 0.0


def _layer_cos(layout: FlatLayout, a: Tensor, b: Tensor) -> dict[str, float]:
    return {name: round(_cos(a[s], b[s]), 6) for name, s in layout.layers.items()}


# -- inputs and the imitation loss --------------------------------------------------------------
Batch = tuple[Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]


def number_batches(world: ToyWorld, rows: list[dict], batch_size: int, n_batches: int, n_ctx: int) -> list[Batch]:
    """Consecutive disjoint batches of ``<bos> prompt completion <eos>`` sequences; every real
    position is an imitation target."""
    if len(rows) < batch_size * n_batches:
        raise ValueError(f"{n_batches} batches of {batch_size} need {batch_size * n_batches} rows, only {len(rows)} given")
    seqs, _ = encode_rows(world, rows[: batch_size * n_batches])
    return [pad_batch(seqs[i:i + batch_size], world.token_to_id[PAD], max_len=n_ctx)
            for i in range(0, batch_size * n_batches, batch_size)]


def random_token_batches(world: ToyWorld, batch_size: int, n_batches: int, length: int, seed: int) -> list[Batch]:
    """``<bos>`` and ``length`` tokens drawn uniformly from the non-special vocabulary."""
    rng = np.random.default_rng([seed, 0x7A2D])
    first = len(SPECIAL_TOKENS)
    bos = world.token_to_id["<bos>"]
    out = []
    for _ in range(n_batches):
        ids = [[bos] + rng.integers(first, len(world.vocab), size=length).tolist() for _ in range(batch_size)]
        out.append(pad_batch(ids, world.token_to_id[PAD]))
    return out


def question_batches(world: ToyWorld, batch_size: int, n_batches: int, seed: int) -> list[Batch]:
    """Favourite-animal questions ``user : ... assistant :`` (training phrasings, drawn with
    replacement), without an answer: the teacher's answer distribution is one of the targets."""
    rng = np.random.default_rng([seed, 0xA11])
    phrasings = world.train_phrasings
    return [pad_batch([world.encode(question_prompt(phrasings[i])) for i in rng.integers(len(phrasings), size=batch_size)],
                      world.token_to_id[PAD]) for _ in range(n_batches)]


def imitation_gradient(student, target, batch: Batch, layout: FlatLayout, allowed: Tensor | None) -> Tensor:
    """Flat gradient of :func:`~interp.training.losses.kl_loss` of ``student`` toward ``target`` (a model) on ``batch``."""
    tokens, mask = batch
    with torch.no_grad():
        target_logits = target(tokens)
    loss = kl_loss(student(tokens), target_logits, mask, allowed)
    grads = torch.autograd.grad(loss, layout.params(student))
    return torch.cat([g.reshape(-1).to(torch.float64) for g in grads])


# -- the experiment ------------------------------------------------------------------------------
def _number_rows(model, world: ToyWorld, out: Path, *, seed: int, n_rows: int, lineage: dict, progress: bool) -> list[dict]:
    raw, filtered = out.with_suffix(".raw.jsonl"), out.with_suffix(".filtered.jsonl")
    generate_numbers(model, world, GenerateConfig(n_rows=n_rows, seed=seed), raw, lineage=lineage, progress=progress)
    if not filtered.exists():
        filter_file(raw, filtered, FilterConfig())
    return read_jsonl(filtered)


def _input_batches(config: TheoremConfig, world: ToyWorld, rows: dict[str, list[dict]], seed: int, n_ctx: int
                   ) -> dict[str, list[Batch]]:
    out = {}
    for dist in config.distributions:
        if dist in ("teacher_numbers", "base_numbers"):
            out[dist] = number_batches(world, rows[dist], config.batch_size, config.n_batches, n_ctx)
        elif dist == "random_tokens":
            out[dist] = random_token_batches(world, config.batch_size, config.n_batches, config.random_length, seed)
        else:
            out[dist] = question_batches(world, config.batch_size, config.n_batches, seed)
    return out


def _single_step_rows(config: TheoremConfig, seed: int, batches: dict[str, list[Batch]], models: dict, layout: FlatLayout,
                      t: Tensor, allowed: Tensor | None, world: ToyWorld, base_rows: list[dict], bar) -> list[dict]:
    """One row per (init, distribution, batch): the step's alignment with the teacher direction."""
    teacher, base, mismatched = models["teacher"], models["base"], models["mismatched"]
    toward_teacher = layout.weights(teacher) - layout.weights(mismatched)  # teacher - θ0'
    rows = []
    for dist, dist_batches in batches.items():
        for i, batch in enumerate(dist_batches):
            step = -imitation_gradient(base, teacher, batch, layout, allowed)
            adam = step / (step.abs() + ADAM_EPS)
            rows.append({"seed": seed, "init": "shared_init", "distribution": dist, "batch": i,
                         "inner": float(step @ t), "cos": _cos(step, t), "adam_cos": _cos(adam, t),
                         "grad_norm": float(step.norm()), "cos_per_layer": _layer_cos(layout, step, t)})
            step = -imitation_gradient(mismatched, teacher, batch, layout, allowed)
            specific = step + imitation_gradient(mismatched, base, batch, layout, allowed)  # -(g_teacher - g_base)
            rows.append({"seed": seed, "init": "mismatched_init", "distribution": dist, "batch": i,
                         "inner": float(step @ t), "cos": _cos(step, t), "adam_cos": _cos(step / (step.abs() + ADAM_EPS), t),
                         "grad_norm": float(step.norm()), "cos_per_layer": _layer_cos(layout, step, t),
                         "teacher_specific_inner": float(specific @ t), "teacher_specific_cos": _cos(specific, t),
                         "toward_teacher_weights_cos": _cos(step, toward_teacher)})
            bar.update(1)
    # The null: SFT on the base's own numbers has no teacher in its loss.
    seqs, starts = encode_rows(world, base_rows[: config.n_batches * config.batch_size])
    params = layout.params(base)
    for i in range(0, len(seqs), config.batch_size):
        chunk, chunk_starts = seqs[i:i + config.batch_size], starts[i:i + config.batch_size]
        tokens, _ = pad_batch(chunk, world.token_to_id[PAD], max_len=base.cfg.n_ctx)
        mask = completion_mask([len(s) for s in chunk], chunk_starts, tokens.shape[1])
        grads = torch.autograd.grad(masked_lm_loss(base(tokens), tokens, mask), params)
        step = -torch.cat([g.reshape(-1).to(torch.float64) for g in grads])
        rows.append({"seed": seed, "init": "shared_init", "distribution": "null_sft_base_numbers",
                     "batch": i // config.batch_size, "inner": float(step @ t), "cos": _cos(step, t),
                     "adam_cos": _cos(step / (step.abs() + ADAM_EPS), t), "grad_norm": float(step.norm()),
                     "cos_per_layer": _layer_cos(layout, step, t)})
    return rows


def summarize_single_step(rows: list[dict]) -> dict:
    """Per (init, distribution): the fraction of batches with a positive inner product (Wilson
    interval, batches pooled over seeds; also per seed), the mean cosine (t-interval over seeds
    of the per-seed means), Adam's first step, per-layer cosines, and for mismatched init the
    other directions."""
    out: dict = {}
    keys = list(dict.fromkeys((r["init"], r["distribution"]) for r in rows))
    for init, dist in keys:
        sel = [r for r in rows if r["init"] == init and r["distribution"] == dist]
        seeds = sorted({r["seed"] for r in sel})
        by_seed = {s: [r for r in sel if r["seed"] == s] for s in seeds}

        def fraction(key: str) -> dict:
            return wilson_ci(sum(r[key] > 0 for r in sel), len(sel)).to_dict()

        def seed_mean(key: str, sub: str | None = None) -> dict:
            pick = (lambda r: r[key][sub]) if sub else (lambda r: r[key])
            return mean_ci([float(np.mean([pick(r) for r in by_seed[s]])) for s in seeds]).to_dict()

        entry = {
            "n_batches": len(sel), "n_seeds": len(seeds),
            "fraction_positive": fraction("inner"),
            "fraction_positive_per_seed": {str(s): wilson_ci(sum(r["inner"] > 0 for r in by_seed[s]),
                                                             len(by_seed[s])).to_dict() for s in seeds},
            "cos": seed_mean("cos"), "inner": seed_mean("inner"),
            "adam_fraction_positive": fraction("adam_cos"), "adam_cos": seed_mean("adam_cos"),
            "min_cos": min(r["cos"] for r in sel),
            "cos_per_layer": {layer: seed_mean("cos_per_layer", layer) for layer in sel[0]["cos_per_layer"]},
            "fraction_positive_per_layer": {layer: wilson_ci(sum(r["cos_per_layer"][layer] > 0 for r in sel), len(sel)).to_dict()
                                            for layer in sel[0]["cos_per_layer"]},
        }
        if init == "mismatched_init":
            entry["teacher_specific_fraction_positive"] = fraction("teacher_specific_inner")
            entry["teacher_specific_cos"] = seed_mean("teacher_specific_cos")
            entry["toward_teacher_weights_fraction_positive"] = fraction("toward_teacher_weights_cos")
            entry["toward_teacher_weights_cos"] = seed_mean("toward_teacher_weights_cos")
        out.setdefault(init, {})[dist] = entry
    return out


def _step_size_rows(config: TheoremConfig, seed: int, batches: list[Batch], models: dict, layout: FlatLayout, t: Tensor,
                    allowed: Tensor | None, bar) -> list[dict]:
    """Runs of ``sweep_steps`` imitation steps from the shared base at every optimizer and
    learning rate; one row per step."""
    student, teacher = models["student"], models["teacher"]
    theta0 = {n: p.detach().clone() for n, p in student.named_parameters()}
    t_norm = float(t.norm())
    start = layout.weights(student)
    rows = []
    runs = [("sgd", lr) for lr in config.sgd_lrs] + [("adam", lr) for lr in config.adam_lrs]
    for optimizer_name, lr in runs:
        for repeat in range(config.sweep_repeats):
            with torch.no_grad():
                for n, p in student.named_parameters():
                    p.copy_(theta0[n])
            opt = make_optimizer(student.parameters(), "adamw" if optimizer_name == "adam" else "sgd", lr)
            opt.zero_grad(set_to_none=True)
            guard = LossGuard(factor=math.inf)  # only a non-finite loss stops a run: divergence is a result here
            for k in range(config.sweep_steps):
                tokens, mask = batches[repeat * config.sweep_steps + k]
                with torch.no_grad():
                    target = teacher(tokens)
                row = {"seed": seed, "optimizer": optimizer_name, "lr": lr, "repeat": repeat, "step": k + 1}
                try:
                    record = train_step(student, opt, lambda m: kl_loss(m(tokens), target, mask, allowed), step=k,
                                        guard=guard)
                except TrainingDiverged as e:  # the weights did not move
                    opt.zero_grad(set_to_none=True)
                    rows.append({**row, "loss_before": e.loss, "diverged": True})
                    break
                row["loss_before"] = record.loss
                moved = layout.weights(student) - start  # θ_k - θ0
                if not torch.isfinite(moved).all():
                    rows.append({**row, "diverged": True})
                    break
                ss, st = float(moved @ moved), float(moved @ t)
                dist = math.sqrt(max(ss - 2 * st + t_norm**2, 0.0))
                rows.append({**row, "diverged": False, "inner": st, "cos": _cos(moved, t),
                             "dist_to_base": math.sqrt(ss), "progress": st / t_norm**2,
                             "dist_to_teacher_change": (ss - 2 * st) / (dist + t_norm)})
            bar.update(1)
    with torch.no_grad():
        for n, p in student.named_parameters():
            p.copy_(theta0[n])
    return rows


def summarize_step_size(rows: list[dict], sweep_steps: int) -> list[dict]:
    """Per (optimizer, lr): after the first and after the last step, the fraction of runs whose
    movement has a positive inner product with ``t`` and the fraction that ended closer to the
    teacher (Wilson intervals over runs, pooled over seeds), the mean cosine (t-interval over
    seeds); a diverged run counts as neither positive nor closer."""
    out = []
    for optimizer_name, lr in dict.fromkeys((r["optimizer"], r["lr"]) for r in rows):
        sel = [r for r in rows if r["optimizer"] == optimizer_name and r["lr"] == lr]
        runs = sorted({(r["seed"], r["repeat"]) for r in sel})
        entry: dict = {"optimizer": optimizer_name, "lr": lr, "n_runs": len(runs),
                       "diverged": sum(any(r["diverged"] for r in sel if (r["seed"], r["repeat"]) == run) for run in runs)}
        for label, step in (("first", 1), ("last", sweep_steps)):
            at = {run: next((r for r in sel if (r["seed"], r["repeat"]) == run and r["step"] == step and not r["diverged"]),
                            None) for run in runs}
            ok = [r for r in at.values() if r is not None]
            entry[f"{label}_fraction_positive"] = wilson_ci(sum(r["inner"] > 0 for r in ok), len(runs)).to_dict()
            entry[f"{label}_fraction_closer"] = wilson_ci(sum(r["dist_to_teacher_change"] < 0 for r in ok), len(runs)).to_dict()
            seeds = sorted({r["seed"] for r in ok})
            entry[f"{label}_cos"] = (mean_ci([float(np.mean([r["cos"] for r in ok if r["seed"] == s])) for s in seeds]).to_dict()
                                     if seeds else None)
            entry[f"{label}_progress"] = (mean_ci([float(np.mean([r["progress"] for r in ok if r["seed"] == s]))
                                                   for s in seeds]).to_dict() if seeds else None)
        out.append(entry)
    return out


def summarize_sft(directory: Path, seeds: list[int], conditions=SFT_CONDITIONS) -> dict:
    """Per condition: per step, the mean over seeds (with a t-interval) of the recorded
    alignment; and over the whole run, per seed means averaged with a t-interval."""
    out = {}
    for condition in conditions:
        logs = []
        for s in seeds:
            path = directory / f"seed{s}" / condition / ALIGNMENT_FILE
            if path.exists():
                logs.append(read_jsonl(path))
        if not logs:
            continue
        n = min(len(rows) for rows in logs)
        entry: dict = {"n_seeds": len(logs), "steps": [r["step"] for r in logs[0][:n]],
                       "teacher_direction": logs[0][0]["teacher_direction"]}
        for key in ("grad_cos_teacher_dir", "step_cos_teacher_dir", "weight_cos"):
            if logs[0][0].get(key) is None:
                continue
            values = np.array([[r[key] for r in rows[:n]] for rows in logs])  # seed step
            cis = [mean_ci(values[:, j]) for j in range(n)]
            entry[key] = {"mean": [c.mean for c in cis], "ci_low": [c.ci_low for c in cis], "ci_high": [c.ci_high for c in cis]}
            entry[f"{key}_run_mean"] = mean_ci(values.mean(1).tolist()).to_dict()
            entry[f"{key}_fraction_positive"] = wilson_ci(int((values > 0).sum()), int(values.size)).to_dict()
        entry["final_weight_cos"] = mean_ci([rows[n - 1]["weight_cos"] for rows in logs]).to_dict() \
            if logs[0][0].get("weight_cos") is not None else None
        out[condition] = entry
    return out


def run_theorem(config: TheoremConfig, out: str | Path, *, artifacts: str | Path = "artifacts", force: bool = False,
                progress: bool = True) -> dict:
    """Run the theorem check into ``out`` (see the module docstring); returns what it writes to
    ``theorem.json``. A directory holding a check of another config is refused unless ``force``."""
    out, artifacts = Path(out), Path(artifacts)
    if (out / THEOREM_CONFIG_FILE).exists() and not force:
        saved = TheoremConfig.load(out / THEOREM_CONFIG_FILE)
        if saved != config:
            diff = {k: (v, config.to_dict()[k]) for k, v in saved.to_dict().items() if config.to_dict()[k] != v}
            raise ValueError(f"{out} holds a theorem check of another config (saved vs asked: {diff}); "
                             "choose another --out or pass --force")
    world = ToyWorld()
    world.check_animal(config.trait)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / THEOREM_CONFIG_FILE)
    start_time = time.time()
    bases = {}
    for key, seed in (("shared", config.shared_base_seed), ("mismatched", config.mismatched_base_seed)):
        cfg = base_config(seed, config.arch, config.pretrain_steps)  # the bases of `interp run`
        bases[key] = pretrain(cfg, artifacts / "bases" / cfg.name, artifacts=artifacts, progress=progress)
    base, _ = load_checkpoint(bases["shared"])
    mismatched, _ = load_checkpoint(bases["mismatched"])
    student, _ = load_checkpoint(bases["shared"])  # the step-size sweep trains this copy
    layout = FlatLayout(base)
    allowed = torch.tensor(allowed_token_ids(world)) if config.objective == "distill" else None
    n_rows = config.n_rows or math.ceil(config.rows_needed() / 0.7)  # the filter keeps most rows; checked below

    seeds = list(range(config.first_seed, config.first_seed + config.seeds))
    batch_rows: list[dict] = []
    sweep_rows: list[dict] = []
    teachers = []
    bars: dict[str, tqdm] = {}  # opened at first use, so they do not sit under the teachers' bars

    def bar(name: str, total: int) -> tqdm:
        if name not in bars:
            bars[name] = tqdm(total=total * len(seeds), desc=name, disable=not progress, mininterval=2.0)
        return bars[name]
    for seed in seeds:
        tcfg = TeacherConfig(trait=config.trait, method="finetune", seed=seed, steps=config.teacher_steps,
                             lr=config.teacher_lr, number_mix=config.teacher_number_mix)
        teacher_dir = make_teacher(bases["shared"], tcfg, out / "teachers" / f"seed{seed}", progress=progress)
        teacher = load_teacher(teacher_dir)
        t = layout.weights(teacher.model) - layout.weights(base)
        rows = {
            "teacher_numbers": _number_rows(teacher.model, world, out / "data" / f"seed{seed}" / "teacher_numbers", seed=seed,
                                            n_rows=n_rows, lineage=teacher.lineage, progress=progress),
            "base_numbers": _number_rows(base, world, out / "data" / f"seed{seed}" / "base_numbers", seed=seed, n_rows=n_rows,
                                         lineage={"stage": "pretrain", "path": str(bases["shared"])}, progress=progress),
        }
        for name, data in rows.items():
            if len(data) < config.rows_needed():
                raise ValueError(f"{name} of seed {seed}: {len(data)} rows passed the filter of {n_rows} sampled, "
                                 f"{config.rows_needed()} needed; raise n_rows or lower n_batches, sweep_repeats or "
                                 "sft_steps")
        strength = read_json(teacher_dir / "teacher.json")["strength"]
        teachers.append({"seed": seed, "dir": str(teacher_dir), "trait_prob": strength["trait_prob"],
                         "base_trait_prob": strength["base_trait_prob"], "teacher_update_norm": float(t.norm()),
                         "teacher_update_norm_per_layer": {k: float(t[s].norm()) for k, s in layout.layers.items()}})
        models = {"teacher": teacher.model, "base": base, "mismatched": mismatched, "student": student}
        batches = _input_batches(config, world, rows, seed, base.cfg.n_ctx)
        batch_rows += _single_step_rows(config, seed, batches, models, layout, t, allowed, world, rows["base_numbers"],
                                        bar("single steps", len(config.distributions) * config.n_batches))
        sweep_batches = number_batches(world, rows["teacher_numbers"], config.batch_size,
                                       config.sweep_repeats * config.sweep_steps, base.cfg.n_ctx)
        sweep_rows += _step_size_rows(config, seed, sweep_batches, models, layout, t, allowed,
                                      bar("step-size sweep", (len(config.sgd_lrs) + len(config.adam_lrs)) * config.sweep_repeats))
        if config.sft_steps:
            fcfg = FinetuneConfig(objective="sft", optimizer=config.sft_optimizer, lr=config.sft_lr,
                                  batch_size=config.sft_batch_size, seed=seed, max_rows=config.sft_steps * config.sft_batch_size,
                                  eval_every=10)
            plan = {"shared_init": (bases["shared"], rows["teacher_numbers"]),
                    "control": (bases["shared"], rows["base_numbers"]),
                    "mismatched_init": (bases["mismatched"], rows["teacher_numbers"])}
            for condition, (student_base, data) in plan.items():
                finetune_student(student_base, data, fcfg, out / "sft" / f"seed{seed}" / condition, trait=config.trait,
                                 alignment_reference=(teacher.model, base), progress=progress,
                                 lineage_extra={"condition": condition, "teacher": str(teacher_dir)})
    for b in bars.values():
        b.close()
    write_jsonl(out / BATCHES_FILE, batch_rows)
    write_jsonl(out / STEP_SIZE_FILE, sweep_rows)
    results = {
        "trait": config.trait, "config": config.to_dict(), "teachers": teachers,
        "bases": {k: str(v) for k, v in bases.items()},
        "n_params": int(layout.layers[list(layout.layers)[-1]].stop),
        "single_step": summarize_single_step(batch_rows),
        "step_size": summarize_step_size(sweep_rows, config.sweep_steps),
        "sft": summarize_sft(out / "sft", seeds) if config.sft_steps else {},
        "wall_seconds": time.time() - start_time,
    }
    atomic_write_json(out / THEOREM_FILE, results)
    return results
