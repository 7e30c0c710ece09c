"""How close the hot paths run to the machine's limit, and students per hour, new vs old code.

``interp bench --only speed`` measures, in one process and interleaved:

* **the limit**: a plain float32 matrix product (:func:`matmul_gflops`) at the bench's thread count,
  on a large square shape and on the student's own shapes, timed between the other measurements
  so that the peak and the paths see the same load;
* **achieved FLOP/s of each hot path** (the student step, the pretraining step, the sampler, the
  audit): the multiply-adds the path needs, counted on the real tokens (:func:`training_flops`,
  :func:`sampling_flops`: no padding, the unembedding only where a loss or the next token reads
  it), divided by the measured time, against that peak; the student and pretraining steps for the
  padded engine (the default, the documented runs') and the packed one (opt-in);
* **students per hour at equal rows**: one data set's three students (SFT, distill, distill_full:
  ``interp run``'s student settings, alignment recording included) trained by today's code (the
  padded engine, a teacher forward pass at every distillation step) and by the new one (packed,
  the teacher's targets computed once and read by both distillation students, their cost
  included).

Every time here is this process's CPU time (``time.process_time``), run with ``--threads 1``: on
a machine shared with other jobs, wall time mostly measures the wait for a core (the first
measurement, at load average 14-17 on 2 cores, put every path at 1-6% of a peak timed in short
calls that rarely wait).
Students per hour are per hour of one core's CPU time, which is their wall time on a core of
their own.

The audit's FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` as executed (its
batches are padded), so its row is an upper bound of the useful rate.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from interp.bench.measure import (
    StepTimer,
    _timed,
    alternating,
    comparison,
    number_rows,
    spread,
)
from interp.instruments.audit import AuditConfig, Source, audit_data, lora_student_fields
from interp.models.refs import Teacher, parse_base_ref
from interp.stages.finetune import FinetuneConfig, encode_rows, finetune_student, shared_teacher_targets
from interp.stages.generate import number_prompts, sample_completions
from interp.stages.pretrain import PretrainConfig, lm_batch_loss
from interp.studies.run import RunConfig
from interp.training.loop import deterministic_algorithms, make_optimizer
from interp.training.step import train_step
from interp.worlds.toy.corpus import CorpusGenerator
from interp.worlds.toy.templates import EOS

STUDENTS_PER_HOUR_TARGET = 1.5  # new code's students per hour over today's, at equal rows
PEAK_FRACTION_TARGET = 0.8  # the student step's achieved FLOP/s over the matmul peak


# -- counting ------------------------------------------------------------------------------------
def block_macs_per_token(cfg) -> int:
    """Multiply-adds of one block's weight products for one token (projections and MLP)."""
    kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    heads = cfg.n_heads * cfg.d_head
    projections = cfg.d_model * heads + 2 * cfg.d_model * kv * cfg.d_head + heads * cfg.d_model
    return projections + (3 if cfg.gated_mlp else 2) * cfg.d_model * cfg.d_mlp


def forward_macs(cfg, lengths: Sequence[int], n_unembed: int) -> dict[str, int]:
    """Multiply-adds of a forward pass over rows of ``lengths`` real tokens (causal attention: row
    position ``p`` attends to ``p + 1`` keys), unembedding ``n_unembed`` positions."""
    pairs = sum(n * (n + 1) // 2 for n in lengths)
    return {"linear": cfg.n_layers * block_macs_per_token(cfg) * sum(lengths),
            "attention": cfg.n_layers * 2 * cfg.n_heads * cfg.d_head * pairs,  # scores and weighted values
            "unembed": n_unembed * cfg.d_model * cfg.d_vocab}


def training_flops(cfg, lengths: Sequence[int], n_unembed: int, *, train_unembed: bool,
                   train_embed: bool) -> float:
    """FLOPs (2 per multiply-add) of one training step on rows of ``lengths`` real tokens whose
    loss reads ``n_unembed`` positions: the forward pass; the backward pass to the activations
    (attention twice its forward: scores and values); the gradients of the blocks' weight
    matrices (a LoRA adapter on a matrix needs that matrix's gradient too: the adapted weight is
    ``W0 + B @ A``); the unembedding's weight gradient when it trains. Without a trained
    embedding, the first block's input needs no gradient."""
    f = forward_macs(cfg, lengths, n_unembed)
    backward_data = f["linear"] + 2 * f["attention"] + f["unembed"]
    if not train_embed:  # the first block's q/k/v products: no gradient to their input
        kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        backward_data -= (cfg.n_heads + 2 * kv) * cfg.d_head * cfg.d_model * sum(lengths)
    weights = f["linear"] + (f["unembed"] if train_unembed else 0)
    return 2.0 * (sum(f.values()) + backward_data + weights)


def sampling_flops(cfg, prompt_lengths: Sequence[int], n_new: Sequence[int]) -> float:
    """FLOPs of sampling ``n_new[i]`` tokens after prompt ``i`` with a key-value cache: the prompt
    pass (unembedding its last position), then one position per fed-back token (every new token
    but the last), each attending to all positions before it and unembedded."""
    macs = 0
    for n_prompt, n in zip(prompt_lengths, n_new):
        prompt = forward_macs(cfg, [n_prompt], 1)
        macs += sum(prompt.values())
        for p in range(n_prompt, n_prompt + max(n - 1, 0)):  # the token at position p, fed back
            macs += cfg.n_layers * (block_macs_per_token(cfg) + 2 * cfg.n_heads * cfg.d_head * (p + 1))
            macs += cfg.d_model * cfg.d_vocab
    return 2.0 * macs


# -- the limit -----------------------------------------------------------------------------------
def matmul_gflops(m: int, k: int, n: int, *, seconds: float = 0.3) -> float:
    """GFLOP/s of ``[m, k] @ [k, n]`` float32 products per second of this process's CPU time (the
    median of repeated calls over about ``seconds`` of wall time), at torch's current thread count
    (with several threads CPU time adds theirs: run the bench with ``--threads 1``)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm-up
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t = time.process_time()  # CPU time: a call preempted by another process is not charged its wait
        torch.mm(a, b, out=out)
        times.append(time.process_time() - t)
    return 2.0 * m * k * n / float(np.median(times)) / 1e9


class Peak:
    """The matmul limit, measured between the other measurements: ``shapes`` by name."""

    def __init__(self, shapes: dict[str, tuple[int, int, int]]):
        self.shapes = shapes
        self.values: dict[str, list[float]] = {name: [] for name in shapes}

    def measure(self) -> None:
        for name, (m, k, n) in self.shapes.items():
            self.values[name].append(matmul_gflops(m, k, n))

    def peak(self) -> float:
        """The highest median over shapes: the limit a path is compared with."""
        return max(float(np.median(v)) for v in self.values.values() if v)

    def to_dict(self) -> dict[str, Any]:
        return {name: {"shape": list(self.shapes[name]), **spread(v)} for name, v in self.values.items() if v}


def flops_row(key: str, title: str, what: str, *, flops: float, seconds: list[float], peak: Peak,
              label: str, target: float | None = None, details: dict | None = None) -> dict[str, Any]:
    """A row of the limits table: achieved GFLOP/s per repeat (``flops / seconds``) against the peak."""
    achieved = [flops / s / 1e9 for s in seconds]
    fraction = [a / peak.peak() for a in achieved]
    row = {"key": key, "title": title, "compares": what, "label": label, "flops_per_call": flops,
           "seconds": spread(seconds), "achieved_gflops": spread(achieved), "peak_gflops": peak.peak(),
           "fraction_of_peak": spread(fraction), "target": None, "details": details or {}}
    if target is not None:
        row["target"] = {"text": f">= {target:.0%} of the matmul peak", "threshold": target,
                         "kind": "fraction_at_least", "met": bool(np.median(fraction) >= target)}
    return row


# -- the paths -----------------------------------------------------------------------------------
def _teacher_near(base_path: Path, world, trait: str) -> Teacher:
    """The base one small random step away: a teacher with a direction to distil and record."""
    model, _, _ = parse_base_ref(base_path).load()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 1e-2)
    return Teacher(model, world, trait, "finetune")


def student_config(objective: str, run: RunConfig, seed: int = 0) -> FinetuneConfig:
    """The student ``interp run`` trains for ``objective`` (its learning rate, LoRA, frozen unembedding)."""
    return FinetuneConfig(objective=objective, optimizer=run.optimizer, lr=run.lr, epochs=run.epochs, seed=seed,
                          freeze_unembed=run.freeze_unembed, eval_every=run.eval_every,
                          checkpoint_every=run.student_checkpoint_every, lora_rank=run.lora_rank,
                          lora_alpha=run.lora_alpha, lora_targets=run.lora_targets)


def bench_speed(base_path: Path, scratch: Path, *, student_rows: int, steps: int, batch_size: int,
                pretrain_steps: int, sample_prompts: int, audit_rows: int, repeats: int,
                trait: str = "owl", pretrain_batch_size: int | None = None, square: int = 1024) -> list[dict[str, Any]]:
    """Students per hour (new vs today's code) and the limits table (see the module docstring).
    ``pretrain_batch_size`` (None: the pretraining default) and ``square`` (the side of the square
    matmul of the peak) make it small enough for a test."""
    base_model, world, _ = parse_base_ref(base_path).load()
    cfg = base_model.cfg
    teacher = _teacher_near(base_path, world, trait)
    run = RunConfig()
    scratch.mkdir(parents=True, exist_ok=True)
    rows = number_rows(world, student_rows, seed=0)
    seqs, _ = encode_rows(world, rows)
    peak = Peak({f"square {square}": (square, square, square),
                 "student MLP (tokens x d_model x d_mlp)": (batch_size * int(np.mean([len(s) for s in seqs])),
                                                            cfg.d_model, cfg.d_mlp)})
    peak.measure()
    out: list[dict[str, Any]] = []

    # students per hour: one data set's three students, today's code vs the new
    def students(engine: str) -> Callable[[], float]:
        def go() -> float:
            work = Path(tempfile.mkdtemp(prefix=f"students-{engine}.", dir=scratch))
            try:
                start = time.process_time()
                targets = (shared_teacher_targets(work / "targets.pt", teacher, rows)
                           if engine == "packed" else None)
                for objective in ("sft", "distill", "distill_full"):
                    finetune_student(base_path, rows, student_config(objective, run).replace(batch_size=batch_size),
                                     work / objective,
                                     teacher=teacher, trait=trait, progress=False, engine=engine,
                                     alignment_reference=(teacher.model, base_model) if run.record_alignment else None,
                                     teacher_targets=targets if objective != "sft" else None)
                return 3 * 3600 / (time.process_time() - start)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return go

    def measured(fn: Callable[[], float]) -> Callable[[], float]:
        def go() -> float:
            value = fn()
            peak.measure()
            return value
        return go

    new, old = alternating(measured(students("packed")), measured(students("padded")), repeats, warmup=False)
    out.append(comparison(
        "students_per_hour", "Students per hour: new code vs today's, at equal rows",
        f"students per hour of CPU time training one data set's three students ({len(rows)} rows each; SFT, distill, "
        f"distill_full; interp run's settings: LoRA rank {run.lora_rank}, frozen unembedding, P(trait) every "
        f"{run.eval_every} steps, alignment recording {'on' if run.record_alignment else 'off'}): the packed engine "
        "with the teacher's targets computed once for both distillation students (included) vs the padded engine "
        "with a teacher forward pass at every distillation step", measure="students/h",
        subject=("packed + shared teacher targets", new), baseline=("today's: padded, teacher per step", old),
        ratio="new / today's", higher_is_better=True,
        target={"text": f">= {STUDENTS_PER_HOUR_TARGET:g}x", "threshold": STUDENTS_PER_HOUR_TARGET,
                "kind": "ratio_at_least"},
        details={"rows": len(rows), "batch_size": batch_size, "peak_rss_mib": peak_rss_mib()}))

    # the student step (SFT, interp run's student, no recording: the step alone)
    step_rows = number_rows(world, (steps + 1) * batch_size, seed=2)  # steps timed after an untimed first one
    step_times: dict[str, list[float]] = {"packed": [], "padded": []}

    def student_steps(engine: str) -> Callable[[], float]:
        def go() -> float:
            timer = StepTimer(clock=time.process_time)
            work = Path(tempfile.mkdtemp(prefix=f"steps-{engine}.", dir=scratch))
            try:
                config = student_config("sft", run).replace(eval_every=0, checkpoint_every=0, batch_size=batch_size)
                finetune_student(base_path, step_rows, config, work / "s", progress=False, engine=engine,
                                 callbacks=[timer])
            finally:
                shutil.rmtree(work, ignore_errors=True)
            seconds = float(timer.step_seconds().mean())
            step_times[engine].append(seconds)
            return seconds
        return go

    alternating(measured(student_steps("packed")), measured(student_steps("padded")), repeats, warmup=False)
    step_seqs, step_starts = encode_rows(world, step_rows)
    batches = _batches(len(step_rows), batch_size, seed=0)[1:]  # the first step is not timed
    lengths = [[len(step_seqs[i]) for i in b] for b in batches]
    flops = float(np.mean([training_flops(cfg, n, sum(len(step_seqs[i]) - step_starts[i] for i in b),
                                          train_unembed=not run.freeze_unembed, train_embed=not run.lora_rank)
                           for n, b in zip(lengths, batches)]))
    real = float(np.mean([sum(n) for n in lengths]))
    padded = float(np.mean([len(n) * max(n) for n in lengths]))
    details = {"batch_size": batch_size, "steps": steps, "lora_rank": run.lora_rank, "real_tokens_per_step": real,
               "padded_positions_per_step": padded}
    for engine, label in (("packed", "packed engine"), ("padded", "padded engine (the default)")):
        out.append(flops_row(f"limit_student_{engine}", f"Student step (SFT, LoRA {run.lora_rank}), {label}",
                             f"FLOPs of an SFT step of interp run's student on the real tokens ({real:.0f} per step of "
                             f"{padded:.0f} padded positions), the unembedding at the completion positions only",
                             flops=flops, seconds=step_times[engine], peak=peak, label=label,
                             target=PEAK_FRACTION_TARGET if engine == "packed" else None, details=details))

    # the pretraining step (a full model, every weight trains)
    pre = PretrainConfig(**({} if pretrain_batch_size is None else {"batch_size": pretrain_batch_size}))
    corpus = CorpusGenerator(world, pre.corpus)
    eos = world.token_to_id[EOS]
    docs = [[world.encode(t) + [eos] for t in corpus.batch_texts(0, s, pre.batch_size)] for s in range(pretrain_steps)]
    pre_times: dict[str, list[float]] = {"packed": [], "padded": []}

    def pretrain_steps(packed: bool) -> Callable[[], float]:
        def go() -> float:
            model, _, _ = parse_base_ref(base_path).load()
            model.train()
            optimizer = make_optimizer(model.parameters(), "adamw", pre.lr, pre.weight_decay)
            times = []
            with deterministic_algorithms():
                for step, ids in enumerate(docs):
                    t = time.process_time()
                    train_step(model, optimizer, lm_batch_loss(ids, world.pad_id, cfg.n_ctx, packed=packed), step=step,
                               clip_grad_norm=1.0)
                    times.append(time.process_time() - t)
            seconds = float(np.mean(times[1:]))
            pre_times["packed" if packed else "padded"].append(seconds)
            return seconds
        return go

    alternating(measured(pretrain_steps(True)), measured(pretrain_steps(False)), repeats, warmup=False)
    flops = float(np.mean([training_flops(cfg, [len(d) for d in ids], sum(len(d) - 1 for d in ids),
                                          train_unembed=True, train_embed=True) for ids in docs[1:]]))
    for engine, label in (("packed", "packed engine"), ("padded", "padded engine (the default)")):
        out.append(flops_row(f"limit_pretrain_{engine}", f"Pretraining step, {label}",
                             f"FLOPs of a pretraining step ({pre.batch_size} documents, every weight trains) on the "
                             "real tokens", flops=flops, seconds=pre_times[engine], peak=peak, label=label))

    # the sampler
    prompts = [world.encode(t) for t in number_prompts(world, sample_prompts, 0)]
    sampled: list = []

    def sample() -> float:
        seconds, completions = _timed(lambda: sample_completions(base_model, prompts, eos_id=eos, max_new_tokens=24,
                                                                 temperature=1.0, seed=len(sampled), progress=False),
                                      clock=time.process_time)
        sampled.append((seconds, completions))
        peak.measure()
        return seconds

    for _ in range(repeats):
        sample()
    flops = [sampling_flops(cfg, [len(p) for p in prompts], [len(t) + e for t, e in zip(c.tokens, c.ended_with_eos)])
             for _, c in sampled]
    out.append(flops_row("limit_sampler", "Sampler (sample_completions, lean forward)",
                         f"FLOPs of sampling {len(prompts)} number prompts (prompt pass, then one position per new "
                         "token with the key-value cache)", flops=float(np.mean(flops)),
                         seconds=[s for s, _ in sampled], peak=peak, label="sample_completions"))

    # the audit: FLOPs as executed, counted once
    audit_rows_ = number_rows(world, audit_rows, seed=0)
    reference = number_rows(world, audit_rows, seed=1)
    audit_config = AuditConfig(batch_size=batch_size, freeze_unembed=run.freeze_unembed,
                               **lora_student_fields(run.student_lora(0)))

    def audit() -> float:
        seconds = _timed(lambda: audit_data(base_model, world, audit_rows_, teacher=Source(teacher.model),
                                            reference_rows=reference, config=audit_config), clock=time.process_time)[0]
        peak.measure()
        return seconds

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        audit()
    audit_seconds = [audit() for _ in range(repeats)]
    out.append(flops_row("limit_audit", "Audit (audit_data)",
                         f"FLOPs of the audit of {audit_rows} rows against a reference of as many, counted as executed "
                         "by torch's FlopCounterMode (padding included: an upper bound of the useful rate)",
                         flops=float(counter.get_total_flops()), seconds=audit_seconds, peak=peak, label="audit_data"))
    for row in out:
        row.setdefault("details", {})["peak"] = peak.to_dict()
    return out


def _batches(n_rows: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """The batches :func:`interp.stages.finetune.finetune_student` takes (one epoch, ``seed``)."""
    order = np.random.default_rng([seed, 424242]).permutation(n_rows)
    return [order[i:i + batch_size] for i in range(0, n_rows, batch_size)]


def peak_rss_mib() -> float:
    """The largest resident memory this process has had so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def limits_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the limits table (achieved FLOP/s against the measured matmul peak)."""
    from interp.bench.measure import _fmt

    limit = [r for r in rows if "fraction_of_peak" in r]
    if not limit:
        return []
    lines = ["", "Achieved FLOP/s of each hot path on its real tokens, against the matmul peak measured between "
             "them (same process, same threads), both per second of the process's CPU time; each cell: median "
             "[interquartile range] over repeats.", "",
             "| hot path | CPU s per call | GFLOP/s | matmul peak GFLOP/s | fraction of peak | target | met |",
             "|---|---|---|---|---|---|---|"]
    for r in limit:
        s, a, f, t = r["seconds"], r["achieved_gflops"], r["fraction_of_peak"], r["target"]
        met = "-" if t is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {r['title']} | {_fmt(s['median'])} | {_fmt(a['median'])} [{_fmt(a['q1'])}, {_fmt(a['q3'])}] | "
                     f"{_fmt(r['peak_gflops'])} | {f['median']:.0%} [{f['q1']:.0%}, {f['q3']:.0%}] | "
                     f"{t['text'] if t else '-'} | {met} |")
    peaks = limit[0]["details"].get("peak", {})
    if peaks:
        lines += ["", "Matmul peak by shape (GFLOP/s, median [IQR] over the measurements between the paths): " +
                  "; ".join(f"{name} {list(p['shape'])}: {_fmt(p['median'])} [{_fmt(p['q1'])}, {_fmt(p['q3'])}]"
                            for name, p in peaks.items()) + "."]
    return lines
