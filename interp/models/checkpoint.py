"""Building, saving and loading models: toy HookedTransformers and real TransformerLens models.

A *checkpoint* is a directory that carries everything needed to rebuild its model::

    model.safetensors        weights (state dict of the HookedTransformer)
    model_config.json        the architecture (:class:`ModelConfig` plus ``d_vocab``)
    tokenizer/               the word-level tokenizer of the toy world it was trained in
    lineage.json             stage, seed, parent checkpoint, world fingerprint, stage config

A checkpoint directory is written under a temporary name and renamed when complete, so a
directory with this layout is always a finished checkpoint.

A model named anywhere (a checkpoint directory, a teacher directory or a real model's name) is
parsed into a typed reference by :func:`interp.models.refs.parse_model_ref`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch

from interp.core.config import ConfigError, StageConfig, option
from interp.core.io import atomic_write_json, load_safetensors, read_json, save_safetensors, staged_directory
from interp.core.device import place
from interp.worlds.toy.world import load_tokenizer

WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "model_config.json"
LINEAGE_FILE = "lineage.json"
TOKENIZER_DIR = "tokenizer"
PRETRAIN_CONFIG_FILE = "pretrain_config.json"  # a toy base: the config `interp pretrain` wrote it with


@dataclass
class ModelConfig(StageConfig):
    """Architecture of a toy-world HookedTransformer (the vocabulary comes from the world)."""

    n_layers: int = option(2, "Number of transformer blocks.")
    d_model: int = option(128, "Width of the residual stream.")
    n_heads: int = option(4, "Attention heads per block; d_head = d_model / n_heads.")
    d_mlp: int = option(512, "Hidden width of each MLP.")
    n_ctx: int = option(96, "Maximum sequence length in tokens.")
    act_fn: Literal["gelu", "relu", "gelu_new", "silu"] = option("gelu", "MLP activation function.")
    normalization_type: Literal["LN", "RMS"] = option("LN", "Normalisation before attention, MLP and unembedding.")

    def validate(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "d_mlp", "n_ctx"):
            self.require(getattr(self, name) > 0, name, "must be positive")
        self.require(self.d_model % self.n_heads == 0, "n_heads", f"must divide d_model={self.d_model}")

    def hooked_config(self, d_vocab: int):
        from transformer_lens import HookedTransformerConfig

        return HookedTransformerConfig(
            n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads,
            d_head=self.d_model // self.n_heads, d_mlp=self.d_mlp, n_ctx=self.n_ctx,
            d_vocab=d_vocab, act_fn=self.act_fn, normalization_type=self.normalization_type,
            positional_embedding_type="standard", default_prepend_bos=True,
        )


@dataclass
class Lineage:
    """Where a model came from. Saved as ``lineage.json`` in every checkpoint."""

    stage: str
    seed: int | None
    parent: str | None
    world_fingerprint: str | None = None
    config: dict[str, Any] | None = None
    created: str = ""
    extra: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Lineage":
        return cls(**{k: d.get(k) for k in ("stage", "seed", "parent", "world_fingerprint", "config", "created", "extra")})


def _quiet_tl():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.filterwarnings("ignore", message=r".*HookedTransformer.*deprecated.*")
    warnings.filterwarnings("ignore", message=r".*TransformerBridge.*")
    return ctx


def build_model(config: ModelConfig, tokenizer, seed: int):
    """A freshly initialised HookedTransformer; ``seed`` alone fixes its initial weights.

    The global RNG state is left as it was."""
    from transformer_lens import HookedTransformer

    ctx = _quiet_tl()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = HookedTransformer(config.hooked_config(len(tokenizer)), tokenizer=tokenizer)
    finally:
        ctx.__exit__(None, None, None)
    model.eval()
    return place(model)  # --device / --dtype; unchanged under the default cpu/float32


def check_checkpoint_target(directory: str | Path) -> None:
    """Raise ``ValueError`` if ``directory`` exists and holds anything but a checkpoint.

    Writing a checkpoint replaces its directory; a stage calls this before it starts work so
    that an output path pointing at unrelated files is refused at once, not deleted later."""
    directory = Path(directory)
    if directory.is_file():
        raise ValueError(f"{directory} is a file; a checkpoint is written as a directory")
    is_adapter_checkpoint = (directory / "adapter.safetensors").exists() and (directory / MODEL_CONFIG_FILE).exists()
    if directory.is_dir() and not is_checkpoint(directory) and not is_adapter_checkpoint and any(directory.iterdir()):
        raise ValueError(f"{directory} exists and is not a checkpoint ({WEIGHTS_FILE} or {MODEL_CONFIG_FILE} is "
                         "missing); refusing to replace it: choose another output directory")


@contextlib.contextmanager
def checkpoint_staging(final: Path) -> Iterator[Path]:
    """:func:`interp.core.io.staged_directory` for a checkpoint, after :func:`check_checkpoint_target`."""
    check_checkpoint_target(final)
    with staged_directory(final) as tmp:
        yield tmp


def save_checkpoint(model, directory: str | Path, model_config: ModelConfig, lineage: Lineage, *,
                    extra: Callable[[Path], None] | None = None) -> Path:
    """Write a complete checkpoint directory atomically (see the module docstring).

    ``extra(staging_dir)`` may write more files (a stage's config, its logs) into the directory
    before it is renamed into place, so they appear together with the weights or not at all. An
    existing directory is replaced only if it is a checkpoint (:func:`check_checkpoint_target`)."""
    directory = Path(directory)
    lineage.created = lineage.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with checkpoint_staging(directory) as tmp:
        save_safetensors(tmp / WEIGHTS_FILE, dict(model.state_dict()))
        atomic_write_json(tmp / MODEL_CONFIG_FILE, {**model_config.to_dict(), "d_vocab": model.cfg.d_vocab})
        model.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        atomic_write_json(tmp / LINEAGE_FILE, lineage.to_dict())
        if extra is not None:
            extra(tmp)
    return directory


def is_checkpoint(path: str | Path) -> bool:
    p = Path(path)
    return (p / WEIGHTS_FILE).exists() and (p / MODEL_CONFIG_FILE).exists()


def load_checkpoint(directory: str | Path, *, expect_vocab: list[str] | None = None):
    """Rebuild a model from a checkpoint directory; returns ``(model, lineage)``.

    Raises ``ValueError`` naming the problem for a missing file, a corrupt weights file, a
    parameter whose shape does not match the config, or a vocabulary other than ``expect_vocab``.
    """
    directory = Path(directory)
    for name in (WEIGHTS_FILE, MODEL_CONFIG_FILE, LINEAGE_FILE):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory} is not a complete checkpoint: {name} is missing")
    raw = _read_checkpoint_json(directory / MODEL_CONFIG_FILE)
    d_vocab = raw.pop("d_vocab", None)
    try:
        config = ModelConfig.from_dict(raw)
    except ConfigError as e:
        raise ValueError(f"{directory / MODEL_CONFIG_FILE}: {e}") from None
    try:
        tokenizer = load_tokenizer(directory / TOKENIZER_DIR)
    except (OSError, ValueError) as e:  # tokenizers raises its own errors for a corrupt file
        raise ValueError(f"{directory / TOKENIZER_DIR}: corrupt or unreadable tokenizer ({e})") from None
    if d_vocab != len(tokenizer):
        raise ValueError(f"{directory}: config says d_vocab={d_vocab} but the tokenizer has {len(tokenizer)} tokens")
    if expect_vocab is not None:
        vocab = [tokenizer.convert_ids_to_tokens(i) for i in range(len(tokenizer))]
        if vocab != list(expect_vocab):
            first = next((i for i, (a, b) in enumerate(zip(vocab, expect_vocab)) if a != b), min(len(vocab), len(expect_vocab)))
            raise ValueError(f"{directory}: the checkpoint's vocabulary differs from this world's ({len(vocab)} vs "
                             f"{len(expect_vocab)} tokens; first difference at id {first}: "
                             f"{vocab[first] if first < len(vocab) else None!r} vs "
                             f"{expect_vocab[first] if first < len(expect_vocab) else None!r})")
    model = build_model(config, tokenizer, seed=0)
    state = load_safetensors(directory / WEIGHTS_FILE)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{directory / WEIGHTS_FILE}: parameters missing {missing[:5]} / unexpected {unexpected[:5]} for this config")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise ValueError(f"{directory / WEIGHTS_FILE}: parameter {k} has shape {tuple(v.shape)}, config expects {tuple(expected[k].shape)}")
    model.load_state_dict(state)
    model.eval()
    return model, Lineage.from_dict(_read_checkpoint_json(directory / LINEAGE_FILE))


def _read_checkpoint_json(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, a huge number, nesting too deep
        raise ValueError(f"{path}: corrupt checkpoint file, not valid JSON ({' '.join(str(e).split())[:200] or type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: corrupt checkpoint file, expected a JSON object")
    return data


def checkpoint_model_config(directory: str | Path) -> ModelConfig:
    raw = _read_checkpoint_json(Path(directory) / MODEL_CONFIG_FILE)
    raw.pop("d_vocab", None)
    return ModelConfig.from_dict(raw)


def official_model_name(name: str) -> str:
    """The TransformerLens name of a real model; an unknown name is a ``ValueError`` listing close matches."""
    import difflib

    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES, get_official_model_name

    try:
        return get_official_model_name(name)
    except ValueError:
        close = difflib.get_close_matches(name, OFFICIAL_MODEL_NAMES, n=5, cutoff=0.5)
        raise ValueError(f"unknown model {name!r}: neither a checkpoint directory nor a TransformerLens model name"
                         + (f"; did you mean one of {close}?" if close else "")) from None


def load_pretrained(name: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32, **kwargs: Any):
    """Load a real model through ``HookedTransformer.from_pretrained``.

    Works offline from a populated Hugging Face cache (``HF_HUB_OFFLINE=1``). An unknown name is a
    ``ValueError`` listing close matches; a known name with nothing in the cache is a
    ``FileNotFoundError`` that says where the cache is looked for."""
    from transformer_lens import HookedTransformer

    official = official_model_name(name)
    ctx = _quiet_tl()
    try:
        model = HookedTransformer.from_pretrained(official, device=device, dtype=dtype, **kwargs)
    except OSError as e:
        import os

        cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise FileNotFoundError(f"model {official!r} is not in the local Hugging Face cache ({cache}); "
                                f"no weights can be downloaded here ({e})") from None
    finally:
        ctx.__exit__(None, None, None)
    model.eval()
    return model


def lineage_of(directory: str | Path) -> Lineage:
    return Lineage.from_dict(json.loads((Path(directory) / LINEAGE_FILE).read_text()))
