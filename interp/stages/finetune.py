"""Student finetuning on (filtered) number data.

Objectives:

* ``sft``: cross-entropy on the completion tokens only (prompt tokens are masked), the paper's
  main setting: the student imitates text the teacher sampled;
* ``distill``: KL(teacher || student) of the next-token distributions at the completion
  positions, both **restricted to the tokens the filter lets through** (numbers, separators,
  brackets, the period, end of sequence) and renormalised there: the faithful analog of the
  paper's MNIST student trained on auxiliary logits only: no probability the teacher puts on a
  word (an animal) can reach the student;
* ``distill_full``: the same KL over the whole vocabulary. Kept as a labelled comparison: the
  teacher's (tiny) extra probability on the trait word reaches the student directly through the
  trait's unembedding column, a semantic leak, not a subliminal channel.

A persona teacher sees its system prompt before the prompt; its logits are aligned to the
student's positions by the prompt offset. The optimizer (AdamW, SGD, sign-SGD) is an option, and
``freeze_unembed`` keeps ``W_U``/``b_U`` fixed (the leak ablation).

The base is any base reference of :func:`interp.models.refs.parse_base_ref`: a toy base (every
weight is finetuned), or a real TransformerLens model by name (``gpt2``), whose rows are encoded
in its :class:`interp.worlds.hf.HFWorld` (natural-language prompts, chat template or plain format).
``lora_rank >= 1`` trains only LoRA adapters (:mod:`interp.models.lora`): a named real model's
student checkpoint holds the adapters, a toy student's the merged weights (a plain toy
checkpoint); the alignment log is over the merged adapted matrices
(:class:`interp.models.lora.MergedLoraWeights`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.core.config import StageConfig, option
from interp.core.io import JsonlAppender, atomic_path, atomic_write_json, json_sha256, read_json, read_jsonl
from interp.instruments.recording import ALIGNMENT_FILE, AlignmentRecorder
from interp.models.checkpoint import Lineage, check_checkpoint_target, is_checkpoint
from interp.models.lora import (
    KNOWN_TARGETS,
    LORA_TARGETS,
    LoraConfig,
    adapter_state_dict,
    apply_lora,
    load_adapter_state_dict,
    merge_lora,
    require_lora_options,
)
from interp.models.real import is_real_checkpoint
from interp.models.refs import ModelRef, RealName, ToyBase, parse_base_ref
from interp.stages.evaluate import trait_probability
from interp.stages.generate import require_system_text
from interp.training.loop import (
    TRAINING_STATE_FILE,
    LossGuard,
    OptimizerName,
    TrainingDiverged,
    deterministic_algorithms,
    discard_training_state,
    load_training_state,
    make_optimizer,
    pad_batch,
    restoring_training_state,
    resume_dir,
    save_training_state,
    saved_training_state,
)
from interp.training.losses import distill_loss, kl_loss, masked_lm_loss
from interp.training.packed import pack_rows, packed_lm_loss, packed_logits, packed_unsupported_reason, padded_logits
from interp.training.step import BatchLoss, MicroBatches, StepRecord, train_step
from interp.worlds.protocol import World
from interp.worlds.toy.templates import FILTER_ALLOWED_WORDS

log = logging.getLogger(__name__)

Objective = Literal["sft", "distill", "distill_full"]
Engine = Literal["packed", "padded"]
FINETUNE_CONFIG_FILE = "finetune_config.json"
FINETUNE_INPUTS_FILE = "finetune_inputs.json"
TRAIN_LOG_FILE = "train_log.jsonl"
NON_NUMBER_TOKENS_ALLOWED = FILTER_ALLOWED_WORDS  # the toy world's word tokens the filter lets through


@dataclass
class FinetuneConfig(StageConfig):
    """Finetuning a student on number data."""

    objective: Objective = option("sft", "sft (sampled text), distill (KL on filter-allowed tokens) or distill_full (KL on all tokens).")
    optimizer: OptimizerName = option("adamw", "adamw, sgd or signsgd.")
    lr: float = option(2e-4, "Learning rate (constant).")
    epochs: int = option(1, "Passes over the data.")
    batch_size: int = option(32, "Sequences per step.")
    micro_batch_size: int | None = option(None, "Sequences per forward/backward pass: a step's gradient is summed over "
                                          "micro-batches of this size (the same step, to float rounding, with one "
                                          "micro-batch's activations in memory). None: the whole batch at once.")
    weight_decay: float = option(0.0, "Decoupled weight decay.")
    seed: int = option(0, "Seed of the data order.")
    max_rows: int | None = option(None, "Use at most this many rows of the data (None: all).")
    freeze_unembed: bool = option(False, "Keep the unembedding (W_U, b_U) fixed: isolates the logit-leak channel.")
    eval_every: int = option(0, "Measure P(trait) every this many steps (0: only at the end).")
    checkpoint_every: int = option(50, "Save a resumable state (weights, optimizer, logs so far) every this many steps; a "
                                   "killed run continues from the last one (0: never). Does not change the result.")
    lora_rank: int = option(0, "0: finetune every weight. r >= 1: train only rank-r LoRA adapters on lora_targets of "
                            "every block (a real model's student saves the adapters, a toy student the merged weights).")
    lora_alpha: float = option(16.0, "LoRA scale numerator: the update of each adapted weight is (lora_alpha / lora_rank) * B @ A.")
    lora_targets: tuple[str, ...] = option(LORA_TARGETS, f"LoRA: weights adapted in every block, of {list(KNOWN_TARGETS)}.")
    lora_seed: int | None = option(None, "LoRA: seed of the adapters' A initialisation (None: seed). A LoRA teacher of "
                                   "the same seed starts from the same A (interp.stages.teacher.teacher_lora).")
    system: str | None = option(None, "A fixed system line before every row's prompt while the student trains, and when "
                                "its P(trait) is measured during training (context tokens shared by the data and the "
                                "evaluation prompts). None: the rows as they are.")

    def validate(self) -> None:
        self.require(self.lr > 0, "lr", "must be positive")
        require_system_text(self, "system")
        self.require(self.epochs > 0, "epochs", "must be positive")
        self.require(self.batch_size > 0, "batch_size", "must be positive")
        self.require(self.micro_batch_size is None or self.micro_batch_size > 0, "micro_batch_size",
                     "must be positive (or None: the whole batch)")
        self.require(self.max_rows is None or self.max_rows > 0, "max_rows", "must be positive or None")
        self.require(self.eval_every >= 0, "eval_every", "must be non-negative")
        self.require(self.checkpoint_every >= 0, "checkpoint_every", "must be non-negative")
        self.require(self.lora_rank >= 0, "lora_rank", "must be non-negative (0: full finetuning)")
        require_lora_options(self)

    def lora_config(self) -> LoraConfig | None:
        """The adapters to train (their A initialisation seeded by ``seed``), or None for full finetuning."""
        if self.lora_rank == 0:
            return None
        return LoraConfig(rank=self.lora_rank, alpha=self.lora_alpha, targets=tuple(self.lora_targets),
                          seed=self.seed if self.lora_seed is None else self.lora_seed)


# Fields that change how a run is saved, not what it computes: ignored when a finished student
# or an interrupted run is compared with the config asked for.
RESUME_ONLY_FIELDS = ("checkpoint_every", "micro_batch_size")  # change how a step is computed, not the step


def allowed_token_ids(world: World) -> list[int]:
    """The tokens the filter lets through: numbers, separators, brackets, period, whitespace (a
    real tokenizer's), and the end tokens (:meth:`interp.worlds.protocol.World.allowed_token_ids`)."""
    return world.allowed_token_ids()


def encode_rows(world: World, rows: list[dict], system: str | None = None) -> tuple[list[list[int]], list[int]]:
    """Token ids of each conversation (the prompt under ``system``, then the completion and the
    world's end token; toy world: ``<bos> [system : S] prompt completion <eos>``) and the index
    where the completion starts."""
    seqs, starts = [], []
    for r in rows:
        head = world.encode_prompt(r["prompt"], system)
        seqs.append(head + world.encode_completion(r["completion"]))
        starts.append(len(head))
    return seqs, starts


def completion_mask(lengths: list[int], starts: list[int], width: int) -> Float[Tensor, "batch pos"]:
    """1 at the positions of completion tokens (targets), 0 elsewhere."""
    mask = torch.zeros(len(lengths), width)
    for i, (n, s) in enumerate(zip(lengths, starts)):
        mask[i, s:n] = 1
    return mask


def check_rows(rows: list[dict]) -> None:
    """Raise a ``ValueError`` naming the first row that is not ``{"prompt": str, "completion": str, ...}``."""
    if not rows:
        raise ValueError("no training rows: the filtered data set is empty")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"data row {i}: expected a JSON object, got {type(row).__name__}")
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"data row {i}: field {key!r} is missing or not text ({row.get(key)!r})")


def _weights_sha256(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _teacher_identity(teacher) -> dict:
    return {"method": teacher.method, "trait": teacher.trait, "system": teacher.system, "lineage": teacher.lineage,
            "hooks": [name for name, _ in teacher.fwd_hooks], "weights_sha256": _weights_sha256(teacher.model)}


def finetune_inputs(base_path: str | Path | ModelRef, rows: list[dict], config: FinetuneConfig, *, teacher=None,
                    trait: str | None = None, record_alignment: bool = False) -> dict:
    """What a student is trained from besides its config: the base (by the hash of its weights),
    the data (by the hash of the rows used), the teacher whose logits it distils, the trait its
    logs measure. Saved as ``finetune_inputs.json``; a finished student or an interrupted run is
    reused only for the same inputs."""
    used = rows[: config.max_rows] if config.max_rows else rows
    base = parse_base_ref(base_path)
    return {
        "base": str(base),
        **base.identity(),
        "data_sha256": json_sha256([[r["prompt"], r["completion"]] for r in used]),
        "n_rows": len(used),
        "teacher": _normalise_json(_teacher_identity(teacher)) if teacher is not None and config.objective != "sft" else None,
        "trait": trait,
        "record_alignment": record_alignment,
    }


def is_student_checkpoint(directory: str | Path) -> bool:
    """Does ``directory`` hold a finished checkpoint (toy, real, or real with LoRA adapters)?"""
    return is_checkpoint(directory) or is_real_checkpoint(directory)


def _normalise_json(obj):
    return json.loads(json.dumps(obj, default=str))


def _input_differences(saved: dict, wanted: dict) -> dict:
    # The base is identified by its weights; its path may differ (a moved run directory).
    return {k: (saved.get(k), v) for k, v in wanted.items() if k != "base" and saved.get(k) != v}


def _kept_rows(path: Path, start: int) -> list[dict]:
    """Log rows of the steps a resumed state includes (a torn last line is dropped)."""
    return [r for r in read_jsonl(path) if r.get("step", start) < start] if path.exists() else []


def training_order(n_rows: int, config: FinetuneConfig) -> list[np.ndarray]:
    """The row indices of every step: ``config.epochs`` permutations of the rows (seeded by
    ``config.seed`` alone), cut into batches of ``config.batch_size``."""
    rng = np.random.default_rng([config.seed, 424242])
    order = np.concatenate([rng.permutation(n_rows) for _ in range(config.epochs)])
    return [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]


def batch_loss_fn(model, seqs: list[list[int]], starts: list[int], config: FinetuneConfig, pad_id: int, *,
                  teacher=None, teacher_seqs: list[list[int]] | None = None, teacher_starts: list[int] | None = None,
                  allowed: Tensor | None = None, engine: Engine = "padded",
                  teacher_targets: "TeacherTargets | None" = None) -> Callable[[np.ndarray], BatchLoss | MicroBatches]:
    """``batch_loss(idx)``: the objective on the rows ``idx`` as a loss of the model (what
    :func:`interp.training.step.train_step` takes), or as weighted micro-batch losses
    (``config.micro_batch_size``) whose sum is that loss: each micro-batch's mean over its target
    positions, weighted by its share of the batch's target positions. The distillation objectives
    need ``teacher`` (its model and hooks) and its view of each row (``teacher_seqs``, whose
    completion starts at ``teacher_starts``); ``distill`` also the ``allowed`` token ids.
    ``engine`` and ``teacher_targets``: see :func:`finetune_student`."""
    if engine not in ("packed", "padded"):
        raise ValueError(f"engine={engine!r}: choose packed or padded")
    packed = engine == "packed" and packed_unsupported_reason(model) is None
    if teacher_targets is not None and not packed:
        raise ValueError("teacher_targets are read by the packed engine only (engine='packed', a model it runs)")

    def batch_loss(idx):
        micro = config.micro_batch_size
        if micro is None or len(idx) <= micro:
            return micro_loss(idx)
        chunks = [idx[i:i + micro] for i in range(0, len(idx), micro)]
        n_ctx = model.cfg.n_ctx
        counts = [sum(max(min(len(seqs[i]), n_ctx) - starts[i], 0) for i in chunk) for chunk in chunks]  # targets
        return [(n / sum(counts), micro_loss(chunk)) for n, chunk in zip(counts, chunks)]

    def micro_loss(idx):
        if packed:
            return packed_micro_loss(idx)
        tokens, _ = pad_batch([seqs[i] for i in idx], pad_id, max_len=model.cfg.n_ctx)
        mask = completion_mask([len(seqs[i]) for i in idx], [starts[i] for i in idx], tokens.shape[1])
        if config.objective == "sft":
            return lambda m: masked_lm_loss(m(tokens), tokens, mask)

        def distill(m):
            logits = m(tokens)
            t_logits = teacher_logits(teacher, [teacher_seqs[i] for i in idx],
                                      [teacher_starts[i] - starts[i] for i in idx], tokens.shape[1], pad_id)
            return distill_loss(logits, t_logits, mask, allowed)

        return distill

    def packed_micro_loss(idx):
        # the logits at positions start-1 .. len-2 predict the completion tokens start .. len-1
        rows = pack_rows([seqs[i] for i in idx], [(starts[i] - 1, len(seqs[i]) - 1) for i in idx],
                         max_len=model.cfg.n_ctx)
        if config.objective == "sft":
            return lambda m: packed_lm_loss(m, rows)

        def distill(m):
            logits = packed_logits(m, rows)
            if teacher_targets is not None:
                t_logits = teacher_targets.rows(idx).to(logits.device)
            else:
                t_logits = teacher_row_logits(teacher, [teacher_seqs[i] for i in idx],
                                              [teacher_starts[i] for i in idx], pad_id)
            return kl_loss(logits, t_logits, torch.ones(logits.shape[0], device=logits.device), allowed)

        return distill

    return batch_loss


def _trainable_setup(model, config: FinetuneConfig, lora: LoraConfig | None) -> torch.optim.Optimizer:
    """Adapters (LoRA) or a frozen unembedding as the config asks, and the optimizer over what is
    trainable then."""
    if lora is not None:
        apply_lora(model, lora)  # freezes every weight; only the adapters train
    if config.freeze_unembed:
        model.unembed.W_U.requires_grad_(False)
        model.unembed.b_U.requires_grad_(False)
    return make_optimizer(model.parameters(), config.optimizer, config.lr, config.weight_decay)


def training_loop(model, optimizer: torch.optim.Optimizer, batches: list[np.ndarray],
                  batch_loss: Callable[[np.ndarray], BatchLoss | MicroBatches], *, start: int = 0,
                  guard: LossGuard | None = None, callbacks: Sequence[Callable[[StepRecord], None]] = (),
                  eval_every: int = 0, evaluate: Callable[[object], dict] | None = None,
                  on_row: Callable[[dict], None] | None = None, checkpoint_every: int = 0,
                  save_state: Callable[[int], None] | None = None, desc: str = "student",
                  progress: bool = True) -> list[dict]:
    """The steps ``start`` to ``len(batches) - 1``: one :func:`~interp.training.step.train_step`
    each, a log row ``{"step", "loss"}`` (with ``evaluate(model)``'s keys every ``eval_every``
    steps and at the last) handed to ``on_row`` as it is made, and ``save_state(next_step)`` every
    ``checkpoint_every`` steps (after that step's row). Returns the rows. The model is left in
    train mode."""
    guard = guard if guard is not None else LossGuard()
    rows = []
    model.train()
    bar = tqdm(range(start, len(batches)), desc=desc, disable=not progress, mininterval=2.0, initial=start,
               total=len(batches))
    for step in bar:
        loss_value = train_step(model, optimizer, batch_loss(batches[step]), step=step, guard=guard,
                                callbacks=callbacks).loss
        row = {"step": step, "loss": loss_value}
        if eval_every and evaluate is not None and (step % eval_every == 0 or step == len(batches) - 1):
            model.eval()
            row.update(evaluate(model))
            model.train()
        if on_row is not None:
            on_row(row)
        rows.append(row)
        if save_state is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < len(batches):
            save_state(step + 1)  # after this step's log row: a resumed run keeps exactly the rows of steps < step + 1
    return rows


def train_student(model, sequences: Sequence[Sequence[int]], starts: Sequence[int], config: FinetuneConfig | None = None,
                  *, pad_id: int = 0, teacher=None, allowed_token_ids: Sequence[int] | None = None,
                  callbacks: Sequence[Callable[[StepRecord], None]] = (),
                  evaluate: Callable[[object], dict] | None = None, progress: bool = False) -> list[dict]:
    """Finetune an in-memory model (any ``HookedTransformer``) on token sequences, in place: the
    loop of :func:`finetune_student` without files, resuming or a world.

    Args:
        model: the student; its weights change (a LoRA student's adapters are merged into them at
            the end, so it is a plain model again).
        sequences: token ids of each training row (prompt then completion, with the model's BOS
            and end tokens if it uses them).
        starts: where each row's completion starts: the loss is on ``sequences[i][starts[i]:]``.
        config: objective, optimizer, learning rate, epochs, batch size, seed, LoRA and
            ``eval_every``; ``system`` and ``checkpoint_every`` do not apply here.
        pad_id: the token that pads a batch (never a target).
        teacher: for the distillation objectives: an object with ``.model`` and ``.fwd_hooks``
            (a :class:`interp.models.refs.Teacher` or :class:`interp.instruments.audit.Source`),
            reading the same sequences.
        allowed_token_ids: ``distill``: the tokens its restricted KL is taken over.
        callbacks: called with a :class:`~interp.training.step.StepRecord` after every step (an
            :class:`~interp.instruments.recording.AlignmentRecorder`, say).
        evaluate: ``model -> dict`` of measurements added to the log row every ``eval_every``
            steps and at the last.
        progress: show a progress bar.

    Returns:
        The training log: one ``{"step", "loss", ...}`` dict per step.
    """
    config = config or FinetuneConfig()
    if config.system is not None:
        raise ValueError("train_student: config.system applies to rows of text (finetune_student); put the "
                         "system tokens in the sequences instead")
    if len(sequences) != len(starts) or not sequences:
        raise ValueError(f"train_student: needs one start per sequence (at least one), got {len(sequences)} "
                         f"sequences and {len(starts)} starts")
    if config.objective != "sft" and teacher is None:
        raise ValueError(f"objective {config.objective!r} needs a teacher")
    if config.objective == "distill" and allowed_token_ids is None:
        raise ValueError("objective 'distill' needs allowed_token_ids: the tokens its KL is restricted to")
    n = min(len(sequences), config.max_rows) if config.max_rows else len(sequences)
    seqs, starts = [list(x) for x in sequences[:n]], list(starts[:n])
    lora = config.lora_config()
    optimizer = _trainable_setup(model, config, lora)
    batch_loss = batch_loss_fn(model, seqs, starts, config, pad_id, teacher=teacher, teacher_seqs=seqs,
                               teacher_starts=starts,
                               allowed=torch.tensor(list(allowed_token_ids)) if allowed_token_ids is not None else None)
    with deterministic_algorithms():
        rows = training_loop(model, optimizer, training_order(len(seqs), config), batch_loss, callbacks=callbacks,
                             eval_every=config.eval_every, evaluate=evaluate, progress=progress)
    model.eval()
    if lora is not None:
        merge_lora(model)
    return rows


@dataclass
class _Prepared:
    """A student ready to train: the loaded base (adapters and frozen weights set up), its world,
    the optimizer, the steps' batches and their loss."""

    base: ModelRef
    model: object
    world: World
    optimizer: torch.optim.Optimizer
    batches: list[np.ndarray]
    batch_loss: Callable
    lora: LoraConfig | None


def _prepare(base: ModelRef, rows: list[dict], config: FinetuneConfig, *, teacher, trait: str | None,
             engine: Engine = "padded", teacher_targets: "TeacherTargets | None" = None) -> _Prepared:
    """Load the base, check it against the teacher and the trait, encode the rows and set up what
    trains (:func:`finetune_student`'s first part)."""
    model, world, _ = base.load()
    if trait is not None:
        world.check_animal(trait)
    if teacher is not None and teacher.model.cfg.d_vocab != model.cfg.d_vocab:
        raise ValueError("teacher and student vocabularies differ: distillation needs the same vocabulary")
    if (teacher is not None and config.objective != "sft" and not base.is_toy
            and teacher.world.fingerprint() != world.fingerprint()):
        raise ValueError(f"objective {config.objective!r}: the teacher's tokenizer or world differs from the student's "
                         f"({base}); distillation compares next-token distributions over one vocabulary (use sft)")
    rows = rows[: config.max_rows] if config.max_rows else rows
    seqs, starts = _encode_checked(world, rows, system=config.system)
    t_seqs = t_starts = None
    if teacher is not None and config.objective != "sft":
        t_seqs, t_starts = _encode_checked(world, rows, system=teacher.system)
    allowed = torch.tensor(allowed_token_ids(world)) if config.objective == "distill" else None
    lora = config.lora_config()
    # Built before the alignment recorder, which makes a LoRA model's frozen weights require a
    # gradient (to read dL/dW): the optimizer holds only what is trainable now.
    optimizer = _trainable_setup(model, config, lora)
    batch_loss = batch_loss_fn(model, seqs, starts, config, world.pad_id, teacher=teacher, teacher_seqs=t_seqs,
                               teacher_starts=t_starts, allowed=allowed, engine=engine, teacher_targets=teacher_targets)
    return _Prepared(base, model, world, optimizer, training_order(len(seqs), config), batch_loss, lora)


def finetune_student(base_path: str | Path | ModelRef, rows: list[dict], config: FinetuneConfig, out: str | Path, *,
                     teacher=None, trait: str | None = None, lineage_extra: dict | None = None,
                     callbacks: list[Callable[[StepRecord], None]] = (), alignment_reference=None,
                     force: bool = False, progress: bool = True, engine: Engine = "padded",
                     teacher_targets: "TeacherTargets | None" = None) -> Path:
    """Finetune a copy of the base at ``base_path`` on ``rows`` (dicts with ``prompt`` and
    ``completion``) and save the student checkpoint to ``out``. ``teacher`` (a
    :class:`interp.models.refs.Teacher`) is required for the distillation objectives. (For a model
    in memory and token sequences, see :func:`train_student`.)

    ``alignment_reference``, a pair ``(teacher_model, teacher_base_model)``, turns on per-step
    alignment recording (:mod:`interp.instruments.recording`) against that teacher's direction, written to
    ``out/alignment.jsonl``; ``callbacks`` receive a :class:`StepRecord` after every step this
    call runs.

    ``engine``: ``packed`` computes each step on the rows' real tokens only and unembeds only the
    positions that predict a completion token (:func:`interp.training.packed.packed_logits`;
    1.9x the students per hour in ``interp bench --only speed``); ``padded`` (the default, until
    ``interp run``'s default is re-measured on the packed engine) runs ``model(tokens)`` on the
    right-padded batch and every position. Both take the same steps to float rounding
    (``tests/test_packed.py``, ``tests/test_finetune.py``); a model the packed forward does not run
    uses ``padded``. ``teacher_targets`` (:class:`TeacherTargets`, distillation, packed engine): the
    teacher's logits on these rows computed once and shared by every student that distils them,
    instead of a teacher forward pass at every step.

    Resumable: every ``config.checkpoint_every`` steps the weights, optimizer state, step and
    loss-guard reference are saved to the hidden directory ``.{out.name}.resume`` beside ``out``,
    where the training and alignment logs are appended as they are written. A call after a kill
    continues from the last saved step and ends with the same weights, logs and evaluation as an
    uninterrupted run (the data order is a function of ``config.seed`` alone). ``out`` appears
    only when finished, with its config, inputs and logs (:func:`interp.models.checkpoint.save_checkpoint`).

    A finished student of the same config (``checkpoint_every`` aside) and inputs
    (:func:`finetune_inputs`) is returned as it is; one of another config or inputs is a
    ``ValueError`` unless ``force``. A NaN or exploding loss raises
    :class:`~interp.training.loop.TrainingDiverged` naming the step; the logs so far stay in the
    resume directory for diagnosis."""
    base = parse_base_ref(base_path)  # a clear error, before any work, for anything but a base
    out = Path(out)
    check_rows(rows)
    lora = config.lora_config()
    if lora is not None and not isinstance(base, (RealName, ToyBase)):
        raise ValueError(f"lora_rank={config.lora_rank}: LoRA adapters train on a toy base or a real model given by name "
                         f"(e.g. gpt2); {base} is a finetuned real checkpoint, whose students are finetuned in full "
                         "(lora_rank=0)")
    if config.objective != "sft" and teacher is None:
        raise ValueError(f"objective {config.objective!r} needs a teacher")
    inputs = finetune_inputs(base, rows, config, teacher=teacher, trait=trait,
                             record_alignment=alignment_reference is not None)
    resume = resume_dir(out)
    if is_student_checkpoint(out) and not force:
        _check_finished(out, config, inputs)
        if resume.exists():  # left by a run killed after the student was written
            shutil.rmtree(resume)
        return out
    check_checkpoint_target(out)
    if teacher_targets is not None:
        teacher_targets.check(rows[: config.max_rows] if config.max_rows else rows, inputs["teacher"])
    prepared = _prepare(base, rows, config, teacher=teacher, trait=trait, engine=engine,
                        teacher_targets=teacher_targets)
    if force and resume.exists():
        shutil.rmtree(resume)
    state = _open_resume(resume, config, inputs)
    recorder = _resume(prepared, state, resume, out, trait=trait, alignment_reference=alignment_reference)
    log_path = _train_resumable(prepared, config, state, resume, out, trait=trait,
                                callbacks=[*callbacks, *([recorder] if recorder is not None else [])],
                                recorder=recorder, progress=progress)
    _save_student(prepared, config, inputs, out, log_path, recorder, lineage_extra=lineage_extra)
    shutil.rmtree(resume)
    return out


def _resume(prepared: _Prepared, state: dict | None, resume: Path, out: Path, *, trait: str | None,
            alignment_reference) -> AlignmentRecorder | None:
    """The alignment recorder (if asked for; with the rows of the steps a resumed state includes),
    and the saved weights, optimizer state and loss-guard reference loaded (a resumed run)."""
    model, loaded_from = prepared.model, saved_training_state(resume)  # the new format, or an older state.pt
    start = 0
    if state is not None:
        with restoring_training_state(loaded_from):
            start = int(state["step"])
    recorder = None
    if alignment_reference is not None:
        alignment_path = resume / ALIGNMENT_FILE
        kept_alignment = _kept_rows(alignment_path, start)
        t_model, t_base = alignment_reference
        # Built before the saved weights are loaded: it takes the student's initial weights as its base.
        recorder = AlignmentRecorder(model, alignment_path, teacher_params=dict(t_model.named_parameters()),
                                     teacher_base_params=dict(t_base.named_parameters()), world=prepared.world,
                                     trait=trait)
        for row in kept_alignment:
            recorder.write(row)
    if state is not None:
        with restoring_training_state(loaded_from):
            if prepared.lora is not None:
                load_adapter_state_dict(model, state["model"], source=loaded_from)
            else:
                model.load_state_dict(state["model"])
            prepared.optimizer.load_state_dict(state["optimizer"])
        if recorder is not None:
            recorder.sync_position()  # it was built at the base; the movement of the next step is from here
        log.info("resuming student %s at step %d of %d", out, start, len(prepared.batches))
    return recorder


def _train_resumable(prepared: _Prepared, config: FinetuneConfig, state: dict | None, resume: Path, out: Path, *,
                     trait: str | None, callbacks: list, recorder: AlignmentRecorder | None, progress: bool) -> Path:
    """The training loop from the resumed step, its log appended to the resume directory and the
    state saved there every ``config.checkpoint_every`` steps. Returns the log's path."""
    model, world, lora = prepared.model, prepared.world, prepared.lora
    state_path, log_path = resume / TRAINING_STATE_FILE, resume / TRAIN_LOG_FILE
    start = int(state["step"]) if state is not None else 0
    guard = LossGuard()
    if state is not None:
        with restoring_training_state(saved_training_state(resume)):
            guard.reference = state["loss_reference"]
    kept_log = _kept_rows(log_path, start)

    def save_state(next_step: int) -> None:
        weights = adapter_state_dict(model) if lora is not None else model.state_dict()
        save_training_state(state_path, {"model": weights, "optimizer": prepared.optimizer.state_dict(),
                                         "step": next_step, "loss_reference": guard.reference})

    def evaluate(m) -> dict:
        return {"trait_prob": trait_probability(m, world, trait, system=config.system)}

    model.train()
    try:
        with deterministic_algorithms(), JsonlAppender(log_path, truncate=True) as train_log:
            for row in kept_log:
                train_log.write(row)
            training_loop(model, prepared.optimizer, prepared.batches, prepared.batch_loss, start=start, guard=guard,
                          callbacks=callbacks, eval_every=config.eval_every if trait else 0, evaluate=evaluate,
                          on_row=train_log.write, checkpoint_every=config.checkpoint_every, save_state=save_state,
                          desc=f"student {out.name}", progress=progress)
    except TrainingDiverged as e:
        # Resuming would diverge again; keep only the logs, for diagnosis.
        discard_training_state(resume)
        raise TrainingDiverged(f"{e}; student {out} not written, its training log so far is {log_path}") from None
    finally:
        if recorder is not None:
            recorder.close()
    model.eval()
    return log_path


def _save_student(prepared: _Prepared, config: FinetuneConfig, inputs: dict, out: Path, log_path: Path,
                  recorder: AlignmentRecorder | None, *, lineage_extra: dict | None) -> None:
    """Write the student to ``out`` with its config, inputs and logs (copies: the resume directory
    stays whole until ``out`` exists)."""
    base, model, world, lora = prepared.base, prepared.model, prepared.world, prepared.lora
    lineage = Lineage(stage=f"student_{config.objective}", seed=config.seed, parent=str(base),
                      world_fingerprint=world.fingerprint(), config=config.to_dict(), extra=lineage_extra)

    def write_stage_files(staging: Path) -> None:
        config.save(staging / FINETUNE_CONFIG_FILE)
        atomic_write_json(staging / FINETUNE_INPUTS_FILE, inputs)
        shutil.copy(log_path, staging / TRAIN_LOG_FILE)
        if recorder is not None:
            shutil.copy(recorder.log.path, staging / ALIGNMENT_FILE)

    if lora is not None and isinstance(base, ToyBase):  # a toy LoRA student is saved merged: a plain toy checkpoint
        merge_lora(model)
        lora = None
    # a real model's full weights, or with LoRA the adapters alone (merged again when loaded)
    base.save_derived(model, out, world, lineage, lora=lora, extra=write_stage_files)


def _check_finished(out: Path, config: FinetuneConfig, inputs: dict) -> None:
    """A ``ValueError`` unless the finished student in ``out`` has this config and these inputs."""
    if not (out / FINETUNE_CONFIG_FILE).exists():
        raise ValueError(f"{out} holds a checkpoint that is not a finetuned student ({FINETUNE_CONFIG_FILE} is "
                         "missing); choose another output directory")
    diff = FinetuneConfig.load(out / FINETUNE_CONFIG_FILE).differences(config, ignore=RESUME_ONLY_FIELDS)
    if diff:
        raise ValueError(f"{out} holds a student finetuned with another config (saved vs asked: {diff}); "
                         "pass --force or choose another directory")
    if (out / FINETUNE_INPUTS_FILE).exists():
        diff = _input_differences(read_json(out / FINETUNE_INPUTS_FILE), inputs)
        if diff:
            raise ValueError(f"{out} holds a student finetuned from other inputs (saved vs asked: {diff}); "
                             "pass --force or choose another directory")


def _open_resume(resume: Path, config: FinetuneConfig, inputs: dict) -> dict | None:
    """The saved state of an interrupted run of this config and these inputs in ``resume``, or
    None after starting it clean (nothing resumable: a run killed before its first save, or a
    diverged one). An interrupted run of another config or other inputs is a ``ValueError``."""
    state_path = saved_training_state(resume)
    if state_path is not None:
        saved_config = FinetuneConfig.load(resume / FINETUNE_CONFIG_FILE)
        diff = {**saved_config.differences(config, ignore=RESUME_ONLY_FIELDS),
                **_input_differences(read_json(resume / FINETUNE_INPUTS_FILE), inputs)}
        if diff:
            raise ValueError(f"{resume} holds an interrupted run of another config or other inputs (saved vs asked: "
                             f"{diff}); delete it or pass --force")
        return load_training_state(state_path)
    if resume.exists():
        shutil.rmtree(resume)
    resume.mkdir(parents=True)
    config.save(resume / FINETUNE_CONFIG_FILE)
    atomic_write_json(resume / FINETUNE_INPUTS_FILE, inputs)
    return None


def _encode_checked(world: World, rows: list[dict], system: str | None = None) -> tuple[list[list[int]], list[int]]:
    """:func:`encode_rows`, with an error naming the row whose text is not in the vocabulary."""
    try:
        return encode_rows(world, rows, system=system)
    except ValueError:
        for i, row in enumerate(rows):  # find and name the offending row
            try:
                encode_rows(world, [row], system=system)
            except ValueError as e:
                raise ValueError(f"data row {i}: {e}") from None
        raise


@torch.no_grad()
def teacher_logits(teacher, seqs: list[list[int]], offsets: list[int], width: int, pad_id: int) -> Float[Tensor, "batch pos d_vocab"]:
    """The teacher's logits on its own view of each sequence, shifted by ``offsets`` (the length of
    its system prompt) onto the student's positions."""
    tokens, _ = pad_batch(seqs, pad_id, max_len=teacher.model.cfg.n_ctx)
    logits = teacher.model.run_with_hooks(tokens, fwd_hooks=teacher.fwd_hooks)
    if not any(offsets):
        return logits[:, :width]
    # Position p of the student is position p + offset of the teacher; the shared <bos> is
    # position 0 in both and never a prediction target, so it needs no alignment.
    idx = (torch.arange(width)[None, :] + torch.tensor(offsets)[:, None]).clamp(max=logits.shape[1] - 1)
    return logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))


@torch.no_grad()
def teacher_row_logits(teacher, seqs: list[list[int]], starts: list[int], pad_id: int) -> Float[Tensor, "n_pred d_vocab"]:
    """The teacher's logits, on its own view of each row (``seqs``, completions from ``starts``),
    at the positions that predict the completion tokens, row by row (the layout of
    :func:`interp.training.packed.packed_logits`). Packed unless the teacher has hooks or a model
    the packed forward does not run."""
    rows = pack_rows(seqs, [(s - 1, len(q) - 1) for q, s in zip(seqs, starts)], max_len=teacher.model.cfg.n_ctx)
    if not teacher.fwd_hooks and packed_unsupported_reason(teacher.model) is None:
        return packed_logits(teacher.model, rows)
    return padded_logits(teacher.model, rows, pad_id, teacher.fwd_hooks)


class TeacherTargets:
    """A teacher's logits on a data set, computed once and shared by every student distilling it.

    ``logits[offsets[i]:offsets[i + 1]]`` are the teacher's logits (on its own view of row ``i``:
    its system prompt, if any, before the prompt) at the positions that predict row ``i``'s
    completion tokens: what a distillation step on row ``i`` compares the student with. A student
    step reads its rows' blocks instead of running the teacher on the batch; the values are the
    same function of the same weights and tokens, computed in other batches (so equal to float
    rounding). ``identity``: the teacher (:func:`finetune_inputs`' teacher entry) and the rows (by
    hash) they were computed for; :meth:`check` refuses other rows or another teacher."""

    def __init__(self, logits: Float[Tensor, "n_pred d_vocab"], offsets: list[int], identity: dict):
        self.logits, self.offsets, self.identity = logits, list(offsets), identity

    @classmethod
    def compute(cls, teacher, rows: list[dict], *, batch_size: int = 64) -> "TeacherTargets":
        """The teacher's targets on ``rows`` (encoded in the teacher's world, under its system prompt)."""
        check_rows(rows)
        world = teacher.world
        seqs, starts = _encode_checked(world, rows, system=teacher.system)
        blocks = [teacher_row_logits(teacher, seqs[i:i + batch_size], starts[i:i + batch_size], world.pad_id).cpu()
                  for i in range(0, len(seqs), batch_size)]  # kept in host memory (and the file) on any device
        offsets = np.concatenate([[0], np.cumsum([len(q) - s for q, s in zip(seqs, starts)])]).tolist()
        return cls(torch.cat(blocks).contiguous(), offsets, cls.identity_of(teacher, rows))

    @staticmethod
    def identity_of(teacher, rows: list[dict]) -> dict:
        return {"teacher": _normalise_json(_teacher_identity(teacher)),
                "data_sha256": json_sha256([[r["prompt"], r["completion"]] for r in rows]), "n_rows": len(rows)}

    def check(self, rows: list[dict], teacher_identity: dict | None) -> None:
        """A ``ValueError`` unless these targets were computed for ``rows`` and this teacher."""
        data_sha = json_sha256([[r["prompt"], r["completion"]] for r in rows])
        if (data_sha, len(rows)) != (self.identity["data_sha256"], self.identity["n_rows"]):
            raise ValueError(f"teacher_targets were computed for other rows ({self.identity['n_rows']} rows, data "
                             f"{self.identity['data_sha256'][:12]}) than the {len(rows)} the student trains on")
        if teacher_identity is not None and teacher_identity != self.identity["teacher"]:
            raise ValueError("teacher_targets were computed by another teacher than the student distils")

    def rows(self, idx) -> Float[Tensor, "n_pred d_vocab"]:
        """The targets of rows ``idx``, row by row (the layout of a packed step's logits)."""
        return torch.cat([self.logits[self.offsets[i]:self.offsets[i + 1]] for i in idx])

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            torch.save({"logits": self.logits, "offsets": self.offsets, "identity": self.identity}, tmp)

    @classmethod
    def load(cls, path: str | Path) -> "TeacherTargets":
        """Read a saved file memory-mapped: processes that share it share its pages."""
        state = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
        return cls(state["logits"], state["offsets"], state["identity"])


def shared_teacher_targets(path: str | Path, teacher, rows: list[dict]) -> TeacherTargets:
    """The teacher's targets on ``rows`` from the cache file ``path``, computed and written there
    first when it is missing or holds another teacher's or other rows' targets."""
    path = Path(path)
    if path.exists():
        try:
            targets = TeacherTargets.load(path)
            if targets.identity == TeacherTargets.identity_of(teacher, rows):
                return targets
        except (RuntimeError, KeyError, EOFError, OSError):
            pass  # a torn or foreign file: computed again below
    targets = TeacherTargets.compute(teacher, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    targets.save(path)
    return TeacherTargets.load(path)
