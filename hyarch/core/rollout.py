"""Integrating a hybrid model over the observation grid.

The default is hyarch's own fixed-step integrator on the observation grid (RK4 as in
APHYNITY, with optional substeps): it loops over time steps with no solver bookkeeping,
handles per-trajectory grids and holds inputs constant within each step. Any torchdiffeq
method (``dopri5``, ``bosh3``, ...) is available by name for a common grid.
"""

from __future__ import annotations

from typing import Callable

import torch

Field = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _euler(f, t, y, u, h):
    return y + h * f(t, y, u)


def _midpoint(f, t, y, u, h):
    k1 = f(t, y, u)
    return y + h * f(t + h / 2, y + (h / 2) * k1, u)


def _rk4(f, t, y, u, h):
    k1 = f(t, y, u)
    k2 = f(t + h / 2, y + (h / 2) * k1, u)
    k3 = f(t + h / 2, y + (h / 2) * k2, u)
    k4 = f(t + h, y + h * k3, u)
    return y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


FIXED_STEP = {"euler": _euler, "midpoint": _midpoint, "rk4": _rk4}
TORCHDIFFEQ = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5",
               "explicit_adams", "implicit_adams", "torchdiffeq-rk4", "torchdiffeq-euler")
METHODS = tuple(FIXED_STEP) + TORCHDIFFEQ


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown solver {method!r}; valid: {', '.join(METHODS)}")
    return method


def integrate(
    f: Field,
    y0: torch.Tensor,
    t: torch.Tensor,
    u: torch.Tensor | None = None,
    *,
    method: str = "rk4",
    substeps: int = 1,
    rtol: float = 1e-6,
    atol: float = 1e-8,
) -> torch.Tensor:
    """Solve dy/dt = f(t, y, u) from ``y0`` over grid ``t``.

    Shapes: ``y0`` (..., B, S) (a leading replica dimension is allowed), ``t`` (B, T),
    ``u`` (B, T, I) or None. Returns (..., B, T, S), the first point being ``y0``.
    """
    check_method(method)
    if method in FIXED_STEP:
        step = FIXED_STEP[method]
        T = t.shape[-1]
        ys = [y0]
        y = y0
        n = max(int(substeps), 1)
        for k in range(T - 1):
            tk = t[:, k]
            h = (t[:, k + 1] - tk) / n
            hh = h.unsqueeze(-1)
            uk = None if u is None else u[:, k]
            for j in range(n):
                y = step(f, tk + j * h, y, uk, hh)
            ys.append(y)
        return torch.stack(ys, dim=-2)
    return _torchdiffeq(f, y0, t, u, method, rtol, atol)


def _torchdiffeq(f, y0, t, u, method, rtol, atol):
    import torchdiffeq

    grid = t[0]
    if t.shape[0] > 1 and not torch.allclose(t, grid.expand_as(t)):
        raise ValueError(
            f"solver {method!r} needs one time grid shared by all trajectories;"
            " use method 'rk4' for per-trajectory grids"
        )
    name = method.removeprefix("torchdiffeq-")
    T = grid.shape[0]

    def func(tt, y):
        if u is None:
            return f(tt.expand(y.shape[-2]), y, None)
        k = torch.searchsorted(grid, tt.reshape(1), right=True) - 1
        k = int(k.clamp(0, T - 2).item()) if T > 1 else 0
        return f(tt.expand(y.shape[-2]), y, u[:, k])

    kwargs = {}
    if name in ("rk4", "euler", "midpoint"):
        kwargs["options"] = {}
    else:
        kwargs.update(rtol=rtol, atol=atol)
    out = torchdiffeq.odeint(func, y0, grid, method=name, **kwargs)  # (T, ..., B, S)
    return out.movedim(0, -2)
