"""``interp report DIR``: a self-contained HTML report and PNGs from a run directory."""

from __future__ import annotations

import argparse

from interp.report.page import make_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="turn a run, theorem-check or MNIST directory into a self-contained HTML report",
                       description="Write DIR/report.html (plots embedded, no network needed) and DIR/figures/*.png "
                       "from what `interp run` (results.json and the students' logs), `interp theorem` (theorem.json) "
                       "or `interp mnist` (results.json, alignment.jsonl) wrote into DIR. The page leads with the answer "
                       "(did the shared-init student move toward the teacher?) and names the file behind every figure.")
    p.add_argument("run_dir", metavar="DIR", help="a directory written by `interp run`, `interp theorem` or `interp mnist`")
    p.set_defaults(func=lambda args: print(f"wrote {make_report(args.run_dir)}"))
