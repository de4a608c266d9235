"""Discovery when nobody wrote the answer down: predator-prey with a saturating response.

    python benchmarks/predator_prey.py [--seeds 0,1] [--budget 24] [--workers 2]
        [--out runs/predator_prey] [--json]
    python benchmarks/predator_prey.py --response [--seeds N] [--json]   (N: training seed)

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


RESPONSE = HERE / "spaces" / "predator_prey" / "response.py"


def response_case(overrides: dict | None = None) -> dict:
    """A closure on the predation term (``spaces/predator_prey/response.py``: the rate per
    predator is a network of the prey), trained in the sandbox and distilled there (the
    network, as a formula of its input, replaces its call; the rollout chooses among the
    sparse fits); then the distilled candidate and the prior, each trained the same way.
    Validation and OOD log10 MSE (raw units) are reported; OOD decides nothing."""
    from hyarch.evaluate import evaluate_source
    from hyarch.spaces.loader import load_space

    space = load_space(str(SPACE))
    rows, out = [], {}

    def run(role: str, source: str, post=None) -> dict:
        t0 = time.perf_counter()
        res = evaluate_source(space, source, overrides=overrides, post=post)
        r = res.result
        m = r.get("metrics") or {}
        rows.append({
            "role": role, "status": r.get("status"), "reason": r.get("reason"),
            "val_log10_mse": (m.get("val") or {}).get("log10_mse"),
            "ood_log10_mse": (m.get("ood") or {}).get("log10_mse"),
            "ood_diverged": bool((m.get("ood") or {}).get("diverged")),
            "n_neural_params": r.get("n_neural_params"),
            "parameters": r.get("parameters") or {},
            "param_rel_error": r.get("param_rel_error") or {},
            "seconds": round(time.perf_counter() - t0, 1)})
        return res.extra

    run("prior", space.prior_path().read_text())
    extra = run("hybrid (closure on predation)", RESPONSE.read_text(), post={"distill": {}})
    entries = extra.get("distilled") or []
    out["distillations"] = [{k: v for k, v in e.items()
                             if k not in ("source", "alternatives", "path")} for e in entries]
    out["distill_error"] = extra.get("distill_error")
    source = next((e["source"] for e in entries if e.get("source")), None)
    if source is not None:
        run("distilled", source)
    out["rows"] = rows
    return out


def _print_response(res: dict) -> None:
    from hyarch.distill import format_distillation

    print("\nclosure on the predation term (benchmarks/spaces/predator_prey/response.py)")
    if res.get("distill_error"):
        print(f"  distillation failed: {res['distill_error']}")
    entries = res["distillations"]
    if entries:
        print("  " + format_distillation(entries).replace("\n", "\n  "))
    print(f"  {'role':<30} {'val':>7} {'OOD':>8} {'weights':>7} {'s':>5}  parameters (error)")
    for r in res["rows"]:
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        ood = "diverged" if r["ood_diverged"] else fmt(r["ood_log10_mse"])
        errs = r["param_rel_error"]
        params = ", ".join(
            f"{k}={v:.4g}" + (f" ({100 * errs[k]:.1f}%)" if errs.get(k) is not None else "")
            for k, v in r["parameters"].items() if v is not None)
        print(f"  {r['role']:<30} {fmt(r['val_log10_mse']):>7} {ood:>8}"
              f" {r['n_neural_params'] or 0:>7} {r['seconds']:>5.0f}  {params}"
              + (f"  [{r['status']}: {r['reason']}]" if r["status"] != "ok" else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/predator_prey")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--response", action="store_true",
                    help="only the closure on the predation term: train, distil, refit")
    args = ap.parse_args(argv)
    import hyarch

    if args.response:
        res = response_case({"seed": int(args.seeds.split(",")[0])} if args.seeds != "0"
                            else None)
        if args.json:
            print(json.dumps(res, indent=2, default=str))
        else:
            _print_response(res)
        return 0

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
