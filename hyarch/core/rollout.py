"""Integrating a hybrid model over the observation grid.

The default is hyarch's own fixed-step integrator on the observation grid (RK4 as in
APHYNITY, with optional substeps): it loops over time steps with no solver bookkeeping,
handles per-trajectory grids and holds inputs constant within each step. Any torchdiffeq
method (``dopri5``, ``bosh3``, ...) is available by name for a common grid.

Small hybrid ODEs are dominated by per-operation overhead, not arithmetic, so the fixed-step
loop counts operations: when every trajectory shares its step sizes (the usual case, and the
case of the curriculum's windows) the steps are Python floats and each RK stage is one fused
``add``; the stage times and inputs are sliced once per rollout, not once per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Field = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


# Steps with a per-trajectory step ``h`` (B, 1): any grid.
def _euler(f, t, y, u, h):
    return y + h * f(t, y, u)


def _midpoint(f, t, y, u, h):
    k1 = f(t, y, u)
    return y + h * f(t + h[..., 0] / 2, y + (h / 2) * k1, u)


def _rk4(f, t, y, u, h):
    # h is (B, 1) for the states; the stage times are (B,) like t
    k1 = f(t, y, u)
    k2 = f(t + h[..., 0] / 2, y + (h / 2) * k1, u)
    k3 = f(t + h[..., 0] / 2, y + (h / 2) * k2, u)
    k4 = f(t + h[..., 0], y + h * k3, u)
    return y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


# The same steps with a float ``h`` shared by the batch and the stage times given:
# ``tm`` the midpoint, ``tn`` the end of the step.
def _euler_f(f, t, tm, tn, y, u, h: float):
    return torch.add(y, f(t, y, u), alpha=h)


def _midpoint_f(f, t, tm, tn, y, u, h: float):
    k1 = f(t, y, u)
    return torch.add(y, f(tm, torch.add(y, k1, alpha=h / 2), u), alpha=h)


def _rk4_f(f, t, tm, tn, y, u, h: float):
    k1 = f(t, y, u)
    k2 = f(tm, torch.add(y, k1, alpha=h / 2), u)
    k3 = f(tm, torch.add(y, k2, alpha=h / 2), u)
    k4 = f(tn, torch.add(y, k3, alpha=h), u)
    acc = torch.add(k1, k2 + k3, alpha=2.0) + k4
    return torch.add(y, acc, alpha=h / 6)


FIXED_STEP = {"euler": _euler, "midpoint": _midpoint, "rk4": _rk4}
_FIXED_STEP_FLOAT = {"euler": _euler_f, "midpoint": _midpoint_f, "rk4": _rk4_f}
TORCHDIFFEQ = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun",
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
        return _fixed_step(method, f, y0, t, u, max(int(substeps), 1))
    return _torchdiffeq(f, y0, t, u, method, rtol, atol)


def shared_steps(t: torch.Tensor) -> list[float] | None:
    """The step sizes as floats when every trajectory has the same ones, else None."""
    if t.shape[-1] < 2:
        return []
    dt = t[:, 1:] - t[:, :-1]
    if t.shape[0] > 1 and not torch.allclose(dt, dt[:1].expand_as(dt), rtol=1e-6, atol=0.0):
        return None
    return dt[0].tolist()


def _fixed_step(method, f, y0, t, u, n):
    T = t.shape[-1]
    ys = [y0]
    y = y0
    steps = shared_steps(t)
    ucols = [None] * T if u is None else u.unbind(1)
    if steps is None:  # per-trajectory steps: h is a (B, 1) tensor
        step = FIXED_STEP[method]
        for k in range(T - 1):
            tk = t[:, k]
            h = (t[:, k + 1] - tk) / n
            hh = h.unsqueeze(-1)
            for j in range(n):
                y = step(f, tk + j * h, y, ucols[k], hh)
            ys.append(y)
        return torch.stack(ys, dim=-2)
    step = _FIXED_STEP_FLOAT[method]
    if n == 1:
        tcols = t.unbind(-1)
        tmid = ((t[:, :-1] + t[:, 1:]) * 0.5).unbind(-1) if T > 1 else ()
        for k in range(T - 1):
            y = step(f, tcols[k], tmid[k], tcols[k + 1], y, ucols[k], steps[k])
            ys.append(y)
    else:
        for k in range(T - 1):
            h = steps[k] / n
            tk = t[:, k]
            for j in range(n):
                t0 = tk + j * h
                y = step(f, t0, t0 + h / 2, t0 + h, y, ucols[k], h)
            ys.append(y)
    return torch.stack(ys, dim=-2)


def _torchdiffeq(f, y0, t, u, method, rtol, atol):
    import torchdiffeq

    # one grid relative to each trajectory's start (the curriculum's windows start at
    # different times); the field still sees each trajectory's own absolute time
    start = t[:, 0]
    grid = t[0] - start[0]
    if t.shape[0] > 1 and not torch.allclose(t - start[:, None], grid.expand_as(t)):
        raise ValueError(
            f"solver {method!r} needs the same time steps for all trajectories;"
            " use method 'rk4' for per-trajectory grids"
        )
    name = method.removeprefix("torchdiffeq-")
    T = grid.shape[0]

    def func(tt, y):
        if u is None:
            return f(start + tt, y, None)
        k = torch.searchsorted(grid, tt.reshape(1), right=True) - 1
        k = int(k.clamp(0, T - 2).item()) if T > 1 else 0
        return f(start + tt, y, u[:, k])

    kwargs = {}
    if name in ("rk4", "euler", "midpoint"):
        kwargs["options"] = {}
    else:
        kwargs.update(rtol=rtol, atol=atol)
        if u is not None and T > 2 and name not in ("explicit_adams", "implicit_adams"):
            # inputs jump at every sample: restart the adaptive solver there
            kwargs["options"] = {"jump_t": grid[1:-1]}
    out = torchdiffeq.odeint(func, y0, grid, method=name, **kwargs)  # (T, ..., B, S)
    return out.movedim(0, -2)
