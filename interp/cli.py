"""The ``interp`` command: one subcommand per stage.

Each stage module exposes ``register(subparsers)``, which adds its subcommand and sets
``func`` on the parser to a callable taking the parsed ``argparse.Namespace``. To add a stage,
write the module and list it in ``STAGE_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from interp.core.device import add_device_arguments, use_arguments
from interp.training.loop import TrainingDiverged

# Modules providing subcommands, in the order ``interp --help`` lists them.
STAGE_MODULES: tuple[str, ...] = (
    "interp.commands.world",
    "interp.commands.pretrain",
    "interp.commands.teacher",
    "interp.commands.generate",
    "interp.commands.filter",
    "interp.commands.finetune",
    "interp.commands.evaluate",
    "interp.commands.audit",
    "interp.commands.run",
    "interp.commands.sweep",
    "interp.commands.report",
    "interp.commands.results_table",
    "interp.commands.mnist",
    "interp.commands.theorem",
    "interp.commands.bench",
    "interp.commands.features",
    "interp.commands.fetch_model",
)


# Stages that run a model: each takes --device and --dtype (interp.core.device).
MODEL_STAGES: tuple[str, ...] = ("pretrain", "teacher", "generate", "finetune", "evaluate", "run", "sweep",
                                 "theorem", "bench", "features")


def _quiet_known_warnings() -> None:
    warnings.filterwarnings("ignore", message=r".*HookedTransformer.*deprecated.*")
    warnings.filterwarnings("ignore", message=r".*TransformerBridge.*")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interp",
        description="Subliminal-learning experiments on TransformerLens models. Every stage reads "
        "and writes files and can run alone; a finished stage is not redone unless --force is given.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="STAGE", required=True)
    for name in STAGE_MODULES:
        importlib.import_module(name).register(sub)
    for name in MODEL_STAGES:
        add_device_arguments(sub.choices[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    # No weights can be downloaded at run time: real models come from the local Hugging Face
    # cache. Offline mode makes a missing model fail at once instead of after network retries;
    # export HF_HUB_OFFLINE=0 to allow downloads where a network exists.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet_known_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        use_arguments(args)
        result = args.func(args)
    except (ValueError, FileNotFoundError, KeyError, TrainingDiverged) as e:
        # Bad input or a diverged loss: a clear one-line error, no traceback. Finished artifacts
        # are left untouched.
        message = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"interp {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
