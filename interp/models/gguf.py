"""Local model files as real models: a GGUF file (llama.cpp, Ollama, LM Studio) or a Hugging
Face-format directory, converted once into a HookedTransformer.

TransformerLens reads neither format. A *local model reference* is

* a file: it must be a GGUF file (``GGUF`` magic); transformers' GGUF support (the ``gguf``
  package) dequantizes its tensors to float32 and reads the tokenizer and chat template stored
  in it;
* a directory with a Hugging Face ``config.json`` and weights (``save_pretrained`` output).

Either is loaded as a transformers causal LM, its config is mapped to a
``HookedTransformerConfig`` by TransformerLens's own per-architecture conversion
(``convert_hf_model_config``) and its weights by TransformerLens's weight conversion, with no
weight processing (the parameters are the model's own, as :mod:`interp.models.real` loads named
models). The result is cached as a checkpoint keyed by the SHA-256 of the source
(:func:`converted_dir`)::

    CACHE/<sha256[:16]>/
        hooked_config.json   the HookedTransformerConfig (dtype and device left out)
        model.safetensors    the HookedTransformer state dict, float32 (``unembed.W_U`` left out
                             when it is the transpose of ``embed.W_E``: tied embeddings)
        tokenizer/           the tokenizer with its chat template (``save_pretrained``)
        source.json          the source file, its hash, architecture, library versions, time taken

so the slow conversion (about 20-30 s for SmolLM2-135M on one core) happens once per file; a
later load reads the checkpoint (a few seconds). ``CACHE`` is :data:`CACHE_ENV` or
``artifacts/models/converted`` under the working directory.

Architectures: the GGUF ``general.architecture`` must be one transformers can read *and*
TransformerLens can convert (:data:`ARCHITECTURES`). Llama (SmolLM2) is tested on real weights;
Qwen2 through a Hugging Face-format directory of a tiny random model; the others go through the
same code but were not run here. Gemma 3 has no config-driven conversion in TransformerLens (its
configs are written per official model), so a Gemma 3 file is matched to the official model of
the same shape (``google/gemma-3-270m``, ``google/gemma-3-1b-pt``) and refused otherwise.

Bad input (:class:`ValueError`, one line naming the file): not a GGUF file, a truncated or
corrupt file, an architecture outside :data:`ARCHITECTURES`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from interp.core.io import atomic_write_json, load_safetensors, read_json, save_safetensors, staged_directory

GGUF_MAGIC = b"GGUF"
CACHE_ENV = "INTERP_MODEL_CACHE"
DEFAULT_CACHE = Path("artifacts") / "models" / "converted"
CONVERSION_VERSION = 1  # bump when the layout or the conversion changes: old caches are not reused
HOOKED_CONFIG_FILE = "hooked_config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
SOURCE_FILE = "source.json"

# GGUF general.architecture -> the transformers class it becomes (TransformerLens converts each).
ARCHITECTURES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
}
HF_ARCHITECTURES = frozenset(ARCHITECTURES.values()) | {"GPT2LMHeadModel", "GPTNeoXForCausalLM"}
# Gemma 3: the official TransformerLens model of each (d_model, n_layers).
GEMMA3_BY_SHAPE = {(640, 18): "google/gemma-3-270m", (1152, 26): "google/gemma-3-1b-pt"}
NO_PROCESSING = dict(fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False,
                     refactor_factored_attn_matrices=False)


# -- what a reference is -----------------------------------------------------------------------

def is_local_model(ref: str | Path) -> bool:
    """Is ``ref`` a local model file or Hugging Face-format directory (not an ``interp`` checkpoint)?

    Any existing regular file counts (a file that is not GGUF is refused when loaded, with a
    message that says so); a directory counts when it has ``config.json`` but no
    ``model_config.json`` (which marks this project's checkpoints)."""
    path = Path(ref)
    if path.is_file():
        return True
    return path.is_dir() and (path / "config.json").is_file() and not (path / "model_config.json").exists()


def canonical(ref: str | Path) -> str:
    """The reference as checkpoints record it: the absolute path."""
    return str(Path(ref).resolve())


_HASHES: dict[tuple, str] = {}


def source_sha256(ref: str | Path) -> str:
    """SHA-256 of a GGUF file, or of a directory's files (names and contents, sorted by name).
    Remembered per (path, size, modification time) within the process."""
    path = Path(ref).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    key = (str(path), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if key not in _HASHES:
        digest = hashlib.sha256()
        for p in files:
            if path.is_dir():
                digest.update(str(p.relative_to(path)).encode() + b"\0")
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def identity(ref: str | Path) -> dict[str, Any]:
    """What identifies a local model's weights: its path and hash."""
    return {"model_name": canonical(ref), "sha256": source_sha256(ref),
            "format": "gguf" if Path(ref).is_file() else "huggingface"}


# -- reading a GGUF header ---------------------------------------------------------------------

def gguf_architecture(path: str | Path) -> str:
    """``general.architecture`` of a GGUF file; a file that is not GGUF, or is truncated or
    corrupt, is a ``ValueError`` naming it."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (it starts with {head!r}, a GGUF file with {GGUF_MAGIC!r}); "
                         "give a .gguf file, a Hugging Face model directory or a TransformerLens model name")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field = reader.fields.get("general.architecture")
        arch = field.contents() if field is not None else None
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as e:  # the reader raises assorted errors (struct, numpy, value) for a damaged file
        raise ValueError(f"{path}: corrupt or truncated GGUF file ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    if end > path.stat().st_size:
        raise ValueError(f"{path}: truncated GGUF file (its tensors end at byte {end}, the file has {path.stat().st_size})")
    if not arch:
        raise ValueError(f"{path}: corrupt GGUF file (no general.architecture in its metadata)")
    return str(arch)


def check_architecture(path: str | Path) -> str:
    """The transformers class of a GGUF file's architecture, or a ``ValueError`` naming it."""
    arch = gguf_architecture(path)
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: GGUF architecture {arch!r} is not supported (supported: {sorted(ARCHITECTURES)}: "
                         "those transformers can read from GGUF and TransformerLens can convert)")
    return ARCHITECTURES[arch]


# -- conversion --------------------------------------------------------------------------------

def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def converted_dir(ref: str | Path) -> Path:
    """Where the conversion of ``ref`` is (or will be) cached."""
    return cache_root() / source_sha256(ref)[:16]


def _load_hf(ref: Path):
    """(transformers model in float32, tokenizer) of a GGUF file or a Hugging Face directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Never the directory's own Python code (a config's auto_map): its weights and tokenizer are data.
    kwargs: dict[str, Any] = {"trust_remote_code": False}
    if ref.is_file():
        check_architecture(ref)
        kwargs["gguf_file"] = ref.name
        where = str(ref.parent)
    else:
        where = str(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, EOFError) as e:
        raise ValueError(f"{ref}: transformers could not load it ({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
    # A GGUF model is marked quantized: clear that, its weights are plain float32 tensors now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    model.eval()
    return model, tokenizer


def hooked_config_dict(hf_model, add_bos: bool) -> dict[str, Any]:
    """TransformerLens's config for a loaded transformers model, by TransformerLens's own
    per-architecture conversion (``convert_hf_model_config`` on a directory holding its config)."""
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    arch = type(hf_model).__name__
    if arch not in HF_ARCHITECTURES:
        raise ValueError(f"architecture {arch} has no TransformerLens conversion here (supported: {sorted(HF_ARCHITECTURES)})")
    hf = hf_model.config
    common = dict(fold_ln=False, device="cpu", dtype=torch.float32, default_prepend_bos=add_bos)
    if arch == "Gemma3ForCausalLM":
        shape = (hf.hidden_size, hf.num_hidden_layers)
        if shape not in GEMMA3_BY_SHAPE:
            raise ValueError(f"Gemma 3 with d_model={shape[0]}, n_layers={shape[1]} matches no official TransformerLens "
                             f"Gemma 3 model ({GEMMA3_BY_SHAPE}); TransformerLens has no config-driven Gemma 3 conversion")
        cfg = get_pretrained_model_config(GEMMA3_BY_SHAPE[shape], **common)
    else:
        # TransformerLens routes some models by substrings of the name it is given ("llama",
        # "gemma"): hand it a fresh directory whose path has none of them.
        tmp = Path(tempfile.mkdtemp(prefix="interp-hf-config-"))
        try:
            if any(word in str(tmp).lower() for word in ("llama", "gemma")):
                raise ValueError(f"temporary directory {tmp} would be taken for a model name; set TMPDIR elsewhere")
            hf.save_pretrained(tmp)
            cfg = get_pretrained_model_config(str(tmp), hf_cfg=hf.to_dict(), **common)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    out = cfg.to_dict()
    if out.get("d_vocab") != hf.vocab_size or out.get("n_layers") != hf.num_hidden_layers or out.get("d_model") != hf.hidden_size:
        raise ValueError(f"the TransformerLens config of {arch} does not match the model's (d_vocab {out.get('d_vocab')} "
                         f"vs {hf.vocab_size}, n_layers {out.get('n_layers')} vs {hf.num_hidden_layers})")
    out["model_name"] = arch
    return out


def _serializable(cfg: dict[str, Any]) -> dict[str, Any]:
    drop = {"dtype", "device", "tokenizer_name", "n_devices"}
    out = {}
    for k, v in cfg.items():
        if k in drop:
            continue
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def _add_bos(tokenizer, ref: Path) -> bool:
    """Whether plain text starts with BOS: the GGUF's ``tokenizer.ggml.add_bos_token`` (else the
    tokenizer's own behaviour on a short text)."""
    if ref.is_file():
        from gguf import GGUFReader

        field = GGUFReader(str(ref)).fields.get("tokenizer.ggml.add_bos_token")
        if field is not None:
            return bool(field.contents())
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def convert(ref: str | Path, *, progress: bool = True) -> Path:
    """Convert ``ref`` into a cached HookedTransformer checkpoint (once; later calls return it)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import get_pretrained_state_dict

    from interp.models.checkpoint import _quiet_tl

    ref = Path(ref).resolve()
    target = converted_dir(ref)
    if _is_converted(target):
        return target
    start = time.time()
    if progress:
        print(f"converting {ref} into a HookedTransformer (once; cached in {target})", flush=True)
    hf_model, tokenizer = _load_hf(ref)
    add_bos = _add_bos(tokenizer, ref)
    cfg_dict = hooked_config_dict(hf_model, add_bos)
    ctx = _quiet_tl()
    try:
        cfg = HookedTransformerConfig.from_dict({**cfg_dict, "device": "cpu", "dtype": torch.float32})
        state = get_pretrained_state_dict(str(ref), cfg, hf_model=hf_model, dtype=torch.float32)
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False, default_padding_side="right")
        model.load_and_process_state_dict(state, **NO_PROCESSING)
    finally:
        ctx.__exit__(None, None, None)
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    tied = "unembed.W_U" in weights and torch.equal(weights["unembed.W_U"], weights["embed.W_E"].T)
    if tied:
        del weights["unembed.W_U"]
    from importlib.metadata import version

    cache_root().mkdir(parents=True, exist_ok=True)
    if target.exists() and (target / SOURCE_FILE).exists():  # a conversion of an older layout
        shutil.rmtree(target)
    with staged_directory(target) as tmp:
        save_safetensors(tmp / WEIGHTS_FILE, weights)
        atomic_write_json(tmp / HOOKED_CONFIG_FILE, _serializable(cfg_dict))
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        atomic_write_json(tmp / SOURCE_FILE, {
            **identity(ref), "architecture": type(hf_model).__name__, "tied_unembed": tied, "add_bos": add_bos,
            "conversion_version": CONVERSION_VERSION, "transformers": version("transformers"),
            "transformer_lens": version("transformer-lens"), "seconds": round(time.time() - start, 1),
            "n_parameters_hf": sum(p.numel() for p in hf_model.parameters())})
    return target


def _is_converted(directory: Path) -> bool:
    if not (directory / SOURCE_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        return False
    try:
        return read_json(directory / SOURCE_FILE).get("conversion_version") == CONVERSION_VERSION
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def load_converted(directory: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The HookedTransformer of a converted checkpoint (:func:`convert`), in eval mode."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    from interp.models.checkpoint import _quiet_tl

    directory = Path(directory)
    source = read_json(directory / SOURCE_FILE)
    cfg_dict = read_json(directory / HOOKED_CONFIG_FILE)
    tokenizer = AutoTokenizer.from_pretrained(str(directory / TOKENIZER_DIR))
    state = load_safetensors(directory / WEIGHTS_FILE)
    if source.get("tied_unembed"):
        state["unembed.W_U"] = state["embed.W_E"].T.contiguous()
    ctx = _quiet_tl()
    try:
        cfg = HookedTransformerConfig.from_dict({**cfg_dict, "init_weights": False, "device": device, "dtype": dtype})
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False, default_padding_side="right")
    finally:
        ctx.__exit__(None, None, None)
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    model.to(device)
    model.eval()
    return model


def load_local_model(ref: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32, progress: bool = True):
    """A GGUF file or Hugging Face directory as a HookedTransformer (converted once, then cached)."""
    return load_converted(convert(ref, progress=progress), device=device, dtype=dtype)
