"""What becomes of an LLM's replies: the share that become trained candidates, per format.

    python benchmarks/llm_replies.py --base-url URL --model NAME [--formats code,structured]
        [--space damped_pendulum] [--budget 20] [--temperature 0.7] [--out runs/llm-replies]
        [--json] [--read]

For each format, runs ``hyarch search SPACE --llm NAME --base-url URL --llm-format FORMAT
--budget N --quick`` (training shortened: the question is what the replies become, not how
well the candidates fit), then sorts every reply logged in the run's ``llm.jsonl``:

- trained: its code (or form) became a candidate that trained (status ok);
- failed in the sandbox / in the checks: a candidate that failed, by where;
- no usable code: a reply without code (or without a valid form): a failed candidate;
- repeat: its code repeated an evaluated candidate (sent back, not counted);
- call failed: the call itself failed (not a candidate).

The endpoint is any OpenAI-compatible server; ``.ci/llm_server.sh start`` starts llama.cpp's
server with Qwen2.5-Coder-0.5B on loopback. A run that exists already is read, not redone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = ("trained", "failed in the sandbox", "failed the checks", "no usable code",
              "repeat", "call failed")


def classify(run_dir: Path) -> dict:
    from hyarch.runs import Run, read_jsonl

    run = Run(run_dir)
    calls = read_jsonl(run.llm_log)
    counts: Counter[str] = Counter()
    counts["call failed"] = sum(1 for c in calls if c.get("error"))
    replies = sum(1 for c in calls if not c.get("error"))
    llm_candidates = 0
    reasons: Counter[str] = Counter()
    for rec in run.candidates():
        if not str(rec.proposer).startswith("llm:"):
            continue
        llm_candidates += 1
        status = (rec.result or {}).get("status", "pending")
        reason = str((rec.result or {}).get("reason") or "")
        if status == "ok":
            counts["trained"] += 1
        elif "no ```python block" in reason or "form was not filled" in reason \
                or "reply was empty" in reason or "do not define class Model" in reason:
            counts["no usable code"] += 1
            reasons[reason[:70]] += 1
        elif (rec.meta.get("worker") and "wall_seconds" not in (rec.result or {})):
            counts["failed the checks"] += 1  # failed before training: no evaluation ran
            reasons[reason[:70]] += 1
        else:
            counts["failed in the sandbox"] += 1
            reasons[reason[:70]] += 1
    counts["repeat"] = max(replies - llm_candidates, 0)
    tokens = sum(int(c.get("total_tokens") or 0) for c in calls)
    latency = sum(float(c.get("latency") or 0) for c in calls)
    return {"replies": replies, **{k: counts[k] for k in CATEGORIES},
            "trained_share": counts["trained"] / replies if replies else None,
            "tokens": tokens, "llm_seconds": round(latency, 1),
            "top_failures": reasons.most_common(5)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url")
    ap.add_argument("--model")
    ap.add_argument("--read", action="store_true",
                    help="only read the runs that exist (never start a search)")
    ap.add_argument("--formats", default="code,structured")
    ap.add_argument("--space", default="damped_pendulum")
    ap.add_argument("--budget", type=int, default=20)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/llm-replies")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.read and not (args.base_url and args.model):
        ap.error("--base-url and --model are needed to run searches (or --read)")
    rows = {}
    for fmt in args.formats.split(","):
        run_dir = Path(args.out) / f"{args.space}-{fmt}-seed{args.seed}"
        t0 = time.perf_counter()
        if not (run_dir / "run.yaml").is_file():
            if args.read:
                continue
            cmd = [sys.executable, "-m", "hyarch", "search", args.space, "--run", str(run_dir),
                   "--llm", args.model, "--base-url", args.base_url, "--llm-format", fmt,
                   "--budget", str(args.budget), "--per-round", "2", "--quick",
                   "--temperature", str(args.temperature), "--seed", str(args.seed),
                   "--llm-timeout", "600"]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            stopped = [x for x in out.stdout.splitlines() if x.startswith("search stopped")]
            print(f"{fmt}: exit {out.returncode}; {stopped[-1] if stopped else out.stderr[-500:]}",
                  file=sys.stderr)
        rows[fmt] = {**classify(run_dir), "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'format':<11}{'replies':>8}" + "".join(f"{c:>23}" for c in CATEGORIES)
          + f"{'trained share':>15}{'tokens':>9}{'LLM s':>8}")
    for fmt, r in rows.items():
        share = "-" if r["trained_share"] is None else f"{100 * r['trained_share']:.0f}%"
        print(f"{fmt:<11}{r['replies']:>8}" + "".join(f"{r[c]:>23}" for c in CATEGORIES)
              + f"{share:>15}{r['tokens']:>9}{r['llm_seconds']:>8}")
    for fmt, r in rows.items():
        for reason, n in r["top_failures"]:
            print(f"  {fmt}: {n} x {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
