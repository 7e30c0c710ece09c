"""``interp bench``: benchmarks of the hot paths, each a ratio against its obvious alternative."""

from __future__ import annotations

import argparse

from interp.bench.suite import BENCH_FILE, MARKDOWN_FILE, BenchConfig, run_bench, summary_lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark the sampler, student steps, SAE training, MNIST and whole runs",
        description="Measure, in one process and as ratios against the obvious alternative on the same model, "
        "prompts and batches: the sampler vs HookedTransformer.generate, a student step with vs without alignment "
        "recording, distillation vs SFT steps, SAE training on cached activations vs sae-lens's runner, batched vs "
        "looped MNIST models; and the wall time and peak memory of `interp run --quick` and of the default "
        f"`interp run`. Writes DIR/{BENCH_FILE} and DIR/{MARKDOWN_FILE}, and the table into --docs.",
    )
    p.add_argument("--out", required=True, help="bench directory (DIR/scratch is emptied and reused by every bench)")
    runs = p.add_mutually_exclusive_group()
    runs.add_argument("--skip-default-run", action="store_true",
                      help="do not run the default `interp run` (about 20+ minutes); --quick implies it")
    runs.add_argument("--default-run-dir", default=None,
                      help="take the default run's wall time from this finished run directory (its results.json) "
                      "instead of running it")
    p.add_argument("--update", action="store_true",
                   help="keep the rows of an existing DIR/bench.json for the benchmarks not run now (e.g. add "
                   "--only run_default --default-run-dir RUN to an earlier bench)")
    p.add_argument("--docs", default="docs/benchmarks.md",
                   help="markdown file whose generated table is rewritten (text outside its markers is kept); "
                   "'none' to leave docs alone (default: %(default)s)")
    BenchConfig.add_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    values = BenchConfig.quick_defaults() if getattr(args, "quick", False) else {}
    names = set(BenchConfig.__dataclass_fields__)
    values.update({k: v for k, v in vars(args).items() if k in names and k != "quick"})
    config = BenchConfig(**values)
    docs = None if args.docs.lower() == "none" else args.docs
    bench = run_bench(config, args.out, default_run_dir=args.default_run_dir, skip_default_run=args.skip_default_run,
                      docs=docs, update=args.update)
    print("\n".join(summary_lines(bench)))
    print(f"wrote {args.out}/{BENCH_FILE}, {args.out}/{MARKDOWN_FILE}" + (f" and {docs}" if docs else ""))
    return 1 if bench["failed"] else 0
