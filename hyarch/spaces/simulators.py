"""Built-in simulators that make the benchmark problems' data.

Each simulator turns true parameters, a count and a random generator into trajectories
(time grid, states, inputs), solved with a high-accuracy integrator. Adding a system is a
function and a line in ``SIMULATORS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp


@dataclass(frozen=True)
class Simulated:
    t: np.ndarray  # (T,)
    y: np.ndarray  # (T, S)
    u: np.ndarray | None = None  # (T, I)
    key: str | None = None  # the trajectory's id in the data (a subject), where it has one


SimFn = Callable[[dict[str, float], int, np.random.Generator, dict[str, Any]], list[Simulated]]


MAX_POINTS = 100_000


def _grid(options: dict[str, Any], points: int, dt: float) -> np.ndarray:
    """The sampling grid from ``options`` (points, dt), refusing what cannot be simulated:
    an adaptive solver asked for a horizon of 1e300 would run forever, not fail."""
    n, h = options.get("points", points), options.get("dt", dt)
    if isinstance(n, bool) or not isinstance(n, (int, float)) or n != int(n) \
            or not 2 <= n <= MAX_POINTS:
        raise ValueError(f"points must be an integer from 2 to {MAX_POINTS}, got {n!r}")
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) \
            or not 0 < h <= 1e4:
        raise ValueError(f"dt must be a positive number up to 1e4, got {h!r}")
    return np.arange(int(n)) * float(h)


MAX_EVALUATIONS = 200_000

SOLVER_FAILED = ("the simulator's ODE solver failed: the system is too stiff or too long for"
                 " these parameters")


class SimulationError(RuntimeError):
    """The ODE solver could not simulate these parameters and options. The message is ours
    (``SOLVER_FAILED``), with the solver's own words in parentheses for detail."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{SOLVER_FAILED} ({detail})")


class _Budget:
    """Counts right-hand-side evaluations and stops a solve that will not finish.

    Absurd parameters (omega0_sq = 1e300) make an adaptive solver take ever smaller steps
    and never return; past the budget the simulation fails with a message instead.
    """

    def __init__(self, f, limit: int = MAX_EVALUATIONS):
        self.f, self.left = f, limit

    def __call__(self, *args):
        self.left -= 1
        if self.left < 0:
            raise SimulationError(f"over {MAX_EVALUATIONS} right-hand-side evaluations")
        return self.f(*args)


def _solve_ivp(fun, t_span, y0, **kw):
    """``scipy.integrate.solve_ivp`` whose every failure (an exception on the way, or a
    solution without success) is a ``SimulationError`` in our words, whatever the SciPy
    version says: "Required step size is less than spacing between numbers", an overflow..."""
    try:
        sol = solve_ivp(fun, t_span, y0, **kw)
    except SimulationError:
        raise
    except (ArithmeticError, ValueError) as e:
        raise SimulationError(f"{type(e).__name__}: {e}") from None
    if not sol.success or not np.all(np.isfinite(sol.y)):
        raise SimulationError(str(sol.message) if not sol.success
                              else "the solution is not finite")
    return sol


def _solve(f, y0, t, **kw) -> np.ndarray:
    sol = _solve_ivp(_Budget(f), (t[0], t[-1]), y0, t_eval=t, method="DOP853", rtol=1e-10,
                     atol=1e-10, **kw)
    return sol.y.T


def damped_pendulum(p, n, rng, options) -> list[Simulated]:
    """APHYNITY (Yin et al., ICLR 2021, section 4): theta'' + omega0^2 sin(theta) +
    alpha theta' = 0; initial state a random direction scaled to radius U(1.3, 2.3);
    40 points at dt = 0.5."""
    w2, alpha = p["omega0_sq"], p["alpha"]
    t = _grid(options, 40, 0.5)
    lo, hi = options.get("radius", (1.3, 2.3))
    out = []
    for _ in range(n):
        d = rng.normal(size=2)
        y0 = d / np.linalg.norm(d) * rng.uniform(lo, hi)
        y = _solve(lambda _t, y: [y[1], -w2 * math.sin(y[0]) - alpha * y[1]], y0, t)
        out.append(Simulated(t, y))
    return out


def _segments(f, y0: np.ndarray, t: np.ndarray, policy, rtol: float = 1e-9) -> tuple:
    """Integrate N systems at once, segment by segment, inputs held constant in each.

    ``f(t, y (N, S), u (N, I)) -> (N, S)``; ``policy(k, ys) -> u (N, I)`` picks the inputs
    for ``[t_k, t_{k+1})`` from the states observed so far (feedback dosing), the same
    zero-order hold the core's integrator uses, so a model can match the data exactly.
    """
    N, S = y0.shape
    ys = [y0]
    us = []
    budget = _Budget(f)
    for k in range(len(t)):
        u = np.asarray(policy(k, np.stack(ys, axis=1)), dtype=float).reshape(N, -1)
        us.append(u)
        if k == len(t) - 1:
            break
        sol = _solve_ivp(lambda tt, y, u=u: budget(tt, y.reshape(N, S), u).reshape(-1),
                         (t[k], t[k + 1]), ys[-1].reshape(-1), method="DOP853", rtol=rtol,
                         atol=rtol * 1e-2)
        ys.append(sol.y[:, -1].reshape(N, S))
    return np.stack(ys, axis=1), np.stack(us, axis=1)  # (N, T, S), (N, T, I)


def _uniform(rng, bounds, n: int) -> np.ndarray:
    lo, hi = bounds
    return rng.uniform(float(lo), float(hi), size=n)


def _predator_prey(rhs, n, rng, options, predator0) -> list[Simulated]:
    """``n`` trajectories of a prey-predator system ``rhs(x, z) -> (dx, dz)`` (arrays of
    all trajectories at once), from starts drawn in ``options``' prey0 and predator0."""
    t = _grid(options, 41, 0.5)
    points = len(t)
    y0 = np.stack([_uniform(rng, options.get("prey0", (1.0, 4.0)), n),
                   _uniform(rng, options.get("predator0", predator0), n)], axis=1)

    def f(_t, y):
        return np.concatenate(rhs(y[:n], y[n:]))

    y = _solve(f, y0.T.reshape(-1), t).reshape(points, 2, n).transpose(2, 0, 1)
    return [Simulated(t, y[i]) for i in range(n)]


def lotka_volterra(p, n, rng, options) -> list[Simulated]:
    """Predator-prey with logistic prey growth (the term the prior lacks):
    dx/dt = alpha x (1 - x/K) - beta x y, dy/dt = delta x y - gamma y."""
    a, K, b, d, g = p["alpha"], p["K"], p["beta"], p["delta"], p["gamma"]
    return _predator_prey(lambda x, z: (a * x * (1 - x / K) - b * x * z, d * x * z - g * z),
                          n, rng, options, (0.5, 2.5))


def rosenzweig_macarthur(p, n, rng, options) -> list[Simulated]:
    """Predator-prey with logistic prey and a saturating (Holling type II) functional
    response (Rosenzweig and MacArthur, Am. Nat. 97, 1963):
    dx/dt = r x (1 - x/K) - q x y / (c + x), dy/dt = e q x y / (c + x) - m y."""
    r, K, q, c, e, m = (p[k] for k in ("r", "K", "q", "c", "e", "m"))

    def rhs(x, z):
        eaten = q * x * z / (c + x)
        return r * x * (1 - x / K) - eaten, e * eaten - m * z

    return _predator_prey(rhs, n, rng, options, (0.5, 2.0))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lung_cancer(p, n, rng, options) -> list[Simulated]:
    """Non-small-cell lung cancer under chemo- and radiotherapy (Geng et al. 2017, as
    simulated by Bica et al. 2020 and HDTwinGen, Holt et al. 2024), in continuous time:
    dv/dt = (rho log(K/v) - beta_c c - (alpha_r r + beta_r r^2)) v, dc/dt = -c/2 + chemo.
    Each day, chemo (dose 5.0) and radiotherapy (2.0 Gy) are each given with probability
    sigmoid(gamma/D_max (D - D_max/2)), D the mean tumour diameter over the last 15 days:
    bigger tumours get treated more (time-varying confounding)."""
    rho, K, bc, ar = p["rho"], p["K"], p["beta_c"], p["alpha_r"]
    br = p.get("beta_r", ar / 10.0)
    days = options.get("days", 60)
    if isinstance(days, bool) or not isinstance(days, int) or not 2 <= days <= 10_000:
        raise ValueError(f"days must be an integer from 2 to 10000, got {days!r}")
    gamma = float(options.get("gamma", 10.0))
    d_max = float(options.get("d_max", 13.0))
    chemo_dose, radio_dose = float(options.get("chemo_dose", 5.0)), float(options.get("radio_dose", 2.0))
    window = int(options.get("window", 15))
    t = np.arange(days, dtype=float)
    v0 = _uniform(rng, options.get("volume0", (0.014, 1149.9)), n)
    y0 = np.stack([v0, np.zeros(n)], axis=1)

    def f(_t, y, u):
        v, c = np.maximum(y[:, 0], 1e-9), y[:, 1]
        chemo, radio = u[:, 0], u[:, 1]
        dv = (rho * np.log(K / v) - bc * c - (ar * radio + br * radio ** 2)) * v
        return np.stack([dv, -c / 2 + chemo], axis=1)

    def policy(k, ys):
        vol = ys[:, max(0, k - window + 1):k + 1, 0]
        diam = np.cbrt(6.0 * np.maximum(vol, 0.0) / np.pi).mean(axis=1)
        prob = _sigmoid(gamma / d_max * (diam - d_max / 2))
        return np.stack([chemo_dose * (rng.uniform(size=n) < prob),
                         radio_dose * (rng.uniform(size=n) < prob)], axis=1)

    y, u = _segments(f, y0, t, policy, rtol=1e-8)
    return [Simulated(t, y[i], u[i]) for i in range(n)]


def seir(p, n, rng, options) -> list[Simulated]:
    """SEIR epidemic with a lockdown input that cuts the contact rate (the term the prior
    lacks): beta(t) = beta0 (1 - eta lockdown(t)). Fractions of the population; the
    lockdown starts on a sample day in ``start`` and, when ``duration`` is given, lifts."""
    b0, eta, sigma, gam = p["beta0"], p["eta"], p["sigma"], p["gamma"]
    t = _grid(options, 61, 2.0)
    i0 = _uniform(rng, options.get("infected0", (1e-3, 1e-2)), n)
    y0 = np.stack([1 - 2 * i0, i0, i0, np.zeros(n)], axis=1)
    start = _uniform(rng, options.get("start", (16.0, 50.0)), n)
    dur = options.get("duration")
    stop = start + _uniform(rng, dur, n) if dur else np.full(n, np.inf)
    lock = ((t[None, :] >= start[:, None]) & (t[None, :] < stop[:, None])).astype(float)

    def f(_t, y, u):
        S, E, I_ = y[:, 0], y[:, 1], y[:, 2]
        inf = b0 * (1 - eta * u[:, 0]) * S * I_
        return np.stack([-inf, inf - sigma * E, sigma * E - gam * I_, gam * I_], axis=1)

    y, u = _segments(f, y0, t, lambda k, ys: lock[:, k:k + 1])
    return [Simulated(t, y[i], u[i]) for i in range(n)]


def seir_reported(p, n, rng, options) -> list[Simulated]:
    """The ``seir`` outbreaks as surveillance sees them: columns E, I, R (S = 1 - E - I - R)
    and the reported incidence ``rho * sigma * E`` per day, a fraction ``rho`` of new cases
    being reported. A space measures the last column and keeps E, I and R latent."""
    out = []
    for s in seir(p, n, rng, options):
        cases = p["rho"] * p["sigma"] * s.y[:, 1:2]
        out.append(Simulated(s.t, np.concatenate([s.y[:, 1:4], cases], axis=1), s.u))
    return out


def _laplacian(x: np.ndarray, dx: float) -> np.ndarray:
    """Five-point Laplacian with periodic boundaries over the last two axes."""
    return (np.roll(x, 1, -1) + np.roll(x, -1, -1) + np.roll(x, 1, -2) + np.roll(x, -1, -2)
            - 4 * x) / dx ** 2


def reaction_diffusion(p, n, rng, options) -> list[Simulated]:
    """2-D FitzHugh-Nagumo reaction-diffusion on a periodic grid (APHYNITY, Yin et al. 2021):
    du/dt = a lap(u) + u - u^3 - k - v, dv/dt = b lap(v) + u - v; [-1, 1]^2 domain, smooth
    random initial fields. The prior lacks the constant k."""
    a, b, k = p["a"], p["b"], p["k"]
    size = options.get("grid", 16)
    if isinstance(size, bool) or not isinstance(size, int) or not 4 <= size <= 256:
        raise ValueError(f"grid must be an integer from 4 to 256, got {size!r}")
    t = _grid(options, 26, 0.1)
    points = len(t)
    amp = options.get("amplitude", (0.5, 1.0))
    dx = 2.0 / size
    freq = np.fft.fftfreq(size, d=dx)
    k2 = freq[:, None] ** 2 + freq[None, :] ** 2
    smooth = np.exp(-k2 / (2 * float(options.get("bandwidth", 1.0)) ** 2))
    fields = []
    for _ in range(2 * n):
        z = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) * smooth))
        fields.append(z / (z.std() + 1e-12))
    scale = _uniform(rng, amp, n)
    f0 = np.stack(fields).reshape(n, 2, size, size) * scale[:, None, None, None]
    cells = size * size

    def f(_t, y):
        uv = y.reshape(n, 2, size, size)
        u, v = uv[:, 0], uv[:, 1]
        du = a * _laplacian(u, dx) + u - u ** 3 - k - v
        dv = b * _laplacian(v, dx) + u - v
        return np.stack([du, dv], axis=1).reshape(-1)

    sol = _solve_ivp(_Budget(f), (t[0], t[-1]), f0.reshape(-1), t_eval=t, method="RK45",
                     rtol=1e-8, atol=1e-10)
    y = sol.y.T.reshape(points, n, 2 * cells).transpose(1, 0, 2)
    return [Simulated(t, y[i]) for i in range(n)]


SIMULATORS: dict[str, SimFn] = {
    "damped_pendulum": damped_pendulum,
    "lotka_volterra": lotka_volterra,
    "rosenzweig_macarthur": rosenzweig_macarthur,
    "lung_cancer": lung_cancer,
    "seir": seir,
    "seir_reported": seir_reported,
    "reaction_diffusion": reaction_diffusion,
}


def get_simulator(name: str) -> SimFn:
    try:
        return SIMULATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown simulator {name!r}; valid: {', '.join(sorted(SIMULATORS))}"
        ) from None
