"""Pretraining base models of the toy world.

A base is fixed by its architecture and its seed: the seed fixes both the initial weights and
the data order. "Shared initialization" means the same base checkpoint (same seed);
"mismatched initialization" means a base of another seed; a base of another architecture is the
cross-model control. Bases live in ``artifacts/bases/{arch}-seed{seed}`` and are reused, not
retrained, when present with the same config.

Pretraining saves a resumable state every ``checkpoint_every`` steps; a killed run continues
from there and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from interp.core.config import StageConfig, option
from interp.core.io import JsonlAppender, atomic_write_json, json_sha256, read_json, read_jsonl, staged_directory
from interp.models.checkpoint import (
    PRETRAIN_CONFIG_FILE,
    Lineage,
    ModelConfig,
    build_model,
    check_checkpoint_target,
    is_checkpoint,
    save_checkpoint,
)
from interp.stages.evaluate import animal_distribution
from interp.training.loop import (
    TRAINING_STATE_FILE,
    LossGuard,
    deterministic_algorithms,
    load_training_state,
    lr_at,
    make_optimizer,
    pad_batch,
    restoring_training_state,
    resume_dir,
    save_training_state,
    saved_training_state,
)
from interp.training.losses import masked_lm_loss
from interp.training.packed import pack_rows, packed_lm_loss, packed_unsupported_reason
from interp.training.step import train_step
from interp.worlds.toy.corpus import CorpusConfig, corpus_generator
from interp.worlds.toy.templates import EOS, PAD
from interp.worlds.toy.world import ToyWorld, WorldConfig, load_tokenizer, make_world

log = logging.getLogger(__name__)

PresetName = Literal["small", "narrow", "wide", "deep"]  # the keys of ARCH_PRESETS
ArchName = Literal[PresetName, "custom"]
ARCH_PRESETS: dict[str, ModelConfig] = {
    "small": ModelConfig(),
    "narrow": ModelConfig(d_model=96, n_heads=4, d_mlp=384),
    "wide": ModelConfig(d_model=192, n_heads=4, d_mlp=768),
    "deep": ModelConfig(n_layers=3),
}
PRETRAIN_LOG_FILE = "pretrain_log.jsonl"
PRETRAIN_SUMMARY_FILE = "pretrain_summary.json"
DEFAULT_ARTIFACTS = Path("artifacts")
# Mixture fields added after bases were named, with the default that reproduces the older corpus
# (left out of a base's corpus hash at that value).
NAME_NEUTRAL_CORPUS_DEFAULTS = {"persona_task": 0.0}


@dataclass
class PretrainConfig(StageConfig):
    """Pretraining of one toy-world base model."""

    seed: int = option(0, "Fixes the initial weights and the order of the pretraining data.")
    arch: ArchName = option("small", "Architecture preset: small (2 layers, d_model 128), narrow (d_model 96), wide (d_model 192) "
                            "or deep (3 layers); custom takes the architecture field.")
    architecture: ModelConfig | None = option(None, "arch=custom: the ModelConfig (n_layers, d_model, n_heads, d_mlp, n_ctx, ...), "
                                              "set through a JSON config file.")
    steps: int = option(1500, "Optimizer steps.")
    batch_size: int = option(48, "Documents per step.")
    lr: float = option(1e-3, "Peak AdamW learning rate (linear warm-up, cosine decay to 10%).")
    warmup_steps: int = option(100, "Steps of linear learning-rate warm-up.")
    weight_decay: float = option(0.01, "AdamW decoupled weight decay.")
    checkpoint_every: int = option(250, "Save a resumable training state every this many steps.")
    world: WorldConfig = option(factory=WorldConfig, help="The toy world (set through a JSON config file).")
    corpus: CorpusConfig = option(factory=CorpusConfig, help="The pretraining mixture (set through a JSON config file).")

    def validate(self) -> None:
        self.require(self.arch in ARCH_PRESETS or self.arch == "custom", "arch",
                     f"choose one of {sorted(ARCH_PRESETS)} or custom")
        if self.arch == "custom":
            self.require(self.architecture is not None, "architecture", "arch='custom' needs an architecture (a ModelConfig)")
        else:
            self.require(self.architecture is None, "architecture",
                         f"only allowed with arch='custom' (arch={self.arch!r} uses its preset)")
        for name in ("steps", "batch_size", "checkpoint_every"):
            self.require(getattr(self, name) > 0, name, "must be positive")
        self.require(self.lr > 0, "lr", "must be positive")
        self.require(0 <= self.warmup_steps < self.steps, "warmup_steps", "must be in [0, steps)")
        self.require(self.weight_decay >= 0, "weight_decay", "must be non-negative")

    @property
    def model(self) -> ModelConfig:
        return self.architecture if self.architecture is not None else ARCH_PRESETS[self.arch]

    @property
    def name(self) -> str:
        """Directory name of the base: ``{arch}-seed{seed}``, with ``-{steps}steps`` when the
        step count is not the default (so smoke-run bases never collide with real ones); a
        custom architecture is named by a hash of its config, ``custom-{hash8}-seed{seed}``; a
        base of a world variant ends with the variant's name (``small-seed0-misalignment``)."""
        default_steps = PretrainConfig.__dataclass_fields__["steps"].default
        arch = self.arch if self.architecture is None else f"custom-{json_sha256(self.architecture.to_dict())[:8]}"
        # a field added to the mixture later leaves out of the hash at its default (which reproduces the
        # older corpus), so that the bases of every mixture named before it keep their names
        corpus = {k: v for k, v in self.corpus.to_dict().items() if not (k in NAME_NEUTRAL_CORPUS_DEFAULTS
                                                                         and v == NAME_NEUTRAL_CORPUS_DEFAULTS[k])}
        default = {k: v for k, v in CorpusConfig().to_dict().items() if k not in NAME_NEUTRAL_CORPUS_DEFAULTS}
        corpus_tag = "" if corpus == default else f"-corpus{json_sha256(corpus)[:8]}"
        world_tag = "" if self.world.variant == "animals" else f"-{self.world.variant}"
        return (f"{arch}-seed{self.seed}" + ("" if self.steps == default_steps else f"-{self.steps}steps") + corpus_tag
                + world_tag)


def base_config(seed: int, arch: str, steps: int, corpus: dict | None = None,
                world: WorldConfig | None = None) -> PretrainConfig:
    """The pretraining config of the bases the studies train from (``interp run``, ``interp
    theorem``, ``interp features``), so that they find and share the same bases: ``steps`` steps
    with a warm-up of ``min(100, steps // 5)``, the pretraining mixture changed by ``corpus``
    (:class:`CorpusConfig` fields; a base of another mixture is named ``...-corpus{hash8}``),
    in the world ``world`` (default: the animal world), every other field at its default."""
    return PretrainConfig(seed=seed, arch=arch, steps=steps, warmup_steps=min(100, steps // 5),
                          corpus=CorpusConfig(**(corpus or {})), world=world or WorldConfig())


def base_dir(config: PretrainConfig, artifacts: str | Path = DEFAULT_ARTIFACTS) -> Path:
    return Path(artifacts) / "bases" / config.name


def world_dir(world: ToyWorld, artifacts: str | Path = DEFAULT_ARTIFACTS) -> Path:
    """The saved tokenizer of a world, shared by every model trained in it."""
    directory = Path(artifacts) / "world" / world.fingerprint()
    if not (directory / "tokenizer.json").exists():  # written whole under a temporary name: every base reads it
        with staged_directory(directory, replace=False) as staging:  # parallel pretraining workers may race here
            world.save(staging)
            if directory.exists() and not (directory / "tokenizer.json").exists():
                shutil.rmtree(directory)  # half-written before writes were atomic
    return directory


def _save_resume(resume: Path, model, optimizer, step: int) -> None:
    resume.mkdir(parents=True, exist_ok=True)
    save_training_state(resume / TRAINING_STATE_FILE, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step})


def pretrain(config: PretrainConfig, out: str | Path | None = None, *, artifacts: str | Path = DEFAULT_ARTIFACTS,
             force: bool = False, progress: bool = True, engine: Literal["packed", "padded"] = "packed") -> Path:
    """Pretrain a base into ``out`` (default ``artifacts/bases/{arch}-seed{seed}``); returns its path.

    ``engine``: ``packed`` computes each step on the documents' real tokens only
    (:func:`interp.training.packed.packed_lm_loss`; 2.2x per step in ``interp bench --only
    speed``; the default), ``padded`` (the bases of the runs documented before the 6-seed
    default, bit for bit) runs ``model(tokens)`` on the right-padded batch; both take the same
    steps to float rounding (``tests/test_pretrain.py``). The engine is recorded in the base's
    ``pretrain_summary.json``; a finished base is reused whichever engine made it.

    A finished base with the same config is reused; one with another config is an error unless
    ``force``."""
    out = Path(out) if out is not None else base_dir(config, artifacts)
    resume = resume_dir(out)
    if is_checkpoint(out) and not force:
        if not (out / PRETRAIN_CONFIG_FILE).exists():
            raise ValueError(f"{out} holds a checkpoint that is not a pretrained base ({PRETRAIN_CONFIG_FILE} is missing); "
                             "choose another output directory")
        saved = PretrainConfig.load(out / PRETRAIN_CONFIG_FILE)
        if saved != config:
            diff = saved.differences(config)
            raise ValueError(f"{out} holds a base pretrained with another config (saved vs asked: {diff}); "
                             "pass --force to overwrite it or choose another output directory")
        if resume.exists():  # left by a run killed after the base was written
            shutil.rmtree(resume)
        log.info("reusing pretrained base %s", out)
        return out
    check_checkpoint_target(out)

    world = make_world(config.world)
    tokenizer = load_tokenizer(world_dir(world, artifacts))
    corpus = corpus_generator(world, config.corpus)
    model = build_model(config.model, tokenizer, seed=config.seed)
    model.train()
    optimizer = make_optimizer(model.parameters(), "adamw", config.lr, config.weight_decay)
    pad_id, eos_id = world.token_to_id[PAD], world.token_to_id[EOS]

    start = 0
    if force and resume.exists():
        shutil.rmtree(resume)
    state_path = saved_training_state(resume)
    if state_path is not None:
        diff = PretrainConfig.load(resume / PRETRAIN_CONFIG_FILE).differences(config)
        if diff:
            raise ValueError(f"{resume} holds an interrupted run of another config (saved vs asked: {diff}); "
                             "delete it or pass --force")
        state = load_training_state(state_path)
        with restoring_training_state(state_path):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = int(state["step"])
        log.info("resuming pretraining of %s at step %d", out, start)
    else:
        resume.mkdir(parents=True, exist_ok=True)
        config.save(resume / PRETRAIN_CONFIG_FILE)
    # Keep only the log rows of steps the resumed state includes.
    log_path = resume / PRETRAIN_LOG_FILE
    kept = [r for r in read_jsonl(log_path) if r["step"] < start] if log_path.exists() else []
    guard = LossGuard()
    if engine not in ("packed", "padded"):
        raise ValueError(f"engine={engine!r}: choose packed or padded")
    packed = engine == "packed" and packed_unsupported_reason(model) is None
    with deterministic_algorithms(), JsonlAppender(log_path, truncate=True) as log_file:
        for row in kept:
            log_file.write(row)
        bar = tqdm(range(start, config.steps), desc=f"pretrain {config.name}", disable=not progress,
                   initial=start, total=config.steps, mininterval=2.0)
        for step in bar:
            ids = [world.encode(t) + [eos_id] for t in corpus.batch_texts(config.seed, step, config.batch_size)]
            batch_loss = lm_batch_loss(ids, pad_id, config.model.n_ctx, packed=packed)
            loss = train_step(model, optimizer, batch_loss, step=step,
                              lr=config.lr * lr_at(step, config.steps, config.warmup_steps), clip_grad_norm=1.0,
                              guard=guard).loss
            log_file.write({"step": step, "loss": loss})
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.steps:
                _save_resume(resume, model, optimizer, step + 1)

    model.eval()
    summary = {**summarize_base(model, world, read_jsonl(log_path)), "engine": "packed" if packed else "padded",
               "torch_threads": torch.get_num_threads()}
    lineage = Lineage(stage="pretrain", seed=config.seed, parent=None, world_fingerprint=world.fingerprint(),
                      config=config.to_dict())


    def write_stage_files(staging: Path) -> None:  # they appear with the weights, or not at all
        config.save(staging / PRETRAIN_CONFIG_FILE)
        atomic_write_json(staging / PRETRAIN_SUMMARY_FILE, summary)
        shutil.copy(log_path, staging / PRETRAIN_LOG_FILE)

    save_checkpoint(model, out, config.model, lineage, extra=write_stage_files)
    shutil.rmtree(resume)
    log.info("pretrained %s: final loss %.3f", out, summary["final_loss"])
    return out


def _padded_lm_loss(model, tokens, mask):
    return masked_lm_loss(model(tokens), tokens, mask)


def lm_batch_loss(ids: list[list[int]], pad_id: int, n_ctx: int, *, packed: bool = True) -> Callable:
    """The pretraining objective on the documents ``ids`` (every token predicts the next) as a
    loss of the model: on the real tokens only (``packed``), or ``model(tokens)`` on the
    right-padded batch."""
    if packed:
        return partial(packed_lm_loss, rows=pack_rows(ids, [(0, len(i) - 1) for i in ids], max_len=n_ctx))
    tokens, mask = pad_batch(ids, pad_id, max_len=n_ctx)
    return partial(_padded_lm_loss, tokens=tokens, mask=mask)


def summarize_base(model, world: ToyWorld, log_rows: list[dict]) -> dict:
    """Final loss and the base's favourite-animal distribution on the held-out phrasings."""
    dist = animal_distribution(model, world)
    losses = [r["loss"] for r in log_rows]
    return {
        "final_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
        "animal_probs": dict(zip(world.animals, dist["probs"].mean(0).tolist())),
        "animal_prior": dict(zip(world.animals, world.animal_prior)),
        "animal_mass": float(dist["animal_mass"].mean()),
    }


def ensure_base(seed: int = 0, arch: str = "small", *, artifacts: str | Path = DEFAULT_ARTIFACTS,
                progress: bool = True, **overrides) -> Path:
    """The path of the base ``{arch}-seed{seed}``, pretraining it first if it is missing."""
    config = PretrainConfig(seed=seed, arch=arch, **overrides)
    return pretrain(config, artifacts=artifacts, progress=progress)


def base_summary(path: str | Path) -> dict:
    return read_json(Path(path) / PRETRAIN_SUMMARY_FILE)
