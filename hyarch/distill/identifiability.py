"""Do the data pin down each physical parameter, and does a network absorb it?

Two diagnostics per physical parameter of a candidate, trained in the sandbox:

- a profile of the validation loss over the parameter's bounds, the others (closures
  included) held at their fitted values: its gradient and curvature at the fitted value,
  and the interval over which the loss stays below ``(1 + rise)`` times its minimum. A
  parameter whose interval is wide is *not pinned down* by the data.
- a capacity test: the candidate retrained with its closures' widths scaled (half, double)
  and with its closures removed. A parameter whose fitted value moves when only the
  network's capacity changes is *confounded with the closure*: the network absorbs part
  of the physics it stands for.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from hyarch.core.fields import rollout
from hyarch.core.metrics import normalised_mse
from hyarch.core.model import HybridModel
from hyarch.distill.candidate import RenderError, remove_closures, resize_closures
from hyarch.spaces.space import Space

LOCAL = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def _val_loss(model: HybridModel, val, scales, method: str, substeps: int) -> float:
    with torch.no_grad():
        pred = rollout(model, val, method=method, substeps=substeps)
        v = float(normalised_mse(pred, val, scales))
    return v if math.isfinite(v) else math.inf


def _grid(value: float, lo: float, hi: float, log: bool, n: int) -> np.ndarray:
    if log:
        base = np.geomspace(lo, hi, n)
    else:
        base = np.linspace(lo, hi, n)
    ref = abs(value) if abs(value) > 1e-3 * (hi - lo) else (hi - lo)
    local = [value + sign * r * ref for r in LOCAL for sign in (-1, 1)]
    pts = np.concatenate([base, local, [value]])
    pts = pts[(pts >= lo) & (pts <= hi)]
    return np.unique(pts)


def _interval(values: np.ndarray, losses: np.ndarray, at: float, limit: float):
    """The contiguous range around ``at`` where the loss stays below ``limit``,
    interpolated between the last point below and the first above (None: a bound)."""
    i0 = int(np.argmin(np.abs(values - at)))

    def walk(step: int) -> float | None:
        i = i0
        while 0 <= i + step < len(values) and losses[i + step] <= limit:
            i += step
        j = i + step
        if not 0 <= j < len(values):
            return None  # stays below the limit up to the bound
        a, b = losses[i], losses[j]
        if not math.isfinite(b) or b == a:
            return float(values[j])
        w = (limit - a) / (b - a)
        return float(values[i] + w * (values[j] - values[i]))

    return walk(-1), walk(1)


def _finite(x: Any) -> float | None:
    """A finite float, or None (profiles travel as JSON, which has no inf or NaN)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def profile(model: HybridModel, space: Space, *, points: int = 41, rise: float = 1.0,
            method: str | None = None, substeps: int | None = None) -> dict[str, Any]:
    """1-D profiles of the validation loss over each parameter's bounds, others fixed.

    Runs where the trained model is: in the sandbox's child (``post={"profile": {...}}``),
    where ``space.val`` is the selection split. Every number is finite or None, so the
    result travels as JSON; ``closures`` names the model's closures."""
    from hyarch.core.data import state_scales

    cfg = space.train_config()
    method, substeps = method or cfg.method, substeps or cfg.substeps
    m = copy.deepcopy(model).cpu().double().eval()
    val = space.val
    val = replace(val, t=val.t.double(), y=val.y.double(),
                  u=None if val.u is None else val.u.double())
    scales = state_scales(space.train).double()
    fitted = m.physical_values()
    best = _val_loss(m, val, scales, method, substeps)
    names = [n for n, mod in m.named_modules() if mod in m.closures()]
    out: dict[str, Any] = {"val_nmse": _finite(best), "parameters": {},
                           "closures": [n or "closure" for n in names]}
    for name, spec in m.parameter_specs.items():
        p = fitted[name]

        def loss_at(v: float, name=name) -> float:
            m.set_physical({name: v})
            return _val_loss(m, val, scales, method, substeps)

        values = _grid(p, spec.lower, spec.upper, spec.log, points)
        losses = np.array([loss_at(float(v)) for v in values])
        h = 1e-3 * max(abs(p), 1e-3 * (spec.upper - spec.lower))
        lo_h, hi_h = max(p - h, spec.lower), min(p + h, spec.upper)
        l_lo, l_hi = loss_at(lo_h), loss_at(hi_h)
        step = (hi_h - lo_h) / 2
        gradient = (l_hi - l_lo) / (hi_h - lo_h) if hi_h > lo_h else math.nan
        curvature = (l_hi - 2 * best + l_lo) / step ** 2 if step > 0 else math.nan
        r = 0.01 * (abs(p) if abs(p) > 1e-3 * (spec.upper - spec.lower)
                    else spec.upper - spec.lower)
        one_pct = [loss_at(v) for v in (p - r, p + r) if spec.lower <= v <= spec.upper]
        m.set_physical({name: p})
        rel_sens = (float(np.mean(one_pct)) - best) / best if best > 0 and one_pct else None
        left, right = _interval(values, losses, p, best * (1 + rise))
        ref = abs(p) if abs(p) > 1e-3 * (spec.upper - spec.lower) else spec.upper - spec.lower
        lo_i = spec.lower if left is None else left
        hi_i = spec.upper if right is None else right
        width = max(p - lo_i, hi_i - p) / ref
        quad = math.sqrt(2 * rise * best / curvature) / ref if curvature > 0 else math.inf
        out["parameters"][name] = {
            "value": _finite(p), "bounds": [_finite(spec.lower), _finite(spec.upper)],
            "gradient": _finite(gradient), "curvature": _finite(curvature),
            "rel_sensitivity_1pct": _finite(rel_sens),
            "interval": [_finite(lo_i), _finite(hi_i)],
            "interval_hits_bounds": left is None or right is None,
            "rel_width": _finite(width), "quadratic_rel_width": _finite(quad),
            "profile": {"values": [_finite(v) for v in values],
                        "val_nmse": [_finite(x) for x in losses]},
        }
    return out


def capacity_variants(source: str, factors: Sequence[float] = (0.5, 2.0),
                      remove: bool = True) -> dict[str, str]:
    """Candidate sources with the closures resized by each factor, and without closures."""
    out = {f"x{f:g}": resize_closures(source, f) for f in factors}
    if remove:
        out["none"] = remove_closures(source)
    return out


class IdentifiabilityError(Exception):
    """The candidate could not be trained or profiled, with the reason."""


def profile_options(space: Space, overrides: dict[str, Any] | None = None, *,
                    points: int = 41, rise: float = 1.0, device: str = "cpu") -> dict[str, Any]:
    """``post={"profile": ...}`` for ``evaluate_source``: the profile integrates the way the
    candidate was trained (method and substeps after ``overrides``)."""
    cfg = space.train_config(device=device, **(overrides or {}))
    return {"points": int(points), "rise": float(rise), "method": cfg.method,
            "substeps": int(cfg.substeps)}


def _checked_profile(raw: Any) -> dict[str, Any]:
    """The profile the child returned (untrusted JSON), with the fields the verdicts use
    checked; a parameter with malformed fields is dropped with a note."""
    if not isinstance(raw, dict) or not isinstance(raw.get("parameters"), dict):
        raise IdentifiabilityError("the evaluation returned a malformed profile")
    out: dict[str, Any] = {"val_nmse": _finite(raw.get("val_nmse")), "parameters": {},
                           "closures": [str(c) for c in raw.get("closures") or []
                                        if isinstance(c, str)], "notes": []}
    for name, info in raw["parameters"].items():
        ok = (isinstance(info, dict) and _finite(info.get("value")) is not None
              and isinstance(info.get("interval"), list) and len(info["interval"]) == 2)
        if not ok:
            out["notes"].append(f"{name}: malformed profile, left out")
            continue
        info = dict(info)
        info["interval_hits_bounds"] = info.get("interval_hits_bounds") is not False
        out["parameters"][str(name)] = info
    return out


def identifiability(
    space: Space, source: str, *, filename: str = "model.py",
    overrides: dict[str, Any] | None = None, factors: Sequence[float] = (0.5, 2.0),
    remove: bool = True, retrain: bool = True, points: int = 41, rise: float = 1.0,
    pinned_tol: float = 0.1, moves_factor: float = 1.0, moves_floor: float = 0.002,
    device: str = "cpu", limits=None, sandbox: bool = True, trained=None,
) -> dict[str, Any]:
    """Profiles and the capacity test for every physical parameter of the candidate
    ``source``, trained on ``space`` with ``overrides``.

    Every training runs through ``hyarch.evaluate.evaluate_source`` (the sandbox): the
    candidate itself, whose child also computes the profiles on the trained model
    (``post={"profile": ...}``; they are taken on the selection split, the part of the
    training data the child holds out for early stopping), and each capacity variant. Pass
    ``trained``, the ``SandboxResult`` of an evaluation already made with
    ``post={"profile": profile_options(...)}``, to skip the first training.
    IdentifiabilityError when the candidate fails to train or to profile.

    A parameter is *pinned* when the validation loss rises by ``rise`` (relative) within
    ``pinned_tol`` (relative) of its fitted value. It *moves with capacity* when its
    fitted values at the closures' original widths and at widths scaled by ``factors``
    spread (max - min, relative) over more than ``moves_factor`` times the precision its
    profile gives (``rel_width``: the half-width of the range where the loss stays below
    ``1 + rise`` times its minimum) and more than ``moves_floor``: the network's size
    changes the physics by more than the data allow. ``overrides`` go to every retraining,
    so that only capacity differs. The closure-free retrain is reported
    (``capacity_shift["none"]``) but does not decide: removing a useful closure moves
    every parameter that must then stand in for the missing physics.
    """
    from hyarch.evaluate import evaluate_source

    if trained is None:
        trained = evaluate_source(
            space, source, filename=filename, device=device, overrides=overrides,
            post={"profile": profile_options(space, overrides, points=points, rise=rise,
                                             device=device)},
            limits=limits, sandbox=sandbox)
    res = trained.result
    if res.get("status") != "ok":
        raise IdentifiabilityError(f"training failed: {res.get('reason')}")
    raw = trained.extra.get("profile")
    if raw is None:
        why = trained.extra.get("profile_error") or "the evaluation returned no profile"
        raise IdentifiabilityError(f"profiles failed: {why}")
    report = _checked_profile(raw)
    report.update({"split": "selection", "capacity": {}, "flags": []})
    has_closures = bool(report["closures"])
    variants: dict[str, str] = {}
    if retrain and has_closures:
        try:
            variants = capacity_variants(source, factors, remove)
        except RenderError as e:
            report["notes"].append(f"capacity test skipped: {e}")
    elif not has_closures:
        report["notes"].append("no closure: the capacity test does not apply")
    for label, src in variants.items():
        res = evaluate_source(space, src, filename=f"<{label}>", device=device,
                              overrides=overrides, limits=limits, sandbox=sandbox).result
        report["capacity"][label] = {
            "status": res["status"], "reason": res.get("reason"),
            "parameters": res["parameters"],
            "val_nmse": (res["metrics"].get("val") or {}).get("nmse"),
        }
    for name, info in report["parameters"].items():
        p = info["value"]
        ref = abs(p) if abs(p) > 0 else 1.0
        moved = {label: (c["parameters"][name] - p) / ref
                 for label, c in report["capacity"].items()
                 if c["status"] == "ok" and c["parameters"].get(name) is not None}
        resized = [0.0] + [v for k, v in moved.items() if k != "none"]
        info["capacity_shift"] = moved
        info["moves"] = max(resized) - min(resized)
        width = _finite(info.get("rel_width"))
        info["pinned"] = bool(width is not None and width <= pinned_tol
                              and not info["interval_hits_bounds"])
        limit = max(moves_factor * (width if width is not None else math.inf), moves_floor)
        info["moves_limit"] = _finite(limit)
        info["moves_with_capacity"] = bool(info["moves"] > limit)
        if info["moves_with_capacity"]:
            verdict = "confounded with the closure"
        elif not info["pinned"]:
            verdict = "not pinned down by the data"
        else:
            verdict = "identified"
        info["verdict"] = verdict
        if verdict != "identified":
            report["flags"].append(f"{name}: {verdict}")
    return report


def format_identifiability(report: dict[str, Any]) -> str:
    """A plain-text table of the report, for the terminal and for prompts."""
    def g(x: Any, spec: str) -> str:
        return "-" if _finite(x) is None else format(float(x), spec)

    where = "selection" if report.get("split") == "selection" else "validation"
    lines = [f"{where} nMSE at the fitted values: {g(report.get('val_nmse'), '.4g')}"]
    head = (f"{'parameter':<14}{'value':>11}{'+-1% dL/L':>11}{'L<2L* range':>24}"
            f"{'spread':>9}  verdict")
    lines.append(head)
    for name, i in report["parameters"].items():
        lo, hi = (list(i.get("interval") or []) + [None, None])[:2]
        rng = f"[{g(lo, '.4g')}, {g(hi, '.4g')}]"
        lines.append(
            f"{name:<14}{g(i.get('value'), '.5g'):>11}{g(i.get('rel_sensitivity_1pct'), '.3g'):>11}"
            f"{rng:>24}{g(100 * (i.get('moves') or 0.0), '.2f'):>8}%  {i.get('verdict', '')}")
    for label, c in report.get("capacity", {}).items():
        vals = ", ".join(f"{k}={g(v, '.5g')}" for k, v in (c.get("parameters") or {}).items())
        lines.append(f"  closures {label}: {c.get('status')}, val nMSE "
                     f"{g(c.get('val_nmse'), '.3g')}; {vals}")
    for note in report.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
