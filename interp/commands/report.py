"""``interp report DIR``: a self-contained HTML report and PNGs from a run directory."""

from __future__ import annotations

import argparse

from interp.report import make_report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="turn a run directory into a self-contained HTML report",
                       description="Write DIR/report.html (plots embedded, no network needed) and DIR/figures/*.png "
                       "from the results.json and logs that `interp run` wrote into DIR.")
    p.add_argument("run_dir", metavar="DIR", help="a directory written by `interp run`")
    p.set_defaults(func=lambda args: print(f"wrote {make_report(args.run_dir)}"))
