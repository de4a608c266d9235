"""Ordering candidates: the Pareto front, and a stated rule for the leaderboard.

The rule (lower is better):

    score = log10(val nmse) + 1.0 * closure_share + 0.3 * log10(1 + neural params)
            + 0.3 * physical parameters

so a model that fits as well with less network (and fewer parameters) ranks first, and a
network of a few thousand weights must buy about a decade of validation error, and each
physical parameter a factor of two, to win:
"don't learn what you already know". Infeasible candidates (closure share over its cap,
a parameter outside its plausible range: Optuna constraints) and candidates a reviewer
rejected come after the rest; pinned ones are marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hyarch.ranking.study import Objectives, feasible, finite_number, objective_values
from hyarch.runs import CandidateRecord, Run

W_SHARE, W_NEURAL, W_PHYSICAL = 1.0, 0.3, 0.3


@dataclass(frozen=True)
class Row:
    id: str
    record: CandidateRecord
    score: float | None
    pareto: bool
    verdict: str | None = None
    notes: tuple[str, ...] = ()
    values: tuple[float, ...] | None = field(default=None)


def score_of(result: Any) -> float | None:
    """The leaderboard score, or None when the result is not rankable (failed, or a value
    of the wrong type: a malformed record never ranks, and never raises)."""
    vals = objective_values(result)
    if vals is None:
        return None
    val = max(vals[0], 1e-30)
    share = finite_number(result.get("closure_share") or 0.0)
    neural = finite_number(result.get("n_neural_params") or 0)
    params = result.get("parameters") or {}
    if share is None or neural is None or neural < 0 or not isinstance(params, dict):
        return None
    return (math.log10(val) + W_SHARE * share + W_NEURAL * math.log10(1 + neural)
            + W_PHYSICAL * len(params))


def pareto_front(points: dict[str, list[float]]) -> set[str]:
    """Ids whose objective vectors no other point dominates."""
    ids = list(points)
    front = set()
    for a in ids:
        pa = points[a]
        dominated = any(
            all(x <= y for x, y in zip(points[b], pa, strict=False)) and any(x < y for x, y in zip(points[b], pa, strict=False))
            for b in ids if b != a
        )
        if not dominated:
            front.add(a)
    return front


def leaderboard(run: Run, obj: Objectives = Objectives()) -> list[Row]:
    """All candidates, best first; failed and unfinished ones at the end."""
    records = list(run.candidates())
    verdicts = run.verdicts()
    points = {}
    for r in records:
        if r.result is not None:
            v = objective_values(r.result, obj)
            if v is not None:
                points[r.id] = v
    rows = []
    for r in records:
        v = verdicts.get(r.id, {})
        s = score_of(r.result) if r.result else None
        if s is None:
            points.pop(r.id, None)
        rows.append((r, s, v))
    front = pareto_front(points)
    rows = [Row(r.id, r, s, r.id in front, v.get("verdict"), tuple(v.get("notes", ())),
                tuple(points[r.id]) if r.id in points else None) for r, s, v in rows]

    def key(row: Row):
        rejected = row.verdict == "rejected"
        infeasible = (isinstance(row.record.result, dict)
                      and not feasible(row.record.result, obj))
        return (row.score is None, rejected, infeasible,
                row.score if row.score is not None else math.inf, row.id)

    return sorted(rows, key=key)


def leaderboard_json(run: Run, obj: Objectives = Objectives()) -> list[dict[str, Any]]:
    """The ``hyarch leaderboard --json`` list: best first, evaluate's fields plus provenance."""
    out = []
    for rank, row in enumerate(leaderboard(run, obj), start=1):
        res = row.record.result
        if not isinstance(res, dict):
            res = {"status": "pending", "reason": "not evaluated yet"}
        out.append({
            "rank": rank, "id": row.id, "status": res.get("status"), "reason": res.get("reason"),
            "proposer": row.record.proposer, "parents": row.record.parents,
            "round": row.record.meta.get("round"), "score": row.score, "pareto": row.pareto,
            "verdict": row.verdict, "notes": list(row.notes),
            **{k: v for k, v in res.items() if k not in ("status", "reason", "traceback")},
        })
    return out
