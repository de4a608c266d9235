"""Every regularizer on a case with a known answer (closure weights set by hand)."""

from __future__ import annotations

import math

import pytest
import torch

from hyarch import Closure, HybridModel
from hyarch.core.data import Trajectories
from hyarch.core.fields import rollout
from hyarch.core.metrics import normalised_mse
from hyarch.core.regularizers import (
    REGULARIZERS,
    Context,
    closure_norm,
    closure_share,
    decorrelation,
    get_regularizer,
    reduced_fit,
    sensitivity,
)

K = 1.5

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


class Decay(HybridModel):
    def setup(self):
        self.k = self.parameter(init=K, bounds=(0.1, 5.0))

    def derivatives(self, t, s, u):
        return {"x": -self.k * s.x}


class DecayPlus(HybridModel):
    """dx/dt = -k x + g(x), g one linear layer: g = w x + b."""

    def setup(self):
        self.k = self.parameter(init=K, bounds=(0.1, 5.0))
        self.g = Closure(inputs=("x",), hidden=())

    def derivatives(self, t, s, u):
        return {"x": -self.k * s.x + self.g(s.x)}


def set_linear(closure, w=0.0, b=0.0):
    with torch.no_grad():
        closure.weights[0].fill_(w)
        closure.biases[0].fill_(b)


def decay_data():
    t = torch.linspace(0, 2, 11)
    x0 = torch.tensor([1.0, -2.0, 0.5])
    y = x0[:, None] * torch.exp(-K * t)
    return Trajectories.from_arrays(t, y[..., None], states=("x",))


def context(model, data, scales=(2.0,)):
    with torch.no_grad():
        pred = rollout(model, data)
    return Context(model, data, pred, torch.tensor(scales))


def test_closure_norm_of_a_constant_closure():
    m = DecayPlus(("x",))
    set_linear(m.g, w=0.0, b=0.6)
    ctx = context(m, decay_data(), scales=(2.0,))
    assert float(closure_norm(ctx)) == pytest.approx((0.6 / 2.0) ** 2, rel=1e-6)


def test_closure_norm_of_a_linear_closure():
    m = DecayPlus(("x",))
    set_linear(m.g, w=0.4)
    ctx = context(m, decay_data(), scales=(2.0,))
    x = ctx.pred[..., 0]
    assert float(closure_norm(ctx)) == pytest.approx(float(((0.4 * x / 2.0) ** 2).mean()),
                                                     rel=1e-5)


def test_closure_norm_is_zero_at_initialisation():
    ctx = context(DecayPlus(("x",)), decay_data())
    assert float(closure_norm(ctx)) == 0.0
    assert float(closure_share(ctx)) == 0.0


def test_decorrelation_is_one_for_a_closure_along_the_mechanism():
    m = DecayPlus(("x",))
    set_linear(m.g, w=0.3)  # G = 0.3 x, F0 = -k x: anti-parallel
    assert float(decorrelation(context(m, decay_data()))) == pytest.approx(1.0, abs=1e-6)
    set_linear(m.g, w=-0.3)  # parallel
    assert float(decorrelation(context(m, decay_data()))) == pytest.approx(1.0, abs=1e-6)


W2 = 4.0


class OscillatorPlus(HybridModel):
    """x' = v + gx(x), v' = -w2 x + gv(v); with gx = w2 x and gv = v, G is orthogonal to
    F0 = (v, -w2 x) at every point."""

    def setup(self):
        self.w2 = self.parameter(init=W2, bounds=(0.1, 20.0))
        self.gx = Closure(inputs=("x",), hidden=())
        self.gv = Closure(inputs=("v",), hidden=())

    def derivatives(self, t, s, u):
        return {"x": s.v + self.gx(s.x), "v": -self.w2 * s.x + self.gv(s.v)}


def test_decorrelation_is_zero_for_an_orthogonal_closure():
    m = OscillatorPlus(("x", "v"))
    set_linear(m.gx, w=W2)
    set_linear(m.gv, w=1.0)
    t = torch.linspace(0, 1, 11)
    y0 = torch.tensor([[1.0, 0.0], [0.2, -1.0]])
    data = Trajectories.from_arrays(t, y0[:, None, :].expand(-1, 11, -1).clone(),
                                    states=("x", "v"))
    ctx = context(m, data, scales=(1.0, 1.0))
    assert float(decorrelation(ctx)) == pytest.approx(0.0, abs=1e-5)
    # and the closure norm: mean over points of (w2 x)^2 + v^2
    x, v = ctx.pred[..., 0], ctx.pred[..., 1]
    assert float(closure_norm(ctx)) == pytest.approx(float(((W2 * x) ** 2 + v ** 2).mean()),
                                                     rel=1e-5)


def test_closure_share_of_a_linear_closure():
    m = DecayPlus(("x",))
    set_linear(m.g, w=0.5)  # F = (0.5 - k) x, G = 0.5 x
    ctx = context(m, decay_data())
    assert float(closure_share(ctx)) == pytest.approx(0.5 / abs(0.5 - K), rel=1e-5)


def test_reduced_fit_is_the_fit_of_the_prior():
    data = decay_data()
    scales = torch.tensor([2.0])
    prior = Decay(("x",))
    prior.set_physical({"k": 0.9})
    with torch.no_grad():
        prior_fit = normalised_mse(rollout(prior, data), data, scales)
    assert float(prior_fit) > 1e-3  # a wrong k: a visible error

    hybrid = DecayPlus(("x",))
    hybrid.set_physical({"k": 0.9})
    # closures null (at init): the reduced fit is the model's own fit, which is the prior's
    ctx = context(hybrid, data)
    assert float(reduced_fit(ctx)) == pytest.approx(float(prior_fit), rel=1e-6)
    assert float(normalised_mse(ctx.pred, data, scales)) == pytest.approx(float(prior_fit),
                                                                          rel=1e-6)
    # a closure that repairs the fit does not change the reduced fit
    set_linear(hybrid.g, w=-(K - 0.9))
    ctx = context(hybrid, data)
    assert float(normalised_mse(ctx.pred, data, scales)) < 1e-8
    assert float(reduced_fit(ctx)) == pytest.approx(float(prior_fit), rel=1e-6)
    assert all(not c.null for c in hybrid.closures())


def test_sensitivity_matches_the_analytic_derivative():
    # x = x0 exp(-k t): dx/dlog k = -k t x0 exp(-k t), RMS over the points after t0, in
    # units of the state scale
    data = decay_data()
    scale = 2.0
    m = Decay(("x",))
    ctx = context(m, data, scales=(scale,))
    t = data.t[:, 1:]
    x0 = data.y[:, :1, 0]
    d = -K * t * x0 * torch.exp(-K * t) / scale
    expected = float(d.pow(2).mean().sqrt())
    assert float(sensitivity(ctx)) == pytest.approx(expected, rel=5e-3)


def test_sensitivity_averages_over_parameters_and_leaves_the_model_unchanged():
    m = OscillatorPlus(("x", "v"))
    t = torch.linspace(0, 3, 16)
    y0 = torch.tensor([[1.0, 0.0], [0.2, -1.0]])
    data = Trajectories.from_arrays(t, y0[:, None, :].expand(-1, 16, -1).clone(),
                                    states=("x", "v"))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    value = float(sensitivity(context(m, data, scales=(1.0, 1.0))))
    assert value > 0 and math.isfinite(value)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sensitivity_at_a_saturated_bound_leaves_the_model_unchanged():
    m = Decay(("x",))
    with torch.no_grad():
        m._raw["k"].fill_(25.0)  # k at its upper bound, far out on the sigmoid
    raw = m._raw["k"].clone()
    value = float(sensitivity(context(m, decay_data())))
    assert math.isfinite(value)
    assert torch.equal(m._raw["k"], raw)


def test_sensitivity_without_parameters_is_zero():
    class Free(HybridModel):
        def setup(self):
            self.g = Closure(inputs=("x",), hidden=(4,))

        def derivatives(self, t, s, u):
            return {"x": self.g(s.x)}

    assert float(sensitivity(context(Free(("x",)), decay_data()))) == 0.0


def test_regularizers_by_name():
    assert set(REGULARIZERS) == {"closure_norm", "reduced_fit", "decorrelation", "sensitivity"}
    assert get_regularizer("closure_norm") is closure_norm
    with pytest.raises(ValueError) as e:
        get_regularizer("l1")
    assert "'l1'" in str(e.value) and "closure_norm" in str(e.value)


def test_training_uses_the_same_closure_norm():
    from hyarch.core.train import TrainConfig, _Trainer

    m = DecayPlus(("x",))
    set_linear(m.g, w=0.4, b=0.1)
    data = decay_data()
    scales = torch.tensor([2.0])
    cfg = TrainConfig(regularizers={"closure_norm": 0.5})
    traj, total = _Trainer(m, cfg, scales, math.inf).losses(data)
    expected = 0.5 * float(closure_norm(context(m, data, scales=(2.0,))))
    assert float(total - traj) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="closure_norm"):
        TrainConfig(regularizers={"sensitivity": 1.0})


def test_adaptive_multiplier_grows_with_the_trajectory_loss():
    from hyarch.core.train import TrainConfig, _optimizer, _Trainer

    m = DecayPlus(("x",))
    m.set_physical({"k": 0.9})
    data = decay_data()
    cfg = TrainConfig(adaptive=True, tau=2.0)
    tr = _Trainer(m, cfg, torch.tensor([2.0]), math.inf)
    with torch.no_grad():
        first = float(tr.losses(data)[0])
    tr.step(_optimizer(m, cfg), data, torch.ones(1, dtype=torch.bool))
    assert tr.lam == pytest.approx(1.0 + 2.0 * first, rel=1e-5)
