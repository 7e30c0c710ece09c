"""Where models run: ``--device`` (cpu, cuda) and ``--dtype`` (float32, bfloat16).

Every stage that runs a model takes both options (:func:`add_device_arguments`); the command
sets them for the process (:func:`use`) and the loaders put each model there
(:func:`place`): real models (named, GGUF, Hugging Face directories) and toy checkpoints alike.
The default is the CPU in float32, under which nothing changes: :func:`place` returns the model
as it is.

Only the CPU was tested (float32, and bfloat16 as a smoke test). On ``cuda`` the models and the
stages' input tensors follow the model's device where the stages build them from the model
(``model.cfg.device``); a run on a GPU has not been made here. Asking for ``cuda`` without one is a
``ValueError`` at once.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import torch

from interp.core.config import StageConfig, option

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class DeviceConfig(StageConfig):
    """Where a stage's models run."""

    device: Literal["cpu", "cuda"] = option("cpu", "Device of every model a stage runs (cpu or cuda).")
    dtype: Literal["float32", "bfloat16"] = option("float32", "Parameter dtype of every model a stage runs. float32 "
                                                   "is the default and what every measurement here used.")

    def validate(self) -> None:
        self.require(self.device in ("cpu", "cuda"), "device", "choose cpu or cuda")
        self.require(self.dtype in DTYPES, "dtype", f"choose one of {sorted(DTYPES)}")
        if self.device == "cuda":
            self.require(torch.cuda.is_available(), "device", "cuda was asked for, but torch sees no CUDA device "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def is_default(self) -> bool:
        return self.device == "cpu" and self.dtype == "float32"


_CURRENT = DeviceConfig()


def current() -> DeviceConfig:
    """The device and dtype models are placed on in this process."""
    return _CURRENT


def use(config: DeviceConfig) -> None:
    """Place the models of this process on ``config`` from now on."""
    global _CURRENT
    _CURRENT = config


def place(model):
    """``model`` on the current device and dtype (unchanged under the default cpu/float32)."""
    config = current()
    if config.is_default:
        return model
    model.cfg.device = config.device
    model.cfg.dtype = config.torch_dtype
    return model.to(device=config.device, dtype=config.torch_dtype)


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="device of every model this stage runs (default: %(default)s)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32",
                        help="parameter dtype of every model this stage runs (default: %(default)s)")


def use_arguments(args: argparse.Namespace) -> None:
    """Apply ``--device`` / ``--dtype`` of a parsed command line (a no-op where it has neither)."""
    if hasattr(args, "device") and hasattr(args, "dtype"):
        use(DeviceConfig(device=args.device, dtype=args.dtype))
