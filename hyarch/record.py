"""The evaluation record as a typed, frozen value, with a JSON round trip.

``metrics.json``, ``hyarch evaluate --json`` and the study's result attribute hold the dict
form (``Evaluation.to_dict``); code that reads a record parses it once with
``Evaluation.from_dict``, which never raises: a record that is not what hyarch writes (a
tampered file, a value of the wrong type) becomes a FAILED evaluation that says why.
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


_KNOWN = ("status", "reason", "parameters", "param_rel_error", "metrics", "reduced",
          "regularizers", "closure_share", "n_neural_params", "seconds")


@dataclass(frozen=True)
class Evaluation:
    """One candidate's evaluation. ``extra`` keeps the record's other fields (training,
    integration, parameter specs, isolation, traceback, wall seconds) as they were."""

    status: Status
    reason: str | None = None
    parameters: tuple[tuple[str, float | None], ...] = ()
    param_rel_error: tuple[tuple[str, float], ...] = ()
    metrics: tuple[tuple[str, SplitScore], ...] = ()
    reduced: tuple[tuple[str, SplitScore], ...] = ()
    regularizers: tuple[tuple[str, float | None], ...] = ()
    closure_share: float | None = None
    n_neural_params: int | None = None
    seconds: float | None = None
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

        n_net = d.get("n_neural_params")
        if n_net is not None and (isinstance(n_net, bool) or not isinstance(n_net, int)
                                  or n_net < 0):
            raise RecordError(f"n_neural_params is {n_net!r}")
        ev = cls(status, reason, numbers("parameters", True), numbers("param_rel_error", False),
                 splits("metrics"), splits("reduced"), numbers("regularizers", True),
                 _opt_num(d, "closure_share", "record"), n_net,
                 _opt_num(d, "seconds", "record"),
                 tuple((k, v) for k, v in d.items() if k not in _KNOWN))
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
        out.update(dict(self.extra))
        return out

    # -- what readers ask -------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def split(self, name: str) -> SplitScore | None:
        return dict(self.metrics).get(name)

    @property
    def val_nmse(self) -> float | None:
        s = self.split("val")
        return None if s is None else s.nmse

    @property
    def fitted_values(self) -> int:
        """Physical parameters plus network weights: the ranking's complexity."""
        return len(self.parameters) + (self.n_neural_params or 0)
