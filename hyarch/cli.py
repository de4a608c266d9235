"""The ``hyarch`` command line: it parses arguments and calls the library, nothing more.

Exit codes: 0 success, 1 the candidate or search failed, 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM (128 + SIGINT), as a shell reports it


def _space_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="search space: a YAML path or a built-in name (list them with"
                   " hyarch spaces)")


def _device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None,
                   help="torch device: cpu, cuda, cuda:1 (default: cuda when available)")


def resolve_device(name: str | None) -> str:
    import torch

    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit(_usage(f"--device {name}: CUDA is not available on this machine"))
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _usage(msg: str) -> int:
    print(f"hyarch: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


# -- commands ---------------------------------------------------------------------------
def cmd_evaluate(args) -> int:
    from pathlib import Path

    from hyarch.evaluate import evaluate_source
    from hyarch.record import Evaluation
    from hyarch.report.console import print_evaluation

    space = _load(args.space)
    path = Path(args.file)
    if not path.is_file():
        return _usage(f"candidate file {args.file!r} does not exist")
    overrides = {"seed": args.seed} if args.seed is not None else {}
    if args.tune:
        return _evaluate_tuned(args, space, path, overrides)
    from hyarch.report.progress import ProgressDisplay
    from hyarch.sandbox.runner import Limits

    with ProgressDisplay() as show, show.task(path.name, kind="training") as task:
        out = evaluate_source(space, path.read_text(), filename=str(path),
                              device=resolve_device(args.device), overrides=overrides,
                              limits=Limits(threads=max(1, args.threads)),
                              sandbox=not args.no_sandbox, progress=task)
        ev = Evaluation.from_dict(out.result)
        task.finish(ev.status.value)
    if args.json:
        print(json.dumps(out.result, indent=2))
    else:
        print_evaluation(ev, title=f"{path} on {space.name}")
    return EXIT_OK if ev.ok else EXIT_FAILED


def _evaluate_tuned(args, space, path, overrides) -> int:
    from rich.console import Console

    from hyarch.ranking.tune import tune
    from hyarch.record import Evaluation

    console = Console(stderr=True)
    res = tune(space, path.read_text(), args.tune, device=resolve_device(args.device),
               overrides=overrides, progress=console.print)
    tuned = Evaluation.from_dict(res.tuned)
    record = {**res.tuned, "tuning": {
        "trials": res.trials, "pruned": res.pruned, "settings": res.settings,
        "untuned_val_nmse": Evaluation.from_dict(res.untuned).val_nmse,
        "tuned_val_nmse": tuned.val_nmse}}
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        from hyarch.report.console import print_evaluation

        print_evaluation(tuned, title=f"{path} on {space.name}, tuned")
        t = record["tuning"]
        Console().print(f"tuning: {t['trials']} trials ({t['pruned']} pruned); val nmse"
                        f" {t['untuned_val_nmse']:.3g} untuned -> {t['tuned_val_nmse']:.3g} tuned;"
                        f" settings {t['settings']}")
    return EXIT_OK if tuned.ok else EXIT_FAILED


def cmd_validate(args) -> int:
    from hyarch.report.console import print_space_summary

    space = _load(args.space)
    prior_fit = None
    if space.prior_path() is not None and not args.fit_prior:
        from hyarch.sandbox.runner import check_candidate

        why = check_candidate(space, space.prior_path().read_text(), str(space.prior_path()))
        if why is not None:
            print(f"hyarch: error: {space.prior_path()}: the prior does not satisfy the"
                  f" candidate contract: {why}", file=sys.stderr)
            return EXIT_USAGE
    if args.fit_prior and space.prior_path() is not None:
        from hyarch.evaluate import evaluate_source
        from hyarch.record import Evaluation
        from hyarch.report.progress import ProgressDisplay

        with ProgressDisplay() as show, show.task("prior", kind="training") as task:
            prior_fit = Evaluation.from_dict(evaluate_source(
                space, space.prior_path().read_text(), filename=str(space.prior_path()),
                progress=task).result)
            task.finish(prior_fit.status.value)
        if not prior_fit.ok:
            print(f"hyarch: error: {space.prior_path()}: the prior failed: {prior_fit.reason}",
                  file=sys.stderr)
            print_space_summary(space, prior_fit)
            return EXIT_FAILED
    print_space_summary(space, prior_fit)
    return EXIT_OK


def _load(ref):
    from hyarch.spaces.errors import SpaceError
    from hyarch.spaces.loader import load_space

    try:
        return load_space(ref)
    except SpaceError as e:
        print(f"hyarch: error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyarch",
        description="Search for hybrid (mechanistic + neural) models of dynamical systems.",
    )
    from hyarch import __version__

    parser.add_argument("--version", action="version", version=f"hyarch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("evaluate", help="train and score one candidate file")
    _space_arg(p)
    p.add_argument("file", help="candidate Python file defining class Model(HybridModel)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--seed", type=int, default=None,
                   help="training seed (default: the space's training.seed)")
    p.add_argument("--tune", type=int, metavar="N", default=0,
                   help="tune the training settings over N Optuna trials (with pruning)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for the evaluation (default 1, as in a search)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run the candidate in this process, without isolation: only for code"
                        " you trust (debugging); the search never does this")
    _device_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("validate", help="check a search space and its data, print a summary")
    _space_arg(p)
    p.add_argument("--fit-prior", action="store_true", help="also train and score the prior")
    p.set_defaults(func=cmd_validate)

    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


# Other modules add their subcommands here: f(subparsers) -> None.
EXTRA_COMMANDS: list[Callable] = []


def _register_extras() -> None:
    import importlib

    if EXTRA_COMMANDS:
        return
    for mod in ("hyarch.agent.commands", "hyarch.spaces.commands", "hyarch.review.commands",
                "hyarch.report.commands", "hyarch.ranking.commands", "hyarch.distill_cli"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name is None or not mod.startswith(e.name):
                raise
            continue
        if m.register not in EXTRA_COMMANDS:  # main() may run more than once in a process
            EXTRA_COMMANDS.append(m.register)


def main(argv: list[str] | None = None) -> int:
    _register_extras()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        message = storage_problem(e)
        if message is None:
            raise  # a bug: its traceback is what a report needs
        print(f"hyarch: error: {message}", file=sys.stderr)
        return EXIT_FAILED


def storage_problem(e: OSError) -> str | None:
    """A message for a disk that is full or a folder that cannot be written, or None when
    ``e`` is something else. Every record is written atomically (a temporary file renamed
    into place), so what was written before the failure is whole and kept."""
    import errno

    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EROFS: "the file system is read-only",
           errno.EACCES: "permission denied", errno.EPERM: "permission denied"}.get(e.errno)
    if why is None:
        return None
    where = f" {e.filename}" if e.filename else ""
    return (f"cannot write{where}: {why}. Everything written before is kept; once there is"
            " room (or the folder is writable), run the command again (a search: with"
            " --run NAME --resume)")


if __name__ == "__main__":
    sys.exit(main())
