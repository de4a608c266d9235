"""Partially observed epidemics: only reported cases are measured; the compartments are latent.

    python benchmarks/epidemic_latent.py

1. The built-in ``seir_reported`` space: twelve regional outbreaks with a lockdown, reported
   cases (rho * sigma * E) with 2% noise; each region's E(0) and I(0) fitted. The true
   structure (the prior plus the lockdown term) and the prior, fitted by
   ``hyarch.core.twin_fit`` on the training part (the first 60% of each outbreak): parameter
   errors, the uncertainty flags, and each latent compartment's largest error over the
   training horizon relative to its peak, against the simulator's own E, I and R.
2. A weakly identified case: three regions, no lockdown, incubation known, 80 daily reports:
   the flags should say which compartment the data do not pin down.
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


TRUE_SEIR = '''from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        self.beta0 = self.parameter(init=0.3, bounds=(0.01, 2.0))
        self.eta = self.parameter(init=0.3, bounds=(0.0, 1.0))
        self.sigma = self.parameter(init=0.2, bounds=(0.01, 2.0))
        self.gamma = self.parameter(init=0.15, bounds=(0.01, 2.0))
        self.rho = self.parameter(init=0.5, bounds=(0.01, 1.0))

    def derivatives(self, t, s, u):
        infection = self.beta0 * (1 - self.eta * u.lockdown) * (1 - s.E - s.I - s.R) * s.I
        return {"E": infection - self.sigma * s.E, "I": self.sigma * s.E - self.gamma * s.I,
                "R": self.gamma * s.I}

    def observe(self, s, u):
        return {"cases": self.rho * self.sigma * s.E}
'''


def builtin_case() -> None:
    from hyarch.core.candidate import load_model_class, make_factory
    from hyarch.spaces.loader import _simulated_groups, load_space

    space = load_space("seir_reported")
    truth = {s.key or f"traj{i}": s for i, s in enumerate(_simulated_groups(space.spec)["train"])}
    train = space.train
    for label, source in (("true structure", TRUE_SEIR),
                          ("prior", space.prior_path().read_text())):
        factory = make_factory(load_model_class(source, f"{label}.py"), space.states,
                               space.inputs, space.scales())
        start = time.perf_counter()
        res = fit_twin(factory, train, space.val, space.train_config(),
                       initial=space.initial_rules())
        m = res.model
        errs = {k: abs(v / space.truth[k] - 1) for k, v in m.physical_values().items()
                if k in space.truth}
        with torch.no_grad():
            states = rollout(m, train, states=True).double().numpy()
        worst = {}
        for k, name in enumerate(space.states):
            e = []
            for b, tid in enumerate(train.ids):
                ref = truth[tid].y[:train.length, k]  # the simulator's own E, I, R
                e.append(np.abs(states[b, :, k] - ref).max() / np.abs(ref).max())
            worst[name] = max(e)
        u = m.twin_.fit_.uncertainty
        print(f"seir_reported, {label}: {time.perf_counter() - start:.0f} s;"
              f" parameter errors {', '.join(f'{k} {v:.2%}' for k, v in errs.items())};"
              f" latent trajectories, largest error / peak over the regions:"
              f" {', '.join(f'{k} {v:.1%}' for k, v in worst.items())};"
              f" predicted standard error / peak:"
              f" {', '.join(f'{k} {v:.1%}' for k, v in u['states'].items())};"
              f" flags: {u['flags'] or 'none'}")


def main() -> int:
    builtin_case()
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
    print(m.twin_.fit_.uncertainty)
    with torch.no_grad():
        states = rollout(m, data, states=True).numpy()
    for k, name in enumerate("SEI"):
        err = np.abs(states[..., k] - truth[..., k]).max(axis=1) / truth[..., k].max(axis=1)
        print(f"{name}: largest error / peak, per region: {np.round(err, 3).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
