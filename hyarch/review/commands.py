"""``hyarch review RUN``: interactive in a terminal, one decision per call from scripts,
or ``--serve`` for optuna-dashboard.

    hyarch review runs/x                                    interactive (needs a terminal)
    hyarch review runs/x --candidate c0004                  show one candidate
    hyarch review runs/x --candidate c0004 --reject --note "fits by cheating with theta"
    hyarch review runs/x --note "try dissipation terms first"   a note on the whole search
    hyarch review runs/x --serve [--host H] [--port P]      the dashboard (127.0.0.1 default)
    hyarch review runs/x --sync                             copy dashboard answers back
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_USAGE = 0, 2


def _err(msg: str) -> int:
    print(f"hyarch: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_review(args) -> int:
    from rich.console import Console

    from hyarch.runs import Run

    run = Run(args.run)
    if not run.exists():
        return _err(f"{args.run}: not a hyarch run (no run.yaml)")
    console = Console()
    verdict = args.verdict
    if args.serve or args.sync:
        return _dashboard(run, args, console)

    from hyarch.review.terminal import (
        CandidateView,
        TerminalReview,
        interactive_stdin,
        leaderboard_table,
        record_review,
    )

    cid = args.candidate
    if cid is not None:
        try:
            run.read_candidate(cid)
        except KeyError as e:
            return _err(str(e.args[0]))
    if verdict or args.note:
        if verdict and cid is None:
            return _err("--approve/--reject/--pin need --candidate ID")
        entry = record_review(run, cid, verdict=verdict, note=args.note, source="cli")
        what = entry.get("verdict", "noted")
        console.print(f"{cid or 'run'}: {what}" + (f" ({entry['note']})" if "note" in entry
                                                     else "") + f" -> {run.reviews_path}")
        return EXIT_OK
    if not interactive_stdin():
        from hyarch.report.summary import leaderboard

        if cid is not None:
            CandidateView(run, console).show(cid, plot=not args.no_plots)
        else:
            console.print(leaderboard_table(leaderboard(run), limit=args.limit))
        console.print("[dim]stdin is not a terminal: decide with --candidate ID "
                      "--approve/--reject/--pin [--note TEXT][/]")
        return EXIT_OK
    TerminalReview(run, console, plots=not args.no_plots).loop(start=cid)
    return EXIT_OK


DASHBOARD_MISSING = ("--serve needs optuna-dashboard, which is not installed: "
                     "pip install 'optuna-dashboard>=0.15,<1'")


def _dashboard_missing(e: ModuleNotFoundError) -> bool:
    return bool(e.name) and e.name.split(".")[0] == "optuna_dashboard"


def _dashboard(run, args, console) -> int:
    import importlib.util

    # optuna_dashboard is imported lazily inside serve.py: check before starting anything
    if importlib.util.find_spec("optuna_dashboard") is None:
        return _err(DASHBOARD_MISSING)
    try:
        from hyarch.review.serve import NoStudy, import_answers, serve
    except ModuleNotFoundError as e:
        if _dashboard_missing(e):
            return _err(DASHBOARD_MISSING)
        raise
    try:
        if args.sync:
            added = import_answers(run)
            console.print(f"{len(added)} new review(s) from the dashboard -> {run.reviews_path}")
            return EXIT_OK
        serve(run, args.host, args.port, top=args.top, console=console)
    except NoStudy as e:
        return _err(str(e))
    except ModuleNotFoundError as e:
        if _dashboard_missing(e):
            return _err(DASHBOARD_MISSING)
        raise
    except OSError as e:
        return _err(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}"
                    " (try another --port)")
    return EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "review", help="review a run's candidates: approve, reject, pin, note (or --serve)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder (runs/<name>)")
    p.add_argument("--candidate", "-c", metavar="ID", help="the candidate to show or decide on")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--approve", dest="verdict", action="store_const", const="approved")
    g.add_argument("--reject", dest="verdict", action="store_const", const="rejected",
                   help="drop it from the pool; the next prompts show it as rejected")
    g.add_argument("--pin", dest="verdict", action="store_const", const="pinned",
                   help="keep it in the pool whatever its score")
    p.add_argument("--note", metavar="TEXT", help="free text; quoted in the next prompts")
    p.add_argument("--limit", type=int, default=25, help="leaderboard rows shown (default 25)")
    p.add_argument("--no-plots", action="store_true",
                   help="do not make fit plots (they need the run's data and weights)")
    s = p.add_argument_group("optuna-dashboard")
    s.add_argument("--serve", action="store_true",
                   help="serve the run's study in optuna-dashboard, with notes and forms")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--top", type=int, default=10,
                   help="the best N candidates get notes besides the reviewed ones")
    s.add_argument("--sync", action="store_true",
                   help="copy the dashboard's form answers into reviews.jsonl and exit")
    p.set_defaults(func=cmd_review, verdict=None)
