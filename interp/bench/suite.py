"""Benchmarks of the hot paths, each a ratio against the obvious alternative in the same process.

``interp bench --out DIR`` measures, on the same model, prompts and batches:

========================= ============================================ ==========================================
benchmark                 ours                                         against
========================= ============================================ ==========================================
``generation``            :func:`interp.stages.generate.sample_completions`   ``HookedTransformer.generate`` (KV cache)
                          on the generate stage's batches              on the same batches
``generation_full_batch`` the same, one full batch of equal length     the same batch
``generation_engines``    the sampler with the lean forward            the sampler with TransformerLens's forward
``recording``             a student step with alignment recording      the same step without
``distill`` / ``_full``   a logit-distillation step                    an SFT step
``audit``                 the audit of N rows (``audit_data``: SFT and   training the SFT student it predicts
                          restricted distill, against a reference)     (one epoch on the same N rows)
``audit_step``            the audit's answer alone (``first_order``     the same student (target: at most 0.33x)
                          off: the step score)
``sae``                   SAETrainer on cached activations (route B)   sae-lens's LanguageModelSAETrainingRunner
``mnist_teacher/student`` N MLPs trained as one batched program        a Python loop over N single models
``run_quick``             ``interp run --quick`` (wall time, peak RSS)  -
``run_quick_ray``         ``interp run --quick --executor ray`` (a     the same run on the local process pool
                          local Ray instance), wall time               (``--executor local``)
``run_default``           ``interp run`` (wall time, peak RSS)          target: about 20 minutes on 2 cores
``real_generation_hf/_tl`` the sampler on a real model (``--real-model``) transformers ``generate`` /
                          (:mod:`interp.bench.real`)                    ``HookedTransformer.generate``
========================= ============================================ ==========================================

Each comparison is repeated (``repeats``) with the two sides alternating which runs first, so a
change in machine load hits both; a row reports the median and interquartile range of each side
and of the per-repeat ratio. Nothing here asserts a speed: the figures are written to
``DIR/bench.json`` (with the machine: CPU count, torch threads, load average, versions) and as
a markdown table to ``DIR/benchmarks.md`` and between the markers of ``docs/benchmarks.md``
(text outside the markers is kept).

The recording and SAE benchmarks use public APIs only (:func:`interp.stages.finetune.finetune_student`
with and without ``alignment_reference``; sae-lens's ``SAETrainer`` and
``LanguageModelSAETrainingRunner``), in small functions (:func:`bench_finetune_steps`,
:func:`bench_sae`) that can be pointed at other implementations.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from interp.bench.measure import StepTimer, _fmt, _timed, alternating, comparison, number_rows, spread
from interp.core.config import StageConfig, option
from interp.core.io import atomic_write_json, atomic_write_text, read_json
from interp.instruments.audit import AuditConfig, Source, audit_data, lora_student_fields
from interp.instruments.recording import DEFAULT_TRAIT_GRAD_EVERY as every
from interp.models.checkpoint import PRETRAIN_CONFIG_FILE, WEIGHTS_FILE, Lineage, build_model, save_checkpoint
from interp.models.refs import Teacher, parse_base_ref
from interp.stages.finetune import FinetuneConfig, finetune_student
from interp.stages.generate import choose_engine, number_prompts, plan_batches, sample_completions
from interp.stages.pretrain import ARCH_PRESETS, PretrainConfig, world_dir
from interp.studies.mnist.data import load_data
from interp.studies.mnist.experiment import distill_step, teacher_step
from interp.studies.mnist.model import N_CLASSES, clone, derived_seed, init_mlp, slice_models
from interp.studies.run import RUN_CONFIG_FILE, RunConfig
from interp.worlds.toy.corpus import CorpusGenerator
from interp.worlds.toy.templates import EOS, format_numbers
from interp.worlds.toy.world import ToyWorld, load_tokenizer

log = logging.getLogger(__name__)

BENCH_FILE = "bench.json"
MARKDOWN_FILE = "benchmarks.md"
SCRATCH_DIR = "scratch"  # OUT/scratch: emptied by every bench run, holds nothing else
RUN_PROCESS_FILE = "bench_process.json"  # wall time and peak memory of a run the bench ran, kept in its run dir
DOCS_BEGIN = "<!-- interp bench: generated table begins (rewritten by `interp bench`) -->"
DOCS_END = "<!-- interp bench: generated table ends -->"
BENCHMARKS: tuple[str, ...] = ("speed", "generation", "finetune", "audit_step", "audit", "sae", "mnist", "run_quick",
                               "run_quick_ray", "run_default", "real_generation")
GENERATION_TARGET = 2.0  # sampler tokens/s over HookedTransformer.generate's, at the loop's batch size
RECORDING_TARGET = 0.10  # most relative overhead of alignment recording on a student step
AUDIT_STEP_TARGET = 0.33  # most cost of the audit's answer (step score + readout) over training the student it predicts
DEFAULT_RUN_TARGET_SECONDS = 20 * 60


@dataclass
class BenchConfig(StageConfig):
    """What ``interp bench`` measures, and how long it spends on each measurement.

    ``quick`` (``--quick``) is a preset of fewer prompts, steps, tokens and repeats (see
    :meth:`quick_defaults`) that finishes in a few minutes; it skips the default ``interp run``
    unless ``--default-run-dir`` is given. Options given beside ``--quick`` override the preset."""

    quick: bool = option(False, "Smaller measurements (a few minutes in all); skips the default interp run.")
    only: tuple[str, ...] = option(BENCHMARKS, f"Benchmarks to run, of {list(BENCHMARKS)}.")
    repeats: int = option(5, "Repeats of each comparison (sides alternate which runs first).")
    threads: int | None = option(None, "torch threads of the benchmarks, and OMP_NUM_THREADS of the timed interp runs "
                                 "(None: torch's default, one per core).")
    model: str | None = option(None, "Base checkpoint directory for the generation and finetuning benchmarks "
                               "(None: ARTIFACTS/bases/small-seed0 if it exists, else an untrained small model).")
    artifacts: str = option("artifacts", "Where base checkpoints are looked for (read only).")
    generation_prompts: int = option(1536, "Number prompts sampled per repeat (batched as the generate stage does).")
    batch_size: int = option(256, "Prompts per batch, as GenerateConfig.batch_size (the loop's).")
    max_new_tokens: int = option(24, "Most new tokens per prompt, as GenerateConfig.max_new_tokens.")
    finetune_steps: int = option(40, "Student steps per timed finetuning run.")
    finetune_batch_size: int = option(32, "Sequences per student step, as FinetuneConfig.batch_size.")
    audit_rows: int = option(3000, "Rows of the data set (and of its reference) the audit benchmark audits, and trains "
                             "the predicted SFT student on.")
    speed_rows: int = option(1600, "speed: rows each of the three students trains on (students per hour, new vs today's).")
    speed_steps: int = option(20, "speed: student steps per timed run of the student-step and limit rows.")
    speed_pretrain_steps: int = option(12, "speed: pretraining steps per timed run.")
    speed_prompts: int = option(512, "speed: number prompts the sampler's limit row samples per repeat.")
    sae_tokens: int = option(200_000, "Activations each SAE route trains on.")
    sae_expansion: int = option(8, "SAE width d_sae / d_model.")
    sae_k: int = option(16, "Active latents of the TopK SAE.")
    sae_batch_tokens: int = option(4096, "Activations per SAE training step.")
    mnist_models: int = option(20, "MNIST models trained batched vs in a loop.")
    mnist_steps: int = option(40, "MNIST optimizer steps timed per side (teacher and student).")
    mnist_hidden: tuple[int, ...] = option((256, 256), "Hidden widths of the MNIST MLPs (the paper's 256, 256).")
    real_model: str | None = option(None, "real_generation: a GGUF file, Hugging Face directory or TransformerLens name "
                                    "(None: the benchmark is skipped).")
    real_prompts: int = option(32, "real_generation: chat-formatted number prompts decoded per repeat.")
    real_batch_size: int = option(16, "real_generation: prompts per left-padded batch.")
    real_max_new_tokens: int = option(24, "real_generation: most new tokens per prompt.")
    executor_repeats: int = option(2, "run_quick_ray: quick runs on each executor (a few minutes each), alternating "
                                   "which runs first.")
    run_artifacts: str | None = option(None, "Artifacts directory of the timed interp runs (None: a fresh one "
                                       "under OUT/scratch, so their wall time includes pretraining the bases).")

    def validate(self) -> None:
        bad = [b for b in self.only if b not in BENCHMARKS]
        self.require(not bad, "only", f"unknown {bad}; choose from {list(BENCHMARKS)}")
        self.require(self.repeats >= 1, "repeats", "must be at least 1")
        self.require(self.threads is None or self.threads >= 1, "threads", "must be at least 1 or None")
        for name in ("speed_rows", "speed_steps", "speed_pretrain_steps", "speed_prompts",
                     "generation_prompts", "batch_size", "max_new_tokens", "finetune_steps", "finetune_batch_size",
                     "executor_repeats", "audit_rows", "sae_tokens", "sae_expansion", "sae_k", "sae_batch_tokens",
                     "mnist_models", "mnist_steps"):
            self.require(getattr(self, name) >= 1, name, "must be at least 1")
        self.require(self.finetune_steps >= 3, "finetune_steps", "must be at least 3 (the first step is not timed)")
        self.require(self.sae_tokens >= 2 * self.sae_batch_tokens, "sae_tokens",
                     f"must be at least two batches of sae_batch_tokens={self.sae_batch_tokens}")
        self.require(len(self.mnist_hidden) >= 1 and all(h >= 1 for h in self.mnist_hidden), "mnist_hidden",
                     "needs at least one layer, every width at least 1")

    @classmethod
    def quick_defaults(cls) -> dict[str, Any]:
        return {"quick": True, "repeats": 3, "generation_prompts": 384, "finetune_steps": 12, "audit_rows": 600,
                "speed_rows": 320, "speed_steps": 8, "speed_pretrain_steps": 6, "speed_prompts": 128,
                "sae_tokens": 40_000,
                "mnist_models": 8, "mnist_steps": 15, "mnist_hidden": (64, 64), "executor_repeats": 1}


# -- measuring ---------------------------------------------------------------------------------
# -- context: the model everything runs on -----------------------------------------------------
def _quiet_warnings() -> None:
    import warnings

    warnings.filterwarnings("ignore", message=r".*HookedTransformer.*deprecated.*")
    warnings.filterwarnings("ignore", message=r".*TransformerBridge.*")
    warnings.filterwarnings("ignore", message=r".*override.*configuration.*")


def resolve_base(config: BenchConfig, scratch: Path) -> tuple[Path, str]:
    """The base checkpoint the generation and finetuning benchmarks use, and how it was chosen.
    Without a trained base, an untrained ``small`` model is saved as a base under ``scratch``."""
    if config.model is not None:
        path = Path(config.model)
        if not (path / PRETRAIN_CONFIG_FILE).exists():
            raise FileNotFoundError(f"--model {path}: not a base checkpoint ({PRETRAIN_CONFIG_FILE} is missing)")
        return path, f"base checkpoint {path}"
    trained = Path(config.artifacts) / "bases" / "small-seed0"
    if (trained / PRETRAIN_CONFIG_FILE).exists():
        return trained, f"trained base {trained}"

    world = ToyWorld()
    pretrain_config = PretrainConfig(seed=0, arch="small")
    model = build_model(ARCH_PRESETS["small"], load_tokenizer(world_dir(world, scratch / "artifacts")), seed=0)
    path = scratch / "untrained-small-seed0"
    save_checkpoint(model, path, ARCH_PRESETS["small"], Lineage(stage="pretrain", seed=0, parent=None,
                                                                world_fingerprint=world.fingerprint()))
    pretrain_config.save(path / PRETRAIN_CONFIG_FILE)
    return path, (f"untrained small model (no base at {trained}): rows rarely end with EOS, so most run to "
                  "max_new_tokens")


# -- generation ----------------------------------------------------------------------------------
def _transformer_lens_generate(model, prompts: Sequence[Sequence[int]], batches: Sequence[Sequence[int]], *,
                               eos_id: int, max_new_tokens: int, temperature: float, seed: int
                               ) -> tuple[list[list[int]], int]:
    """``HookedTransformer.generate`` (KV cache, stop at EOS) on the given batches of equal-length
    prompts: (each row's new tokens without EOS, new tokens generated, EOS included)."""
    completions: list[list[int]] = [[] for _ in prompts]
    n_new = 0
    torch.manual_seed(seed)
    with torch.inference_mode():
        for rows in batches:
            tokens = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long)
            out = model.generate(tokens, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                 temperature=temperature if temperature > 0 else 1.0, use_past_kv_cache=True,
                                 stop_at_eos=True, eos_token_id=eos_id, verbose=False, return_type="tokens",
                                 padding_side="right")
            for i, new in zip(rows, out[:, tokens.shape[1]:].tolist()):
                ended = eos_id in new
                completions[i] = new[: new.index(eos_id)] if ended else new
                n_new += len(completions[i]) + ended
    return completions, n_new


def bench_generation(model, prompts: Sequence[Sequence[int]], *, eos_id: int, batch_size: int, max_new_tokens: int,
                     repeats: int, key: str = "generation", title: str | None = None) -> list[dict[str, Any]]:
    """The sampler against ``HookedTransformer.generate`` on the same prompts and batches (new
    tokens/s at temperature 1), the sampler's lean forward against its TransformerLens forward,
    and whether greedy outputs are identical."""
    prompts = [list(p) for p in prompts]
    batches = plan_batches([len(p) for p in prompts], batch_size)
    kwargs = dict(eos_id=eos_id, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False)
    counter = iter(range(10**6))

    def ours(engine: str) -> Callable[[], float]:
        def run() -> float:
            seconds, out = _timed(lambda: sample_completions(model, prompts, temperature=1.0, seed=next(counter),
                                                             engine=engine, **kwargs))
            return out.n_new_tokens / seconds
        return run

    def theirs() -> float:
        seconds, (_, n_new) = _timed(lambda: _transformer_lens_generate(
            model, prompts, batches, eos_id=eos_id, max_new_tokens=max_new_tokens, temperature=1.0, seed=next(counter)))
        return n_new / seconds

    lean_used = choose_engine(model, None) is not None
    suite, reference = alternating(ours("auto"), theirs, repeats)
    greedy = sample_completions(model, prompts, temperature=0.0, seed=0, **kwargs)
    reference_greedy, _ = _transformer_lens_generate(model, prompts, batches, eos_id=eos_id,
                                                     max_new_tokens=max_new_tokens, temperature=0.0, seed=0)
    same = sum(a == b for a, b in zip(greedy.tokens, reference_greedy))
    sizes = [len(b) for b in batches]
    details = {"n_prompts": len(prompts), "batch_sizes": sizes, "mean_batch_size": float(np.mean(sizes)),
               "max_new_tokens": max_new_tokens, "temperature": 1.0, "lean_forward_used": lean_used,
               "greedy_identical_rows": same, "greedy_rows": len(prompts),
               "greedy_identical": same == len(prompts)}
    title = title or "Sampling: the suite's sampler vs HookedTransformer.generate"
    rows = [comparison(
        key, title, f"new tokens/s sampling {len(prompts)} number prompts at temperature 1 (up to {max_new_tokens} new "
        f"tokens, stop at EOS), on the generate stage's batches (equal-length buckets of at most {batch_size}; "
        f"mean {np.mean(sizes):.0f} rows); greedy outputs compared row by row",
        measure="new tokens/s", subject=("sample_completions", suite),
        baseline=("HookedTransformer.generate(use_past_kv_cache=True)", reference), ratio="ours / theirs",
        higher_is_better=True, target={"text": f">= {GENERATION_TARGET:g}x", "threshold": GENERATION_TARGET,
                                       "kind": "ratio_at_least"}, details=details)]
    if lean_used:
        lean, tl = alternating(ours("lean"), ours("transformer_lens"), repeats)
        rows.append(comparison(
            f"{key}_engines", "Sampling: lean forward vs TransformerLens forward inside the sampler",
            "new tokens/s of sample_completions with engine='lean' vs engine='transformer_lens' (same sampling loop, "
            "same batches): what the lean forward alone buys", measure="new tokens/s",
            subject=("engine='lean'", lean), baseline=("engine='transformer_lens'", tl), ratio="ours / theirs",
            higher_is_better=True, details={"n_prompts": len(prompts)}))
    return rows


def full_batch_prompts(world, batch_size: int, seed: int = 1, max_prompts: int = 50_000) -> list[list[int]]:
    """``batch_size`` number prompts of one length (the most common one), drawn from the prompts of
    ``seed`` (as many as it takes, at most ``max_prompts``)."""
    from collections import Counter


    n = 4 * batch_size
    while True:
        prompts = [world.encode(t) for t in number_prompts(world, n, seed)]
        length, count = Counter(len(p) for p in prompts).most_common(1)[0]
        if count >= batch_size or n >= max_prompts:
            return [p for p in prompts if len(p) == length][:batch_size]
        n *= 2


# -- finetuning: recording overhead, distillation vs SFT -------------------------------------------
def bench_finetune_steps(base_path: Path, scratch: Path, *, steps: int, batch_size: int, repeats: int,
                         trait: str = "owl") -> list[dict[str, Any]]:
    """Mean seconds per student step (``finetune_student``, public API) of: SFT, SFT with alignment
    recording (``alignment_reference``), restricted and full-vocabulary distillation.

    Every variant runs ``steps`` steps on the same rows; a :class:`StepTimer` callback times
    each step (it asks for no weight copy, so the recording side pays exactly what recording costs)."""
    base_model, world, _ = parse_base_ref(base_path).load()
    teacher_model, _, _ = parse_base_ref(base_path).load()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a teacher one small step away from the base: a direction to record against
        for p in teacher_model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 1e-2)
    teacher = Teacher(teacher_model, world, trait, "finetune")
    scratch.mkdir(parents=True, exist_ok=True)
    rows = number_rows(world, steps * batch_size, seed=0)
    variants = {"sft": ("sft", False), "sft_recording": ("sft", True), "distill": ("distill", False),
                "distill_full": ("distill_full", False)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    detail_steps: dict[str, list[list[float]]] = {name: [] for name in variants}

    def run(name: str) -> float:
        objective, record = variants[name]
        timer = StepTimer()
        out = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=scratch))
        try:
            finetune_student(base_path, rows, FinetuneConfig(objective=objective, batch_size=batch_size, eval_every=0),
                             out / "student", teacher=teacher, trait=trait, callbacks=[timer], progress=False,
                             alignment_reference=(teacher_model, base_model) if record else None)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        seconds = timer.step_seconds()
        detail_steps[name].append(seconds.tolist())
        return float(seconds.mean())

    names = list(variants)
    run("sft")  # warm-up
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(run(name))

    clone = [_timed(lambda: {n: p.detach().clone() for n, p in base_model.named_parameters()})[0] for _ in range(20)]
    # Steps whose recorder row also computed the trait-loss gradient (every `every`-th: the interval after
    # step k includes recorder(k)), against the others: where recording's time goes.
    recorded = detail_steps["sft_recording"]
    trait_steps = float(np.mean([s[k] for s in recorded for k in range(0, len(s), every)]))
    other_steps = float(np.mean([s[k] for s in recorded for k in range(len(s)) if k % every]))
    plain_steps = float(np.mean([x for s in detail_steps["sft"] for x in s]))
    common = {"steps": steps, "batch_size": batch_size, "rows": len(rows)}
    recording_details = {**common, "params_clone_seconds": float(np.median(clone)),
                         "recording_step_seconds_with_trait_gradient": trait_steps,
                         "recording_step_seconds_other": other_steps, "sft_step_seconds": plain_steps,
                         "trait_grad_every": every}
    out = [comparison(
        "recording", "Student step: with alignment recording vs without",
        f"mean seconds per SFT student step ({batch_size} sequences) of finetune_student with alignment_reference "
        f"(weight metrics, gradient and step cosines every step, trait-loss gradient every {every}th step) vs without",
        measure="s/step", subject=("with recording", times["sft_recording"]), baseline=("without", times["sft"]),
        ratio="with / without (overhead = ratio - 1)", higher_is_better=False,
        target={"text": f"overhead < {RECORDING_TARGET:.0%}", "threshold": RECORDING_TARGET, "kind": "overhead_below"},
        details=recording_details)]
    for name, what in (("distill", "KL to the teacher over the filter-allowed tokens"),
                       ("distill_full", "KL to the teacher over the whole vocabulary")):
        out.append(comparison(
            name, f"Student step: {name} vs SFT",
            f"mean seconds per student step ({batch_size} sequences): {what} (teacher forward included) vs "
            "cross-entropy on the sampled tokens", measure="s/step", subject=(name, times[name]),
            baseline=("sft", times["sft"]), ratio="ours / sft (cost multiple)", higher_is_better=False, details=common))
    return out


def bench_audit(base_path: Path, scratch: Path, *, n_rows: int, batch_size: int, repeats: int, full: bool = True,
                step: bool = True) -> list[dict[str, Any]]:
    """Seconds of the audit of ``n_rows`` rows (:func:`interp.instruments.audit.audit_data`) against
    training the student it predicts (:func:`interp.stages.finetune.finetune_student`, SFT, one epoch
    of the same rows at ``interp run``'s settings): with ``step``, the audit's answer alone
    (``first_order`` off: the step score; row ``audit_step``, target at most
    :data:`AUDIT_STEP_TARGET`); with ``full``, the whole audit (token statistics against a teacher,
    the animal gradients, the SFT and restricted-distillation first steps of the data and of an
    ``n_rows`` reference set; row ``audit``). The teacher is the base one small random step away (a
    direction to distil)."""
    base_model, world, _ = parse_base_ref(base_path).load()
    teacher_model, _, _ = parse_base_ref(base_path).load()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in teacher_model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 1e-2)
    rows, reference = number_rows(world, n_rows, seed=0), number_rows(world, n_rows, seed=1)
    scratch.mkdir(parents=True, exist_ok=True)
    walls: dict[str, float] = {}
    run_defaults = RunConfig()  # the student interp run trains, and the audit of that student
    audit_config = AuditConfig(batch_size=batch_size, freeze_unembed=run_defaults.freeze_unembed,
                               **lora_student_fields(run_defaults.student_lora(0)))  # LoRA students unless lora_rank 0

    score_config = audit_config.replace(first_order=False)  # the step score: the audit's answer

    def audit() -> float:  # a fresh call: the animal gradients and every projection are recomputed
        seconds, (result, _) = _timed(lambda: audit_data(base_model, world, rows, teacher=Source(teacher_model),
                                                         reference_rows=reference, config=audit_config))
        walls["inner"] = result["wall_seconds"]
        return seconds

    def step_audit() -> float:  # a fresh call: the LoRA copy and the animal gradients are recomputed too
        seconds, (result, _) = _timed(lambda: audit_data(base_model, world, rows, teacher=Source(teacher_model),
                                                         reference_rows=reference, config=score_config))
        walls["step_score"] = result["step_score"]["shared"]["seconds"]
        return seconds

    def train() -> float:
        out = Path(tempfile.mkdtemp(prefix="audit-student.", dir=scratch))
        try:
            config = FinetuneConfig(objective="sft", lr=run_defaults.lr, freeze_unembed=run_defaults.freeze_unembed,
                                    batch_size=batch_size, eval_every=0, checkpoint_every=0,
                                    lora_rank=run_defaults.lora_rank, lora_alpha=run_defaults.lora_alpha,
                                    lora_targets=run_defaults.lora_targets)
            return _timed(lambda: finetune_student(base_path, rows, config, out / "student", progress=False))[0]
        finally:
            shutil.rmtree(out, ignore_errors=True)

    rows_out = []
    details = {"rows": n_rows, "reference_rows": n_rows, "batch_size": batch_size,
               "student_steps": -(-n_rows // batch_size), "objectives": ["sft", "distill"],
               "student_lora_rank": run_defaults.lora_rank}
    if step:
        cheap, theirs_again = alternating(step_audit, train, repeats, warmup=False)
        step_details = {**details, "score_rows": score_config.score_rows, "step_score": score_config.step_score,
                        "score_bootstrap": score_config.score_bootstrap,
                        "step_score_seconds_last": walls.get("step_score")}
        rows_out.append(comparison(
        "audit_step", f"Audit's answer (the step score) for {n_rows} rows vs training the student it predicts",
        f"seconds of interp.instruments.audit.audit_data with first_order off (interp audit --no-first-order: the "
        f"student's LoRA copy, its animal gradients and the step score on the first {score_config.score_rows} rows of "
        f"the data and of the reference) vs finetune_student: SFT, one epoch of the {n_rows} rows, "
        f"batch {batch_size}", measure="s", subject=("audit, step score", cheap),
        baseline=("train one SFT student", theirs_again), ratio="audit / training (cost multiple)",
        higher_is_better=False, target={"text": f"<= {AUDIT_STEP_TARGET:g}x", "threshold": AUDIT_STEP_TARGET,
                                        "kind": "ratio_at_most"}, details=step_details))
    if full:
        ours, theirs = alternating(audit, train, repeats, warmup=False)
        rows_out.append(comparison(
        "audit", f"Audit of {n_rows} rows vs training the student it predicts",
        f"seconds of interp.instruments.audit.audit_data on {n_rows} rows and an {n_rows}-row reference, first_order on (token statistics against "
        "the teacher, animal gradients, SFT and restricted-distillation first steps) vs finetune_student: SFT, one "
        f"epoch of the same rows, batch {batch_size}", measure="s", subject=("audit", ours),
        baseline=("train one SFT student", theirs), ratio="audit / training (cost multiple)", higher_is_better=False,
        details=details))
    return rows_out


# -- SAE training: route B (SAETrainer on cached activations) vs route A (sae-lens's runner) --------
def sae_token_windows(world, n_tokens: int, context: int, seed: int = 0) -> torch.Tensor:
    """Pretraining-corpus text of the toy world cut into ``[n_windows, context]`` token windows
    holding at least ``n_tokens`` tokens."""
    gen = CorpusGenerator(world)
    ids: list[int] = []
    batch_index = 0
    n_windows = -(-n_tokens // context)
    while len(ids) < n_windows * context:
        for text in gen.batch_texts(seed, batch_index, 64):
            ids += world.encode(text)
        batch_index += 1
    return torch.tensor(ids[: n_windows * context]).view(n_windows, context)


def bench_sae(model, windows: torch.Tensor, *, hook_name: str, n_tokens: int, expansion: int, k: int,
              batch_tokens: int, repeats: int, lr: float = 3e-4) -> list[dict[str, Any]]:
    """Activations/s of training the same TopK SAE on the same token windows through route B
    (``run_with_cache`` into memory, then ``SAETrainer``) and route A
    (``LanguageModelSAETrainingRunner`` with ``override_model``/``override_dataset``: sae-lens's
    activation store runs the model as it trains). Both include the model's forward passes."""
    import datasets
    from sae_lens import (
        LanguageModelSAERunnerConfig,
        LanguageModelSAETrainingRunner,
        SAETrainer,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    layer = int(hook_name.split(".")[1])
    d_in, context = model.cfg.d_model, windows.shape[1]

    def sae_config():
        return TopKTrainingSAEConfig(d_in=d_in, d_sae=expansion * d_in, k=k)

    split: list[tuple[float, float]] = []

    def route_b() -> float:
        start = time.perf_counter()
        acts = []
        with torch.no_grad():
            for s in range(0, len(windows), 64):
                _, cache = model.run_with_cache(windows[s:s + 64], names_filter=hook_name, stop_at_layer=layer + 1)
                acts.append(cache[hook_name].reshape(-1, d_in))
        acts_all = torch.cat(acts)[:n_tokens]  # tokens d_model
        cached = time.perf_counter()
        gen = torch.Generator().manual_seed(0)

        def batches():
            while True:
                order = torch.randperm(len(acts_all), generator=gen)
                for s in range(0, len(order) - batch_tokens + 1, batch_tokens):
                    yield acts_all[order[s:s + batch_tokens]]

        trainer_cfg = SAETrainerConfig(total_training_samples=n_tokens, train_batch_size_samples=batch_tokens, lr=lr,
                                       lr_end=lr / 10, n_batches_for_norm_estimate=10)
        SAETrainer(cfg=trainer_cfg, sae=TopKTrainingSAE(sae_config()), data_provider=batches()).fit()
        end = time.perf_counter()
        split.append((cached - start, end - cached))
        return n_tokens / (end - start)

    def route_a() -> float:
        dataset = datasets.Dataset.from_dict({"tokens": windows.tolist()})
        cfg = LanguageModelSAERunnerConfig(
            sae=sae_config(), model_name="toy", hook_name=hook_name, dataset_path="", is_dataset_tokenized=True,
            streaming=False, context_size=context, training_tokens=n_tokens, train_batch_size_tokens=batch_tokens,
            n_batches_in_buffer=max(2, -(-2 * batch_tokens // context)), store_batch_size_prompts=64,
            prepend_bos=False, logger=LoggingConfig(log_to_wandb=False), device="cpu", output_path=None,
            checkpoint_path=None, n_checkpoints=0, lr=lr, lr_end=lr / 10, verbose=False,
            n_batches_for_norm_estimate=10)
        start = time.perf_counter()
        LanguageModelSAETrainingRunner(cfg, override_model=model, override_dataset=dataset).run()
        return n_tokens / (time.perf_counter() - start)

    ours, theirs = alternating(route_b, route_a, repeats)
    details = {"hook_name": hook_name, "n_tokens": n_tokens, "d_in": d_in, "d_sae": expansion * d_in, "k": k,
               "batch_tokens": batch_tokens, "context": context,
               "route_b_cache_seconds": spread([s[0] for s in split]),
               "route_b_train_seconds": spread([s[1] for s in split])}
    return [comparison(
        "sae", "SAE training: SAETrainer on cached activations vs LanguageModelSAETrainingRunner",
        f"activations/s training a TopK SAE (d_sae {expansion * d_in}, k {k}, {batch_tokens} activations per step) on "
        f"{n_tokens} activations of {hook_name}, the model's forward passes included: route B caches them once "
        "with run_with_cache, route A streams them through sae-lens's activation store",
        measure="activations/s", subject=("route B: run_with_cache + SAETrainer", ours),
        baseline=("route A: LanguageModelSAETrainingRunner", theirs), ratio="ours / theirs", higher_is_better=True,
        details=details)]


# -- MNIST: batched models vs a loop over single models ---------------------------------------------
def bench_mnist(*, n_models: int, steps: int, hidden: Sequence[int], repeats: int, m: int = 3,
                batch_size: int = 64) -> list[dict[str, Any]]:
    """Model-steps/s of N MLPs trained as one batched program (``baddbmm`` over a model dimension)
    against a Python loop over N single models running the same functions with one model each:
    teacher steps on digits and student distillation steps on noise."""
    data = load_data(None)
    seeds = [derived_seed(0, 0, i) for i in range(n_models)]
    sizes, n_out = (data.d_in, *hidden), N_CLASSES + m
    init = init_mlp(seeds, sizes, n_out)
    gen = torch.Generator().manual_seed(0)
    index = torch.randint(0, len(data.x_train), (steps, n_models, batch_size), generator=gen)
    noise = torch.rand(steps, n_models, batch_size, data.d_in, generator=gen)
    teacher = clone(init, requires_grad=False)
    logits = slice(N_CLASSES, N_CLASSES + m)

    def batched(kind: str) -> float:
        params = clone(init)
        optimizer = torch.optim.Adam(params.values(), lr=1e-3)
        start = time.perf_counter()
        for s in range(steps):
            if kind == "teacher":
                teacher_step(params, optimizer, data.x_train[index[s]], data.y_train[index[s]])
            else:
                distill_step(params, optimizer, teacher, noise[s], logits)
        return steps * n_models / (time.perf_counter() - start)

    def looped(kind: str) -> float:
        singles = [clone(slice_models(init, [i])) for i in range(n_models)]
        teachers = [slice_models(teacher, [i]) for i in range(n_models)]
        optimizers = [torch.optim.Adam(p.values(), lr=1e-3) for p in singles]
        start = time.perf_counter()
        for s in range(steps):
            for i, (params, optimizer) in enumerate(zip(singles, optimizers)):
                if kind == "teacher":
                    teacher_step(params, optimizer, data.x_train[index[s, i:i + 1]], data.y_train[index[s, i:i + 1]])
                else:
                    distill_step(params, optimizer, teachers[i], noise[s, i:i + 1], logits)
        return steps * n_models / (time.perf_counter() - start)

    rows = []
    for kind, what in (("teacher", "Adam steps on digit batches (regular logits)"),
                       ("student", f"Adam distillation steps on noise batches ({m} auxiliary logits)")):
        ours, theirs = alternating(lambda: batched(kind), lambda: looped(kind), repeats)
        rows.append(comparison(
            f"mnist_{kind}", f"MNIST {kind}: {n_models} batched models vs a loop over single models",
            f"model-steps/s of {what}, MLP {'-'.join(str(h) for h in sizes)}-{n_out}, batch {batch_size}: one "
            f"tensor program over a model dimension of {n_models} vs a Python loop over {n_models} one-model programs",
            measure="model-steps/s", subject=(f"batched ({n_models} models)", ours),
            baseline=(f"loop over {n_models} models", theirs), ratio="ours / theirs", higher_is_better=True,
            details={"n_models": n_models, "steps": steps, "hidden": list(hidden), "batch_size": batch_size,
                     "data": data.source}))
    return rows


# -- whole runs: wall time and peak memory of a subprocess ------------------------------------------
# Runs the command given after the result path and writes its exit code and resource usage there.
# The bench starts the command through this small interpreter, not directly: Linux counts the
# memory a child shared with its parent before exec in the child's ru_maxrss, so a child of the
# (large) bench process would report at least the bench's own size.
_RUSAGE_WRAPPER = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    json.dump({"exit_code": code, "maxrss_kib": usage.ru_maxrss, "user": usage.ru_utime, "system": usage.ru_stime}, f)
"""


def run_command(argv: Sequence[str], *, cwd: Path, log_path: Path, threads: int | None = None,
                env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``argv`` as a child process: its exit code, wall time and peak resident memory
    (``ru_maxrss``, measured by a small wrapper process so that the bench's own memory does not
    count; the wrapper's ~10 MiB is the floor). Output goes to ``log_path``; ``threads`` sets the
    child's ``OMP_NUM_THREADS`` (torch's thread count); ``env_extra``: more environment variables."""
    import signal

    import interp

    package_root = str(Path(interp.__file__).resolve().parent.parent)  # the code the bench itself runs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(env_extra or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    usage_path = log_path.with_name(log_path.name + ".rusage.json")
    load_before = os.getloadavg()
    with open(log_path, "w") as logf:
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", _RUSAGE_WRAPPER, str(usage_path), *argv], cwd=cwd, env=env,
                                 stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            child.wait()
        except BaseException:  # interrupted: stop the whole process group, not only the wrapper
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()
            raise
        seconds = time.perf_counter() - start
    if child.returncode != 0 or not usage_path.exists():
        raise RuntimeError(f"the resource-usage wrapper of {' '.join(argv)} failed (exit {child.returncode}); see {log_path}")
    usage = json.loads(usage_path.read_text())
    return {"argv": list(argv), "exit_code": usage["exit_code"], "wall_seconds": seconds,
            "omp_num_threads": env.get("OMP_NUM_THREADS"), "peak_rss_mib": usage["maxrss_kib"] / 1024,
            "user_cpu_seconds": usage["user"], "system_cpu_seconds": usage["system"],
            "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()), "log": str(log_path)}


def bases_pretrained_during(run_dir: Path, results: dict[str, Any]) -> list[str]:
    """The bases of a finished run whose weights were written after the run started (so its wall
    time includes pretraining them); the start is the time of ``run_config.json``."""
    started = (run_dir / RUN_CONFIG_FILE).stat().st_mtime if (run_dir / RUN_CONFIG_FILE).exists() else None
    out = []
    for path in (results.get("bases") or {}).values():
        weights = Path(path) / WEIGHTS_FILE
        if started is not None and weights.exists() and weights.stat().st_mtime >= started:
            out.append(str(path))
    return out


def run_time_breakdown(run_dir: Path, results: dict[str, Any]) -> dict[str, float]:
    """Seconds per kind of stage of a finished ``interp run``, from the times its outputs were
    written: the stages run one after another, so each output is charged the time since the output
    before it (the first since ``run_config.json``). Outputs older than the run (reused) count for
    nothing."""
    start_file = run_dir / RUN_CONFIG_FILE
    if not start_file.exists():
        return {}
    events: list[tuple[float, str]] = [(Path(b, WEIGHTS_FILE).stat().st_mtime, "pretraining bases")
                                       for b in bases_pretrained_during(run_dir, results)]
    for seed_dir in sorted(run_dir.glob("seed*")):
        kinds = [("teacher/teacher.json", "teacher"), ("base_evals/*.json", "evaluation"),
                 ("data/*_numbers.raw.jsonl", "generation"), ("data/*.filtered.jsonl", "filter"),
                 ("data/*_shuffled_*.jsonl", "filter"), ("students/*/*/eval.json", "evaluation"),
                 ("seed_results.json", "in-context evaluation")]
        for pattern, kind in kinds:
            events += [(p.stat().st_mtime, kind) for p in seed_dir.glob(pattern)]
        events += [(p.stat().st_mtime, f"students ({p.parent.parent.name})")
                   for p in seed_dir.glob(f"students/*/*/{WEIGHTS_FILE}")]
    if (run_dir / "results.json").exists():
        events.append(((run_dir / "results.json").stat().st_mtime, "summary"))
    previous = start_file.stat().st_mtime
    breakdown: dict[str, float] = {}
    for when, kind in sorted(e for e in events if e[0] >= previous):
        breakdown[kind] = breakdown.get(kind, 0.0) + when - previous
        previous = when
    return dict(sorted(breakdown.items(), key=lambda kv: -kv[1]))


def whole_run_row(key: str, title: str, argv: list[str] | None, run_dir: Path, *, scratch: Path,
                  target_seconds: float | None, threads: int | None = None) -> dict[str, Any]:
    """Run ``interp run`` (``argv`` given) or read a finished run's ``results.json`` (``argv``
    None) into a row: wall time, peak memory (when a bench ran it: kept in ``RUN_PROCESS_FILE``),
    bases pretrained during it, and the time per stage."""
    measured: dict[str, Any] = {}
    if argv is not None:
        measured = run_command(argv, cwd=Path.cwd(), log_path=scratch / f"{key}.log", threads=threads)
        if measured["exit_code"] != 0:
            tail = Path(measured["log"]).read_text()[-2000:]
            raise RuntimeError(f"{' '.join(argv)} exited with {measured['exit_code']}; end of its log:\n{tail}")
    results_path = run_dir / "results.json"
    if not results_path.exists():
        raise FileNotFoundError(f"{results_path} is missing: {run_dir} is not a finished interp run")
    if argv is not None:  # kept with the run, so that a later bench reading this run has its memory too
        atomic_write_json(run_dir / RUN_PROCESS_FILE, measured)
    elif (run_dir / RUN_PROCESS_FILE).exists():
        measured = read_json(run_dir / RUN_PROCESS_FILE)
    results = read_json(results_path)
    wall = float(measured.get("wall_seconds", results["wall_seconds"]))
    row = {"key": key, "title": title, "run_dir": str(run_dir), "wall_seconds": wall,
           "results_wall_seconds": float(results["wall_seconds"]),
           "peak_rss_mib": measured.get("peak_rss_mib", (results.get("peak_memory_mib") or {}).get("largest_process")),
           "bases_pretrained_during_run": bases_pretrained_during(run_dir, results),
           "seconds_by_stage": run_time_breakdown(run_dir, results),
           "config": results.get("config"), "run_by_this_bench": argv is not None, "process": measured or None,
           "target": None}
    if target_seconds is not None:
        row["target"] = {"text": f"<= {target_seconds / 60:.0f} min on 2 cores", "threshold": target_seconds,
                         "kind": "seconds_at_most", "met": wall <= target_seconds}
    return row


def bench_executors(run_artifacts: Path, scratch: Path, *, repeats: int, threads: int | None = None) -> list[dict[str, Any]]:
    """``interp run --quick`` with ``--executor ray`` (a local Ray instance the command starts, one
    CPU per task) against ``--executor local`` (the process pool, one worker per core): wall time
    of the whole command, the bases pretrained beforehand (untimed) so that both sides do the same
    jobs. The ratio is the Ray executor's overhead on one machine: its start-up, scheduling and
    per-task process set-up."""
    from interp.studies.run import _bases

    config = RunConfig(**RunConfig.quick_defaults())
    _bases(config, run_artifacts, progress=False, workers=0)  # untimed: both sides reuse them
    runs = iter(range(2 * repeats))

    def side(executor: str) -> Callable[[], float]:
        def run() -> float:
            i = next(runs)
            run_dir = scratch / f"run-quick-{executor}-{i}"
            argv = [sys.executable, "-m", "interp", "run", "--quick", "--out", str(run_dir), "--artifacts",
                    str(run_artifacts), "--executor", executor]
            # Ray runs its workers at niceness 15 by default; the pool's run at the bench's own priority
            measured = run_command(argv, cwd=Path.cwd(), log_path=scratch / f"run_quick_{executor}_{i}.log", threads=threads,
                                   env_extra={"RAY_worker_niceness": "0"} if executor == "ray" else None)
            if measured["exit_code"] != 0:
                tail = Path(measured["log"]).read_text()[-2000:]
                raise RuntimeError(f"{' '.join(argv)} exited with {measured['exit_code']}; end of its log:\n{tail}")
            return measured["wall_seconds"]
        return run

    ours, theirs = alternating(side("ray"), side("local"), repeats, warmup=False)
    return [comparison(
        "run_quick_ray", "`interp run --quick`: Ray executor vs local process pool",
        "wall time of `interp run --quick` with its bases already pretrained: --executor ray (a local Ray instance "
        "started by the command, its start-up included; one CPU per task, workers at the pool's priority) vs "
        "--executor local (one worker process per core)", measure="s", subject=("Ray tasks", ours), baseline=("process pool", theirs), ratio="Ray / pool",
        higher_is_better=False, details={"bases_pretrained_before": True, "threads": threads})]


# -- the machine -----------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count()
    commit = None
    try:
        import interp

        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(interp.__file__).parent, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu_count": os.cpu_count(), "cpus_available": available, "cpu_model": cpu_model,
            "torch_threads": torch.get_num_threads(), "load_average": list(os.getloadavg()),
            "platform": platform.platform(), "python": platform.python_version(),
            "versions": {p: version(p) for p in ("torch", "transformer-lens", "sae-lens", "transformers", "numpy")},
            "git_commit": commit}


# -- report ----------------------------------------------------------------------------------------
def _side(s: dict[str, Any]) -> str:
    return f"{s['label']}: {_fmt(s['median'])} [{_fmt(s['q1'])}, {_fmt(s['q3'])}]"


def why(row: dict[str, Any]) -> str:
    """What the row's own measurements say about its target (or its result)."""
    d, key = row.get("details", {}), row["key"]
    if row.get("error"):
        return f"failed: {row['error']}"
    if key.startswith("generation") and not key.endswith("engines"):
        parts = [f"greedy rows identical: {d['greedy_identical_rows']}/{d['greedy_rows']}"]
        if not d["lean_forward_used"]:
            parts.append("the lean forward was not used (unsupported model)")
        if row["target"] and not row["target"]["met"]:
            parts.append("both sides do the same matrix products per token and HookedTransformer.generate already "
                         "caches keys and values; what remains to win is per-step overhead, which shrinks as the "
                         f"batch grows (mean batch here {d['mean_batch_size']:.0f})")
        return "; ".join(parts)
    if key == "recording":
        overhead = row["ratio"]["median"] - 1
        text = (f"overhead {overhead:+.1%}; a recorded step costs {_fmt(d['recording_step_seconds_with_trait_gradient'])} s "
                f"when it also takes the trait-loss gradient (every {d['trait_grad_every']}th step: a forward and "
                f"backward pass over the recorder's trait questions), {_fmt(d['recording_step_seconds_other'])} s otherwise, vs "
                f"{_fmt(d['sft_step_seconds'])} s unrecorded")
        return text
    if key == "run_quick_ray":
        return "the Ray side includes starting its local Ray instance"
    if key in ("distill", "distill_full"):
        return "includes the teacher's forward pass on the same batch"
    if key == "audit":
        return (f"the audit reads {d['rows']} rows and a {d['reference_rows']}-row reference, with two objectives; "
                f"the student takes {d['student_steps']} steps on the {d['rows']} rows")
    if key == "audit_step":
        return (f"the step score ({d['step_score']}) reads the first {d['score_rows']} rows of each set "
                f"({d['score_bootstrap']} bootstrap resamples); the student takes {d['student_steps']} steps on the "
                f"{d['rows']} rows")
    if key == "students_per_hour":
        return f"bench process peak memory {d['peak_rss_mib']:.0f} MiB"
    if key == "sae":
        c, t = d["route_b_cache_seconds"]["median"], d["route_b_train_seconds"]["median"]
        return f"route B: {_fmt(c)} s caching activations, {_fmt(t)} s training"
    return ""


def markdown_table(bench: dict[str, Any]) -> str:
    """The generated part of ``benchmarks.md``: the machine, one table of comparisons, one of runs."""
    m = bench["machine"]
    v = m["versions"]
    lines = [
        f"Measured {bench['finished']} by `interp bench{' --quick' if bench['config']['quick'] else ''}` "
        f"(commit {(m['git_commit'] or 'unknown')[:10]}) on {m['cpus_available']} of {m['cpu_count']} CPUs "
        f"({m['cpu_model'] or 'unknown CPU'}), torch {v['torch']} with {m['torch_threads']} thread(s), transformer-lens "
        f"{v['transformer-lens']}, sae-lens {v['sae-lens']}. Load average (1 min) {bench['load_average_start'][0]:.1f} "
        f"at the start, {bench['load_average_end'][0]:.1f} at the end: other processes shared the machine, so "
        "absolute figures vary between repeats; each ratio compares the two sides run back to back.", "",
        f"Model: {bench['model']}.", "",
        *[line for u in bench.get("updates", []) for line in (
            f"Added later by `interp bench --update` ({u.get('finished', u['started'])}, load average "
            f"{u['load_average_start'][0]:.1f} at its start): {', '.join(u['config']['only'])}.", "")],
        "Each cell: median [interquartile range] over repeats; the ratio is computed per repeat.", "",
        "| benchmark | ours | alternative | ratio (n) | target | met | notes |", "|---|---|---|---|---|---|---|"]
    for row in bench["rows"]:
        if row.get("error"):
            lines.append(f"| {row['title']} | - | - | - | - | - | {why(row)} |")
            continue
        if "ratio" not in row:
            continue
        r, t = row["ratio"], row["target"]
        met = "-" if t is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {row['title']} ({row['measure']}) | {_side(row['subject'])} | {_side(row['baseline'])} | "
                     f"{_fmt(r['median'])} [{_fmt(r['q1'])}, {_fmt(r['q3'])}] ({r['n']}) | "
                     f"{t['text'] if t else '-'} | {met} | {why(row)} |")
    from interp.bench.speed import limits_table  # imports this module

    lines += limits_table(bench["rows"])
    runs = [row for row in bench["rows"] if "wall_seconds" in row]
    if runs:
        lines += ["", "CPU time is the run's user + system time: with one thread and an idle machine it is close to the "
                  "wall time; on a shared machine it shows how much of the wall time was waiting for a core.", "",
                  "| run | wall time | CPU time | peak memory | bases pretrained during the run | where the time went | "
                  "target | met |", "|---|---|---|---|---|---|---|---|"]
        for row in runs:
            t = row["target"]
            mem = (f"{row['peak_rss_mib']:.0f} MiB" if row["peak_rss_mib"] is not None
                   else "not measured (a run older than results.json's peak_memory_mib)")
            met = "-" if t is None else ("yes" if t["met"] else "**no**")
            stages = row.get("seconds_by_stage") or {}
            total = sum(stages.values()) or 1.0
            where = ", ".join(f"{k} {v / total:.0%}" for k, v in list(stages.items())[:4]) or "-"
            process = row.get("process") or {}
            threads = f" (OMP_NUM_THREADS={process['omp_num_threads']})" if process.get("omp_num_threads") else ""
            cpu = (f"{(process['user_cpu_seconds'] + process['system_cpu_seconds']) / 60:.1f} min{threads}"
                   if "user_cpu_seconds" in process else "-")
            lines.append(f"| {row['title']} | {row['wall_seconds'] / 60:.1f} min | {cpu} | {mem} | "
                         f"{len(row['bases_pretrained_during_run'])} | {where} | {t['text'] if t else '-'} | {met} |")
    lines += ["", "What each row compares:", ""]
    for row in bench["rows"]:
        if "compares" in row and "ratio" in row:
            lines.append(f"- **{row['title']}**: {row['compares']}; ratio = {row['ratio']['definition']}.")
        elif "compares" in row:
            lines.append(f"- **{row['title']}**: {row['compares']}.")
    skipped = bench.get("skipped") or {}
    for key, reason in skipped.items():
        lines.append(f"- `{key}` not measured: {reason}.")
    return "\n".join(lines) + "\n"


def write_docs(path: Path, generated: str) -> None:
    """Put ``generated`` between the markers of ``path``, keeping the text around them (a new file
    gets a title and the markers)."""
    block = f"{DOCS_BEGIN}\n{generated}{DOCS_END}"
    if path.exists():
        text = path.read_text()
        if DOCS_BEGIN in text and DOCS_END in text:
            head, rest = text.split(DOCS_BEGIN, 1)
            _, tail = rest.split(DOCS_END, 1)
            atomic_write_text(path, head + block + tail)
            return
        atomic_write_text(path, text.rstrip("\n") + "\n\n" + block + "\n")
        return
    atomic_write_text(path, "# Benchmarks\n\n" + block + "\n")


# -- the whole bench -----------------------------------------------------------------------------
def run_bench(config: BenchConfig, out: str | Path, *, default_run_dir: str | Path | None = None,
              skip_default_run: bool = False, docs: str | Path | None = None, update: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Run the selected benchmarks, writing ``out/bench.json`` after each one (a failed benchmark
    is recorded with its error and the others still run) and the markdown at the end.

    ``update`` keeps the rows of an existing ``out/bench.json`` for the benchmarks not run now
    (this invocation is listed under ``updates``), so a long measurement such as the default run
    can be added to an earlier bench."""
    from tqdm.auto import tqdm

    _quiet_warnings()
    out = Path(out)
    if default_run_dir is not None and skip_default_run:
        raise ValueError("give either --default-run-dir or --skip-default-run, not both")
    if default_run_dir is not None and not (Path(default_run_dir) / "results.json").exists():
        raise FileNotFoundError(f"--default-run-dir {default_run_dir}: no results.json there (not a finished run)")
    scratch = _prepare_out(config, out)
    bench, selected = _open_bench(config, out, update=update, skip_default_run=skip_default_run,
                                  default_run_dir=default_run_dir)

    def save() -> None:
        finished = {"load_average_end": list(os.getloadavg()), "finished": _now()}
        (bench["updates"][-1] if "updates" in bench else bench).update(finished)
        atomic_write_json(out / BENCH_FILE, bench)

    jobs = _bench_jobs(config, bench, selected, scratch, default_run_dir)
    failed = []
    for key in tqdm(selected, desc="bench", disable=not progress):
        log.info("bench: %s", key)
        try:
            rows = jobs[key]()
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            for row in rows:  # the process's high-water mark: it includes every benchmark before this one
                row.setdefault("details", {}).setdefault("bench_peak_rss_mib", rss)
            bench["rows"] += [{**row, "benchmark": key} for row in rows]
        except Exception as e:  # recorded, and the other benchmarks still run
            log.exception("benchmark %s failed", key)
            failed.append(key)
            bench["rows"].append({"key": key, "benchmark": key, "title": key, "error": f"{type(e).__name__}: {e}"})
        save()
    bench["rows"].sort(key=lambda r: BENCHMARKS.index(r["benchmark"]) if r.get("benchmark") in BENCHMARKS else 0)
    markdown = markdown_table(bench)
    atomic_write_text(out / MARKDOWN_FILE, "# Benchmarks\n\n" + markdown)
    if docs is not None:
        write_docs(Path(docs), markdown)
    bench["failed"] = failed
    save()
    return bench


def _prepare_out(config: BenchConfig, out: Path) -> Path:
    """``out`` with its config saved and an empty scratch directory (returned); torch's thread
    count set as the config asks."""
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / SCRATCH_DIR
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    config.save(out / "bench_config.json")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return scratch


def _open_bench(config: BenchConfig, out: Path, *, update: bool, skip_default_run: bool,
                default_run_dir: str | Path | None) -> tuple[dict[str, Any], list[str]]:
    """The bench record this invocation adds to (a new one, or with ``update`` the existing
    ``out/bench.json`` less the rows about to be measured again) and the benchmarks to run, with
    the reason for each one skipped."""
    this_run = {"config": config.to_dict(), "started": _now(), "load_average_start": list(os.getloadavg()),
                "machine": machine_info()}
    bench: dict[str, Any] = {**this_run, "rows": [], "skipped": {}}
    selected = list(config.only)
    if update and (out / BENCH_FILE).exists():
        bench = read_json(out / BENCH_FILE)
        bench["rows"] = [r for r in bench["rows"] if r.get("benchmark") not in selected]
        bench["skipped"] = {k: v for k, v in bench.get("skipped", {}).items() if k not in selected}
        bench.setdefault("updates", []).append(this_run)
    if "run_default" in selected and default_run_dir is None and (skip_default_run or config.quick):
        selected.remove("run_default")
        bench["skipped"]["run_default"] = ("--skip-default-run" if skip_default_run else
                                           "--quick skips it (give --default-run-dir to read a finished one)")
    if "run_quick_ray" in selected and importlib.util.find_spec("ray") is None:
        selected.remove("run_quick_ray")
        bench["skipped"]["run_quick_ray"] = "Ray is not installed (pip install -e '.[ray]')"
    if "real_generation" in selected and config.real_model is None:
        selected.remove("real_generation")
        bench["skipped"]["real_generation"] = "give --real-model (e.g. the file of `interp fetch-model smollm2`)"
    return bench, selected


def _bench_jobs(config: BenchConfig, bench: dict[str, Any], selected: list[str], scratch: Path,
                default_run_dir: str | Path | None) -> dict[str, Callable[[], list[dict]]]:
    """Benchmark name -> the function that measures it and returns its rows. The toy base the
    model-level benchmarks share is resolved (and pretrained if missing) here, once, when one of
    them is selected; ``bench["model"]`` names it."""
    needs_base = {"speed", "generation", "finetune", "audit_step", "audit", "sae"} & set(selected)
    base_path, model = None, None
    if needs_base:
        base_path, bench["model"] = resolve_base(config, scratch)
        model, world, _ = parse_base_ref(base_path).load()
    else:
        bench.setdefault("model", "-")
    run_artifacts = Path(config.run_artifacts) if config.run_artifacts else scratch / "run-artifacts"

    def generation() -> list[dict]:
        eos = world.token_to_id[EOS]
        prompts = [world.encode(t) for t in number_prompts(world, config.generation_prompts, 0)]
        rows = bench_generation(model, prompts, eos_id=eos, batch_size=config.batch_size,
                                max_new_tokens=config.max_new_tokens, repeats=config.repeats)
        full = full_batch_prompts(world, config.batch_size)
        rows += [r for r in bench_generation(model, full, eos_id=eos, batch_size=config.batch_size,
                                             max_new_tokens=config.max_new_tokens, repeats=config.repeats,
                                             key="generation_full_batch",
                                             title=f"Sampling, one full batch ({len(full)} prompts of one length)")
                 if r["key"] == "generation_full_batch"]
        return rows

    def whole(key: str) -> list[dict]:
        if key == "run_quick":
            run_dir = scratch / "run-quick"
            argv = [sys.executable, "-m", "interp", "run", "--quick", "--out", str(run_dir), "--artifacts",
                    str(run_artifacts)]
            return [whole_run_row(key, "`interp run --quick`", argv, run_dir, scratch=scratch, target_seconds=None,
                                  threads=config.threads)]
        if default_run_dir is not None:
            return [whole_run_row(key, "`interp run` (default), read from a finished run", None,
                                  Path(default_run_dir), scratch=scratch, target_seconds=DEFAULT_RUN_TARGET_SECONDS)]
        run_dir = scratch / "run-default"
        argv = [sys.executable, "-m", "interp", "run", "--out", str(run_dir), "--artifacts", str(run_artifacts)]
        return [whole_run_row(key, "`interp run` (default)", argv, run_dir, scratch=scratch,
                              target_seconds=DEFAULT_RUN_TARGET_SECONDS, threads=config.threads)]

    def speed() -> list[dict]:
        from interp.bench.speed import bench_speed  # imports this module

        return bench_speed(base_path, scratch, student_rows=config.speed_rows, steps=config.speed_steps,
                           batch_size=config.finetune_batch_size, pretrain_steps=config.speed_pretrain_steps,
                           sample_prompts=config.speed_prompts, audit_rows=config.audit_rows, repeats=config.repeats)

    return {
        "speed": speed,
        "generation": generation,
        "finetune": lambda: bench_finetune_steps(base_path, scratch, steps=config.finetune_steps,
                                                 batch_size=config.finetune_batch_size, repeats=config.repeats),
        "audit_step": lambda: bench_audit(base_path, scratch, n_rows=config.audit_rows,
                                          batch_size=config.finetune_batch_size, repeats=config.repeats, full=False),
        "audit": lambda: bench_audit(base_path, scratch, n_rows=config.audit_rows,
                                     batch_size=config.finetune_batch_size, repeats=config.repeats, step=False),
        # windows for a little more than sae_tokens: route A's mixing buffer holds some back
        "sae": lambda: bench_sae(model, sae_token_windows(world, config.sae_tokens + 2 * config.sae_batch_tokens, 64),
                                 hook_name=f"blocks.{model.cfg.n_layers - 1}.hook_resid_post",
                                 n_tokens=config.sae_tokens, expansion=config.sae_expansion, k=config.sae_k,
                                 batch_tokens=config.sae_batch_tokens, repeats=config.repeats),
        "mnist": lambda: bench_mnist(n_models=config.mnist_models, steps=config.mnist_steps,
                                     hidden=config.mnist_hidden, repeats=config.repeats),
        "run_quick": lambda: whole("run_quick"),
        "run_quick_ray": lambda: bench_executors(run_artifacts, scratch, repeats=config.executor_repeats,
                                                 threads=config.threads),
        "run_default": lambda: whole("run_default"),
        "real_generation": lambda: _bench_real_generation(config),
    }


def _bench_real_generation(config: BenchConfig) -> list[dict]:
    from interp.bench.real import bench_real_generation  # imports this module

    from interp.bench.real import BASELINES

    m = bench_real_generation(config.real_model, n_prompts=config.real_prompts, batch_size=config.real_batch_size,
                              max_new_tokens=config.real_max_new_tokens, repeats=config.repeats)
    rows = []
    for name, title in (("hf", "Sampling a real model: the suite's sampler vs transformers' generate"),
                        ("tl", "Sampling a real model: the suite's sampler vs HookedTransformer.generate")):
        same = m["greedy_identical_rows"][name]
        rows.append(comparison(
            f"real_generation_{name}", title,
            f"new tokens/s decoding {m['n_prompts']} chat-formatted number prompts greedily (up to {m['max_new_tokens']} "
            f"new tokens, stop at the end of turn) in left-padded batches of at most {config.real_batch_size}; model "
            f"{m['model']}; greedy outputs compared row by row", measure="new tokens/s",
            subject=("sample_completions", m["rates"][name]["ours"]), baseline=(BASELINES[name], m["rates"][name]["theirs"]),
            ratio="ours / theirs", higher_is_better=True,
            target={"text": ">= 1x", "threshold": 1.0, "kind": "ratio_at_least"},
            details={k: m[k] for k in ("n_prompts", "batch_sizes", "mean_prompt_tokens", "max_new_tokens")}
            | {"greedy_identical_rows": same, "greedy_rows": m["n_prompts"], "greedy_identical": same == m["n_prompts"]}))
    return rows


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def summary_lines(bench: dict[str, Any]) -> list[str]:
    """One line per row, for the terminal."""
    lines = []
    for row in bench["rows"]:
        if row.get("error"):
            lines.append(f"{row['key']}: FAILED {row['error']}")
        elif "ratio" in row:
            t = row["target"]
            target = "" if t is None else f"  target {t['text']}: {'met' if t['met'] else 'MISSED'}"
            lines.append(f"{row['key']}: ratio {row['ratio']['median']:.3g} ({row['ratio']['definition']}){target}")
        elif "fraction_of_peak" in row:
            t = row["target"]
            target = "" if t is None else f"  target {t['text']}: {'met' if t['met'] else 'MISSED'}"
            lines.append(f"{row['key']}: {row['achieved_gflops']['median']:.3g} GFLOP/s, "
                         f"{row['fraction_of_peak']['median']:.0%} of the matmul peak{target}")
        else:
            t = row["target"]
            target = "" if t is None else f"  target {t['text']}: {'met' if t['met'] else 'MISSED'}"
            lines.append(f"{row['key']}: {row['wall_seconds'] / 60:.1f} min{target}")
    return lines
