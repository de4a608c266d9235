"""Rollout against exact solutions: decay, harmonic oscillator, a linear system driven by a
piecewise-constant input; per-trajectory grids, substeps, replicas, torchdiffeq by name."""

from __future__ import annotations

import pytest
import torch

from hyarch import HybridModel
from hyarch.core.data import Trajectories
from hyarch.core.fields import rollout
from hyarch.core.rollout import METHODS, integrate
from hyarch.core.train import TrainConfig


class Decay(HybridModel):
    def setup(self):
        self.k = self.parameter(init=1.5, bounds=(0.1, 5.0))

    def derivatives(self, t, s, u):
        return {"x": -self.k * s.x}


class Oscillator(HybridModel):
    def setup(self):
        self.omega_sq = self.parameter(init=4.0, bounds=(0.1, 20.0))

    def derivatives(self, t, s, u):
        return {"x": s.v, "v": -self.omega_sq * s.x}


class Driven(HybridModel):
    """dx/dt = -a x + b u with u piecewise constant."""

    def setup(self):
        self.a = self.parameter(init=0.8, bounds=(0.1, 5.0))
        self.b = self.parameter(init=2.0, bounds=(0.1, 5.0))

    def derivatives(self, t, s, u):
        return {"x": -self.a * s.x + self.b * u.dose}


def decay_data(x0=(1.0, 2.0, -0.5), k=1.5, t=None):
    t = torch.linspace(0, 2, 21) if t is None else t
    x0 = torch.tensor(x0)
    if t.ndim == 1:
        t = t.expand(len(x0), -1)
    y = x0[:, None] * torch.exp(-k * t)
    return Trajectories.from_arrays(t, y[..., None], states=("x",))


def test_decay_rk4_matches_exact_solution():
    data = decay_data()
    pred = rollout(Decay(("x",)), data)
    assert pred.shape == (3, 21, 1)
    assert torch.equal(pred[:, 0], data.y[:, 0])
    torch.testing.assert_close(pred, data.y, rtol=1e-5, atol=1e-6)


def test_per_trajectory_time_grids():
    # each trajectory on its own grid: different steps and different start times
    t = torch.stack([torch.linspace(0, 2, 21), torch.linspace(0.5, 2.5, 21),
                     torch.linspace(0, 0.4, 21)])
    x0 = torch.tensor([1.0, 2.0, 3.0])
    y = x0[:, None] * torch.exp(-1.5 * (t - t[:, :1]))
    data = Trajectories.from_arrays(t, y[..., None], states=("x",))
    pred = rollout(Decay(("x",)), data)
    torch.testing.assert_close(pred, data.y, rtol=1e-4, atol=1e-5)


def test_substeps_reduce_the_error_at_fourth_order():
    t = torch.linspace(0, 4, 5)  # h = 1: coarse on purpose
    data = decay_data(t=t)
    model = Decay(("x",))
    err1 = (rollout(model, data) - data.y).abs().max()
    err4 = (rollout(model, data, substeps=4) - data.y).abs().max()
    assert err1 > 1e-3
    assert err4 < err1 / 100  # RK4: 4x smaller step, about 4^4 = 256x smaller error


def test_euler_is_first_order():
    t = torch.linspace(0, 1, 3)
    data = decay_data(t=t)
    model = Decay(("x",)).requires_grad_(False)
    e1 = (rollout(model, data, method="euler", substeps=8) - data.y).abs().max()
    e2 = (rollout(model, data, method="euler", substeps=16) - data.y).abs().max()
    assert 1.8 < float(e1 / e2) < 2.2  # halving the step halves the error


def oscillator_data(omega=2.0, t=None):
    t = torch.linspace(0, 10, 201) if t is None else t
    amp = torch.tensor([1.0, 0.3])
    phase = torch.tensor([0.0, 1.0])
    arg = omega * t[None, :] + phase[:, None]
    x = amp[:, None] * torch.cos(arg)
    v = -amp[:, None] * omega * torch.sin(arg)
    return Trajectories.from_arrays(t, torch.stack([x, v], dim=-1), states=("x", "v"))


def test_harmonic_oscillator_over_three_periods():
    data = oscillator_data()
    pred = rollout(Oscillator(("x", "v")), data)
    torch.testing.assert_close(pred, data.y, rtol=0, atol=2e-4)


@pytest.mark.parametrize("method,tol", [("dopri5", 2e-5), ("dopri8", 5e-4), ("bosh3", 5e-4)])
def test_torchdiffeq_methods_by_name(method, tol):
    data = oscillator_data(t=torch.linspace(0, 10, 11))  # a coarse grid: adaptive steps inside
    pred = rollout(Oscillator(("x", "v")), data, method=method)
    torch.testing.assert_close(pred, data.y, rtol=0, atol=tol)


def test_dopri5_on_decay():
    data = decay_data()
    pred = rollout(Decay(("x",)), data, method="dopri5")
    torch.testing.assert_close(pred, data.y, rtol=1e-5, atol=1e-6)


class Forced(HybridModel):
    """dx/dt = c cos(t): x = x0 + c (sin t - sin t0), a field that reads absolute time."""

    def setup(self):
        self.c = self.parameter(init=1.0, bounds=(0.1, 5.0))

    def derivatives(self, t, s, u):
        return {"x": self.c * torch.cos(t) + 0 * s.x}


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_trajectories_starting_at_different_times(method):
    # the same steps, different starts (as the curriculum's windows have)
    t = torch.stack([torch.linspace(0, 2, 11), torch.linspace(3, 5, 11)])
    x0 = torch.tensor([0.5, -1.0])
    y = x0[:, None] + torch.sin(t) - torch.sin(t[:, :1])
    data = Trajectories.from_arrays(t, y[..., None], states=("x",))
    pred = rollout(Forced(("x",)), data, method=method)
    torch.testing.assert_close(pred, data.y, rtol=0, atol=2e-5)


@pytest.mark.parametrize("method,substeps,tol", [("rk4", 1, 2e-5), ("midpoint", 4, 1e-4)])
def test_time_dependent_field_on_per_trajectory_grids(method, substeps, tol):
    t = torch.stack([torch.linspace(0, 2, 21), torch.linspace(1, 1.4, 21),
                     torch.linspace(-3, 0, 21)])
    x0 = torch.tensor([0.5, -1.0, 2.0])
    y = x0[:, None] + torch.sin(t) - torch.sin(t[:, :1])
    data = Trajectories.from_arrays(t, y[..., None], states=("x",))
    pred = rollout(Forced(("x",)), data, method=method, substeps=substeps)
    assert pred.shape == (3, 21, 1)
    torch.testing.assert_close(pred, data.y, rtol=0, atol=tol)


def test_torchdiffeq_needs_a_shared_grid():
    t = torch.stack([torch.linspace(0, 2, 5), torch.linspace(0, 3, 5)])
    data = decay_data(x0=(1.0, 2.0), t=t)
    with pytest.raises(ValueError, match="rk4"):
        rollout(Decay(("x",)), data, method="dopri5")


def driven_exact(t, u, x0, a=0.8, b=2.0):
    """Exact solution with u constant on [t_k, t_k+1): per interval, a linear ODE."""
    xs = [x0]
    for k in range(t.shape[-1] - 1):
        h = t[:, k + 1] - t[:, k]
        uk = u[:, k, 0]
        e = torch.exp(-a * h)
        xs.append(xs[-1] * e + b * uk / a * (1 - e))
    return torch.stack(xs, dim=1)[..., None]


@pytest.mark.parametrize("method,substeps,tol", [("rk4", 4, 1e-5), ("dopri5", 1, 3e-5)])
def test_piecewise_constant_input(method, substeps, tol):
    t = torch.linspace(0, 6, 13).expand(2, -1)
    u = torch.zeros(2, 13, 1)
    u[0, 2:5] = 1.0  # a dose on [1, 2.5)
    u[0, 8:10] = 3.0
    u[1, ::2] = 0.5  # switching every sample
    x0 = torch.tensor([0.3, -1.0])
    y = driven_exact(t, u, x0)
    data = Trajectories.from_arrays(t, y, u, states=("x",), inputs=("dose",))
    pred = rollout(Driven(("x",), ("dose",)), data, method=method, substeps=substeps)
    torch.testing.assert_close(pred, y, rtol=0, atol=tol)
    # the input matters: with the dose removed the answer is different
    off = Trajectories.from_arrays(t, y, torch.zeros_like(u), states=("x",), inputs=("dose",))
    assert (rollout(Driven(("x",), ("dose",)), off) - y).abs().max() > 0.5


def test_replicas_roll_out_independently():
    data = decay_data()
    model = Decay(("x",), replicas=2)
    model.set_physical({"k": [1.5, 0.5]})
    pred = rollout(model, data)
    assert pred.shape == (2, 3, 21, 1)
    torch.testing.assert_close(pred[0], data.y, rtol=1e-5, atol=1e-6)
    slow = data.y[:, :1] * torch.exp(-0.5 * data.t)[..., None]
    torch.testing.assert_close(pred[1], slow, rtol=1e-5, atol=1e-6)


def test_unknown_method_lists_the_valid_ones():
    data = decay_data()
    with pytest.raises(ValueError) as e:
        integrate(lambda t, y, u: -y, data.y0(), data.t, method="rk45")
    msg = str(e.value)
    assert "'rk45'" in msg
    for name in ("rk4", "dopri5", "euler"):
        assert name in msg
    with pytest.raises(ValueError, match="dopri5"):
        TrainConfig(method="runge")


@pytest.mark.filterwarnings("ignore:Functional iteration did not converge")
def test_every_listed_method_runs():
    data = decay_data(t=torch.linspace(0, 1, 5))
    for method in METHODS:
        with torch.no_grad():
            pred = rollout(Decay(("x",)), data, method=method, substeps=8)
        assert pred.shape == data.y.shape, method
        # first-order Euler is coarse (torchdiffeq's ignores substeps: h = 0.25)
        tol = 0.2 if method.endswith("euler") else 0.01
        torch.testing.assert_close(pred, data.y, rtol=0, atol=tol, msg=method)
