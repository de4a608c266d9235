"""Estimated starts: a rollout need not carry the first observation's noise."""

from __future__ import annotations

import math

import torch

from hyarch.core.candidate import make_factory
from hyarch.core.data import Trajectories
from hyarch.core.fields import rollout
from hyarch.core.model import HybridModel
from hyarch.core.starts import estimate_starts


class Logistic(HybridModel):
    def setup(self):
        self.r = self.parameter(init=2.1, bounds=(0.1, 10.0))
        self.k = self.parameter(init=0.5, bounds=(0.01, 10.0))

    def derivatives(self, t, s, u):
        return {"x": self.r * s.x - self.k * s.x ** 2}


def logistic(x0: torch.Tensor, t: torch.Tensor, r=2.1, k=0.5) -> torch.Tensor:
    cap = r / k
    e = torch.exp(r * t)
    return cap * x0 * e / (cap + x0 * (e - 1))


def test_a_noisy_first_sample_is_replaced_by_the_start_the_first_samples_support():
    # logistic growth from small starts (ODEBench's system 6), 1% noise of each trajectory's
    # spread on every sample, the first included: the true model from the observed start is
    # off for the whole rise; from the estimated start it is near the noise floor
    g = torch.Generator().manual_seed(0)
    B, T = 8, 100
    t = torch.linspace(0, 10, T, dtype=torch.float64).expand(B, T)
    x0 = torch.linspace(0.05, 0.2, B, dtype=torch.float64)
    clean = logistic(x0[:, None], t)
    noise = 0.01 * clean.std(dim=1, keepdim=True) * torch.randn(B, T, generator=g,
                                                                 dtype=torch.float64)
    data = Trajectories(t=t, y=(clean + noise)[..., None], mask=torch.ones(B, T, 1, dtype=bool),
                        u=None, state_names=("x",))
    model = make_factory(Logistic, ("x",), (), {"x": 1.0})().double()
    scales = data.y.std().reshape(1)
    values = model.physical_values()
    start = estimate_starts(model, data, 10, scales)

    def rms(pred):
        return float(((pred.detach()[..., 0] - clean) ** 2).mean().sqrt())

    observed = rollout(model, data)
    estimated = rollout(model, data, y0=start)
    assert rms(estimated) < rms(observed) / 3
    assert float((start[:, 0] - x0).abs().max()) < float((data.y0()[:, 0] - x0).abs().max())
    # the model's parameters are untouched, and still trainable
    assert model.physical_values() == values
    assert all(p.requires_grad for p in model.parameters())
    # a fit that cannot lower the misfit keeps the observed start
    flat = Trajectories(t=t, y=data.y0()[:, None, :].expand(B, T, 1).clone(),
                        mask=data.mask, u=None, state_names=("x",))
    still = make_factory(Logistic, ("x",), (), {"x": 1.0})().double()
    still.set_physical({"r": 0.1, "k": 0.01})
    got = estimate_starts(still, flat, 2, scales)
    assert torch.isfinite(got).all() and not math.isnan(float(got.sum()))
    with torch.no_grad():
        assert float(((rollout(still, flat, y0=got) - flat.y) ** 2).sum()) <= float(
            ((rollout(still, flat) - flat.y) ** 2).sum()) + 1e-12



class Blowup(HybridModel):
    def setup(self):
        self.a = self.parameter(init=1.0, bounds=(0.1, 100.0))

    def derivatives(self, t, s, u):
        return {"x": self.a * s.x ** 3}


def test_a_model_that_overflows_near_its_start_keeps_a_finite_start():
    # dx/dt = 20 x^3 from x = 1 blows up at t = 1/40: the misfit and its gradient overflow
    # for most trial starts (L-BFGS's step used to raise "value cannot be converted to type
    # float without overflow" and fail the whole candidate on a chaotic Lorenz system)
    t = torch.linspace(0, 1, 20).expand(3, 20)
    y = torch.ones(3, 20, 1) * torch.tensor([1.0, 0.5, -0.7])[:, None, None]
    data = Trajectories(t=t, y=y, mask=torch.ones(3, 20, 1, dtype=bool), u=None,
                        state_names=("x",))
    model = make_factory(Blowup, ("x",), (), {"x": 1.0})()
    model.set_physical({"a": 20.0})
    got = estimate_starts(model, data, 10, torch.ones(1))
    assert got.shape == (3, 1) and bool(torch.isfinite(got).all())
    # a start moves at most MAX_OFFSET scales from its observation
    from hyarch.core.starts import MAX_OFFSET

    assert float((got - data.y0()).abs().max()) <= MAX_OFFSET + 1e-6
    assert all(p.requires_grad for p in model.parameters())


class Edge(HybridModel):
    def setup(self):
        self.a = self.parameter(init=1.0, bounds=(0.1, 100.0))

    def derivatives(self, t, s, u):  # decay, undefined above x = 0.55 (a root's domain)
        return {"x": -self.a * s.x + 0 * torch.sqrt(0.55 - s.x)}


def test_a_trial_start_where_the_model_is_undefined_fails_no_candidate():
    # the samples pull the start up, past where the model is defined: L-BFGS's first trial
    # start gave a NaN misfit with no slope, and torch's line search raised IndexError,
    # which failed the candidate ("IndexError: list index out of range", ODEBench s21)
    t = torch.linspace(0, 1, 20).expand(2, 20)
    y = torch.ones(2, 20, 1)
    y[:, 0] = 0.5
    data = Trajectories(t=t, y=y, mask=torch.ones(2, 20, 1, dtype=bool), u=None,
                        state_names=("x",))
    model = make_factory(Edge, ("x",), (), {"x": 1.0})()
    got = estimate_starts(model, data, 10, torch.ones(1))
    assert got.shape == (2, 1) and bool(torch.isfinite(got).all())
    assert float(got.min()) >= 0.5 and float(got.max()) < 0.55


FRICTION = '''\
import torch

from hyarch import HybridModel


class Model(HybridModel):
    """The damped pendulum."""

    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.1, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta)
                - self.alpha * s.omega}
'''


def _noisy_csv_space(folder, tiny_space_path, condition: int):
    """The tiny pendulum's trajectories (20 test ones) as a CSV whose every sample, the
    first included, carries 2% noise (the built-in simulators keep the first exact)."""
    import numpy as np

    from hyarch.spaces.loader import load_space

    text = tiny_space_path.read_text().replace("test: 2}", "test: 20}")
    sim = tiny_space_path.with_name("sim.yaml")
    sim.write_text(text.replace("name: tiny_pendulum", "name: sim"))
    space = load_space(sim)
    rng = np.random.default_rng(3)
    rows = ["traj,split,t,theta,omega"]
    for split, data in space.splits.items():
        std = data.y.reshape(-1, 2).std(dim=0).numpy()
        for b in range(data.n):
            y = data.y[b].numpy() + 0.02 * std * rng.normal(size=data.y[b].shape)
            rows += [f"{split}{b},{split},{float(t)!r},{float(y[k, 0])!r},{float(y[k, 1])!r}"
                     for k, t in enumerate(data.t[b].numpy())]
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    (folder / "space.yaml").write_text(
        "name: noisy\ndescription: the tiny pendulum, every sample noisy\n"
        "states: {theta: {description: angle}, omega: {description: velocity}}\n"
        "data: {csv: {path: data.csv, time: t, trajectory: traj, split: split}}\n"
        f"splits: {{by: column, condition: {condition}}}\n"
        "training: {windows: [2, 4], stage_iters: 15, final_iters: 20, patience: 10,"
        " restarts: 1, lbfgs: never}\n")
    return load_space(folder / "space.yaml"), space


def test_a_space_that_conditions_scores_rollouts_from_estimated_starts(tiny_space_path):
    # splits.condition on a space without latent states: each predicted trajectory starts
    # where the fitted model matches its first 4 samples, which are then left out of the
    # scores; the child sees only those samples of the scored splits
    from hyarch.evaluate import evaluate_source

    space, clean = _noisy_csv_space(tiny_space_path.parent, tiny_space_path, 4)
    assert space.conditioning("test") == 4 and clean.conditioning("test") == 0
    out = evaluate_source(space, FRICTION)
    assert out.result["status"] == "ok", out.result["reason"]
    test = space.splits["test"]
    pred = torch.as_tensor(out.predictions["test.full"])
    # not the first observation: a start fitted to the first samples (the same model
    # from the observed start is what the child returns as "population")
    pop = torch.as_tensor(out.predictions["test.population"])
    assert torch.equal(pop[:, 0], test.y0().double())
    assert not torch.equal(pred[:, 0], test.y0().double())
    # from the fitted starts the true model is closer to the noise-free trajectories
    # after the window than from the noisy first observations
    truth, m = clean.splits["test"].y.double(), test.mask.clone()
    m[:, :4] = False

    def sse(p):
        return float(torch.where(m, (p - truth) ** 2, torch.zeros_like(truth)).sum())

    assert sse(pred) < sse(pop) / 2


def _noisy_logistic(B: int, seed: int) -> tuple[Trajectories, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = 60
    t = torch.linspace(0, 6, T, dtype=torch.float64).expand(B, T)
    x0 = torch.linspace(0.05, 0.2, B, dtype=torch.float64)
    clean = logistic(x0[:, None], t)
    noise = 0.01 * clean.std(dim=1, keepdim=True) * torch.randn(B, T, generator=g,
                                                                 dtype=torch.float64)
    return Trajectories(t=t.float(), y=(clean + noise)[..., None].float(),
                        mask=torch.ones(B, T, 1, dtype=bool), u=None, state_names=("x",),
                        ids=tuple(f"{seed}-{i}" for i in range(B))), clean


def test_a_network_free_candidate_scored_from_estimated_starts_is_fitted_from_them_too():
    # logistic growth from small starts, 1% noise on every sample: fitted from the observed
    # starts, the rate absorbs the first samples' noise; alternating start estimation and
    # refit brings both constants closer to the truth (r 2.1, k 0.5)
    from hyarch.core.starts import refit_from_starts
    from hyarch.core.train import TrainConfig, fit

    train, _ = _noisy_logistic(6, 1)
    val, _ = _noisy_logistic(3, 2)
    factory = make_factory(Logistic, ("x",), (), {"x": 1.0})
    cfg = TrainConfig(windows=(2, 4), stage_iters=40, final_iters=60, patience=30, restarts=1)
    plain = fit(factory, train, val, cfg)
    better = refit_from_starts(factory, train, val, cfg, plain, 10)

    def error(res):
        v = res.model.physical_values()
        return abs(v["r"] / 2.1 - 1) + abs(v["k"] / 0.5 - 1)

    assert better is not plain
    assert error(better) < error(plain) / 2
    # nothing to do without conditioning samples
    assert refit_from_starts(factory, train, val, cfg, plain, 0) is plain
