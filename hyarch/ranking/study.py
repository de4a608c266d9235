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
    plausible: tuple[tuple[str, float, float], ...] = ()  # (parameter, lo, hi)


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


def constraint_values(result: dict[str, Any], obj: Objectives = Objectives()
                      ) -> dict[str, float]:
    """Optuna constraints (feasible when every value is <= 0): the closure share under its
    cap, each physical parameter inside its plausible range (relative distance outside)."""
    out: dict[str, float] = {}
    if result.get("status") != "ok":
        return out
    if obj.closure_share_cap is not None:
        out["closure_share_cap"] = float(result.get("closure_share") or 0.0) - obj.closure_share_cap
    params = result.get("parameters") or {}
    for name, lo, hi in obj.plausible:
        if name in params:
            v = float(params[name])
            out[f"plausible:{name}"] = max(lo - v, v - hi) / max(hi - lo, 1e-12)
    return out


def feasible(result: dict[str, Any], obj: Objectives = Objectives()) -> bool:
    return all(v <= 0 for v in constraint_values(result, obj).values())


def recorded_ids(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """Candidates with a finished trial (their result recorded), by id."""
    return {t.user_attrs[keys.CANDIDATE_ID]: t for t in study.get_trials(deepcopy=False)
            if keys.CANDIDATE_ID in t.user_attrs and keys.RESULT in t.user_attrs}


def record(study: optuna.Study, cid: str, meta: dict[str, Any], result: dict[str, Any],
           obj: Objectives = Objectives(), known: set[str] | None = None,
           source: str | None = None) -> bool:
    """Add one evaluated candidate as a trial (once: a second call is a no-op)."""
    if known is None:
        known = set(recorded_ids(study))
    if cid in known:
        return False
    attrs = {
        keys.CANDIDATE_ID: cid,
        keys.RESULT: shareable(result),
        keys.CODE_HASH: meta.get("code_hash"),
        keys.PROPOSER: meta.get("proposer"),
        keys.PARENTS: list(meta.get("parents", [])),
        keys.ROUND: meta.get("round"),
        keys.STATUS: result.get("status"),
        keys.REASON: (result.get("reason") or "")[:1000] or None,
    }
    if source is not None:
        attrs[keys.SOURCE] = source
    values = objective_values(result, obj)
    cons = constraint_values(result, obj)
    if values is None:
        trial = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs)
    else:
        trial = optuna.trial.create_trial(values=values, user_attrs=attrs,
                                          constraints=cons or None)
    study.add_trial(trial)
    known.add(cid)
    return True


def shareable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "traceback"}


def code_hashes(study: optuna.Study) -> dict[str, str]:
    """Code hash -> the first candidate id with that code, over all workers' trials."""
    out: dict[str, str] = {}
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        h, cid = t.user_attrs.get(keys.CODE_HASH), t.user_attrs.get(keys.CANDIDATE_ID)
        if h and cid and not t.user_attrs.get(keys.SKIP):
            out.setdefault(h, cid)
    return out


def claim(study: optuna.Study, worker: str, budget: int | None,
          code_hash: str | None = None) -> tuple[int, str] | None:
    """Claim the next candidate id through the study (atomic across workers and machines).

    The study numbers trials; the first ``budget`` distinct candidates win, a claim past
    the budget is closed as a skipped trial and None is returned.
    """
    trial = study.ask()
    cid = f"c{trial.number + 1:04d}"
    if budget is not None:
        before = {t.user_attrs.get(keys.CANDIDATE_ID) for t in study.get_trials(deepcopy=False)
                  if t.number < trial.number and not t.user_attrs.get(keys.SKIP)
                  and keys.CANDIDATE_ID in t.user_attrs}
        if len(before) >= budget:
            study._storage.set_trial_user_attr(trial._trial_id, keys.SKIP, True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return None
    trial.set_user_attr(keys.CANDIDATE_ID, cid)
    trial.set_user_attr(keys.WORKER, worker)
    trial.set_user_attr(keys.HEARTBEAT, time.time())
    if code_hash:
        trial.set_user_attr(keys.CODE_HASH, code_hash)
    return trial.number, cid


def release(study: optuna.Study, number: int) -> None:
    """Give a claim back: the trial is closed as skipped and is not a candidate."""
    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    study._storage.set_trial_user_attr(trial._trial_id, keys.SKIP, True)
    study.tell(number, state=optuna.trial.TrialState.FAIL)


def claimed_ids(study: optuna.Study) -> set[str]:
    return {t.user_attrs[keys.CANDIDATE_ID] for t in study.get_trials(deepcopy=False)
            if keys.CANDIDATE_ID in t.user_attrs and not t.user_attrs.get(keys.SKIP)}


def finished_ids(study: optuna.Study) -> set[str]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return {t.user_attrs[keys.CANDIDATE_ID] for t in study.get_trials(deepcopy=False, states=done)
            if keys.CANDIDATE_ID in t.user_attrs and keys.RESULT in t.user_attrs}


def tell(study: optuna.Study, number: int | None, cid: str, meta: dict[str, Any],
         source: str, result: dict[str, Any], obj: Objectives = Objectives()) -> None:
    """Finish the claimed trial ``number`` with the candidate's result; when that trial
    is no longer running (failed as stale meanwhile), add a fresh one instead."""
    attrs = {
        keys.CODE_HASH: meta.get("code_hash"), keys.PROPOSER: meta.get("proposer"),
        keys.PARENTS: list(meta.get("parents", [])), keys.ROUND: meta.get("round"),
        keys.STATUS: result.get("status"), keys.REASON: (result.get("reason") or "")[:1000] or None,
        keys.SOURCE: source, keys.RESULT: shareable(result), keys.WORKER: meta.get("worker"),
    }
    values = objective_values(result, obj)
    cons = constraint_values(result, obj)
    if number is not None:
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        if trial is not None and trial.state == optuna.trial.TrialState.RUNNING:
            for k, v in attrs.items():
                study._storage.set_trial_user_attr(trial._trial_id, k, v)
            live = optuna.Trial(study, trial._trial_id)
            for k, v in cons.items():
                live.set_constraint(k, v)
            try:
                if values is None:
                    study.tell(number, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(number, values)
                return
            except (RuntimeError, ValueError):
                pass  # finished by someone else meanwhile: fall through
    done = [t for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(keys.CANDIDATE_ID) == cid and keys.RESULT in t.user_attrs]
    if done:
        return
    attrs[keys.CANDIDATE_ID] = cid
    if values is None:
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                                  user_attrs=attrs))
    else:
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs=attrs,
                                                  constraints=cons or None))


def heartbeat(study: optuna.Study, numbers: list[int]) -> None:
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number in numbers:
            try:
                study._storage.set_trial_user_attr(t._trial_id, keys.HEARTBEAT, now)
            except Exception:  # finished meanwhile
                pass


def pareto_ids(study: optuna.Study) -> list[str]:
    return [t.user_attrs.get(keys.CANDIDATE_ID) for t in study.best_trials]


def fail_stale(study: optuna.Study, max_age_s: float, dead_workers: set[str] = frozenset()
               ) -> list[str]:
    """Fail RUNNING trials whose heartbeat is older than ``max_age_s``, or whose worker is
    known dead: a killed worker leaves nothing stuck. Returns their candidate ids."""
    now = time.time()
    n = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        beat = t.user_attrs.get(keys.HEARTBEAT, t.datetime_start.timestamp()
                                if t.datetime_start else now)
        if now - float(beat) > max_age_s or t.user_attrs.get(keys.WORKER) in dead_workers:
            try:
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                n.append(t.user_attrs.get(keys.CANDIDATE_ID))
            except Exception:  # another worker got there first
                pass
    return n
