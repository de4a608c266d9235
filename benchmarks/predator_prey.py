"""Discovery when nobody wrote the answer down: predator-prey with a saturating response.

    python benchmarks/predator_prey.py [--seeds 0,1] [--budget 24] [--workers 2]
        [--out runs/predator_prey] [--json]

The space ``benchmarks/spaces/predator_prey.yaml`` (not a built-in one) simulates the
Rosenzweig-MacArthur model, whose predation q*x*y/(c + x) saturates, and gives the expert's
model with mass-action predation beta*x*y and **no hypotheses**: the saturating form can only
come from distilling a closure. Per seed, one offline search (``hyarch search --budget N``);
its round 1 holds the prior alone and the APHYNITY-style hybrid, so every number below comes
from the same run. Printed per seed: what each closure distilled to, and the prior, the
hybrid, each distilled candidate and the top-ranked candidate with their validation and OOD
log10 MSE (raw units), closure share and fitted parameters. OOD numbers are only reported:
they never reach the ranking. Runs that exist already are read, not redone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPACE = HERE / "spaces" / "predator_prey.yaml"


def _log10(x):
    import math

    return None if x is None or x <= 0 else round(math.log10(x), 3)


def summarise(run_dir: Path) -> dict:
    from hyarch.ranking.leaderboard import leaderboard
    from hyarch.record import Evaluation
    from hyarch.runs import load_run

    run = load_run(run_dir)
    rows = leaderboard(run)
    top = next((r for r in rows if r.ranked), None)

    def row(r, role: str) -> dict:
        ev = Evaluation.from_dict(r.record.result or {"status": "pending"})
        val, ood = ev.split("val"), ev.split("ood")
        return {"role": role, "id": r.id, "proposer": r.record.proposer, "status": ev.status.value,
                "rank": next((i for i, x in enumerate(rows, 1) if x.id == r.id), None),
                "val_log10_mse": _log10(val.mse if val else None),
                "ood_log10_mse": _log10(ood.mse if ood else None),
                "ood_diverged": bool(ood and ood.diverged),
                "closure_share": ev.closure_share, "networks": bool(ev.n_neural_params),
                "parameters": {k: v for k, v in ev.parameters}}

    by_id = {r.id: r for r in rows}
    out_rows, distilled = [], []
    firsts = [r for r in rows if r.record.meta.get("round") == 1]
    for r in sorted(firsts, key=lambda r: r.id)[:2]:
        out_rows.append(row(r, "prior" if not (r.record.result or {}).get("n_neural_params")
                            else "hybrid"))
    for rec in run.candidates():
        p = rec.path / "distill.json"
        if p.is_file():
            for e in json.loads(p.read_text()):
                distilled.append({"from": rec.id, "closure": e.get("closure"),
                                  "state": e.get("state"), "expression": e.get("expression"),
                                  "explained": e.get("explained"),
                                  "queued": bool(e.get("source"))})
    for r in rows:
        if r.record.proposer == "distill":
            out_rows.append(row(r, "distilled"))
    if top is not None and top.id not in {x["id"] for x in out_rows}:
        out_rows.append(row(top, "top-ranked"))
    elif top is not None:
        for x in out_rows:
            if x["id"] == top.id:
                x["role"] += " (top-ranked)"
    return {"run": str(run_dir), "candidates": len(rows), "top": top.id if top else None,
            "distillations": distilled, "rows": out_rows, "winner_in_run": bool(by_id)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/predator_prey")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import hyarch

    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        run_dir = Path(args.out) / f"seed{seed}"
        t0 = time.perf_counter()
        if not (run_dir / "run.yaml").is_file():
            hyarch.search(str(SPACE), run=run_dir, budget=args.budget, workers=args.workers,
                          seed=seed)
        res = {"seed": seed, "seconds": round(time.perf_counter() - t0, 1), **summarise(run_dir)}
        results.append(res)
        if args.json:
            continue
        print(f"\nseed {seed}: {res['candidates']} candidates, {res['seconds']:.0f} s;"
              f" top-ranked {res['top']}")
        for d in res["distillations"]:
            ex = "-" if d["explained"] is None else f"{d['explained']:.3f}"
            print(f"  {d['from']} closure {d['closure']} -> d{d['state']}/dt += {d['expression']}"
                  f" (explains {ex}{', queued' if d['queued'] else ''})")
        print(f"  {'role':<24} {'id':<6} {'rank':>4} {'val':>7} {'OOD':>7} {'share':>6}  parameters")
        for r in res["rows"]:
            fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
            ood = "diverged" if r["ood_diverged"] else fmt(r["ood_log10_mse"])
            share = "-" if r["closure_share"] is None else f"{r['closure_share']:.3f}"
            params = ", ".join(f"{k}={v:.4g}" for k, v in r["parameters"].items()
                               if v is not None)
            print(f"  {r['role']:<24} {r['id']:<6} {r['rank'] or '-':>4}"
                  f" {fmt(r['val_log10_mse']):>7} {ood:>7} {share:>6}  {params}")
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
