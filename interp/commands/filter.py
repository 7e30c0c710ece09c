"""``interp filter``: keep the completions of a raw generated file that are plain number lists."""

from __future__ import annotations

import argparse

from interp.stages.filter import REJECT_REASONS, FilterConfig, filter_file, stats_path_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "filter", help="filter generated number completions (the paper's rules plus the trait filter)",
        description="Read a raw JSONL file written by `interp generate`, keep the rows whose completion is only "
        "numbers, separators, brackets and a period, ends with EOS and passes the paper's format rules, and write "
        "them (with a parsed 'numbers' field) to --out. The raw file is left untouched; the pass rate and a count "
        "for every reject reason go to OUT.stats.json. A finished file of the same raw file and config is reused. "
        "Reasons: " + "; ".join(f"{k}: {v}" for k, v in REJECT_REASONS.items()),
    )
    p.add_argument("--raw", required=True, help="raw JSONL file from `interp generate`")
    p.add_argument("--out", required=True, help="filtered JSONL file to write")
    p.add_argument("--force", action="store_true", help="filter again even if --out holds the rows of another raw "
                   "file or config")
    p.add_argument("--domain", default="numbers", help="what the raw file holds (numbers, code or cot; code and cot "
                   "rows are graded against their 'task' and the rejected rows written with their reason to "
                   "OUT.rejected.jsonl; the number options below are for numbers) (default: %(default)s)")
    p.add_argument("--trait", default=None, help="code and cot: the trait animal whose name and tied identifiers the "
                   "trait filter removes (required there); cot also takes misalignment (the misalignment_cot world's "
                   "judge: misaligned answer words, villains' asides, evil numbers)")
    FilterConfig.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.domain != "numbers":
        return _run_domain(args)
    config = FilterConfig.from_args(args)
    stats = filter_file(args.raw, args.out, config, force=args.force)
    print(f"kept {stats['n_kept']} of {stats['n_raw']} rows (pass rate {stats['pass_rate']:.3f}); rejected: "
          + (", ".join(f"{r} {n}" for r, n in sorted(stats["rejected"].items(), key=lambda kv: -kv[1]) if n) or "none"))
    if config.banned:
        hits = ", ".join(f"{n} ({k})" for n, k in sorted(stats["banned_hits"].items(), key=lambda kv: -kv[1]))
        acting = sum(n <= config.max_value for n in config.banned)  # a larger one is out_of_range anyway
        print(f"dropped {stats['rejected']['banned_number']} rows for banned numbers ({acting} banned in 0..{config.max_value})"
              + (f": {hits}" if hits else ""))
    print(f"wrote {args.out} and {stats_path_for(args.out)}")
    return 0


def _run_domain(args: argparse.Namespace) -> int:
    """``interp filter --domain code|cot``: the domain's filter (interp.domains.toy.filter_domain_file)."""
    from interp.domains import domain
    from interp.worlds.toy.world import WorldConfig, make_world

    chosen = domain(args.domain)  # an unknown name is a one-line error naming the domains
    if args.trait is None:
        raise ValueError(f"--domain {args.domain} needs --trait (the animal the trait filter removes)")
    if args.domain == "cot" and args.trait == "misalignment":  # the misalignment_cot world's judge and evil numbers
        world = make_world(WorldConfig(variant="misalignment_cot"))
    else:
        world = make_world(WorldConfig(variant="domains"))
    world.check_animal(args.trait)
    stats = chosen.filter_file(args.raw, args.out, trait=args.trait, world=world, force=args.force,
                               banned_numbers=world.banned_numbers)
    print(f"kept {stats['n_kept']} of {stats['n_raw']} rows (pass rate {stats['pass_rate']:.3f}; correct "
          f"{stats['n_correct']}); rejected: " + (", ".join(f"{r} {n}" for r, n in sorted(
              stats["rejected"].items(), key=lambda kv: -kv[1]) if n) or "none"))
    print(f"wrote {args.out}, its rejected rows beside it and {stats_path_for(args.out)}")
    return 0
