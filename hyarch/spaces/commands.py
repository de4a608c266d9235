"""``hyarch baselines SPACE``: train the three baselines of a space and print their table;
``hyarch spaces``: list the built-in search spaces."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_baselines(args) -> int:
    from pathlib import Path

    from hyarch.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _load, resolve_device
    from hyarch.spaces.baselines import LABELS, baselines, markdown_table, run_baselines, table_rows

    space = _load(args.space)
    labels = tuple(args.only.split(",")) if args.only else LABELS
    bad = [x for x in labels if x not in LABELS]
    if bad:
        print(f"hyarch: error: --only: unknown baseline(s) {bad}; valid: {', '.join(LABELS)}",
              file=sys.stderr)
        return EXIT_USAGE
    if args.save:
        out = Path(args.save)
        out.mkdir(parents=True, exist_ok=True)
        for b in baselines(space):
            (out / f"{b.label}.py").write_text(b.source)
        print(f"wrote {', '.join(b.label + '.py' for b in baselines(space))} to {out}",
              file=sys.stderr)
    if args.seed is not None:
        overrides = {"seed": args.seed}
    else:
        overrides = None
    from hyarch.report.progress import ProgressDisplay

    with ProgressDisplay() as show:
        results = run_baselines(
            space, labels=labels, quick=args.quick, device=resolve_device(args.device),
            overrides=overrides, threads=args.threads,
            watch=lambda label, i, n: show.task(label, kind="baseline", index=i, total=n))
    rows = table_rows(results)
    if args.json:
        print(json.dumps(results, indent=2))
    elif args.markdown:
        print(markdown_table(rows))
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"baselines on {space.name} (log10 MSE, raw units)"
                  + (" [quick training]" if args.quick else ""))
        for col in rows[0] if rows else ():
            t.add_column(col, justify="left" if col in ("baseline", "parameter errors",
                                                         "status") else "right")
        for r in rows:
            t.add_row(*r.values())
        Console().print(t)
    return EXIT_OK if all(r["status"] == "ok" for r in results.values()) else EXIT_FAILED


def cmd_spaces(args) -> int:
    """List the built-in spaces: name, states and description (from each YAML's header,
    without simulating data)."""
    import yaml

    from hyarch.cli import EXIT_OK
    from hyarch.spaces.loader import builtin_spaces

    rows = []
    for name, path in builtin_spaces().items():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            raw = {}
        desc = " ".join(str(raw.get("description") or "").split())
        states = list((raw.get("states") or {}).keys()) if isinstance(raw.get("states"), dict) else []
        rows.append({"name": name, "path": str(path), "states": states, "description": desc})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        print(f"{r['name']:<20} {', '.join(r['states'])}")
        first = r["description"].split(". ")[0].split(": ")[0].rstrip(".")
        if first:
            print(f"{'':<20} {first}")
    print("\nuse a name wherever a SPACE is asked for (hyarch validate damped_pendulum),"
          " or a path to your own YAML", file=sys.stderr)
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hyarch baselines`` and ``hyarch spaces`` to the command line."""
    p = sub.add_parser("spaces", help="list the built-in search spaces",
                       description="List the built-in search spaces (their names can be given"
                                   " wherever a SPACE is asked for).")
    p.add_argument("--json", action="store_true", help="print name, path, states and"
                   " description of each as JSON")
    p.set_defaults(func=cmd_spaces)
    p = sub.add_parser(
        "baselines", help="train the prior, a neural ODE and an APHYNITY-style hybrid; compare",
        description="Train and score a space's three baselines: the prior with fitted"
                    " parameters, a neural ODE (a network per state, no mechanism) and an"
                    " APHYNITY-style hybrid (prior plus additive closures with closure_norm)."
                    " Prints validation, test and OOD log10 MSE and parameter errors.")
    p.add_argument("space", help="search space: a YAML path or a built-in name")
    p.add_argument("--only", default=None,
                   help="comma-separated subset of prior,neural_ode,aphynity")
    p.add_argument("--quick", action="store_true",
                   help="short training (a smoke test; the numbers are not final)")
    p.add_argument("--seed", type=int, default=None, help="training seed (default: the space's)")
    p.add_argument("--json", action="store_true", help="print each result record as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--save", metavar="DIR", default=None,
                   help="also write the three candidate files to DIR (to edit and re-run)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for each training (default 1, as in a search)")
    p.set_defaults(func=cmd_baselines)
