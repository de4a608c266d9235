"""The evaluation record as a typed, frozen value, with a JSON round trip.

``metrics.json``, ``hyarch evaluate --json`` and the study's result attribute hold the dict
form (``Evaluation.to_dict``); code that reads a record parses it once with
``Evaluation.from_dict`` (or ``as_evaluation``, which also takes a record already parsed and
None for one not evaluated yet), which never raises: a record that is not what hyarch writes
(a tampered file, a value of the wrong type) becomes a FAILED evaluation that says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    OK = "ok"
    FAILED = "failed"
    PENDING = "pending"


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class RecordError(ValueError):
    """What is wrong with a record (becomes the reason of a FAILED evaluation)."""


def _opt_num(d: dict, key: str, where: str) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    x = _num(v)
    if x is None:
        raise RecordError(f"{where}.{key} is {v!r}, not a finite number")
    return x


def _opt_text(d: dict, key: str, where: str) -> str | None:
    v = d.get(key)
    if v is not None and not isinstance(v, str):
        raise RecordError(f"{where}.{key} is {type(v).__name__}, not text")
    return v


def _opt_count(d: dict, key: str, where: str) -> int | None:
    v = d.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
        raise RecordError(f"{where}.{key} is {v!r}, not a count")
    return v


@dataclass(frozen=True)
class SplitScore:
    """Fit on one split, computed by the parent from the candidate's predictions."""

    mse: float | None = None
    nmse: float | None = None
    log10_mse: float | None = None
    log10_nmse: float | None = None
    per_state: tuple[tuple[str, float | None, float | None], ...] = ()  # (state, mse, nmse)
    diverged: bool = False
    per_trajectory_nmse: tuple[float | None, ...] = ()

    @classmethod
    def from_dict(cls, d: Any, where: str) -> SplitScore:
        if not isinstance(d, dict):
            raise RecordError(f"{where} is not a mapping")
        per = d.get("per_state") or {}
        if not isinstance(per, dict):
            raise RecordError(f"{where}.per_state is not a mapping")
        states = []
        for name, v in per.items():
            if not isinstance(v, dict):
                raise RecordError(f"{where}.per_state.{name} is not a mapping")
            states.append((str(name), _opt_num(v, "mse", where), _opt_num(v, "nmse", where)))
        traj = d.get("per_trajectory_nmse") or []
        if not isinstance(traj, list):
            raise RecordError(f"{where}.per_trajectory_nmse is not a list")
        vals = []
        for v in traj:
            if v is not None and _num(v) is None:
                raise RecordError(f"{where}.per_trajectory_nmse holds {v!r}")
            vals.append(None if v is None else float(v))
        return cls(_opt_num(d, "mse", where), _opt_num(d, "nmse", where),
                   _opt_num(d, "log10_mse", where), _opt_num(d, "log10_nmse", where),
                   tuple(states), d.get("diverged") is True, tuple(vals))

    def to_dict(self) -> dict[str, Any]:
        return {"mse": self.mse, "nmse": self.nmse, "log10_mse": self.log10_mse,
                "log10_nmse": self.log10_nmse,
                "per_state": {n: {"mse": m, "nmse": nm} for n, m, nm in self.per_state},
                "diverged": self.diverged,
                "per_trajectory_nmse": list(self.per_trajectory_nmse)}

    def state_nmse(self, state: str) -> float | None:
        """One state's normalised MSE on this split (None when not scored)."""
        return next((nm for n, _, nm in self.per_state if n == state), None)


@dataclass(frozen=True)
class Training:
    """How the candidate's training went, as the child reported it (numbers sanitised by
    the parent: iterations and substeps are stored as floats, like every number there)."""

    iterations: float | None = None
    train_nmse: float | None = None
    selection_nmse: float | None = None  # the early-stopping split's error
    seconds: float | None = None
    substeps: float | None = None
    stopped: str | None = None  # why training stopped: "early stopping", "time budget", ...

    _NUMBERS = ("iterations", "train_nmse", "selection_nmse", "seconds", "substeps")

    @classmethod
    def from_dict(cls, d: Any) -> Training:
        if not isinstance(d, dict):
            raise RecordError("training is not a mapping")
        return cls(**{k: _opt_num(d, k, "training") for k in cls._NUMBERS},
                   stopped=_opt_text(d, "stopped", "training"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in self._NUMBERS}
        if self.stopped is not None:
            out["stopped"] = self.stopped
        return out


@dataclass(frozen=True)
class Accuracy:
    """How accurately a split's scoring rollout was integrated."""

    method: str = ""
    substeps: int | None = None
    error: float | None = None  # the estimated integration error
    converged: bool = False  # whether the error reached the tolerance
    failed: str | None = None  # why this split could not be predicted (scored as diverged)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Accuracy:
        if not isinstance(d, dict):
            raise RecordError(f"{where} is not a mapping")
        return cls(_opt_text(d, "method", where) or "", _opt_count(d, "substeps", where),
                   _opt_num(d, "error", where), d.get("converged") is True,
                   _opt_text(d, "failed", where))

    def to_dict(self) -> dict[str, Any]:
        out = {"method": self.method, "substeps": self.substeps, "error": self.error,
               "converged": self.converged}
        if self.failed is not None:  # (absent when the split was predicted)
            out["failed"] = self.failed
        return out


_KNOWN = ("status", "reason", "parameters", "param_rel_error", "metrics", "reduced",
          "regularizers", "closure_share", "n_neural_params", "seconds")
# after the fields above, in the order the runner writes them (extras keep their place)
_TAIL = ("parameter_specs", "training", "integration", "traceback", "isolation",
         "wall_seconds")


@dataclass(frozen=True)
class Evaluation:
    """One candidate's evaluation. ``extra`` keeps the record's other fields (parameter
    specs, and anything a later or earlier hyarch wrote) as they were."""

    status: Status
    reason: str | None = None
    parameters: tuple[tuple[str, float | None], ...] = ()
    param_rel_error: tuple[tuple[str, float], ...] = ()
    metrics: tuple[tuple[str, SplitScore], ...] = ()
    reduced: tuple[tuple[str, SplitScore], ...] = ()
    regularizers: tuple[tuple[str, float | None], ...] = ()
    closure_share: float | None = None
    n_neural_params: int | None = None
    seconds: float | None = None  # the evaluation's own time (training and scoring)
    training: Training | None = None  # None: the record has no training (a failed one)
    integration: tuple[tuple[str, Accuracy], ...] | None = None  # per split; None: absent
    traceback: str | None = None
    isolation: str | None = None  # how the evaluation was isolated
    wall_seconds: float | None = None  # the whole sandboxed evaluation (searches record it)
    extra: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    # -- reading ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any) -> Evaluation:
        """Parse a record; never raises (a malformed one is FAILED, with the reason)."""
        try:
            return cls._parse(d)
        except RecordError as e:
            return cls(Status.FAILED, f"invalid evaluation record: {e}")

    @classmethod
    def _parse(cls, d: Any) -> Evaluation:
        if not isinstance(d, dict):
            raise RecordError("the record is not a mapping")
        try:
            status = Status(d.get("status", "pending"))
        except ValueError:
            raise RecordError(f"status is {d.get('status')!r}") from None
        reason = d.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise RecordError("reason is not text")

        def numbers(key: str, allow_none: bool) -> tuple:
            v = d.get(key) or {}
            if not isinstance(v, dict):
                raise RecordError(f"{key} is not a mapping")
            out = []
            for k, x in v.items():
                if k == "errors" and key == "regularizers":
                    continue
                if x is None and allow_none:
                    out.append((str(k), None))
                elif _num(x) is None:
                    raise RecordError(f"{key}.{k} is {x!r}, not a finite number")
                else:
                    out.append((str(k), float(x)))
            return tuple(out)

        def splits(key: str) -> tuple:
            v = d.get(key) or {}
            if not isinstance(v, dict):
                raise RecordError(f"{key} is not a mapping")
            return tuple((str(k), SplitScore.from_dict(x, f"{key}.{k}")) for k, x in v.items())

        typed = set(_KNOWN) | {"integration", "traceback", "isolation", "wall_seconds"}
        training = None
        if d.get("training"):  # an empty mapping stays as written, in ``extra``
            training = Training.from_dict(d["training"])
            typed.add("training")
        elif "training" in d and d["training"] != {}:
            raise RecordError("training is not a mapping")
        integration = None
        if "integration" in d:
            acc = d["integration"]
            if not isinstance(acc, dict):
                raise RecordError("integration is not a mapping")
            integration = tuple((str(k), Accuracy.from_dict(a, f"integration.{k}"))
                                for k, a in acc.items())
        ev = cls(status, reason, numbers("parameters", True),
                 numbers("param_rel_error", False), splits("metrics"), splits("reduced"),
                 numbers("regularizers", True), _opt_num(d, "closure_share", "record"),
                 _opt_count(d, "n_neural_params", "record"), _opt_num(d, "seconds", "record"),
                 training=training, integration=integration,
                 traceback=_opt_text(d, "traceback", "record"),
                 isolation=_opt_text(d, "isolation", "record"),
                 wall_seconds=_opt_num(d, "wall_seconds", "record"),
                 extra=tuple((k, v) for k, v in d.items() if k not in typed))
        if ev.status is Status.OK and ev.val_nmse is None:
            raise RecordError("status ok without a validation nmse")
        return ev

    # -- writing ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status.value, "reason": self.reason,
            "parameters": dict(self.parameters), "param_rel_error": dict(self.param_rel_error),
            "metrics": {k: v.to_dict() for k, v in self.metrics},
            "reduced": {k: v.to_dict() for k, v in self.reduced},
            "regularizers": dict(self.regularizers), "closure_share": self.closure_share,
            "n_neural_params": self.n_neural_params, "seconds": self.seconds,
        }
        typed = {
            "training": None if self.training is None else self.training.to_dict(),
            "integration": None if self.integration is None
            else {k: a.to_dict() for k, a in self.integration},
            "traceback": self.traceback, "isolation": self.isolation,
            "wall_seconds": self.wall_seconds,
        }
        extra = dict(self.extra)
        for key in _TAIL:  # an absent field stays absent
            if key in extra:
                out[key] = extra.pop(key)
            elif typed.get(key) is not None:
                out[key] = typed[key]
        out.update(extra)
        return out

    # -- what readers ask -------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def split(self, name: str) -> SplitScore | None:
        return dict(self.metrics).get(name)

    def reduced_split(self, name: str) -> SplitScore | None:
        """The split scored with every closure switched off (the reduced model)."""
        return dict(self.reduced).get(name)

    def accuracy(self, split: str) -> Accuracy | None:
        return dict(self.integration or ()).get(split)

    @property
    def unconverged(self) -> tuple[str, ...]:
        """Splits whose scoring rollout did not reach the integration tolerance."""
        return tuple(k for k, a in self.integration or () if not a.converged)

    @property
    def val_nmse(self) -> float | None:
        s = self.split("val")
        return None if s is None else s.nmse

    @property
    def selection_nmse(self) -> float | None:
        """The selection split's error: what training choices (tuning) may read, never
        the validation split that ranks."""
        s = self.split("selection")
        return None if s is None else s.nmse

    @property
    def fitted_values(self) -> int:
        """Physical parameters plus network weights: the ranking's complexity. A twin's
        random-effect spreads and fitted starts count too (its individual deviations are
        not free: their spread is)."""
        twin = dict(self.extra).get("twin")
        extra = 0
        if isinstance(twin, dict):
            extra = sum(v for k in ("n_random_effects", "n_fitted_starts")
                        if isinstance(v := twin.get(k), int) and not isinstance(v, bool)
                        and v >= 0)
        return len(self.parameters) + (self.n_neural_params or 0) + extra


def as_evaluation(result: Evaluation | dict[str, Any] | None) -> Evaluation:
    """What a reader is handed, typed: a record as is, its dict form parsed, None (not
    evaluated yet) a PENDING evaluation."""
    if isinstance(result, Evaluation):
        return result
    return Evaluation.from_dict({"status": "pending"} if result is None else result)
