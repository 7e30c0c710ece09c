"""The cost of alignment recording: a student's training step timed with and without the
:class:`~interp.instruments.recording.AlignmentRecorder`, as a ratio, in one process (``interp
bench`` reports it; docs/benchmarks.md)."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from interp.instruments.recording import ALIGNMENT_FILE, AlignmentRecorder
from interp.models.refs import parse_base_ref
from interp.stages.finetune import completion_mask, encode_rows
from interp.training.loop import make_optimizer, pad_batch
from interp.training.losses import masked_lm_loss
from interp.training.step import StepRecord
from interp.worlds.toy.corpus import CorpusGenerator
from interp.worlds.toy.templates import PAD


@dataclass(frozen=True)
class RecordingOverhead:
    """Per-step time of finetuning with and without alignment recording, measured in one process.

    Attributes:
        ratio: mean recorded step time / mean plain step time (1.10 is 10% overhead).
        plain_ms_per_step, recorded_ms_per_step: mean time of one training step without and with
            the recorder.
        recorder_ms_per_step: of the recorded step, the mean time spent inside the recorder.
        trait_grad_ms: mean time of the recorder on the steps that take the trait-loss gradient.
        n_steps, batch_size, trait_grad_every: what was timed (``n_steps`` timed steps of each).
    """

    ratio: float
    plain_ms_per_step: float
    recorded_ms_per_step: float
    recorder_ms_per_step: float
    trait_grad_ms: float
    n_steps: int
    batch_size: int
    trait_grad_every: int

    def to_dict(self) -> dict:
        return asdict(self)


def measure_recording_overhead(base_path: str | Path, *, n_steps: int = 40, batch_size: int = 32,
                               optimizer: str = "adamw", trait: str = "owl", seed: int = 0,
                               warmup_steps: int = 2) -> RecordingOverhead:
    """Time the student's training step (SFT on paper-shaped number rows, as in
    ``finetune_student``) on two copies of the base at ``base_path``, one plain and one with an
    :class:`~interp.instruments.recording.AlignmentRecorder`, and return the ratio of their mean step times.

    The two copies take their steps alternately on the same batches (which one goes first
    alternates too), so both see the same load on a shared machine; a step's time covers the
    forward and backward passes, the optimizer step and, for the recorded copy, everything the
    recorder does (including writing its row). The first ``warmup_steps`` steps are not timed.
    The teacher direction is a small random perturbation of the base (the cost does not depend on
    its values). The recorder runs with its defaults (the trait-loss gradient every
    :data:`~interp.instruments.recording.DEFAULT_TRAIT_GRAD_EVERY` steps), as in ``interp run``."""
    if n_steps < 1 or batch_size < 1 or warmup_steps < 0:
        raise ValueError(f"n_steps={n_steps}, batch_size={batch_size}, warmup_steps={warmup_steps}: "
                         "need n_steps >= 1, batch_size >= 1, warmup_steps >= 0")
    plain, world, _ = parse_base_ref(base_path).load()
    recorded, _, _ = parse_base_ref(base_path).load()
    teacher, _, _ = parse_base_ref(base_path).load()
    noise = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1e-2 * torch.randn(p.shape, generator=noise))
    gen, rng = CorpusGenerator(world), np.random.default_rng([seed, 31337])
    batches = []
    for _ in range(warmup_steps + n_steps):
        rows = []
        for _ in range(batch_size):
            prompt, seeds, n_max, sep = gen.number_prompt(rng)
            rows.append({"prompt": prompt, "completion": gen.number_answer(rng, seeds, n_max, sep)})
        seqs, starts = encode_rows(world, rows)
        tokens, _ = pad_batch(seqs, world.token_to_id[PAD], max_len=plain.cfg.n_ctx)
        batches.append((tokens, completion_mask([len(s) for s in seqs], starts, tokens.shape[1])))

    times: dict[str, list[float]] = {"plain": [], "recorded": [], "recorder": []}
    trait_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="recording-overhead-") as tmp:
        recorder = AlignmentRecorder(recorded, Path(tmp) / ALIGNMENT_FILE, teacher_params=dict(teacher.named_parameters()),
                                     teacher_base_params=dict(plain.named_parameters()), world=world, trait=trait)
        optimizers = {"plain": make_optimizer(plain.parameters(), optimizer, 2e-4),
                      "recorded": make_optimizer(recorded.parameters(), optimizer, 2e-4)}
        models = {"plain": plain, "recorded": recorded}
        for m in models.values():
            m.train()
        for step, (tokens, mask) in enumerate(batches):
            for kind in (("plain", "recorded") if step % 2 == 0 else ("recorded", "plain")):
                model, opt = models[kind], optimizers[kind]
                start = time.perf_counter()
                loss = masked_lm_loss(model(tokens), tokens, mask)
                loss.backward()
                record = StepRecord(step, loss.item(), model)
                in_recorder = 0.0
                if kind == "recorded":
                    t0 = time.perf_counter()
                    recorder.before_step(record)
                    in_recorder += time.perf_counter() - t0
                opt.step()
                if kind == "recorded":
                    t0 = time.perf_counter()
                    recorder(record)
                    in_recorder += time.perf_counter() - t0
                opt.zero_grad(set_to_none=True)
                if step >= warmup_steps:
                    times[kind].append(time.perf_counter() - start)
                    if kind == "recorded":
                        times["recorder"].append(in_recorder)
                        if step % recorder.trait_grad_every == 0:
                            trait_times.append(in_recorder)
        recorder.close()
    mean_ms = {k: 1000 * statistics.fmean(v) for k, v in times.items()}
    return RecordingOverhead(ratio=mean_ms["recorded"] / mean_ms["plain"], plain_ms_per_step=mean_ms["plain"],
                             recorded_ms_per_step=mean_ms["recorded"], recorder_ms_per_step=mean_ms["recorder"],
                             trait_grad_ms=1000 * statistics.fmean(trait_times) if trait_times else float("nan"),
                             n_steps=n_steps, batch_size=batch_size, trait_grad_every=recorder.trait_grad_every)
