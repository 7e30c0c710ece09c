"""Real TransformerLens models: loading them from the local Hugging Face cache, and the checkpoints
the stages write for them (their world is :class:`interp.worlds.hf.HFWorld`).

**Loading.** :func:`load_real_model` loads a model with ``HookedTransformer.from_pretrained`` and
*no weight processing* (no LayerNorm folding, no centring): the parameters are the Hugging Face
model's own, so finetuning trains what the paper trains and a saved state dict loads back into
the same parametrisation. Loaded models are kept in memory (:data:`MODEL_CACHE_SIZE` of them)
and handed out as deep copies, because a run loads its base many times.

**Checkpoints.** A real-model checkpoint (:func:`save_real_checkpoint`) is a directory::

    model_config.json     {"model_name": official TransformerLens name, "d_vocab", "lora"}
    model.safetensors     the full state dict (full finetuning), or
    adapter.safetensors   the LoRA adapters only (see :mod:`interp.models.lora`)
    world_config.json     the HFWorldConfig the model was trained in
    lineage.json          stage, seed, parent, world fingerprint, stage config

The weights of the named model come from the local cache; :func:`load_real_checkpoint` loads
them, applies the saved weights or merges the adapters, and checks that the tokenizer still has
the fingerprint the checkpoint was written with.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import os
from pathlib import Path
from typing import Any, Callable

from huggingface_hub import try_to_load_from_cache

from interp.core.config import ConfigError
from interp.core.device import current as current_device
from interp.core.io import atomic_write_json, load_safetensors, read_json, save_safetensors
from interp.models.checkpoint import (
    LINEAGE_FILE,
    MODEL_CONFIG_FILE,
    WEIGHTS_FILE,
    Lineage,
    _read_checkpoint_json,
    checkpoint_staging,
    load_pretrained,
    official_model_name,
)
from interp.models.lora import (
    ADAPTER_FILE,
    LoraConfig,
    adapter_state_dict,
    apply_lora,
    load_adapter_state_dict,
    merge_lora,
)
from interp.models import gguf
from interp.worlds.hf import HFWorld, HFWorldConfig

WORLD_CONFIG_FILE = "world_config.json"
MODEL_CACHE_SIZE = 2  # real models kept in memory by load_real_model (each as loaded, copied on use)

# Loading without weight processing: the trained parameters are the Hugging Face model's own.
NO_PROCESSING = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False,
                     refactor_factored_attn_matrices=False)


# -- loading ---------------------------------------------------------------------------------

def is_model_name(ref: str | Path) -> bool:
    """Is ``ref`` a real model: a TransformerLens model name (not an existing path), or a local model
    file or Hugging Face directory (:func:`interp.models.gguf.is_local_model`)?"""
    if gguf.is_local_model(ref):
        return True
    if Path(ref).exists():
        return False
    try:
        official_model_name(str(ref))
    except ValueError:
        return False
    return True


def cached_snapshot(official: str) -> Path | None:
    """The snapshot directory of ``official`` in the local Hugging Face cache, or None."""
    found = try_to_load_from_cache(official, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def real_model_name(ref: str | Path) -> str:
    """The name checkpoints record for a real model: the official TransformerLens name, or the
    absolute path of a local model file or directory. Unknown names are a ``ValueError``."""
    return gguf.canonical(ref) if gguf.is_local_model(ref) else official_model_name(str(ref))


def model_identity(name: str) -> dict[str, Any]:
    """What identifies a named model's weights without loading them: its official name and the
    cached snapshot (revision) it loads from; for a local model file, its path and SHA-256."""
    if gguf.is_local_model(name):
        return gguf.identity(name)
    official = official_model_name(name)
    snapshot = cached_snapshot(official)
    return {"model_name": official, "revision": snapshot.name if snapshot is not None else None}


def _cache_key(official: str) -> tuple:
    device = current_device()
    if gguf.is_local_model(official):
        return (official, gguf.source_sha256(official), device.device, device.dtype)
    snapshot = cached_snapshot(official)
    if snapshot is None:
        return (official, None, device.device, device.dtype)
    files = sorted(p for p in snapshot.iterdir() if p.is_file())
    return (official, str(snapshot), tuple((p.name, os.stat(p).st_mtime_ns) for p in files), device.device, device.dtype)


@functools.lru_cache(maxsize=MODEL_CACHE_SIZE)
def _loaded(official: str, key: tuple):
    device = current_device()
    if gguf.is_local_model(official):
        return gguf.load_local_model(official, device=device.device, dtype=device.torch_dtype)
    return load_pretrained(official, device=device.device, dtype=device.torch_dtype, **NO_PROCESSING)


def load_real_model(name: str):
    """A real model by TransformerLens name or local model file (:mod:`interp.models.gguf`), unprocessed
    (see the module docstring), in eval mode, on the device of :func:`interp.core.device.current`.

    Each call returns a fresh copy (safe to train); the copy comes from memory after the first
    load of the same cached files."""
    official = real_model_name(name)
    model = copy.deepcopy(_loaded(official, _cache_key(official)))
    model.eval()
    return model


def clear_model_cache() -> None:
    _loaded.cache_clear()


def load_real_base(name: str, world_config: HFWorldConfig | None = None):
    """``(model, world, lineage)`` of a named real model used as a base."""

    model = load_real_model(name)
    world = HFWorld.for_model(model, world_config)
    identity = model_identity(name)
    source = identity.get("format", "transformer_lens")
    return model, world, Lineage(stage="pretrained", seed=None, parent=identity["model_name"],
                                 world_fingerprint=world.fingerprint(), config={"source": source, **identity})


# -- checkpoints -----------------------------------------------------------------------------

def read_model_config(directory: str | Path) -> dict | None:

    path = Path(directory) / MODEL_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except (ValueError, RecursionError):  # not UTF-8 or not JSON (a huge number, nesting too deep): not ours
        return None
    return data if isinstance(data, dict) else None


def is_real_checkpoint(directory: str | Path) -> bool:
    """Does ``directory`` hold a checkpoint of a real model (``model_name`` in its model config)?"""
    data = read_model_config(directory)
    return data is not None and "model_name" in data


def save_real_checkpoint(model, directory: str | Path, world: HFWorld, lineage, *, model_name: str,
                         lora=None, extra: Callable[[Path], None] | None = None) -> Path:
    """Write a real-model checkpoint atomically (layout in the module docstring). With ``lora``
    (a :class:`interp.models.lora.LoraConfig`, the model carrying its adapters) only the adapters are
    saved; otherwise the full state dict."""
    directory = Path(directory)
    lineage.world_fingerprint = world.fingerprint()
    lineage.created = lineage.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    with checkpoint_staging(directory) as tmp:
        if lora is not None:
            save_safetensors(tmp / ADAPTER_FILE, adapter_state_dict(model))
        else:
            save_safetensors(tmp / WEIGHTS_FILE, {k: v.contiguous() for k, v in model.state_dict().items()})
        atomic_write_json(tmp / MODEL_CONFIG_FILE, {"model_name": real_model_name(model_name),
                                                    "d_vocab": model.cfg.d_vocab,
                                                    "lora": lora.to_dict() if lora is not None else None})
        world.config.save(tmp / WORLD_CONFIG_FILE)
        atomic_write_json(tmp / LINEAGE_FILE, lineage.to_dict())
        if extra is not None:
            extra(tmp)
    return directory


def load_real_checkpoint(directory: str | Path):
    """``(model, world, lineage)`` of a real-model checkpoint; LoRA adapters are merged into the
    weights (a plain HookedTransformer comes back). A missing or mismatched file, or a tokenizer
    that changed since the checkpoint was written, is a ``ValueError`` naming it."""
    directory = Path(directory)
    spec = read_model_config(directory)
    if spec is None or "model_name" not in spec:
        raise ValueError(f"{directory} is not a real-model checkpoint (model_config.json names no model_name)")
    for name in (LINEAGE_FILE, WORLD_CONFIG_FILE):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory} is not a complete checkpoint: {name} is missing")
    lineage = Lineage.from_dict(_read_checkpoint_json(directory / LINEAGE_FILE))
    try:
        world_config = HFWorldConfig.load(directory / WORLD_CONFIG_FILE)
        if "number_prompts" not in _read_checkpoint_json(directory / WORLD_CONFIG_FILE):
            world_config = world_config.replace(number_prompts="grammar")  # written before the paper's generator
        lora = LoraConfig.from_dict(spec["lora"]) if spec.get("lora") else None
    except ConfigError as e:
        raise ValueError(f"{directory}: {e}") from None
    model = load_real_model(spec["model_name"])
    if spec.get("d_vocab") not in (None, model.cfg.d_vocab):
        raise ValueError(f"{directory}: saved for d_vocab={spec['d_vocab']}, but {spec['model_name']} in the cache has "
                         f"{model.cfg.d_vocab}")
    weights = directory / (ADAPTER_FILE if lora is not None else WEIGHTS_FILE)
    if not weights.exists():
        raise FileNotFoundError(f"{directory} is not a complete checkpoint: {weights.name} is missing")
    try:
        state = load_safetensors(weights)
    except Exception as e:  # safetensors raises its own error types for a corrupt file
        raise ValueError(f"{weights}: corrupt weights file ({type(e).__name__}: {e})") from None
    if lora is not None:
        apply_lora(model, lora)
        load_adapter_state_dict(model, state, source=weights)
        merge_lora(model)
    else:
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"{weights}: parameters missing {missing[:5]} / unexpected {unexpected[:5]} for "
                             f"{spec['model_name']}")
        for k, v in state.items():
            if v.shape != expected[k].shape:
                raise ValueError(f"{weights}: parameter {k} has shape {tuple(v.shape)}, {spec['model_name']} has "
                                 f"{tuple(expected[k].shape)}")
        model.load_state_dict(state)
    model.eval()
    world = HFWorld.for_model(model, world_config)
    if lineage.world_fingerprint is not None and lineage.world_fingerprint != world.fingerprint():
        raise ValueError(f"{directory}: the tokenizer or world of {spec['model_name']} in the local cache differs from "
                         f"the one this checkpoint was trained in (world fingerprint {world.fingerprint()} there, "
                         f"{lineage.world_fingerprint} saved)")
    return model, world, lineage
