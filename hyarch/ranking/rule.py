"""The one ranking rule. Every view (leaderboard, report, review, prompts, the Python API,
the study's recorded order) orders candidates with ``rank``.

A candidate's **score** is its mean log10 normalised MSE over the validation trajectories:
a split that training never looked at (it fits on the training split and stops early on a
selection part of it), scored from rollouts integrated well below the data's noise.

The **rule** is the one-standard-error rule of cross-validation (Breiman et al. 1984;
Hastie, Tibshirani and Friedman, *Elements of Statistical Learning*, 7.10), with validation
trajectories in the role of folds (a split of fewer than 5 trajectories is cut into
contiguous blocks of time, enough for 5 folds: blocked cross-validation; two trajectories
give no usable spread): the best-scoring candidate b has per-fold errors whose mean (its
score) has a standard error SE = sd_j(log10 e_bj) / sqrt(n). Every candidate
whose score is within SE of b's is not distinguishable from it on these data, and shares its
**tier**; within a tier the simpler model ranks first (fewer fitted values: physical
parameters plus network weights), then the better score. The first tier is formed around the
best candidate, the next around the best of the rest, and so on. So a closure or an extra
term ranks above a simpler model only when it buys more than the trajectory-to-trajectory
scatter of the validation error, which is what the noise sets: a network that re-fits the
noise, or corrects a solver, does not. (A paired test is sharper, and too sharp here: it
calls a 5% gain at the noise floor significant when twelve spare terms soak up a training
integrator's bias, measured on the pendulum.)

Rejected candidates (a reviewer's verdict) and infeasible ones (closure share above its cap,
a parameter outside its plausible range) follow the rest; failed and pending ones come last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hyarch.record import Evaluation

RULE = "one-standard-error rule over validation trajectories"
FLOOR = 1e-30  # log10 of a zero error


def _evaluation(result: Any) -> Evaluation:
    return result if isinstance(result, Evaluation) else Evaluation.from_dict(result)


def log_errors(result: Any) -> list[float] | None:
    """log10 of each validation trajectory's normalised MSE, or None (not rankable: failed,
    pending, or a record that does not parse)."""
    ev = _evaluation(result)
    val = ev.split("val") if ev.ok else None
    if val is None:
        return None
    per = val.per_trajectory_nmse
    if per:
        if any(v is None or v < 0 for v in per):
            return None
        return [math.log10(max(v, FLOOR)) for v in per]
    if val.nmse is None or val.nmse < 0:  # a record from before per-trajectory errors
        return None
    return [math.log10(max(val.nmse, FLOOR))]


def score_of(result: Any) -> float | None:
    """The score: mean log10 validation nMSE over trajectories (lower is better)."""
    e = log_errors(result)
    return None if e is None else sum(e) / len(e)


def complexity_of(result: Any) -> int:
    """Fitted values: physical parameters plus network weights."""
    ev = _evaluation(result)
    return ev.fitted_values if ev.ok else 0


@dataclass(frozen=True)
class Evidence:
    """Why a candidate sits where it does."""

    score: float | None  # mean log10 validation nMSE
    tier: int | None  # 1 = indistinguishable from the best
    complexity: int
    vs: str | None = None  # the tier's best candidate
    diff: float | None = None  # score difference to it (>= 0), decades
    se: float | None = None  # the standard error of its score
    group: str = "ranked"  # ranked / rejected / infeasible / failed / pending

    def describe(self) -> str:
        if self.group != "ranked":
            return self.group
        if self.vs is None:
            return f"tier {self.tier}: best score"
        return (f"tier {self.tier}: {self.diff:+.3f} decades from {self.vs}, within its"
                f" standard error {self.se:.3f}")


def standard_error(e: list[float]) -> float:
    """Standard error of the mean of ``e`` (0 with fewer than two values)."""
    n = len(e)
    if n < 2:
        return 0.0
    m = sum(e) / n
    return math.sqrt(sum((x - m) ** 2 for x in e) / (n - 1) / n)


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and standard error of a - b, trajectory by trajectory."""
    n = min(len(a), len(b))
    if n == 0:
        return math.inf, 0.0
    d = [a[i] - b[i] for i in range(n)]
    mean = sum(d) / n
    if n < 2 or len(a) != len(b):
        return mean, 0.0
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    return mean, math.sqrt(var / n)


def rank(items: dict[str, dict[str, Any]], *, rejected: set[str] = frozenset(),
         infeasible: set[str] = frozenset(), pending: set[str] = frozenset()
         ) -> list[tuple[str, Evidence]]:
    """Order candidates ``{id: result}`` best first, each with the evidence for its place.

    Ties are broken by id, so the order is a function of the records alone."""
    parsed = {cid: _evaluation(r) for cid, r in items.items()}
    errors = {cid: log_errors(ev) for cid, ev in parsed.items()}
    cx = {cid: complexity_of(ev) for cid, ev in parsed.items()}
    live = {cid: e for cid, e in errors.items()
            if e is not None and cid not in rejected and cid not in infeasible}
    out = tiers(live, cx)

    def tail(ids: set[str] | list[str], group: str) -> None:
        for c in sorted(ids):
            e = errors.get(c)
            out.append((c, Evidence(None if e is None else sum(e) / len(e), None,
                                    cx.get(c, 0), group=group)))

    tail([c for c in items if c in rejected and c not in live], "rejected")
    tail([c for c in items if c in infeasible and c not in rejected and errors[c] is not None],
         "infeasible")
    seen = {c for c, _ in out}
    tail([c for c in items if c not in seen and c not in pending], "failed")
    tail([c for c in items if c not in seen and c in pending], "pending")
    return out


def tiers(live: dict[str, list[float]], cx: dict[str, int]) -> list[tuple[str, Evidence]]:
    """The rule itself: ``live`` maps each candidate to its per-trajectory log10 errors,
    ``cx`` to its fitted values; best first, in tiers, simpler first within a tier.
    (Distillation uses it too, to choose among a closure's sparse fits refitted as
    candidates.)"""
    out: list[tuple[str, Evidence]] = []
    remaining = dict(live)
    tier = 0
    while remaining:
        tier += 1
        best = min(remaining, key=lambda c: (sum(remaining[c]) / len(remaining[c]), cx[c], c))
        members = {}
        se = standard_error(remaining[best])
        b_score = sum(remaining[best]) / len(remaining[best])
        for c, e in remaining.items():
            if c == best:
                members[c] = (None, None)
                continue
            d = sum(e) / len(e) - b_score
            if d <= se:
                members[c] = (d, se)
        order = sorted(members, key=lambda c: (cx[c], sum(live[c]) / len(live[c]), c))
        for c in order:
            d, se = members[c]
            out.append((c, Evidence(sum(live[c]) / len(live[c]), tier, cx[c],
                                    None if c == best else best, d, se)))
        for c in members:
            remaining.pop(c)
    return out
