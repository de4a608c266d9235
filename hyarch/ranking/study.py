"""The Optuna study of a run: every candidate is a trial; the Pareto front is the answer set.

Candidates from any proposer enter through ``add_trial`` (evaluated elsewhere, in the
sandbox); the candidate id, code hash, proposer and parents are user attributes (keys in
``keys.py``). Failed candidates are failed trials with their reason. Storage is a journal
file in the run folder by default, or any Optuna storage URL (PostgreSQL for several
machines).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import optuna

from hyarch.ranking import keys
from hyarch.runs import Run

optuna.logging.set_verbosity(optuna.logging.WARNING)

OBJECTIVE_NAMES = ("val_nmse", "regularizer", "complexity")


def storage_for(run: Run, url: str | None = None):
    """The journal file in the run folder, or the storage at ``url``."""
    if url:
        if url.startswith("sqlite"):
            print("hyarch: warning: Optuna does not recommend SQLite for parallel writers;"
                  " prefer the journal file (default) or PostgreSQL")
        return optuna.storages.RDBStorage(url, heartbeat_interval=None)
    from optuna.storages.journal import JournalFileBackend

    run.path.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(run.journal_path)))


def open_study(run: Run, url: str | None = None, *, study_name: str | None = None
               ) -> optuna.Study:
    name = study_name or (f"{keys.STUDY_NAME}:{run.path.name}" if url else keys.STUDY_NAME)
    study = optuna.create_study(
        storage=storage_for(run, url), study_name=name,
        directions=["minimize"] * len(OBJECTIVE_NAMES), load_if_exists=True,
    )
    if keys.OBJECTIVES not in study.user_attrs:
        study.set_user_attr(keys.OBJECTIVES, list(OBJECTIVE_NAMES))
    return study


@dataclass(frozen=True)
class Objectives:
    regularizer: str = "closure_share"
    complexity: str = "n_neural_params"
    closure_share_cap: float | None = None


def objective_values(result: dict[str, Any], obj: Objectives = Objectives()) -> list[float] | None:
    """(val nmse, regularizer, complexity) of an ok result; None when not rankable."""
    if result.get("status") != "ok":
        return None
    val = (result.get("metrics") or {}).get("val", {}).get("nmse")
    if val is None or not math.isfinite(val):
        return None
    if obj.regularizer == "closure_share":
        reg = result.get("closure_share")
    else:
        reg = (result.get("regularizers") or {}).get(obj.regularizer)
    reg = 0.0 if reg is None else float(reg)
    cplx = 0.0 if obj.complexity == "none" else float(result.get("n_neural_params") or 0)
    return [float(val), reg, cplx]


def constraint_values(result: dict[str, Any], space_truth_bounds=None,
                      obj: Objectives = Objectives()) -> list[float]:
    """<= 0 means satisfied: closure share under its cap."""
    out = []
    if obj.closure_share_cap is not None:
        out.append(float(result.get("closure_share") or 0.0) - obj.closure_share_cap)
    return out


def recorded_ids(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    return {t.user_attrs[keys.CANDIDATE_ID]: t for t in study.get_trials(deepcopy=False)
            if keys.CANDIDATE_ID in t.user_attrs}


def record(study: optuna.Study, cid: str, meta: dict[str, Any], result: dict[str, Any],
           obj: Objectives = Objectives(), known: set[str] | None = None) -> bool:
    """Add one evaluated candidate as a trial (once: a second call is a no-op)."""
    if known is None:
        known = set(recorded_ids(study))
    if cid in known:
        return False
    attrs = {
        keys.CANDIDATE_ID: cid,
        keys.CODE_HASH: meta.get("code_hash"),
        keys.PROPOSER: meta.get("proposer"),
        keys.PARENTS: list(meta.get("parents", [])),
        keys.ROUND: meta.get("round"),
        keys.STATUS: result.get("status"),
        keys.REASON: (result.get("reason") or "")[:1000] or None,
    }
    values = objective_values(result, obj)
    cons = constraint_values(result, obj=obj)
    if cons:
        attrs[keys.CONSTRAINTS] = cons
    if values is None:
        trial = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs)
    else:
        trial = optuna.trial.create_trial(values=values, user_attrs=attrs)
    study.add_trial(trial)
    known.add(cid)
    return True


def pareto_ids(study: optuna.Study) -> list[str]:
    return [t.user_attrs.get(keys.CANDIDATE_ID) for t in study.best_trials]


def fail_stale(study: optuna.Study, max_age_s: float) -> int:
    """Fail RUNNING trials whose heartbeat is older than ``max_age_s`` (a dead worker's)."""
    now = time.time()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        beat = t.user_attrs.get(keys.HEARTBEAT, t.datetime_start.timestamp()
                                if t.datetime_start else now)
        if now - float(beat) > max_age_s:
            try:
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                n += 1
            except Exception:  # another worker got there first
                pass
    return n
