"""``hyarch report RUN [--out FILE] [--top N]``."""

from __future__ import annotations

import argparse
import sys


def cmd_report(args) -> int:
    from hyarch.report.html import build_report
    from hyarch.runs import Run

    run = Run(args.run)
    if not run.exists():
        print(f"hyarch: error: {args.run}: not a hyarch run (no run.yaml)", file=sys.stderr)
        return 2
    path = build_report(run, args.out, top=args.top)
    print(f"report written to {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="write a self-contained HTML report of a run (plots inline)")
    p.add_argument("run", help="run folder (runs/<name>)")
    p.add_argument("--out", default=None, help="output file (default: RUN/report.html)")
    p.add_argument("--top", type=int, default=3,
                   help="how many of the best candidates get trajectory plots (default 3)")
    p.set_defaults(func=cmd_report)
