"""``interp sweep``: run a grid of loop configurations and tabulate where transmission appears."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.core.ray_executor import add_executor_arguments
from interp.report.outputs import finish_run
from interp.studies.sweep import (cell_dir, load_sweep, run_sweep, sweep_index, sweep_index_text, sweep_objectives,
                                  sweep_report)

CONFIGS_DIR = "experiments/configs"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid of loop configurations (e.g. experiments/configs/sft_sweep.json)",
                       description="Run every cell of a SweepConfig JSON (RunConfig overrides) over seeds and write "
                       "OUT/sweep_results.json, sweep.md and sweep.png. Finished cells are reused. With --list, "
                       "print the shipped sweeps instead: each one's status, description and the figure it reproduces.")
    p.add_argument("--list", nargs="?", const=CONFIGS_DIR, default=None, metavar="DIR",
                   help=f"list the sweep configs in DIR (default: {CONFIGS_DIR}), current ones first, and exit")
    p.add_argument("--config", help="SweepConfig JSON, e.g. experiments/configs/sft_sweep.json")
    p.add_argument("--out", help="sweep directory")
    p.add_argument("--artifacts", default="artifacts", help="where base checkpoints live (default: %(default)s)")
    p.add_argument("--objective", default=None, help="objective the printed table reports (default: every objective "
                   "all cells ran; sweep.md always has them all)")
    p.add_argument("--force", action="store_true", help="allow a sweep directory that holds a sweep of another config")
    p.add_argument("--data-cache", default=None,
                   help="directory of teachers and generated data shared between sweeps (default: OUT/shared); "
                   "cells of any sweep using it reuse what matches their teacher and data settings")
    p.add_argument("--workers", type=int, default=0,
                   help="processes that run a cell's seeds in parallel, one torch thread each "
                   "(0: one per CPU core; 1: all in this process); with --executor ray and no --ray-address, the CPUs "
                   "of the local Ray instance (0: all), which runs the cells side by side (default: %(default)s)")
    add_executor_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.list is not None:
        if not Path(args.list).is_dir():
            raise ValueError(f"--list {args.list}: no such directory (run from the repository root, or name the "
                             "directory of sweep configs)")
        print(sweep_index_text(sweep_index(args.list)), end="")
        return 0
    missing = [flag for flag, value in (("--config", args.config), ("--out", args.out)) if value is None]
    if missing:
        raise ValueError(f"interp sweep needs {' and '.join(missing)} (or --list)")
    config = load_sweep(args.config)
    rows = run_sweep(config, Path(args.out), artifacts=args.artifacts, force=args.force,
                     workers=args.workers, data_cache=args.data_cache, executor=args.executor,
                     ray_address=args.ray_address)
    for i in range(len(config.cells)):  # every cell is a run directory: its results.md, results.png, report.html
        finish_run(cell_dir(args.out, i))
    print(sweep_report(rows, [args.objective] if args.objective else sweep_objectives(rows)))
    return 0
