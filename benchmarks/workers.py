"""Candidates per minute for 1 and 2 evaluation workers on the damped pendulum.

    python benchmarks/workers.py [--budget 8] [--quick] [--space damped_pendulum]

Runs the same offline search (same seed, same budget) with --workers 1 and 2 in turn
and prints a table. Each evaluation is a child process with one thread, so on a 2-core
machine two workers can use both cores. Ratios only mean something within one run on a
quiet machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hyarch.agent.loop import SearchConfig, Session

QUICK = {"stage_iters": 100, "final_iters": 300, "patience": 60, "restarts": 2}


def measure(space: str, workers: int, budget: int, quick: bool) -> tuple[float, int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SearchConfig(space=space, run_dir=Path(tmp) / "run", budget=budget,
                           per_round=4, workers=workers, seed=0,
                           overrides=QUICK if quick else {})
        start = time.perf_counter()
        summary = Session(cfg).run_search()
        seconds = time.perf_counter() - start
        return seconds, summary.candidates, summary.ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="damped_pendulum")
    ap.add_argument("--budget", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="shorter training per candidate")
    args = ap.parse_args()
    rows = []
    for workers in (1, 2):
        seconds, n, ok = measure(args.space, workers, args.budget, args.quick)
        rows.append((workers, n, ok, seconds, n / (seconds / 60)))
    t = Table(title=f"offline search on {args.space}, budget {args.budget}"
              + (" (--quick training)" if args.quick else ""))
    for col in ("workers", "candidates", "ok", "seconds", "candidates/min", "speed-up"):
        t.add_column(col, justify="right")
    base = rows[0][4]
    for w, n, ok, s, cpm in rows:
        t.add_row(str(w), str(n), str(ok), f"{s:.0f}", f"{cpm:.2f}", f"{cpm / base:.2f}x")
    Console().print(t)


if __name__ == "__main__":
    main()
