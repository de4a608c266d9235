"""A run's candidates as rows a person reads: ranked, Pareto-marked, with their verdicts.

Both the terminal review and the HTML report read the run folder through this module; the
order, the ranks and the Pareto marks come from ``hyarch.ranking.leaderboard``, the one
ranking every view uses (see ``hyarch.ranking.rule`` for the rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hyarch.runs import CandidateRecord, Run

PARETO_OBJECTIVES = ("val nmse", "closure share", "neural parameters")


@dataclass(frozen=True)
class Row:
    """One candidate as the leaderboard shows it."""

    id: str
    index: int  # order of creation (candidate folders sort by id)
    proposer: str
    round: int | None
    parents: tuple[str, ...]
    status: str
    reason: str | None = None
    val_nmse: float | None = None
    train_nmse: float | None = None
    test_nmse: float | None = None
    ood_nmse: float | None = None
    closure_share: float | None = None
    n_neural: int | None = None
    parameters: dict[str, float] = field(default_factory=dict)
    param_rel_error: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    verdict: str | None = None
    notes: tuple[str, ...] = ()
    pareto: bool = False
    rank: int | None = None  # 1-based among ranked candidates (not rejected or infeasible)
    score: float | None = None  # the rule's score: mean log10 validation nMSE
    tier: int | None = None
    evidence: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.val_nmse is not None

    @property
    def baseline(self) -> bool:
        return self.proposer == "baseline"

    def objectives(self) -> tuple[float, float, float]:
        return (_inf(self.val_nmse), float(self.closure_share or 0.0),
                float(self.n_neural or 0))


def _inf(x: float | None) -> float:
    return math.inf if x is None or not math.isfinite(x) else float(x)


def row_of(rec: CandidateRecord, index: int, review: dict[str, Any] | None = None) -> Row:
    from hyarch.record import Evaluation

    ev = Evaluation.from_dict(rec.result or {"status": "pending"})
    review = review or {}
    rnd = rec.meta.get("round")

    def nmse(split: str) -> float | None:
        s = ev.split(split)
        return None if s is None else s.nmse

    return Row(
        id=rec.id, index=index, proposer=rec.proposer,
        round=int(rnd) if isinstance(rnd, (int, float)) else None,
        parents=tuple(rec.parents), status=ev.status.value, reason=ev.reason,
        val_nmse=nmse("val"), train_nmse=nmse("train"), test_nmse=nmse("test"),
        ood_nmse=nmse("ood"), closure_share=ev.closure_share, n_neural=ev.n_neural_params,
        parameters=dict(ev.parameters), param_rel_error=dict(ev.param_rel_error),
        seconds=ev.seconds, verdict=review.get("verdict"),
        notes=tuple(review.get("notes", ())),
    )


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_ids(rows: list[Row]) -> set[str]:
    """Ids of the non-dominated finished candidates (duplicates of a point all count)."""
    ok = [r for r in rows if r.ok]
    return {r.id for r in ok
            if not any(dominates(o.objectives(), r.objectives()) for o in ok if o is not r)}


def leaderboard(run: Run) -> list[Row]:
    """Every candidate in the one ranking's order: ranked ones, then rejected and
    infeasible, failed, pending."""
    from hyarch.ranking.leaderboard import leaderboard as ranked

    verdicts = run.verdicts()
    rows = {rec.id: row_of(rec, i, verdicts.get(rec.id))
            for i, rec in enumerate(run.candidates())}
    out, k = [], 0
    for r in ranked(run):
        row = rows.get(r.id)
        if row is None:
            continue
        ev = r.evidence
        extra = {"pareto": r.pareto, "score": r.score,
                 "tier": ev.tier if ev else None, "evidence": ev.describe() if ev else None}
        if r.ranked:
            k += 1
            extra["rank"] = k
        out.append(_replace(row, **extra))
    return out


def _replace(row: Row, **kw) -> Row:
    from dataclasses import replace

    return replace(row, **kw)


def best_rows(rows: list[Row], n: int = 3, *, include_baselines: bool = False) -> list[Row]:
    """The ``n`` best ranked candidates (baselines left out unless asked)."""
    return [r for r in rows
            if r.rank is not None and (include_baselines or not r.baseline)][:n]


def fmt(x: float | int | None, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)
