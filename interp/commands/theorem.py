"""``interp theorem``: check the paper's theorem (a small imitation step from a shared init points
toward the teacher) on the pretrained toy bases."""

from __future__ import annotations

import argparse

from interp.report.outputs import finish_theorem
from interp.report.theorem import theorem_markdown
from interp.studies.theorem import (
    BATCHES_FILE,
    PLOT_FILES,
    STEP_SIZE_FILE,
    THEOREM_FILE,
    THEOREM_MD_FILE,
    TheoremConfig,
    run_theorem,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "theorem", help="check the theorem: one small imitation step from the shared init points toward the teacher",
        description="From the shared base, one plain gradient step of distillation toward finetuned teachers on many "
        "independent batches of several input distributions (teacher numbers, base numbers, random token strings, "
        "animal questions): the fraction of steps with a positive inner product with teacher - base, with Wilson "
        "intervals; the same from a mismatched init; a learning-rate sweep for SGD and Adam; and many steps of SFT "
        f"on sampled text. Writes DIR/{THEOREM_FILE}, {THEOREM_MD_FILE}, {BATCHES_FILE}, {STEP_SIZE_FILE} and "
        f"{', '.join(PLOT_FILES.values())} and report.html. Bases come from --artifacts (pretrained there if missing).",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--artifacts", default="artifacts", help="where base checkpoints live (default: %(default)s)")
    p.add_argument("--config", default=None,
                   help="JSON file with TheoremConfig fields, e.g. experiments/configs/theorem.json (options given on the command "
                   "line win)")
    p.add_argument("--force", action="store_true", help="allow an output directory that holds a check of another config")
    TheoremConfig.add_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    values = TheoremConfig.load(args.config).to_dict() if args.config else {}
    if getattr(args, "quick", False):
        values.update(TheoremConfig.quick_defaults())
    names = set(TheoremConfig.__dataclass_fields__)
    values.update({k: v for k, v in vars(args).items() if k in names and k != "quick"})
    config = TheoremConfig.from_dict(values)
    results = run_theorem(config, args.out, artifacts=args.artifacts, force=args.force)
    finish_theorem(args.out)
    print(theorem_markdown(results))
    print(f"wrote {args.out}/{THEOREM_FILE}, {THEOREM_MD_FILE} and the figures ({results['wall_seconds'] / 60:.1f} min)")
    return 0
