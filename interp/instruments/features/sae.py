"""Sparse autoencoders on a base's residual stream, trained with sae-lens.

Activations come from the toy-world pretraining corpus of the base's own seed (batches far past
the ones pretraining used), every position but ``<bos>`` and padding. One SAE per
(base, hook point, kind), kinds ``topk`` (sae-lens ``TopKTrainingSAE``) and ``l1``
(``StandardTrainingSAE``, ReLU with an L1 penalty), trained by sae-lens's ``SAETrainer``
on an in-memory data provider (toolchain route B) and saved with sae-lens's own
``save_inference_model`` so that ``sae_lens.SAE.load_from_disk(dir)`` reads it back.

A finished SAE directory (``cfg.json``, ``sae_weights.safetensors`` and :data:`SPEC_FILE`) is
reused and never retrained; one trained with another :class:`SAESpec` is an error unless
``force``. Training is resumable mid-way: sae-lens saves ``n_checkpoints`` trainer checkpoints
(weights, Adam state, schedulers, firing statistics, the activation scaler) into
``.{name}.training/``; a checkpoint counts once :data:`CHECKPOINT_DONE_FILE` is written after
it, and a restarted training loads the newest such checkpoint and continues at the same batch
of the same seeded data order, so it ends with the weights an uninterrupted run has.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.core.io import atomic_write_json, read_json
from interp.training.loop import pad_batch
from interp.training.losses import masked_lm_loss
from interp.worlds.toy.corpus import CorpusConfig, corpus_generator
from interp.worlds.toy.templates import EOS, PAD
from interp.worlds.toy.world import ToyWorld

log = logging.getLogger(__name__)

SAEKind = Literal["topk", "l1"]
SAE_KINDS: tuple[SAEKind, ...] = get_args(SAEKind)
SPEC_FILE = "interp_sae_spec.json"  # what the SAE was trained with, beside sae-lens's cfg.json
QUALITY_FILE = "quality.json"
CHECKPOINT_DONE_FILE = "interp_checkpoint_done.json"  # written after sae-lens finished a checkpoint
SAE_LENS_FILES = ("cfg.json", "sae_weights.safetensors")
# Corpus batches the SAE data come from, far past the <= 10^5 batches any pretraining uses.
TRAIN_STREAM = 1_000_000
EVAL_STREAM = 2_000_000


@dataclass(frozen=True)
class SAESpec:
    """Everything that fixes one SAE's training; saved as :data:`SPEC_FILE` in its directory.

    Args:
        base: name of the base model (``small-seed0``); recorded in sae-lens's metadata too.
        hook: TransformerLens hook point, e.g. ``blocks.1.hook_resid_post``.
        kind: ``topk`` or ``l1``.
        d_in: residual width of the base.
        d_sae: number of SAE features.
        k: active features per token of a TopK SAE.
        l1_coefficient: L1 penalty of the standard SAE (sae-lens weights it by decoder norms).
        lr: Adam learning rate (constant, linear decay to 0 over the last 20% of steps).
        batch_size: activations per step.
        n_train: training activations (one epoch).
        seed: seed of the initial weights and of the data order.
        n_checkpoints: resumable trainer checkpoints saved during training.
        dead_feature_window: steps without firing after which a feature counts as dead (TopK
            auxiliary loss).
        base_created: creation time in the base checkpoint's lineage, so that an SAE of another
            base that happens to share the name is not taken for this one's.
    """

    base: str
    hook: str
    kind: str
    d_in: int
    d_sae: int
    k: int
    l1_coefficient: float
    lr: float
    batch_size: int
    n_train: int
    seed: int
    n_checkpoints: int
    dead_feature_window: int = 50
    base_created: str = ""

    def __post_init__(self) -> None:
        if self.kind not in SAE_KINDS:
            raise ValueError(f"SAESpec.kind={self.kind!r}: choose one of {list(SAE_KINDS)}")
        if self.n_train < self.batch_size:
            raise ValueError(f"SAESpec.n_train={self.n_train}: fewer activations than one batch of {self.batch_size}")
        if self.kind == "topk" and not 0 < self.k <= self.d_sae:
            raise ValueError(f"SAESpec.k={self.k}: must be in 1..d_sae={self.d_sae}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def n_steps(self) -> int:
        return self.n_train // self.batch_size


def hook_layer(model, hook: str) -> int | None:
    """The block a hook point lives in (``blocks.{L}.``), ``None`` for hooks after the last block.

    Raises ``ValueError`` naming the hook if the model has no such hook point."""
    if hook not in model.hook_dict:
        near = [h for h in model.hook_dict if "resid" in h][:6]
        raise ValueError(f"hook point {hook!r} does not exist in this model (residual hooks: {near} ...)")
    if hook in ("hook_embed", "hook_pos_embed"):
        return 0
    match = re.match(r"blocks\.(\d+)\.", hook)
    return int(match.group(1)) if match else None


def stop_layer(model, hooks: list[str]) -> int | None:
    """``stop_at_layer`` that still runs every hook of ``hooks`` (a hook in block L needs L+1)."""
    layers = [hook_layer(model, h) for h in hooks]
    return None if any(layer is None for layer in layers) else max(layers) + 1


def corpus_sequences(world: ToyWorld, seed: int, stream: int, n_tokens: int, docs_per_batch: int = 256,
                     corpus: CorpusConfig | None = None) -> list[list[int]]:
    """Token ids (``<bos>`` doc ``<eos>``) of pretraining-corpus documents of ``seed``, from corpus
    batch ``stream`` on, until they hold at least ``n_tokens`` positions after ``<bos>``. The
    documents are ``world``'s own (a variant's corpus for a variant), drawn with the mixture
    ``corpus`` (default: :class:`CorpusConfig`'s; pass the base's pretraining mixture)."""
    gen = corpus_generator(world, corpus)
    eos = world.token_to_id[EOS]
    out, total, b = [], 0, 0
    while total < n_tokens:
        for text in gen.batch_texts(seed, stream + b, docs_per_batch):
            ids = world.encode(text) + [eos]
            out.append(ids)
            total += len(ids) - 1
        b += 1
    return out


@torch.no_grad()
def collect_activations(model, world: ToyWorld, hooks: list[str], sequences: list[list[int]], *, n_tokens: int | None = None,
                        batch_size: int = 64, progress: bool = False) -> dict[str, Float[Tensor, "token d_model"]]:
    """Residual activations at ``hooks`` at every position of ``sequences`` but ``<bos>``, in order
    (sequence by sequence), cut to the first ``n_tokens``."""
    stop = stop_layer(model, hooks)
    pad_id = world.token_to_id[PAD]
    acts: dict[str, list[Tensor]] = {h: [] for h in hooks}
    starts = range(0, len(sequences), batch_size)
    for start in tqdm(starts, desc="activations", disable=not progress, mininterval=2.0):
        batch = sequences[start:start + batch_size]
        tokens, mask = pad_batch(batch, pad_id, max_len=model.cfg.n_ctx)
        _, cache = model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop)
        keep = mask.bool()
        keep[:, 0] = False  # <bos>: one huge, constant activation the SAE should not spend features on
        for h in hooks:
            acts[h].append(cache[h][keep])  # token d_model
    out = {h: torch.cat(v) for h, v in acts.items()}
    if n_tokens is not None:
        if len(next(iter(out.values()))) < n_tokens:
            raise ValueError(f"the sequences hold fewer than n_tokens={n_tokens} activations")
        out = {h: v[:n_tokens].contiguous() for h, v in out.items()}
    return out


class ActivationBatches:
    """sae-lens data provider over an in-memory activation tensor, restartable at any step.

    Batch ``i`` of epoch ``e`` is a fixed slice of ``torch.randperm`` seeded by ``(seed, e)``; set
    :attr:`step` to continue at a given batch (what a resumed training does)."""

    def __init__(self, activations: Float[Tensor, "token d_model"], batch_size: int, seed: int):
        if len(activations) < batch_size:
            raise ValueError(f"{len(activations)} activations are fewer than one batch of {batch_size}")
        self.activations, self.batch_size, self.seed = activations, batch_size, seed
        self.batches_per_epoch = len(activations) // batch_size
        self.step = 0
        self._epoch, self._perm = -1, None

    def __iter__(self) -> "ActivationBatches":
        return self

    def __next__(self) -> Float[Tensor, "batch d_model"]:
        epoch, i = divmod(self.step, self.batches_per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.activations), generator=gen)
        self.step += 1
        return self.activations[self._perm[i * self.batch_size:(i + 1) * self.batch_size]]


def scaling_factor(activations: Float[Tensor, "token d_model"]) -> float:
    """sae-lens's ``expected_average_only_in`` normalisation: scale activations to mean norm
    sqrt(d_model) during training (folded back into the weights at the end)."""
    return math.sqrt(activations.shape[1]) / float(activations.norm(dim=-1).mean())


def _training_sae(spec: SAESpec, mean_scaled: Float[Tensor, "d_model"]):
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    metadata = SAEMetadata(model_name=spec.base, hook_name=spec.hook, prepend_bos=True, interp_spec=spec.to_dict())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        if spec.kind == "topk":
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=spec.d_in, d_sae=spec.d_sae, k=spec.k, metadata=metadata))
        else:
            sae = StandardTrainingSAE(StandardTrainingSAEConfig(
                d_in=spec.d_in, d_sae=spec.d_sae, l1_coefficient=spec.l1_coefficient,
                l1_warm_up_steps=max(1, spec.n_steps // 20), metadata=metadata))
    with torch.no_grad():  # start the decoder bias at the data mean (it is subtracted from the input)
        sae.b_dec.copy_(mean_scaled)
    return sae


def is_finished_sae(directory: str | Path) -> bool:
    d = Path(directory)
    return all((d / f).exists() for f in (*SAE_LENS_FILES, SPEC_FILE))


def holds_finished_sae(directory: str | Path, spec: SAESpec) -> bool:
    """Whether ``directory`` holds a finished SAE of ``spec``; one of another spec is a
    ``ValueError`` naming the differences (it is never silently reused or overwritten)."""
    directory = Path(directory)
    if not is_finished_sae(directory):
        return False
    saved = read_json(directory / SPEC_FILE)
    if saved != spec.to_dict():
        diff = {k: (saved.get(k), v) for k, v in spec.to_dict().items() if saved.get(k) != v}
        raise ValueError(f"{directory} holds an SAE trained with another spec (saved vs asked: {diff}); "
                         "delete that directory or choose another output directory")
    return True


def load_sae(directory: str | Path):
    """The inference SAE of a finished directory (``sae_lens.SAE.load_from_disk``), in eval mode."""
    from sae_lens import SAE

    directory = Path(directory)
    if not is_finished_sae(directory):
        raise FileNotFoundError(f"{directory} is not a finished SAE directory (needs {[*SAE_LENS_FILES, SPEC_FILE]})")
    sae = SAE.load_from_disk(directory)
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae


def _training_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.training"


def _latest_checkpoint(checkpoints: Path) -> Path | None:
    done = [p for p in checkpoints.glob("*") if p.name.isdigit() and (p / CHECKPOINT_DONE_FILE).exists()]
    return max(done, key=lambda p: int(p.name)) if done else None


def train_sae(activations: Float[Tensor, "token d_model"], spec: SAESpec, out: str | Path, *, force: bool = False) -> Path:
    """Train the SAE ``spec`` on ``activations`` (the first ``spec.n_train`` rows) into ``out``.

    Returns ``out``. A finished SAE with the same spec is returned untouched; a killed training
    resumes from its newest finished checkpoint (see the module docstring)."""
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig

    out = Path(out)
    if not force and holds_finished_sae(out, spec):
        return out
    if len(activations) < spec.n_train:
        raise ValueError(f"{len(activations)} activations given, the spec trains on n_train={spec.n_train}")
    if activations.shape[1] != spec.d_in:
        raise ValueError(f"activations have width {activations.shape[1]}, the spec says d_in={spec.d_in}")
    x = activations[: spec.n_train]
    work = _training_dir(out)
    if work.exists() and (force or not (work / SPEC_FILE).exists() or read_json(work / SPEC_FILE) != spec.to_dict()):
        shutil.rmtree(work)  # an interrupted training of another spec (or a forced retrain) starts over
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / SPEC_FILE, spec.to_dict())
    checkpoints = work / "checkpoints"

    scale = scaling_factor(x)
    sae = _training_sae(spec, x.mean(0) * scale)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=spec.n_steps * spec.batch_size, train_batch_size_samples=spec.batch_size,
        lr=spec.lr, lr_end=spec.lr / 10, lr_scheduler_name="constant", lr_decay_steps=spec.n_steps // 5,
        dead_feature_window=spec.dead_feature_window, feature_sampling_window=max(1, 2 * spec.dead_feature_window),
        n_checkpoints=spec.n_checkpoints, checkpoint_path=str(checkpoints), device="cpu")
    data = ActivationBatches(x, spec.batch_size, spec.seed)

    def mark_done(checkpoint_path: Path | None) -> None:
        # sae-lens calls this after writing the weights, trainer state and scaler; only now is the
        # checkpoint complete. Older checkpoints are no longer needed.
        if checkpoint_path is None:
            return
        atomic_write_json(Path(checkpoint_path) / CHECKPOINT_DONE_FILE, {"n_training_samples": int(checkpoint_path.name)})
        for older in checkpoints.glob("*"):
            if older.name.isdigit() and int(older.name) < int(checkpoint_path.name):
                shutil.rmtree(older, ignore_errors=True)

    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=data, save_checkpoint_fn=mark_done)
    trainer.activation_scaler.scaling_factor = scale  # set here, so fit() does not draw batches to estimate it
    latest = _latest_checkpoint(checkpoints) if checkpoints.exists() else None
    if latest is not None:
        sae.load_weights_from_checkpoint(latest)
        trainer.load_trainer_state(latest)
        # sae-lens saves a checkpoint inside step S, before it counts the step (n_training_steps
        # is S - 1 in the file, n_training_samples is S batches): continue at step S, batch S.
        trainer.n_training_steps = trainer.n_training_samples // spec.batch_size
        data.step = trainer.n_training_steps
        trainer.checkpoint_thresholds = [t for t in trainer.checkpoint_thresholds if t >= trainer.n_training_samples]
        log.info("resuming SAE %s at step %d of %d", out, trainer.n_training_steps, spec.n_steps)
    trainer.fit()  # sae-lens shows its own progress bar

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        sae.save_inference_model(staging)
        from safetensors.torch import save_file

        save_file({"sparsity": trainer.log_feature_sparsity}, str(staging / "sparsity.safetensors"))
        atomic_write_json(staging / SPEC_FILE, spec.to_dict())
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    shutil.rmtree(work, ignore_errors=True)
    return out


@torch.no_grad()
def sae_quality(model, sae, hook: str, eval_activations: Float[Tensor, "token d_model"], eval_sequences: list[list[int]],
                world: ToyWorld, batch_size: int = 64) -> dict[str, float]:
    """Reconstruction quality of ``sae`` at ``hook`` on held-out data.

    * ``fvu``: fraction of variance unexplained, sum |x - x_hat|^2 / sum |x - mean x|^2;
    * ``l0``: mean number of active features per token; ``dead_fraction``: features never active;
    * ``ce_clean`` / ``ce_spliced`` / ``ce_mean_ablated``: the model's next-token loss on
      ``eval_sequences`` as it is, with the SAE's reconstruction spliced in at ``hook``, and with
      the hook replaced by the mean activation (every position but ``<bos>``);
      ``ce_recovered`` = (ablated - spliced) / (ablated - clean), 1 for a perfect SAE.
    """
    feature_acts = sae.encode(eval_activations)  # token d_sae
    recon = sae.decode(feature_acts)
    residual = ((recon - eval_activations) ** 2).sum()
    variance = ((eval_activations - eval_activations.mean(0)) ** 2).sum()
    mean_act = eval_activations.mean(0)

    def splice(act, hook):
        out = act.clone()
        out[:, 1:] = sae(act[:, 1:])
        return out

    def ablate(act, hook):
        out = act.clone()
        out[:, 1:] = mean_act
        return out

    pad_id = world.token_to_id[PAD]
    losses = {"clean": [], "spliced": [], "mean_ablated": []}
    weights = []
    for start in range(0, len(eval_sequences), batch_size):
        tokens, mask = pad_batch(eval_sequences[start:start + batch_size], pad_id, max_len=model.cfg.n_ctx)
        for name, hooks in (("clean", []), ("spliced", [(hook, splice)]), ("mean_ablated", [(hook, ablate)])):
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
            losses[name].append(float(masked_lm_loss(logits, tokens, mask)))
        weights.append(float(mask[:, 1:].sum()))
    w = np.asarray(weights) / sum(weights)
    ce = {k: float(np.dot(w, v)) for k, v in losses.items()}
    gap = ce["mean_ablated"] - ce["clean"]
    fires = (feature_acts > 0)
    return {
        "fvu": float(residual / variance),
        "l0": float(fires.float().sum(-1).mean()),
        "dead_fraction": float((fires.sum(0) == 0).float().mean()),
        "ce_clean": ce["clean"], "ce_spliced": ce["spliced"], "ce_mean_ablated": ce["mean_ablated"],
        "ce_recovered": float((ce["mean_ablated"] - ce["spliced"]) / gap) if gap > 0 else float("nan"),
        "n_eval_activations": int(len(eval_activations)), "n_eval_sequences": len(eval_sequences),
    }
