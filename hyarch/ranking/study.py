"""The Optuna study of a run: every candidate is a trial; the Pareto front is the answer set.

Candidates from any proposer enter through ``add_trial`` (evaluated elsewhere, in the
sandbox); the candidate id, code hash, proposer and parents are user attributes (keys in
``keys.py``). Failed candidates are failed trials with their reason. Storage is a journal
file in the run folder by default, or any Optuna storage URL (PostgreSQL for several
machines).

The journal is read by a tolerant backend: a line that does not parse or validate (garbage
a process appended, a torn line a full disk left behind) counts as a no-op instead of
breaking every read; on open a torn tail is cut off and damaged lines are blanked in
place (same length, so other readers' offsets hold), with a warning naming them. When the
journal still cannot be replayed, the study is rebuilt from the candidate folders, the
source of truth, keeping trial numbers (and so candidate ids) where they were.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import optuna

from hyarch.ranking import keys
from hyarch.record import Evaluation, Status, as_evaluation
from hyarch.runs import Run

optuna.logging.set_verbosity(optuna.logging.WARNING)

OBJECTIVE_NAMES = ("val_nmse", "regularizer", "complexity")
STALE_OF = "stale_of"  # a trial failed as stale gives its candidate id up to the re-evaluation


# -- the journal ----------------------------------------------------------------------------

_NEUTRAL = b'{"op_code":10}'  # DISCARD_TRIALS: a no-op for Optuna's journal replay
_NEUTRAL_LOG = {"op_code": 10, "worker_id": "hyarch-repair"}
_INT = (int,)
_NUM = (int, float)
_OPS: dict[int, dict[str, tuple[type, ...]]] = {  # required fields of each operation
    0: {"study_name": (str,), "directions": (list,)},
    1: {"study_id": _INT},
    2: {"study_id": _INT, "user_attr": (dict,)},
    3: {"study_id": _INT, "system_attr": (dict,)},
    4: {"study_id": _INT},
    5: {"trial_id": _INT, "param_name": (str,), "param_value_internal": _NUM,
        "distribution": (str,)},
    6: {"trial_id": _INT, "state": _INT},
    7: {"trial_id": _INT, "step": _INT, "intermediate_value": _NUM},
    8: {"trial_id": _INT, "user_attr": (dict,)},
    9: {"trial_id": _INT, "system_attr": (dict,)},
    10: {},
}


def valid_log(log: Any) -> bool:
    """Whether one journal entry has the shape Optuna's replay expects."""
    if not isinstance(log, dict):
        return False
    op = log.get("op_code")
    if op == 10 and not isinstance(op, bool):  # a no-op (what repair blanks lines to)
        return True
    if not isinstance(log.get("worker_id"), str):
        return False
    if isinstance(op, bool) or not isinstance(op, int) or op not in _OPS:
        return False
    for k, types in _OPS[op].items():
        v = log.get(k)
        if isinstance(v, bool) or not isinstance(v, types):
            return False
    if op == 0 and not all(d in (1, 2) and not isinstance(d, bool) for d in log["directions"]):
        return False
    if op == 6:
        if log["state"] not in range(5):
            return False
        vals = log.get("values")
        if vals is not None and not (isinstance(vals, list) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)):
            return False
    if op == 4:
        for k in ("user_attrs", "system_attrs", "params", "distributions",
                  "intermediate_values"):
            if log.get(k) is not None and not isinstance(log[k], dict):
                return False
        if log.get("state") is not None and log["state"] not in range(5):
            return False
        vals = log.get("values")
        if vals is not None and not isinstance(vals, list):
            return False
    return True


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        log = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return log if valid_log(log) else None


def _journal_backend_class():
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import get_lock_file

    class SafeJournalFileBackend(JournalFileBackend):
        """Optuna's journal file, hardened: a complete line that does not parse or validate
        is replayed as a no-op (and remembered in ``dropped``); an unterminated tail is
        never read; an append cuts a torn tail off first and takes back a partial write
        (a full disk), so a failed write leaves the journal as it was."""

        def __init__(self, file_path: str) -> None:
            super().__init__(file_path)
            self.dropped: dict[int, bytes] = {}

        def read_logs(self, log_number_from: int):
            with open(self._file_path, "rb") as f:
                remaining = os.fstat(f.fileno()).st_size
                start = 0
                if log_number_from in self._log_number_offset:
                    f.seek(self._log_number_offset[log_number_from])
                    start = log_number_from
                    remaining -= self._log_number_offset[log_number_from]
                for number, line in enumerate(f, start=start):
                    remaining -= len(line)
                    if remaining < 0 or not line.endswith(b"\n"):
                        break  # being written, or torn: not a log yet
                    if number + 1 not in self._log_number_offset:
                        self._log_number_offset[number + 1] = (
                            self._log_number_offset[number] + len(line))
                    if number < log_number_from:
                        continue
                    log = _parse_line(line)
                    if log is None:
                        if line.strip():
                            self.dropped[number] = line[:200]
                        log = dict(_NEUTRAL_LOG)
                    yield log

        def append_logs(self, logs: list[dict[str, Any]]) -> None:
            data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs)
                    + "\n").encode("utf-8")
            with get_lock_file(self._lock):
                fd = os.open(self._file_path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW)
                try:
                    size = _cut_torn_tail(fd)
                    try:
                        view = memoryview(data)
                        while view:
                            view = view[os.write(fd, view):]
                        os.fsync(fd)
                    except BaseException:
                        try:  # take the partial line back: no torn line for others
                            os.ftruncate(fd, size)
                        except OSError:
                            pass
                        raise
                finally:
                    os.close(fd)

    return SafeJournalFileBackend


def _cut_torn_tail(fd: int) -> int:
    """Truncate an unterminated last line (nobody has read it: readers stop before it);
    returns the size after."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    pos = size
    while pos > 0:
        step = min(1 << 16, pos)
        chunk = os.pread(fd, step, pos - step)
        i = chunk.rfind(b"\n")
        if i >= 0:
            pos = pos - step + i + 1
            break
        pos -= step
    os.ftruncate(fd, pos)
    return pos


def repair_journal(path: str | os.PathLike) -> list[str]:
    """Cut a torn tail off the journal and blank damaged lines in place (same length:
    concurrent readers keep their offsets). Returns what was dropped, one line each."""
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    path = str(path)
    if not os.path.lexists(path):
        return []
    if os.path.islink(path):
        raise OSError(errno.ELOOP, f"{path}: the journal is a symbolic link; refusing it")
    notes: list[str] = []
    with get_lock_file(JournalFileSymlinkLock(path)):
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            before = os.fstat(fd).st_size
            after = _cut_torn_tail(fd)
            if after < before:
                notes.append(f"a torn last line ({before - after} bytes)")
            offset = 0
            with os.fdopen(os.dup(fd), "rb") as fh:
                lines = list(fh)
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    pass  # a line blanked before: a no-op, reported then
                elif _parse_line(line) is None:
                    preview = line[:60].decode("utf-8", "replace").rstrip("\n")
                    notes.append(f"line {number} ({len(line)} bytes: {preview!r})")
                    if len(line) - 1 >= len(_NEUTRAL) and line.endswith(b"\n"):
                        blank = _NEUTRAL + b" " * (len(line) - 1 - len(_NEUTRAL)) + b"\n"
                    else:  # too short for a no-op entry: blank (still a no-op here)
                        blank = b" " * (len(line) - 1) + b"\n"
                    os.pwrite(fd, blank, offset)
                offset += len(line)
            if notes:
                os.fsync(fd)
        finally:
            os.close(fd)
    return notes


def storage_for(run: Run, url: str | None = None):
    """The journal file in the run folder, or the storage at ``url``."""
    if url:
        if url.startswith("sqlite"):
            print("hyarch: warning: Optuna does not recommend SQLite for parallel writers;"
                  " prefer the journal file (default) or PostgreSQL")
        return optuna.storages.RDBStorage(url, heartbeat_interval=None)
    run.path.mkdir(parents=True, exist_ok=True)
    backend = _journal_backend_class()(str(run.journal_path))
    return optuna.storages.JournalStorage(backend)


def _warn(msg: str) -> None:
    print(f"hyarch: warning: {msg}", file=sys.stderr)


def open_study(run: Run, url: str | None = None, *, study_name: str | None = None,
               objectives: Objectives | None = None) -> optuna.Study:
    """The run's study, created when missing. The journal is checked first: damage is
    repaired (see ``repair_journal``) or, failing that, the study is rebuilt from the
    candidate folders; either way with a warning naming what was dropped."""
    name = study_name or (f"{keys.STUDY_NAME}:{run.path.name}" if url else keys.STUDY_NAME)
    if not url:
        notes = repair_journal(run.journal_path)
        if notes:
            _warn(f"{run.journal_path}: dropped " + "; ".join(notes[:10])
                  + (f"; and {len(notes) - 10} more" if len(notes) > 10 else ""))
        try:
            run.sweep_temp_files()
        except OSError:
            pass
    try:
        study = _create(run, url, name)
    except Exception as e:  # noqa: BLE001 - a journal Optuna cannot replay
        if url:
            raise
        study = rebuild_study(run, name, objectives, why=f"{type(e).__name__}: {e}")
    if keys.OBJECTIVES not in study.user_attrs:
        study.set_user_attr(keys.OBJECTIVES, list(OBJECTIVE_NAMES))
    name_objectives(study, run, objectives)
    return study


def metric_names(obj: Objectives) -> list[str]:
    """The objective values' names, as optuna-dashboard and ``trials_dataframe`` show them
    (without them the dashboard says "Objective 0, 1, 2")."""
    return [OBJECTIVE_NAMES[0], f"{OBJECTIVE_NAMES[1]}: {obj.regularizer}",
            f"{OBJECTIVE_NAMES[2]}: {obj.complexity}"]


def name_objectives(study: optuna.Study, run: Run, obj: Objectives | None = None) -> None:
    """Give the study its metric names, once (a study made before they existed gets them
    when it is next opened or served); ``obj`` defaults to the run's space's."""
    if study.metric_names is None and len(study.directions) == len(OBJECTIVE_NAMES):
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names(obj or run_objectives(run)))


def _create(run: Run, url: str | None, name: str) -> optuna.Study:
    study = optuna.create_study(
        storage=storage_for(run, url), study_name=name,
        directions=["minimize"] * len(OBJECTIVE_NAMES), load_if_exists=True,
    )
    study.get_trials(deepcopy=False)  # replays the whole journal
    return study


def run_objectives(run: Run) -> Objectives:
    """The objectives of the run's search space (the defaults when it cannot be read)."""
    try:
        from hyarch.spaces.loader import load_space

        spec = load_space(run.config()["space"]).spec.objectives
        return Objectives(regularizer=spec.regularizer, complexity=spec.complexity,
                          closure_share_cap=spec.closure_share_cap,
                          plausible=tuple((k, float(lo), float(hi))
                                          for k, (lo, hi) in spec.plausible.items()))
    except Exception:  # noqa: BLE001
        return Objectives()


def rebuild_study(run: Run, name: str = keys.STUDY_NAME, obj: Objectives | None = None,
                  why: str = "") -> optuna.Study:
    """A fresh study from the candidate folders (the old journal is kept beside it as
    ``study.journal.corrupt-<time>``). Candidate ``cNNNN`` becomes trial NNNN-1, so ids
    claimed later do not collide; gaps are skipped claims; unfinished candidates are
    stale trials, evaluated again on resume."""
    obj = obj or run_objectives(run)
    aside = run.journal_path.with_name(f"{run.journal_path.name}.corrupt-{int(time.time())}")
    if os.path.lexists(run.journal_path):
        os.replace(run.journal_path, aside)
    _warn(f"{run.journal_path} could not be replayed ({why[:200]}); rebuilt the study from"
          f" the candidate folders, the old journal is {aside.name}")
    study = optuna.create_study(storage=storage_for(run), study_name=name,
                                directions=["minimize"] * len(OBJECTIVE_NAMES))
    try:
        cfg = run.config()
    except Exception:  # noqa: BLE001
        cfg = {}
    if isinstance(cfg.get("budget"), int):
        study.set_user_attr(keys.BUDGET, cfg["budget"])
    if isinstance(cfg.get("space"), str):
        study.set_user_attr(keys.SPACE, cfg["space"])
    records = {r.id: r for r in run.candidates()}
    numbered = {int(cid[1:]): r for cid, r in records.items() if re.fullmatch(r"c\d+", cid)}
    fail = optuna.trial.TrialState.FAIL
    for n in range(1, max(numbered, default=0) + 1):
        r = numbered.get(n)
        if r is None:
            study.add_trial(optuna.trial.create_trial(state=fail, user_attrs={keys.SKIP: True}))
        elif r.finished:
            record(study, r.id, r.meta, r.result or {}, obj, known=set(), source=r.source)
        else:
            study.add_trial(optuna.trial.create_trial(
                state=fail, user_attrs={keys.CANDIDATE_ID: None, STALE_OF: r.id}))
    known = set(recorded_ids(study))
    for cid, r in records.items():
        if cid not in known and r.finished and not re.fullmatch(r"c\d+", cid):
            record(study, cid, r.meta, r.result or {}, obj, known=known, source=r.source)
    return study


@dataclass(frozen=True)
class Objectives:
    regularizer: str = "closure_share"
    complexity: str = "n_neural_params"
    closure_share_cap: float | None = None
    plausible: tuple[tuple[str, float, float], ...] = ()  # (parameter, lo, hi)


def finite_number(v: Any) -> float | None:
    """A finite float, or None for anything else (missing, text, NaN, a flag, a list)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def objective_values(result: Evaluation | dict[str, Any] | None,
                     obj: Objectives = Objectives()) -> list[float] | None:
    """(val nmse, regularizer, complexity) of an ok result; None when not rankable (also
    when the record is malformed: text, NaN, the wrong type)."""
    ev = as_evaluation(result)
    if not ev.ok or ev.val_nmse is None:
        return None
    if obj.regularizer == "closure_share":
        reg = ev.closure_share
    else:
        reg = dict(ev.regularizers).get(obj.regularizer)
    cplx = None if obj.complexity == "none" else ev.n_neural_params
    return [ev.val_nmse, 0.0 if reg is None else reg, 0.0 if cplx is None else float(cplx)]


def constraint_values(result: Evaluation | dict[str, Any] | None,
                      obj: Objectives = Objectives()) -> dict[str, float]:
    """Optuna constraints (feasible when every value is <= 0): the closure share under its
    cap, each physical parameter inside its plausible range (relative distance outside)."""
    out: dict[str, float] = {}
    ev = as_evaluation(result)
    if not ev.ok:
        return out
    if obj.closure_share_cap is not None:
        out["closure_share_cap"] = (ev.closure_share or 0.0) - obj.closure_share_cap
    params = dict(ev.parameters)
    for name, lo, hi in obj.plausible:
        if name in params:
            v = params[name]
            out[f"plausible:{name}"] = (1.0 if v is None
                                        else max(lo - v, v - hi) / max(hi - lo, 1e-12))
    return out


def feasible(result: Evaluation | dict[str, Any] | None, obj: Objectives = Objectives()
             ) -> bool:
    return all(v <= 0 for v in constraint_values(result, obj).values())


def recorded_ids(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """Candidates with a finished trial (their result recorded), by id. A trial still
    running is not one, even with the result among its attributes: ``tell`` writes them
    before it finishes the trial, and a search killed in between leaves it running, to be
    failed as stale (which takes its id away) on resume."""
    return {t.user_attrs[keys.CANDIDATE_ID]: t for t in study.get_trials(deepcopy=False)
            if isinstance(t.user_attrs.get(keys.CANDIDATE_ID), str)
            and keys.RESULT in t.user_attrs and t.state.is_finished()}


def _attrs(meta: Any, result: Any, ev: Evaluation) -> dict[str, Any]:
    """The trial attributes of a candidate, each of the expected type (a malformed value
    is left out rather than stored); ``ev`` is ``result`` parsed."""
    meta = meta if isinstance(meta, dict) else {}
    result = result if isinstance(result, dict) else {}
    parents = meta.get("parents")

    def text(v):
        return v if isinstance(v, str) else None

    rnd = meta.get("round")
    return {
        keys.CODE_HASH: text(meta.get("code_hash")), keys.PROPOSER: text(meta.get("proposer")),
        keys.PARENTS: [p for p in parents if isinstance(p, str)] if isinstance(parents, list)
        else [],
        keys.ROUND: rnd if isinstance(rnd, int) and not isinstance(rnd, bool) else None,
        keys.STATUS: ev.status.value if ev.status is not Status.PENDING else "failed",
        keys.REASON: (ev.reason[:1000] or None) if ev.reason is not None else None,
        keys.RESULT: shareable(result),
    }


def record(study: optuna.Study, cid: str, meta: dict[str, Any], result: dict[str, Any],
           obj: Objectives = Objectives(), known: set[str] | None = None,
           source: str | None = None) -> bool:
    """Add one evaluated candidate as a trial (once: a second call is a no-op)."""
    if known is None:
        known = set(recorded_ids(study))
    if cid in known:
        return False
    ev = as_evaluation(result)
    attrs = {keys.CANDIDATE_ID: cid, **_attrs(meta, result, ev)}
    if source is not None:
        attrs[keys.SOURCE] = source
    values = objective_values(ev, obj)
    cons = constraint_values(ev, obj)
    if values is None:
        trial = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs)
    else:
        trial = optuna.trial.create_trial(values=values, user_attrs=attrs,
                                          constraints=cons or None)
    study.add_trial(trial)
    known.add(cid)
    return True


def shareable(result: Any) -> dict[str, Any]:
    """The result without its traceback, as plain JSON (what the journal can store)."""
    if not isinstance(result, dict):
        return {"status": "failed", "reason": "malformed result"}
    out = {k: v for k, v in result.items() if k != "traceback"}
    try:
        return json.loads(json.dumps(out, default=str))
    except (TypeError, ValueError, RecursionError):
        return {"status": "failed", "reason": "malformed result"}


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
        before = {_claimed_id(t) for t in study.get_trials(deepcopy=False)
                  if t.number < trial.number and not t.user_attrs.get(keys.SKIP)} - {None}
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


def _claimed_id(t: optuna.trial.FrozenTrial) -> str | None:
    """The candidate a trial claimed: its id, or the id a stale trial gave up."""
    cid = t.user_attrs.get(keys.CANDIDATE_ID) or t.user_attrs.get(STALE_OF)
    return cid if isinstance(cid, str) else None


def claimed_ids(study: optuna.Study) -> set[str]:
    return {_claimed_id(t) for t in study.get_trials(deepcopy=False)
            if not t.user_attrs.get(keys.SKIP)} - {None}


def finished_ids(study: optuna.Study) -> set[str]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    return {t.user_attrs[keys.CANDIDATE_ID] for t in study.get_trials(deepcopy=False, states=done)
            if isinstance(t.user_attrs.get(keys.CANDIDATE_ID), str)
            and keys.RESULT in t.user_attrs}


def tell(study: optuna.Study, number: int | None, cid: str, meta: dict[str, Any],
         source: str, result: dict[str, Any], obj: Objectives = Objectives()) -> None:
    """Finish the claimed trial ``number`` with the candidate's result; when that trial
    is no longer running (failed as stale meanwhile: it gave its id up), add a fresh one
    instead. Either way the candidate id ends with one trial; a malformed result is a
    failed trial, never an error."""
    ev = as_evaluation(result)
    attrs = {**_attrs(meta, result, ev), keys.SOURCE: source if isinstance(source, str) else None,
             keys.WORKER: meta.get("worker") if isinstance(meta, dict)
             and isinstance(meta.get("worker"), str) else None}
    if isinstance(number, bool) or not isinstance(number, int):
        number = None
    values = objective_values(ev, obj)
    cons = constraint_values(ev, obj)
    if number is not None:
        trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        if (trial is not None and trial.state == optuna.trial.TrialState.RUNNING
                and trial.user_attrs.get(keys.CANDIDATE_ID) == cid):
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
    if cid in recorded_ids(study):
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
    known dead: a killed worker leaves nothing stuck. Returns their candidate ids.

    The failed trial keeps the id only as ``stale_of`` (still counted as claimed): the
    candidate is evaluated again and ``tell`` adds its one trial with the id."""
    now = time.time()
    n = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        beat = t.user_attrs.get(keys.HEARTBEAT, t.datetime_start.timestamp()
                                if t.datetime_start else now)
        beat = finite_number(beat)
        if beat is None or now - beat > max_age_s or t.user_attrs.get(keys.WORKER) in dead_workers:
            cid = t.user_attrs.get(keys.CANDIDATE_ID)
            try:
                if isinstance(cid, str):  # the id moves on to the re-evaluation's trial
                    study._storage.set_trial_user_attr(t._trial_id, STALE_OF, cid)
                    study._storage.set_trial_user_attr(t._trial_id, keys.CANDIDATE_ID, None)
                    study._storage.set_trial_user_attr(t._trial_id, keys.CODE_HASH, None)
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                n.append(cid)
            except Exception:  # another worker got there first
                pass
    return n
