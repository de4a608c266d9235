"""A partially observed epidemic: only reported cases are measured; S, E and I are latent.

    python benchmarks/epidemic_latent.py

SEIR with known incubation (5.2 days), unknown transmission beta, recovery gamma and
reporting fraction rho; three regions seeded differently (their E(0) and I(0) fitted per
trajectory), 80 daily reports with 2% noise; the candidate observes cases = rho * sigma * E.
Fitted by ``hyarch.core.twin_fit`` (library API); prints the parameters and, per latent
compartment, the largest error of its recovered trajectory relative to its peak.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

from hyarch import HybridModel
from hyarch.core.data import Trajectories
from hyarch.core.fields import rollout
from hyarch.core.train import TrainConfig
from hyarch.core.twin import Initial
from hyarch.core.twin_fit import fit_twin

BETA, SIGMA, GAMMA, RHO = 0.6, 1 / 5.2, 1 / 4.0, 0.3
SEEDS = [(1e-3, 5e-4), (3e-4, 1e-4), (2e-3, 1e-3)]  # (E0, I0) per region


def simulate(t: np.ndarray, noise: float = 0.02, seed: int = 0):
    def f(_t, x):
        s, e, i = x
        return [-BETA * s * i, BETA * s * i - SIGMA * e, SIGMA * e - GAMMA * i]

    rng = np.random.default_rng(seed)
    states, cases = [], []
    for e0, i0 in SEEDS:
        sol = solve_ivp(f, (0, t[-1]), [1 - e0 - i0, e0, i0], t_eval=t, rtol=1e-10,
                        atol=1e-12)
        states.append(sol.y.T)
        inc = RHO * SIGMA * sol.y[1]
        cases.append(inc * (1 + noise * rng.normal(size=inc.shape)))
    return np.stack(states), np.stack(cases)[..., None]


class Model(HybridModel):
    def setup(self):
        self.beta = self.parameter(0.4, (0.05, 3.0))
        self.gamma = self.parameter(0.2, (0.02, 1.0))
        self.rho = self.parameter(0.5, (0.01, 1.0))

    def derivatives(self, t, s, u):
        infection = self.beta * s.S * s.I
        return {"S": -infection, "E": infection - s.E / 5.2, "I": s.E / 5.2 - self.gamma * s.I}

    def observe(self, s, u):
        return {"cases": self.rho * s.E / 5.2}


def main() -> int:
    torch.set_default_dtype(torch.float64)
    t = np.arange(0, 80.0, 1.0)
    truth, cases = simulate(t)
    data = Trajectories.from_arrays(t, cases, states=("cases",), ids=["a", "b", "c"])
    start = time.perf_counter()
    res = fit_twin(lambda replicas=1: Model(("S", "E", "I"), replicas=replicas), data, data,
                   TrainConfig(windows=(4, 16), restarts=2, max_seconds=300),
                   initial={"S": Initial(value=1.0),
                            "E": Initial(bounds=(1e-6, 0.05), init=1e-3),
                            "I": Initial(bounds=(1e-6, 0.05), init=1e-3)})
    m = res.model
    print(f"{time.perf_counter() - start:.0f} s; truth beta {BETA}, gamma {GAMMA}, rho {RHO};"
          f" fitted {m.physical_values()}")
    print(m.twin_.values_by_trajectory(m))
    with torch.no_grad():
        states = rollout(m, data, states=True).numpy()
    for k, name in enumerate("SEI"):
        err = np.abs(states[..., k] - truth[..., k]).max(axis=1) / truth[..., k].max(axis=1)
        print(f"{name}: largest error / peak, per region: {np.round(err, 3).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
