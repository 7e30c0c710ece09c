"""Training pieces shared by every training loop: batching, the optimizers and the learning-rate
schedule, a NaN/explosion guard, resumable training states and deterministic kernels (the
losses are in :mod:`interp.training.losses`, the step in :mod:`interp.training.step`)."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.core.io import save_safetensors

OptimizerName = Literal["adamw", "sgd", "signsgd"]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, *, side: Literal["right", "left"] = "right",
              max_len: int | None = None) -> tuple[Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
    """Pad token id lists to one tensor; returns ``(tokens, mask)`` with mask 1 on real tokens.

    Sequences longer than ``max_len`` raise: silently cutting a training sequence would change
    what the model learns."""
    length = max(len(s) for s in sequences)
    if max_len is not None and length > max_len:
        raise ValueError(f"a sequence of {length} tokens exceeds the model's n_ctx={max_len}")
    tokens = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length))
    for i, s in enumerate(sequences):
        if side == "right":
            tokens[i, : len(s)] = torch.as_tensor(s)
            mask[i, : len(s)] = 1
        else:
            tokens[i, length - len(s):] = torch.as_tensor(s)
            mask[i, length - len(s):] = 1
    return tokens, mask


class SignSGD(torch.optim.Optimizer):
    """Sign gradient descent: every parameter moves by ``lr * sign(grad)`` (plus decoupled
    weight decay). Like Adam with no moment averaging, it gives a tiny but consistent gradient
    a full-size step, which is why it is part of the optimizer ablation."""

    def __init__(self, params, lr: float = 1e-4, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(p.grad.sign(), alpha=-group["lr"])


def make_optimizer(params, name: OptimizerName, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "signsgd":
        return SignSGD(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, sgd or signsgd")


def lr_at(step: int, total: int, warmup: int, final_fraction: float = 0.1) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine decay to ``final_fraction``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf or exploded; the message names the step and the cause, ``loss`` is
    the loss that stopped training (when a :class:`LossGuard` raised it)."""

    def __init__(self, message: str, loss: float | None = None):
        super().__init__(message)
        self.loss = loss


@dataclass
class LossGuard:
    """Stops training on a NaN/inf loss or one that exceeds ``factor`` times the first loss.

    The reference has a floor of ``min_reference`` (1 nat): a KL loss that starts at ~0 (a
    student distilling its own initialization) is allowed to wander without being mistaken
    for an explosion."""

    factor: float = 50.0
    min_reference: float = 1.0
    _reference: float | None = None

    @property
    def reference(self) -> float | None:
        """The loss an explosion is measured against (``None`` before the first check); saved
        with a resumable training state so a resumed run judges explosions as before."""
        return self._reference

    @reference.setter
    def reference(self, value: float | None) -> None:
        self._reference = value

    def check(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss} at step {step}: training diverged (lower the learning rate?)", loss)
        if self._reference is None:
            self._reference = max(loss, self.min_reference)
        elif loss > self.factor * self._reference:
            raise TrainingDiverged(f"loss exploded to {loss:.4g} at step {step} (started near {self._reference:.4g}); "
                                   "lower the learning rate", loss)


def resume_dir(out: Path) -> Path:
    """The hidden directory beside ``out`` where an unfinished run keeps its resumable state and logs."""
    return out.parent / f".{out.name}.resume"


TRAINING_STATE_FILE = "state.safetensors"
"""A resumable training state in its resume directory: tensors in safetensors, the rest JSON."""
LEGACY_TRAINING_STATE_FILE = "state.pt"
"""Where earlier versions kept the state (a ``torch.save`` pickle); read with torch's weights-only loader."""
_STATE_METADATA_KEY = "interp_training_state"
_STATE_FORMAT = 1


def saved_training_state(resume: str | Path) -> Path | None:
    """The resumable state kept in the resume directory ``resume`` (:data:`TRAINING_STATE_FILE`,
    else an older :data:`LEGACY_TRAINING_STATE_FILE`), or None."""
    for name in (TRAINING_STATE_FILE, LEGACY_TRAINING_STATE_FILE):
        if (Path(resume) / name).is_file():
            return Path(resume) / name
    return None


def discard_training_state(resume: str | Path) -> None:
    """Remove the resumable state from ``resume`` (its logs stay)."""
    for name in (TRAINING_STATE_FILE, LEGACY_TRAINING_STATE_FILE):
        (Path(resume) / name).unlink(missing_ok=True)


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a resumable training state atomically: its tensors (model and optimizer state) as a
    safetensors file, everything else (step, hyperparameters, the structure of the nested dicts,
    lists and tuples) as JSON in that file's metadata. Nothing in it is code: reading it back
    (:func:`load_training_state`) never unpickles anything. An older ``state.pt`` beside it
    is removed once this one is written."""
    tensors: dict[str, Tensor] = {}
    storages: set[int] = set()
    structure = _encode_state(state, "", tensors, storages)
    metadata = {_STATE_METADATA_KEY: json.dumps({"format": _STATE_FORMAT, "state": structure})}
    save_safetensors(path, tensors, metadata=metadata)
    legacy = Path(path).with_name(LEGACY_TRAINING_STATE_FILE)
    if Path(path).name == TRAINING_STATE_FILE:
        legacy.unlink(missing_ok=True)


def _encode_state(obj: Any, where: str, tensors: dict[str, Tensor], storages: set[int]) -> Any:
    """``obj`` as JSON, each tensor replaced by ``{"tensor": name}`` (its name in ``tensors``, the
    path to it), a tuple by ``{"tuple": [...]}``, a dict by ``{"dict": [[key, value], ...]}`` (so
    integer keys of an optimizer state stay integers); every JSON object of the result is one of
    these three, so decoding is unambiguous."""
    if isinstance(obj, Tensor):
        name, n = where or "tensor", 1
        while name in tensors:
            name, n = f"{where}#{n}", n + 1
        tensor = obj.detach()
        storage = tensor.untyped_storage()
        if storage.nbytes() and storage.data_ptr() in storages:  # safetensors stores no views of one storage
            tensor = tensor.clone()
        elif storage.nbytes():
            storages.add(storage.data_ptr())
        tensors[name] = tensor
        return {"tensor": name}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [_encode_state(v, f"{where}.{i}" if where else str(i), tensors, storages) for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else {"tuple": items}
    if isinstance(obj, dict):
        pairs = []
        for k, v in obj.items():
            if not (k is None or isinstance(k, (bool, int, float, str))):
                raise TypeError(f"a training state key at {where or 'the top'} is a {type(k).__name__}; keys are "
                                "strings or numbers")
            pairs.append([k, _encode_state(v, f"{where}.{k}" if where else str(k), tensors, storages)])
        encoded: dict[str, Any] = {"dict": pairs}
        module_versions = getattr(obj, "_metadata", None)  # a state_dict's per-module versions
        if isinstance(module_versions, dict):
            encoded["module_versions"] = _encode_state(module_versions, f"{where}._metadata", tensors, storages)
        return encoded
    raise TypeError(f"a training state holds a {type(obj).__name__} at {where or 'the top'}; only tensors, "
                    "numbers, strings, None, lists, tuples and dicts are saved")


class _BadState(ValueError):
    pass


def _decode_state(obj: Any, tensors: Any, names: frozenset[str]) -> Any:
    """The inverse of :func:`_encode_state`; ``tensors`` is the open safetensors file, ``names``
    its tensor names. Anything else is a :class:`_BadState`."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [_decode_state(v, tensors, names) for v in obj]
    if isinstance(obj, dict):
        if set(obj) == {"tensor"} and isinstance(obj["tensor"], str):
            if obj["tensor"] not in names:
                raise _BadState(f"it names a tensor {obj['tensor']!r} it does not hold")
            return tensors.get_tensor(obj["tensor"])
        if set(obj) == {"tuple"} and isinstance(obj["tuple"], list):
            return tuple(_decode_state(v, tensors, names) for v in obj["tuple"])
        if set(obj) in ({"dict"}, {"dict", "module_versions"}) and isinstance(obj["dict"], list):
            out: dict = collections.OrderedDict()
            for pair in obj["dict"]:
                if not (isinstance(pair, list) and len(pair) == 2 and not isinstance(pair[0], (list, dict))):
                    raise _BadState(f"a dict entry is {pair!r:.80}, not a [key, value] pair")
                out[pair[0]] = _decode_state(pair[1], tensors, names)
            if "module_versions" in obj:
                versions = _decode_state(obj["module_versions"], tensors, names)
                if not isinstance(versions, dict):
                    raise _BadState("its module versions are not a dict")
                out._metadata = versions  # type: ignore[attr-defined]
            return out
    raise _BadState(f"unexpected entry {obj!r:.80}")


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_training_state`; nothing in the file is run.

    An older ``state.pt`` (a ``torch.save`` pickle) is read with ``torch.load(weights_only=True)``,
    which accepts tensors and plain containers and refuses any other object a pickle names
    (a pickle that would run code). A corrupt, foreign or refused file is a ``ValueError``
    naming it (delete its directory, or pass --force, to start over)."""
    path = Path(path)
    start_over = f"delete {path.parent} or pass --force to start over"
    if path.name == LEGACY_TRAINING_STATE_FILE or path.suffix == ".pt":
        return _load_legacy_state(path, start_over)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(_STATE_METADATA_KEY)
            if raw is None:
                raise _BadState("a safetensors file without interp's training-state metadata")
            try:
                saved = json.loads(raw)
            except (ValueError, RecursionError) as e:
                raise _BadState(f"its metadata is not valid JSON ({e})") from None
            if not isinstance(saved, dict) or saved.get("format") != _STATE_FORMAT:
                found = saved.get("format") if isinstance(saved, dict) else None
                raise _BadState(f"state format {found!r}, this version reads {_STATE_FORMAT}")
            state = _decode_state(saved.get("state"), f, frozenset(f.keys()))
    except _BadState as e:
        raise ValueError(f"{path}: corrupt resume state ({e}); {start_over}") from None
    except RecursionError:
        raise ValueError(f"{path}: corrupt resume state (nested too deeply); {start_over}") from None
    except Exception as e:  # safetensors raises its own error types for a file that is not safetensors
        raise ValueError(f"{path}: corrupt resume state, not a safetensors file ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}); {start_over}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: corrupt resume state (a {type(state).__name__}, not a dict); {start_over}")
    return dict(state)


def _load_legacy_state(path: Path, start_over: str) -> dict[str, Any]:
    """An older ``state.pt``, through torch's weights-only unpickler: tensors, numbers, strings and
    containers only, nothing run. Anything else it names is refused."""
    try:
        with warnings.catch_warnings():  # torch warns about a pickle protocol it may not read: refused below if so
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        # torch's message is several paragraphs of advice; keep what the pickle asked for.
        asked = re.search(r"Unsupported [^.]*?(?= was not an allowed| by default|\.|$)", " ".join(str(e).split()))
        what = asked.group(0) if asked else " ".join(str(e).split())[:200]
        raise ValueError(f"{path}: refused resume state, a pickle that asks for more than tensors and plain data "
                         f"({what[:200]}); interp never runs code from a file; {start_over}") from None
    except Exception as e:  # truncated, not a torch file, ...
        raise ValueError(f"{path}: corrupt resume state ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
                         f"{start_over}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: corrupt resume state (a {type(state).__name__}, not a dict); {start_over}")
    return state


@contextlib.contextmanager
def restoring_training_state(path: str | Path) -> Iterator[None]:
    """Wrap putting a loaded state back into the model and optimizer: a state that does not fit
    (a missing entry, another shape, another optimizer) is a one-line ``ValueError`` naming the file."""
    try:
        yield
    except (KeyError, IndexError, TypeError, RuntimeError, ValueError) as e:
        message = " ".join(str(e).split())[:300]
        raise ValueError(f"{path}: the resume state does not fit this run ({type(e).__name__}: {message}); delete "
                         f"{Path(path).parent} or pass --force to start over") from None


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Run the block with PyTorch's deterministic kernels, then restore the previous setting.

    Every training loop runs under it. A TransformerLens embedding is ``W_E[tokens]``, whose
    gradient is an accumulating ``index_put_``; on a CPU with several threads its default kernel
    adds the rows of repeated tokens in a thread-dependent order, so two runs of one config and
    seed end with weights that differ in the last bits (measured: the summed ``W_E`` of two
    identical 15-step finetunes of the default base on 2 threads differed at the 7th digit), and
    such differences grow over training. The deterministic kernel sorts the indices first.
    ``warn_only``: an operation without a deterministic kernel warns instead of failing."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
