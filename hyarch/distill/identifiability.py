"""Do the data pin down each physical parameter, and does a network absorb it?

Two diagnostics per physical parameter of a trained candidate:

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


def profile(model: HybridModel, space: Space, *, points: int = 41, rise: float = 1.0,
            method: str | None = None, substeps: int | None = None) -> dict[str, Any]:
    """1-D profiles of the validation loss over each parameter's bounds, others fixed."""
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
    out: dict[str, Any] = {"val_nmse": best, "parameters": {}}
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
        gradient = (l_hi - l_lo) / (hi_h - lo_h)
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
            "value": p, "bounds": [spec.lower, spec.upper],
            "gradient": gradient, "curvature": curvature, "rel_sensitivity_1pct": rel_sens,
            "interval": [lo_i, hi_i], "interval_hits_bounds": left is None or right is None,
            "rel_width": width, "quadratic_rel_width": quad,
            "profile": {"values": [float(v) for v in values],
                        "val_nmse": [float(x) if math.isfinite(x) else None for x in losses]},
        }
    return out


def capacity_variants(source: str, factors: Sequence[float] = (0.5, 2.0),
                      remove: bool = True) -> dict[str, str]:
    """Candidate sources with the closures resized by each factor, and without closures."""
    out = {f"x{f:g}": resize_closures(source, f) for f in factors}
    if remove:
        out["none"] = remove_closures(source)
    return out


def identifiability(
    space: Space, source: str, fitted_model: HybridModel, *,
    overrides: dict[str, Any] | None = None, factors: Sequence[float] = (0.5, 2.0),
    remove: bool = True, retrain: bool = True, points: int = 41, rise: float = 1.0,
    pinned_tol: float = 0.1, moves_factor: float = 1.0, moves_floor: float = 0.002,
    device: str = "cpu",
) -> dict[str, Any]:
    """Profiles and the capacity test for every physical parameter of ``fitted_model``.

    A parameter is *pinned* when the validation loss rises by ``rise`` (relative) within
    ``pinned_tol`` (relative) of its fitted value. It *moves with capacity* when its
    fitted values at the closures' original widths and at widths scaled by ``factors``
    spread (max - min, relative) over more than ``moves_factor`` times the precision its
    profile gives (``rel_width``: the half-width of the range where the loss stays below
    ``1 + rise`` times its minimum) and more than ``moves_floor``: the network's size
    changes the physics by more than the data allow. ``overrides`` go to every retraining (pass those the fitted model was
    trained with, so that only capacity differs). The closure-free retrain is reported
    (``capacity_shift["none"]``) but does not decide: removing a useful closure moves
    every parameter that must then stand in for the missing physics.
    """
    from hyarch.evaluate import evaluate_source

    report = profile(fitted_model, space, points=points, rise=rise)
    report.update({"capacity": {}, "flags": [], "notes": []})
    has_closures = bool(fitted_model.closures())
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
                              overrides=overrides).result
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
                 if c["status"] == "ok" and name in c["parameters"]}
        resized = [0.0] + [v for k, v in moved.items() if k != "none"]
        info["capacity_shift"] = moved
        info["moves"] = max(resized) - min(resized)
        info["pinned"] = bool(info["rel_width"] <= pinned_tol
                              and not info["interval_hits_bounds"])
        limit = max(moves_factor * info["rel_width"], moves_floor)
        info["moves_limit"] = limit
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
    lines = [f"validation nMSE at the fitted values: {report['val_nmse']:.4g}"]
    head = (f"{'parameter':<14}{'value':>11}{'+-1% dL/L':>11}{'L<2L* range':>24}"
            f"{'spread':>9}  verdict")
    lines.append(head)
    for name, i in report["parameters"].items():
        sens = i["rel_sensitivity_1pct"]
        rng = f"[{i['interval'][0]:.4g}, {i['interval'][1]:.4g}]"
        lines.append(
            f"{name:<14}{i['value']:>11.5g}{('-' if sens is None else f'{sens:.3g}'):>11}"
            f"{rng:>24}{100 * i.get('moves', 0.0):>8.2f}%  {i.get('verdict', '')}")
    for label, c in report.get("capacity", {}).items():
        vals = ", ".join(f"{k}={v:.5g}" for k, v in c["parameters"].items())
        v = c["val_nmse"]
        lines.append(f"  closures {label}: {c['status']}, val nMSE "
                     f"{'-' if v is None else f'{v:.3g}'}; {vals}")
    for note in report.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
