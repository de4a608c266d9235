"""The leaderboard: every candidate in the order of ``hyarch.ranking.rule``, with the
Pareto front over the run's objectives marked.

This is the one place that orders a run. The terminal leaderboard, ``show``, the HTML
report, the review, the prompts' pool, the study's recorded order and the Python API
(``hyarch.leaderboard``) all call ``leaderboard``; the objectives (the closure-share cap
and plausible parameter ranges that make a candidate infeasible, and the Pareto axes) are
read from the run's own ``run.yaml``, as the search wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hyarch.ranking.rule import Evidence, rank
from hyarch.ranking.study import Objectives, feasible, objective_values
from hyarch.record import Evaluation, Status, as_evaluation
from hyarch.runs import CandidateRecord, Run


@dataclass(frozen=True)
class Row:
    id: str
    record: CandidateRecord
    score: float | None  # mean log10 validation nMSE over trajectories (the rule's score)
    pareto: bool
    verdict: str | None = None
    notes: tuple[str, ...] = ()
    values: tuple[float, ...] | None = field(default=None)
    evidence: Evidence | None = None
    evaluation: Evaluation = field(default=Evaluation(Status.PENDING))  # the typed record

    @property
    def ranked(self) -> bool:
        return self.evidence is not None and self.evidence.group == "ranked"


def score_of(result: Any) -> float | None:
    """The rule's score (see ``hyarch.ranking.rule``); None when not rankable."""
    from hyarch.ranking.rule import score_of as _score

    return _score(result)


def objectives_of(run: Run) -> Objectives:
    """The objectives the run was searched with (run.yaml), else the defaults."""
    try:
        o = run.config().get("objectives")
    except Exception:  # noqa: BLE001 - an unreadable run.yaml: defaults
        o = None
    if not isinstance(o, dict):
        return Objectives()
    try:
        cap = o.get("closure_share_cap")
        return Objectives(
            regularizer=str(o.get("regularizer", "closure_share")),
            complexity=str(o.get("complexity", "n_neural_params")),
            closure_share_cap=None if cap is None else float(cap),
            plausible=tuple((str(k), float(lo), float(hi))
                            for k, (lo, hi) in (o.get("plausible") or {}).items()))
    except (TypeError, ValueError):
        return Objectives()


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


def leaderboard(run: Run, obj: Objectives | None = None) -> list[Row]:
    """All candidates, best first (``hyarch.ranking.rule``); failed and pending at the end."""
    obj = objectives_of(run) if obj is None else obj
    records = {r.id: r for r in run.candidates()}
    verdicts = run.verdicts()
    evals = {cid: as_evaluation(r.result if isinstance(r.result, dict) else None)
             for cid, r in records.items()}
    rejected = {c for c in records if verdicts.get(c, {}).get("verdict") == "rejected"}
    infeasible = {c for c, e in evals.items() if e.ok and not feasible(e, obj)}
    pending = {c for c, e in evals.items() if e.status is Status.PENDING}
    order = rank(evals, rejected=rejected, infeasible=infeasible, pending=pending)
    points = {}
    for c, ev in order:
        if ev.group == "ranked":
            v = objective_values(evals[c], obj)
            if v is not None:
                points[c] = v
    front = pareto_front(points)
    rows = []
    for c, ev in order:
        v = verdicts.get(c, {})
        rows.append(Row(c, records[c], ev.score if ev.group != "failed" else None,
                        c in front, v.get("verdict"), tuple(v.get("notes", ())),
                        tuple(points[c]) if c in points else None, ev, evals[c]))
    return rows


def leaderboard_json(run: Run, obj: Objectives | None = None) -> list[dict[str, Any]]:
    """The ``hyarch leaderboard --json`` list: best first, evaluate's fields plus provenance."""
    out = []
    for place, row in enumerate(leaderboard(run, obj), start=1):
        ev = row.evaluation
        res = row.record.result if isinstance(row.record.result, dict) else {}
        out.append({
            "rank": place, "id": row.id, "status": ev.status.value,
            "reason": ev.reason if res else "not evaluated yet",
            "proposer": row.record.proposer, "parents": row.record.parents,
            "round": row.record.meta.get("round"), "score": row.score, "pareto": row.pareto,
            "tier": row.evidence.tier if row.evidence else None,
            "complexity": row.evidence.complexity if row.evidence else None,
            "evidence": row.evidence.describe() if row.evidence else None,
            "verdict": row.verdict, "notes": list(row.notes),
            # the record's other fields as stored (its own key order)
            **{k: v for k, v in res.items() if k not in ("status", "reason", "traceback")},
        })
    return out
