"""``interp pretrain``: pretrain a toy-world base model (reused when already present)."""

from __future__ import annotations

import argparse
import json

from interp.stages.pretrain import DEFAULT_ARTIFACTS, PRETRAIN_SUMMARY_FILE, PretrainConfig, pretrain


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain a toy-world base model",
        description="Pretrain a base HookedTransformer on the toy-world corpus. The seed fixes the "
        "initialisation and the data order: the same seed is a shared initialization, another seed a "
        "mismatched one. Writes artifacts/bases/{arch}-seed{seed}/ unless --out is given; a finished "
        "base with the same config is reused, an interrupted one resumes.",
    )
    p.add_argument("--out", default=None, help="checkpoint directory (default: ARTIFACTS/bases/{arch}-seed{seed})")
    p.add_argument("--artifacts", default=str(DEFAULT_ARTIFACTS), help="artifacts root (default: %(default)s)")
    p.add_argument("--config", default=None, help="JSON file with PretrainConfig fields (options given on the command line win)")
    p.add_argument("--force", action="store_true", help="retrain even if a finished base exists")
    p.add_argument("--engine", choices=("packed", "padded"), default="packed",
                   help="training forward: packed (real tokens only; the default) or padded (the padded batch; the "
                   "same steps to float rounding)")
    PretrainConfig.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    base = PretrainConfig.load(args.config).to_dict() if args.config else {}
    names = set(PretrainConfig.__dataclass_fields__)
    base.update({k: v for k, v in vars(args).items() if k in names})
    config = PretrainConfig.from_dict(base)
    out = pretrain(config, args.out, artifacts=args.artifacts, force=args.force, engine=args.engine)
    summary = json.loads((out / PRETRAIN_SUMMARY_FILE).read_text())
    print(f"base: {out}")
    print(f"final loss {summary['final_loss']:.3f}; favourite animal (held-out phrasings): "
          + ", ".join(f"{a} {p:.3f}" for a, p in sorted(summary["animal_probs"].items(), key=lambda kv: -kv[1])))
    return 0
