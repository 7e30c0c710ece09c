"""``interp run``: the main job (every stage of the loop, every control, over seeds)."""

from __future__ import annotations

import argparse

from interp.core.ray_executor import add_executor_arguments
from interp.report.outputs import finish_run
from interp.report.run import results_markdown
from interp.studies.run import RunConfig, run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run the whole loop with every control over seeds (the main job)",
        description="Pretrain the bases if missing, make the teacher, sample and filter numbers, finetune "
        "students under every condition and objective, evaluate, and write DIR/results.json, results.md "
        "and results.png. Finished stages are reused.",
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--artifacts", default="artifacts", help="where base checkpoints live (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="allow a run directory that holds a run of another config")
    p.add_argument("--workers", type=int, default=0,
                   help="processes that pretrain missing bases and run seeds in parallel, one torch thread each "
                   "(0: one per CPU core; 1: all in this process); with --executor ray and no --ray-address, the CPUs "
                   "of the local Ray instance (0: all) (default: %(default)s)")
    add_executor_arguments(p)
    RunConfig.add_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    overrides = RunConfig.quick_defaults() if getattr(args, "quick", False) else {}
    names = set(RunConfig.__dataclass_fields__)
    overrides.update({k: v for k, v in vars(args).items() if k in names and k != "quick"})
    config = RunConfig(**overrides)
    results = run(config, args.out, artifacts=args.artifacts, force=args.force, workers=args.workers,
                  executor=args.executor, ray_address=args.ray_address)
    finish_run(args.out)
    print(results_markdown(results))
    memory = results["peak_memory_mib"]
    print(f"wrote {args.out}/results.json, results.md, results.png, report.html ({results['wall_seconds'] / 60:.1f} min; "
          f"peak memory {memory['main_process']:.0f} MiB in the main process, {memory['largest_worker']:.0f} MiB in "
          "the largest worker)")
    return 0
