"""What a search prints as it goes and returns when it ends: text and the summary record,
read from the one ranking (``hyarch.ranking.leaderboard``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hyarch.agent.config import RunSummary
from hyarch.record import Evaluation, Status, as_evaluation


def _log(x) -> str:
    return "-" if x is None or x <= 0 else f"{math.log10(x):.2f}"


def candidate_line(cid: str, result: Evaluation | dict[str, Any]) -> str:
    """One finished candidate: its validation score, closure share and parameters."""
    ev = as_evaluation(result)
    if not ev.ok:
        return f"  {cid} failed: {ev.reason}"
    params = ", ".join(f"{k}={v:.4g}" for k, v in ev.parameters if v is not None)
    return (f"  {cid} ok: val log10 nmse {_log(ev.val_nmse)}, closure share"
            f" {ev.closure_share or 0:.3f}, {params} ({ev.seconds or 0:.0f} s)")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def status_line(rows, *, round_no: int, budget: int, seconds: float, tokens: int, cost: float,
                cost_known: bool, repeats: int, done_before: int = 0) -> str:
    """The search so far: candidates finished (in flight counted apart), the best by the one
    ranking, time, an estimate of the time left (this session's seconds per finished
    candidate times the candidates left; ``done_before``: finished before it, on a resume),
    and the LLM's tokens and cost where it has any."""
    ok = sum(1 for r in rows if r.evaluation.status is Status.OK)
    failed = sum(1 for r in rows if r.evaluation.status is Status.FAILED)
    best = rows[0].id if rows and rows[0].ranked else "-"
    unfinished = len(rows) - ok - failed  # in flight (here or in another worker)
    line = (f"round {round_no}: {ok + failed}/{budget} candidates done ({ok} ok,"
            f" {failed} failed")
    line += f", {unfinished} in flight)" if unfinished else ")"
    line += f", best {best}, {seconds:.0f} s"
    here = ok + failed - done_before
    if here > 0 and ok + failed < budget:
        left = seconds / here * (budget - ok - failed)
        line += f", about {_duration(left)} left"
    if tokens:
        line += f", {tokens} tokens"
        if cost_known:  # a local model has no price: no "$0.0000"
            line += f", ${cost:.4f}"
    if repeats:
        line += f", {repeats} repeat(s) not counted"
    return line


def summarize(run_dir: Path, rows, *, stopped: str, seconds: float, tokens: int,
              cost: float) -> RunSummary:
    """How the search ended, from the leaderboard's rows."""
    ok = [r for r in rows if r.evaluation.status is Status.OK]
    best = rows[0] if rows and rows[0].ranked else None
    failed = sum(1 for r in rows if r.evaluation.status is Status.FAILED)
    return RunSummary(
        run_dir=run_dir, candidates=len(ok) + failed, ok=len(ok), failed=failed,
        pending=len(rows) - len(ok) - failed,
        best_id=best.id if best else None, best=best.record.result if best else None,
        stopped=stopped, seconds=seconds, tokens=tokens, cost=cost,
    )
