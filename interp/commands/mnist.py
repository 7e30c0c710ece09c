"""``interp mnist``: the paper's MNIST auxiliary-logit experiment, batched over many models."""

from __future__ import annotations

import argparse

from interp.report.mnist import results_markdown
from interp.report.outputs import finish_mnist
from interp.studies.mnist.experiment import (
    ACCURACY_PLOT_FILE,
    ALIGNMENT_FILE,
    ALIGNMENT_PLOT_FILE,
    RESULTS_FILE,
    RESULTS_MD_FILE,
    MnistConfig,
    run_experiment,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mnist", help="the MNIST auxiliary-logit experiment (teacher, shared/cross-init students on noise)",
        description="Train many MLP teachers on digits through their 10 regular logits, distill each into "
        "students on uniform noise through the m auxiliary logits only or through all logits, from the "
        "teacher's own initialization or another one, and score the students on digits. Writes "
        f"DIR/{RESULTS_FILE}, {RESULTS_MD_FILE}, {ACCURACY_PLOT_FILE}, {ALIGNMENT_PLOT_FILE} and "
        f"{ALIGNMENT_FILE}. A finished run with the same config is not redone.",
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--force", action="store_true", help="redo a finished run, or overwrite a run of another config")
    MnistConfig.add_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    values = MnistConfig.quick_defaults() if getattr(args, "quick", False) else {}
    names = set(MnistConfig.__dataclass_fields__)
    values.update({k: v for k, v in vars(args).items() if k in names and k != "quick"})
    config = MnistConfig(**values)
    results = run_experiment(config, args.out, force=args.force)
    finish_mnist(args.out)
    print(results_markdown(results))
    print(f"wrote {args.out}/{RESULTS_FILE}, {RESULTS_MD_FILE}, {ACCURACY_PLOT_FILE}, {ALIGNMENT_PLOT_FILE}, {ALIGNMENT_FILE}")
    return 0
