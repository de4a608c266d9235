"""CLI: ``hyarch search``, ``hyarch leaderboard``, ``hyarch show``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("search", help="search for hybrid models of a space")
    p.add_argument("space", help="search space: a YAML path or a built-in name")
    p.add_argument("--llm", metavar="MODEL", help="LLM model name (OpenAI-compatible API)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (or OPENAI_BASE_URL)")
    _llm_options(p)
    p.add_argument("--budget", type=int, help="number of candidates (default: the space's)")
    p.add_argument("--minutes", type=float, help="stop after this many minutes")
    p.add_argument("--tokens", type=int, help="stop after this many LLM tokens")
    p.add_argument("--cost", type=float, help="stop after this LLM cost (USD)")
    p.add_argument("--per-round", type=int, help="candidates proposed per round")
    p.add_argument("--workers", type=int, default=1, help="evaluations at once (default 1)")
    p.add_argument("--storage", help="Optuna storage URL (default: journal file in the run)")
    p.add_argument("--run", help="run folder name or path (default: runs/<space>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run")
    p.add_argument("--review-every", type=int, metavar="N", help="pause for review every N rounds")
    p.add_argument("--device", help="torch device (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the offline proposer's sampler (default 0)")
    p.add_argument("--timeout", type=float, help="seconds per candidate evaluation")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads per evaluation (default 1: --workers K uses K cores)")
    p.add_argument("--quick", action="store_true",
                   help="shorter training per candidate (a smoke test, not a result)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("worker", help="one more worker on a shared search")
    p.add_argument("--storage", help="Optuna storage URL shared by the workers (PostgreSQL);"
                   " default: the run folder's journal file (workers on this machine)")
    p.add_argument("--run", required=True, help="run name or folder (the same for every worker)")
    p.add_argument("--space", help="search space (default: the one the run/study records)")
    p.add_argument("--workers", type=int, default=1, help="evaluations at once in this worker")
    p.add_argument("--device", help="torch device")
    p.add_argument("--llm", metavar="MODEL", help="LLM model name (OpenAI-compatible API)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint (or OPENAI_BASE_URL)")
    _llm_options(p)
    p.add_argument("--seed", type=int, default=None, help="default: derived from the process id")
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("leaderboard", help="rank a run's candidates")
    p.add_argument("run", help="run folder")
    p.add_argument("--json", action="store_true", help="print the leaderboard as JSON")
    p.add_argument("--top", type=int, default=None, metavar="N",
                   help="show only the N best candidates")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("show", help="show a run, or one candidate of it")
    p.add_argument("run", help="run folder")
    p.add_argument("id", nargs="?", help="candidate id (default: the best)")
    p.add_argument("--json", action="store_true",
                   help="print the candidate's record (code, result, metadata) as JSON")
    p.add_argument("--identifiability", action="store_true",
                   help="profile each physical parameter and retrain with other closure"
                        " capacities (minutes); saved to identifiability.json")
    p.set_defaults(func=cmd_show)


def _llm_options(p) -> None:
    p.add_argument("--llm-timeout", type=float, metavar="S",
                   help="seconds for one LLM reply, first byte to last (default: the space's"
                        " llm.timeout, 120)")
    p.add_argument("--max-tokens", type=int, metavar="N",
                   help="most tokens in one LLM reply (default: the space's llm.max_tokens,"
                        " 2048: a candidate file and a few sentences)")
    p.add_argument("--temperature", type=float,
                   help="LLM sampling temperature (default: the space's llm.temperature, 0.7)")
    p.add_argument("--llm-format", choices=("code", "structured"),
                   help="code: the LLM writes each candidate file (strong models);"
                        " structured: it fills a JSON form of terms, new terms and closures"
                        " that hyarch renders (small local models; default: the space's"
                        " llm.format, code)")


def _run_path(name: str | None, space: str) -> Path:
    if name and ("/" in name or Path(name).exists()):
        return Path(name)
    stem = Path(space).stem
    return Path("runs") / (name or f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def cmd_search(args) -> int:
    from rich.console import Console

    from hyarch.agent.loop import SearchConfig, SearchError, Session, install_sigterm_as_interrupt
    from hyarch.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, resolve_device
    from hyarch.spaces.errors import SpaceError

    console = Console(stderr=False)
    if args.resume and not args.run:
        print("hyarch: error: --resume needs --run NAME (the run to continue)", file=sys.stderr)
        return EXIT_USAGE
    overrides = QUICK if args.quick else {}
    cfg = SearchConfig(
        space=args.space, run_dir=_run_path(args.run, args.space), budget=args.budget,
        minutes=args.minutes, tokens=args.tokens, cost=args.cost, per_round=args.per_round,
        workers=args.workers, resume=args.resume, review_every=args.review_every,
        device=resolve_device(args.device), llm=args.llm, base_url=args.base_url,
        llm_timeout=args.llm_timeout, max_tokens=args.max_tokens, temperature=args.temperature,
        llm_format=args.llm_format, storage=args.storage, seed=args.seed, timeout=args.timeout,
        threads=args.threads, overrides=overrides,
    )
    review = None
    if args.review_every:
        try:
            from hyarch.review.terminal import review_session

            def review(run):
                review_session(run, console=console)
        except ImportError:
            console.print("[yellow]review is not available in this build[/]")
    session = Session(cfg, progress=_plain(console), review=review)
    install_sigterm_as_interrupt()
    from hyarch.agent.llm import LLMConfigError

    try:
        summary = session.run_search()
    except (SearchError, SpaceError, LLMConfigError) as e:
        print(f"hyarch: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    proposer = session.proposer.name if session.proposer else "?"
    if proposer == "offline":
        console.print("[dim]no LLM configured: used the offline structural search[/]")
    console.print(f"[bold]search stopped[/]: {summary.stopped}; {summary.candidates} candidates"
                  f" finished ({summary.ok} ok, {summary.failed} failed) in"
                  f" {summary.seconds:.0f} s; run folder {summary.run_dir}", highlight=False)
    if summary.interrupted:
        flight = ", ".join(summary.in_flight) if summary.in_flight else "nothing"
        console.print(f"in flight when interrupted: {flight}"
                      + (" (stopped; evaluated again by"
                         f" hyarch search --run {summary.run_dir} --resume)"
                         if summary.in_flight else ""), markup=False, highlight=False)
    elif summary.pending:
        console.print(f"{summary.pending} candidate(s) left unfinished (evaluated again with"
                      " --resume)", markup=False, highlight=False)
    if summary.error:
        print(f"hyarch: error: {summary.error}; nothing was lost: once it is fixed, continue"
              f" with hyarch search --run {summary.run_dir} --resume", file=sys.stderr)
    try:
        _print_leaderboard(summary.run_dir, wide_console(), top=5)
    except KeyboardInterrupt:
        pass
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.error:
        return EXIT_FAILED
    return EXIT_OK if summary.ok else EXIT_FAILED


def _print_leaderboard(run_dir, console, top=None) -> None:
    from rich.table import Table
    from rich.text import Text

    from hyarch.ranking.leaderboard import leaderboard
    from hyarch.runs import load_run

    rows = leaderboard(load_run(run_dir))
    t = Table(title=f"leaderboard of {run_dir}",
              caption="score: mean log10 validation nMSE over trajectories; tier: candidates"
                      " within one standard error of a tier's best share it, simplest first")
    for col in ("#", "id", "status", "score", "tier", "fitted", "closure share", "parameters",
                "proposer", "pareto", "verdict"):
        t.add_column(col)
    for i, row in enumerate(rows[:top] if top else rows, start=1):
        evaluation = row.evaluation
        params = ", ".join(f"{k}={v:.4g}" for k, v in evaluation.parameters if v is not None)
        if not evaluation.ok:
            params = (evaluation.reason or "")[:60]
        ev = row.evidence
        tier = ev.describe() if ev is not None and ev.group != "ranked" else (
            str(ev.tier) if ev is not None else "-")
        share = evaluation.closure_share
        t.add_row(str(i), row.id, evaluation.status.value,
                  "-" if row.score is None else f"{row.score:.2f}",
                  tier, "-" if ev is None else str(ev.complexity),
                  "-" if share is None else f"{share:.3f}",
                  Text(params), Text(str(row.record.proposer)),  # untrusted text: no markup
                  "*" if row.pareto else "", row.verdict or "")
    console.print(t)


def wide_console():
    """A console for tables: the terminal's width, or when piped, room for every column
    (rich would cut a pipe at 80 columns)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=240)


def _plain(console):
    """Progress lines carry candidates' reasons and expressions: print them as plain text."""
    return lambda msg: console.print(msg, markup=False, highlight=False)


QUICK = {"stage_iters": 100, "final_iters": 300, "patience": 60, "restarts": 2}


def cmd_worker(args) -> int:
    import os

    from rich.console import Console

    from hyarch.agent.loop import SearchConfig, SearchError, Session, install_sigterm_as_interrupt
    from hyarch.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, resolve_device
    from hyarch.spaces.errors import SpaceError

    console = Console()
    cfg = SearchConfig(
        space=args.space, run_dir=_run_path(args.run, args.space or "run"), join=True,
        workers=args.workers, device=resolve_device(args.device), llm=args.llm,
        base_url=args.base_url, storage=args.storage, llm_timeout=args.llm_timeout,
        max_tokens=args.max_tokens, temperature=args.temperature, llm_format=args.llm_format,
        seed=args.seed if args.seed is not None else os.getpid(),
        overrides=QUICK if args.quick else {},
    )
    install_sigterm_as_interrupt()
    try:
        summary = Session(cfg, progress=_plain(console)).run_search()
    except (SearchError, SpaceError) as e:
        print(f"hyarch: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    console.print(f"worker stopped: {summary.stopped}; the run holds {summary.candidates}"
                  f" candidates ({summary.ok} ok)")
    return EXIT_OK if summary.candidates else EXIT_FAILED


def cmd_leaderboard(args) -> int:

    from hyarch.cli import EXIT_OK, EXIT_USAGE
    from hyarch.ranking.leaderboard import leaderboard_json
    from hyarch.runs import load_run

    try:
        run = load_run(args.run)
    except FileNotFoundError as e:
        print(f"hyarch: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        rows = leaderboard_json(run)
        print(json.dumps(rows[: args.top] if args.top else rows, indent=2, default=str))
    else:
        _print_leaderboard(run.path, wide_console(), top=args.top)
    return EXIT_OK


def cmd_show(args) -> int:
    from rich.console import Console
    from rich.syntax import Syntax

    from hyarch.cli import EXIT_OK, EXIT_USAGE
    from hyarch.ranking.leaderboard import leaderboard
    from hyarch.record import Evaluation
    from hyarch.report.console import print_evaluation
    from hyarch.runs import load_run

    try:
        run = load_run(args.run)
        cid = args.id or next((r.id for r in leaderboard(run) if r.score is not None), None)
        if cid is None:
            print("hyarch: error: the run has no finished candidate yet", file=sys.stderr)
            return EXIT_USAGE
        rec = run.read_candidate(cid)
    except (FileNotFoundError, KeyError) as e:
        print(f"hyarch: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps({"id": rec.id, "meta": rec.meta, "result": rec.result,
                          "source": rec.source}, indent=2, default=str))
        return EXIT_OK
    c = Console()
    m = rec.meta
    c.print(f"[bold]{rec.id}[/] from {m.get('proposer')} in round {m.get('round')}; parents:"
            f" {', '.join(m.get('parents') or []) or 'none'}"
            + (f"; repair of {m['repair_of']}" if m.get("repair_of") else ""))
    c.print(Syntax(rec.source or "# (no code)", "python", line_numbers=True))
    if rec.result:
        print_evaluation(Evaluation.from_dict(rec.result), console=c)
    else:
        c.print("not evaluated yet")
    v = run.verdicts().get(rec.id)
    if v:
        c.print(f"review: {v.get('verdict') or '-'}; notes: {'; '.join(v.get('notes', []))}")
    _show_mechanisms(run, rec, c, compute=args.identifiability)
    if (rec.path / "fit.png").is_file():
        c.print(f"fit plot: {rec.path / 'fit.png'}")
    return EXIT_OK


def _show_mechanisms(run, rec, c, compute: bool) -> None:
    """What the closures distilled to, and which parameters the data pin down."""
    dpath, ipath = rec.path / "distill.json", rec.path / "identifiability.json"
    try:
        from hyarch.distill import format_distillation, format_identifiability, identifiability
    except ImportError:
        return
    if dpath.is_file():
        c.print("[bold]closures distilled[/] (on validation states)")
        entries = json.loads(dpath.read_text())
        for e in entries:
            e.setdefault("library", [])
        c.print(format_distillation(entries), markup=False)
    if compute and rec.status == "ok":
        from hyarch.distill.identifiability import IdentifiabilityError
        from hyarch.report.replay import ReplayError, load_run_space
        from hyarch.runs import atomic_write

        try:
            space = load_run_space(run)
        except ReplayError as e:
            c.print(f"[red]identifiability not computed[/]: {e}")
            return
        cfg = run.config()
        overrides = cfg.get("overrides") if isinstance(cfg.get("overrides"), dict) else None
        c.print("computing identifiability (retraining in the sandbox: profiles and"
                " capacity variants)...")
        try:  # every training, the candidate's own included, runs in the sandbox
            report = identifiability(space, rec.source, filename=f"{rec.id}/model.py",
                                     overrides=overrides)
        except (IdentifiabilityError, ValueError, TypeError) as e:  # or bad run overrides
            c.print(f"[red]identifiability not computed[/]: {e}")
            return
        atomic_write(ipath, json.dumps(report, indent=2, default=str))
    if ipath.is_file():
        c.print("[bold]identifiability[/]")
        c.print(format_identifiability(json.loads(ipath.read_text())), markup=False)
