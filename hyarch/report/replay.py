"""What reports and review show of a candidate: the predictions its evaluation stored.

Candidate code is untrusted and runs only in the sandbox (``hyarch.sandbox.runner``). The
evaluation returns the candidate's rollouts of every split, which the search stores next to
the candidate (``predictions.npz``, ``Run.write_predictions``), and the parameters'
specifications (``parameter_specs`` in metrics.json). This module reads those back; it
never imports, builds or loads a candidate, so a report or a review of a run cannot run the
run's code. A candidate evaluated before predictions were stored is shown without plots,
with a one-line reason.

``load_run_space`` reloads the run's search space: data only (a YAML file and simulated or
CSV trajectories), no candidate code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyarch.runs import CandidateRecord, Run

SPLITS = ("train", "test", "ood")


class ReplayError(Exception):
    """A candidate's stored predictions or a run's space that cannot be read, with why."""


@dataclass(frozen=True)
class StoredSpec:
    """A parameter's specification as the evaluation recorded it (numbers, no code)."""

    init: float | None = None
    lower: float | None = None
    upper: float | None = None
    log: bool = False
    unit: str = ""


def load_run_space(run: Run):
    """The run's search space, from ``space`` in run.yaml (a path or a built-in name)."""
    from hyarch.spaces.errors import SpaceError
    from hyarch.spaces.loader import load_space

    ref = run.config().get("space")
    if not ref:
        raise ReplayError(f"{run.path / 'run.yaml'}: no 'space' field, cannot reload the data")
    candidates = [ref]
    p = Path(str(ref))
    if not p.is_absolute():
        candidates.append(run.path / p)
    last: Exception | None = None
    for c in candidates:
        try:
            return load_space(c)
        except (SpaceError, FileNotFoundError, OSError) as e:
            last = e
    raise ReplayError(f"{run.path / 'run.yaml'}: space {ref!r} cannot be loaded: {last}")


def _run_of(rec: CandidateRecord) -> Run:
    """The run a record belongs to (``<run>/candidates/<id>``)."""
    return Run(rec.path.parent.parent)


def stored_predictions(rec: CandidateRecord, space=None, splits=SPLITS, *,
                       reduced: bool = False, run: Run | None = None) -> dict[str, Any]:
    """The rollouts the candidate's evaluation stored, ``{split: (B, T, S) array}``, for
    each of ``splits`` that was stored (and, given ``space``, that the space has with the
    same shape). ``reduced`` gives the closure-free rollouts instead. ReplayError with a
    one-line reason when there is nothing to show."""
    import numpy as np

    if rec.status != "ok":
        raise ReplayError(f"candidate {rec.id} did not finish ({rec.status})")
    arrays = (run or _run_of(rec)).read_predictions(rec.id)
    if not arrays:
        raise ReplayError(f"candidate {rec.id} has no stored predictions (evaluated before"
                          " hyarch stored them; evaluate it again to plot it)")
    kind = "reduced" if reduced else "full"
    out: dict[str, Any] = {}
    mismatched = []
    for split in splits:
        a = arrays.get(f"{split}.{kind}")
        if a is None:
            continue
        a = np.asarray(a, dtype=np.float64)
        if space is not None:
            if split not in space.splits:
                continue
            if tuple(a.shape) != tuple(space.splits[split].y.shape):
                mismatched.append(split)
                continue
        out[split] = a
    if not out:
        why = (f"they do not match the run's data on {', '.join(mismatched)}" if mismatched
               else f"none for {', '.join(splits)}")
        raise ReplayError(f"candidate {rec.id}: stored predictions cannot be plotted: {why}")
    return out


def predictions(rec: CandidateRecord, space, splits=SPLITS, *,
                run: Run | None = None) -> dict[str, Any]:
    """Rollouts of a finished candidate on each split the space has, as stored."""
    return stored_predictions(rec, space, splits, run=run)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def parameter_bounds(rec: CandidateRecord, space=None) -> dict[str, StoredSpec]:
    """The candidate's parameter specifications by name (bounds, init, log, unit), from
    ``parameter_specs`` in its result; {} when the result has none (tables say "-")."""
    raw = (rec.result or {}).get("parameter_specs")
    if not isinstance(raw, dict):
        return {}
    out = {}
    for name, sp in raw.items():
        if isinstance(sp, dict):
            out[str(name)] = StoredSpec(init=_num(sp.get("init")), lower=_num(sp.get("lower")),
                                        upper=_num(sp.get("upper")), log=sp.get("log") is True,
                                        unit=str(sp.get("unit") or "")[:40])
    return out
