"""``hyarch distill SPACE FILE``: train a candidate, distil its closures, check identifiability.

The candidate is trained, distilled and profiled in the sandbox (``hyarch.evaluate``), like
every candidate; this process never runs its code.

Kept outside the ``hyarch.distill`` package so that registering the command does not
import torch and PySINDy: ``hyarch --help`` stays fast."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DISTILL_MISSING = ("distill needs PySINDy, which is not installed: "
                   "pip install 'pysindy>=1.7,<3'")


def sindy_installed() -> bool:
    """Whether PySINDy can be imported (distillation runs in the sandboxed child, where a
    missing module would surface only as a traceback in its record)."""
    import importlib.util

    try:
        return importlib.util.find_spec("pysindy") is not None
    except (ImportError, ValueError):
        return False


def _overrides(pairs: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _entries(raw: Any) -> list[dict[str, Any]]:
    """The distillation records the sandboxed child returned (untrusted JSON), keeping
    those with the fields ``format_distillation`` and ``--out`` read, of the right types."""
    out = []
    for d in raw if isinstance(raw, list) else []:
        if not (isinstance(d, dict) and all(isinstance(d.get(k), str)
                                            for k in ("closure", "state", "expression"))):
            continue
        terms = [t for t in d.get("terms") or [] if isinstance(t, dict)
                 and isinstance(t.get("kind"), str) and isinstance(t.get("name"), str)
                 and _num(t.get("coefficient")) is not None]
        src = d.get("source")
        out.append({**d, "terms": terms, "r2": _num(d.get("r2")),
                    "explained": _num(d.get("explained")),
                    "library": d.get("library") if isinstance(d.get("library"), list) else [],
                    "source": src if isinstance(src, str) else None})
    return out


def _targets(out: str, entries: list[dict[str, Any]]) -> dict[str, str]:
    sources = {}
    for d in entries:
        if d["source"] is not None:
            sources.setdefault(d["closure"], d["source"])
    joint = entries[0].get("joint") if entries else None
    joint = joint.get("source") if isinstance(joint, dict) else None
    if len(sources) <= 1 and not isinstance(joint, str):
        return {out: next(iter(sources.values()))} if sources else {}
    p = Path(out)
    # several closures: each one's candidate beside OUT, and OUT every closure at once
    targets = {str(p.with_name(f"{p.stem}_{name}{p.suffix or '.py'}")): s
               for name, s in sources.items()}
    return {out: joint, **targets} if isinstance(joint, str) else targets


def cmd_distill(args) -> int:
    from hyarch.cli import EXIT_FAILED, EXIT_OK, _load, _usage, resolve_device
    from hyarch.distill import format_distillation, format_identifiability
    from hyarch.distill.identifiability import (
        IdentifiabilityError,
        identifiability,
        profile_options,
    )
    from hyarch.evaluate import Limits, evaluate_source

    path = Path(args.file)
    if not path.is_file():
        return _usage(f"candidate file {args.file!r} does not exist")
    if not sindy_installed():
        print(f"hyarch: {DISTILL_MISSING}", file=sys.stderr)
        return EXIT_FAILED
    try:
        overrides = _overrides(args.set)
        if args.seed is not None:
            overrides["seed"] = args.seed
        space = _load(args.space)
        space.train_config(**overrides)
    except (ValueError, TypeError) as e:
        return _usage(f"--set: {e}")
    source = path.read_text()
    device = resolve_device(args.device)
    limits = Limits(threads=max(1, args.threads))
    # one sandboxed training: the child distils the closures (and profiles the parameters)
    # on the trained model; this process only reads what it returns
    post: dict[str, Any] = {"distill": {"always": True, "min_explained": args.min_explained,
                                        "degree": args.degree}}
    if args.identifiability:
        post["profile"] = profile_options(space, overrides, device=device)
    from hyarch.report.progress import ProgressDisplay

    show = ProgressDisplay()
    with show, show.task(path.name, kind="training and distilling") as task:
        out = evaluate_source(space, source, filename=str(path), device=device,
                              overrides=overrides, post=post, limits=limits, progress=task)
        task.finish(out.result["status"])
    res = out.result
    if res["status"] != "ok":
        print(f"hyarch: training failed: {res['reason']}", file=sys.stderr)
        return EXIT_FAILED
    report: dict[str, Any] = {"parameters": res["parameters"],
                              "val_nmse": res["metrics"]["val"]["nmse"]}
    if not args.json:
        vals = ", ".join(f"{k}={v:.6g}" for k, v in res["parameters"].items()
                         if v is not None)
        print(f"trained {path} on {space.name}: val nMSE {report['val_nmse']:.4g}; {vals}")
    status = EXIT_OK
    if out.extra.get("distill_error"):
        print(f"hyarch: cannot distil: {out.extra['distill_error']}", file=sys.stderr)
        return EXIT_FAILED
    entries = _entries(out.extra.get("distilled"))
    if entries:
        report["distillation"] = entries
        if not args.json:
            print(format_distillation(entries))
        if args.out:
            targets = _targets(args.out, entries)
            if not targets:
                status = EXIT_FAILED
            for target, text in targets.items():
                Path(target).write_text(text)
                if not args.json:
                    print(f"wrote {target}")
    elif not args.json:
        print("the candidate has no closure: nothing to distil")
    if args.identifiability:
        try:  # (its retrainings report no steps: the line says what runs and how long)
            with show, show.task("profiles and retraining", kind="identifiability") as task:
                ident = identifiability(space, source, filename=str(path),
                                        overrides=overrides, retrain=not args.no_retrain,
                                        device=device, limits=limits, trained=out)
                task.finish("done")
        except IdentifiabilityError as e:
            print(f"hyarch: identifiability not computed: {e}", file=sys.stderr)
            return EXIT_FAILED
        report["identifiability"] = ident
        if not args.json:
            print(format_identifiability(ident))
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    return status


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="train a candidate and distil its closures into readable terms",
        description="Train FILE on SPACE, fit each closure's contribution with sparse "
                    "regression on a library (the space's hypotheses, monomials, sin/cos/"
                    "tanh/abs of the closure's inputs), print the expressions and R^2 on "
                    "validation states, and write the closure-free candidate with --out.",
    )
    p.add_argument("space", help="search space: a YAML path or a built-in name")
    p.add_argument("file", help="candidate Python file with at least one Closure")
    p.add_argument("--out", help="write the distilled mechanistic candidate here")
    p.add_argument("--identifiability", action="store_true",
                   help="also profile each parameter and retrain with other closure widths")
    p.add_argument("--no-retrain", action="store_true",
                   help="with --identifiability: profiles only, no capacity retraining")
    p.add_argument("--min-explained", type=float, default=0.95,
                   help="write a candidate only when the terms explain this share of the "
                        "closure's output on validation states (default 0.95)")
    p.add_argument("--degree", type=int, default=3, help="highest monomial degree (default 3)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training override, e.g. --set final_iters=300 (repeatable)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads of the sandboxed training (default 1)")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.set_defaults(func=cmd_distill)
