"""``interp results-table RUN_DIR``: the main result's table and figure in the README and the docs."""

from __future__ import annotations

import argparse
from pathlib import Path

from interp.report.main_result import (DEFAULT_DOCUMENTS, DEFAULT_FIGURE, DEFAULT_RESULTS_FILE, publish_main_result,
                                       stale_documents)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "results-table", help="write a finished run's main result (table, figure, small JSON) into the README and docs",
        description="Read RUN_DIR/results.json (a finished `interp run`), keep the fields the main table and figure "
        "need (plus the run's config and seeds) in a small results file, draw the figure from that file, and write the "
        "table between the `results-table` marker comments of each document. Run it from the repository root. With "
        "--check, write nothing: exit 1 when a document's table is not the one the results file renders.")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a finished `interp run` directory (not with --check)")
    p.add_argument("--objective", default="sft", help="which students the table shows (default: %(default)s)")
    p.add_argument("--results-file", type=Path, default=DEFAULT_RESULTS_FILE, help="the small results file (default: %(default)s)")
    p.add_argument("--figure", type=Path, default=DEFAULT_FIGURE, help="the figure (default: %(default)s)")
    p.add_argument("--document", type=Path, action="append", dest="documents",
                   help=f"a markdown file holding the markers (repeatable; default: {', '.join(map(str, DEFAULT_DOCUMENTS))})")
    p.add_argument("--check", action="store_true", help="only check that every document's table matches the results file")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    documents = tuple(args.documents or DEFAULT_DOCUMENTS)
    if args.check:
        if args.run_dir:
            raise ValueError("--check reads the results file, not a run directory: drop RUN_DIR")
        stale = stale_documents(results_file=args.results_file, figure=args.figure, documents=documents)
        for d in stale:
            print(f"{d}: its results table is not the one {args.results_file} renders; run `interp results-table RUN_DIR`")
        return 1 if stale else 0
    if not args.run_dir:
        raise ValueError("give RUN_DIR (a finished `interp run` directory), or --check")
    publish_main_result(args.run_dir, objective=args.objective, results_file=args.results_file, figure=args.figure,
                        documents=documents)
    print(f"wrote {args.results_file}, {args.figure} and the table in {', '.join(map(str, documents))}")
    return 0
