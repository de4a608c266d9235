"""Per-candidate training time of a search, from the run's own records (issue 7).

    hyarch search damped_pendulum --budget 24 --workers 2 --run runs/speed
    python benchmarks/candidates.py runs/speed
    python benchmarks/candidates.py runs/speed --retrain   # the same candidates, this code

Prints one row per candidate (``seconds`` is what its evaluation took inside the sandbox:
training and scoring, from ``metrics.json``; ``wall`` the whole sandboxed evaluation, with
the child process's start, imports, checks and distillation) and the medians over all
candidates, the ones that trained, the hybrids and the network-free ones, as Markdown.

``--retrain`` evaluates every candidate of the run again with the code checked out now
(``hyarch evaluate``, one thread, ``--workers`` at a time, like the search's workers) and
puts both times side by side: two versions of the core on exactly the same candidates,
where two searches would propose different ones.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from hyarch.runs import load_run  # noqa: E402


def _val_log10(result: dict) -> float | None:
    return ((result.get("metrics") or {}).get("val") or {}).get("log10_nmse")


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} s" if xs else "-"


def _evaluate(space: str, path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "hyarch.cli", "evaluate", space, str(path),
                          "--json"], capture_output=True, text=True, env=env)
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return {"status": "failed", "reason": (out.stderr or out.stdout)[-200:]}


def retrain(run, workers: int) -> None:
    space = run.config().get("space_name") or run.config()["space"]
    recs = [r for r in run.finished() if r.status == "ok"]
    with ThreadPoolExecutor(workers) as pool:
        again = list(pool.map(lambda r: _evaluate(space, r.path / "model.py"), recs))
    print("| candidate | neural params | recorded s | retrained s | ratio |"
          " recorded val log10 nMSE | retrained |")
    print("|---|---|---|---|---|---|---|")
    before, after = [], []
    for rec, new in zip(recs, again, strict=True):
        old_s, new_s = rec.result.get("seconds"), new.get("seconds")
        ov, nv = _val_log10(rec.result), _val_log10(new)
        print(f"| {rec.id} | {rec.result.get('n_neural_params')} | {old_s:.1f} |"
              f" {'-' if new_s is None else f'{new_s:.1f}'} |"
              f" {'-' if not new_s else f'{old_s / new_s:.1f}x'} |"
              f" {'-' if ov is None else f'{ov:.2f}'} | {'-' if nv is None else f'{nv:.2f}'} |")
        if new_s is not None:
            before.append(old_s)
            after.append(new_s)
    print(f"\nmedian seconds per candidate: recorded {_median(before)},"
          f" retrained {_median(after)} ({len(after)} candidates)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder (runs/<name>)")
    p.add_argument("--retrain", action="store_true",
                   help="evaluate the run's candidates again with this code, side by side")
    p.add_argument("--workers", type=int, default=2, help="evaluations at once (--retrain)")
    args = p.parse_args(argv)
    run = load_run(args.run)
    if args.retrain:
        retrain(run, args.workers)
        return
    rows, every, ok, hybrid, free, walls = [], [], [], [], [], []
    for rec in run.finished():
        res = rec.result or {}
        seconds = res.get("seconds")
        if seconds is None:
            continue
        training = res.get("training") or {}
        neural = res.get("n_neural_params")
        val = _val_log10(res)
        rows.append([rec.id, rec.proposer, rec.status, "-" if neural is None else neural,
                     training.get("stopped") or (res.get("reason") or "")[:40],
                     training.get("iterations", "-"),
                     "-" if val is None else f"{val:.2f}", f"{seconds:.1f}",
                     "-" if res.get("wall_seconds") is None else f"{res['wall_seconds']:.1f}"])
        every.append(seconds)
        if res.get("wall_seconds") is not None:
            walls.append(res["wall_seconds"])
        if rec.status == "ok":
            ok.append(seconds)
            (hybrid if neural else free).append(seconds)
    header = ["candidate", "proposer", "status", "neural params", "stopped", "iterations",
              "val log10 nMSE", "seconds", "wall"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print(f"\nmedian seconds per candidate: all {_median(every)} ({len(every)}),"
          f" trained {_median(ok)} ({len(ok)}), hybrids {_median(hybrid)} ({len(hybrid)}),"
          f" network-free {_median(free)} ({len(free)});"
          f" wall (with the sandbox's process start) {_median(walls)} ({len(walls)})")


if __name__ == "__main__":
    main()
