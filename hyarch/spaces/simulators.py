"""Built-in simulators that make the benchmark problems' data.

Each simulator turns true parameters, a count and a random generator into trajectories
(time grid, states, inputs), solved with a high-accuracy integrator. Adding a system is a
function and a line in ``SIMULATORS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.integrate import solve_ivp


@dataclass(frozen=True)
class Simulated:
    t: np.ndarray  # (T,)
    y: np.ndarray  # (T, S)
    u: np.ndarray | None = None  # (T, I)


SimFn = Callable[[dict[str, float], int, np.random.Generator, dict[str, Any]], list[Simulated]]


def _solve(f, y0, t, **kw) -> np.ndarray:
    sol = solve_ivp(f, (t[0], t[-1]), y0, t_eval=t, method="DOP853", rtol=1e-10, atol=1e-10,
                    **kw)
    if not sol.success:
        raise RuntimeError(f"simulation failed: {sol.message}")
    return sol.y.T


def damped_pendulum(p, n, rng, options) -> list[Simulated]:
    """APHYNITY (Yin et al., ICLR 2021, section 4): theta'' + omega0^2 sin(theta) +
    alpha theta' = 0; initial state a random direction scaled to radius U(1.3, 2.3);
    40 points at dt = 0.5."""
    w2, alpha = p["omega0_sq"], p["alpha"]
    points = int(options.get("points", 40))
    dt = float(options.get("dt", 0.5))
    lo, hi = options.get("radius", (1.3, 2.3))
    t = np.arange(points) * dt
    out = []
    for _ in range(n):
        d = rng.normal(size=2)
        y0 = d / np.linalg.norm(d) * rng.uniform(lo, hi)
        y = _solve(lambda _t, y: [y[1], -w2 * math.sin(y[0]) - alpha * y[1]], y0, t)
        out.append(Simulated(t, y))
    return out


SIMULATORS: dict[str, SimFn] = {
    "damped_pendulum": damped_pendulum,
}


def get_simulator(name: str) -> SimFn:
    try:
        return SIMULATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown simulator {name!r}; valid: {', '.join(sorted(SIMULATORS))}"
        ) from None
