"""The fast paths of the core give the same answers as the plain ones (issue 7).

Behaviour only, no timing: the float-step RK loop against torchdiffeq and exact solutions,
cached parameter transforms against uncached ones, the stacked fast path against the
general one, training phases that skip work without losing the answer.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq

from hyarch import Closure, HybridModel
from hyarch.core.data import Trajectories
from hyarch.core.fields import Points, field_parts, rollout
from hyarch.core.model import ContractError, Named
from hyarch.core.rollout import integrate, shared_steps
from hyarch.core.train import TrainConfig, fit


class Oscillator(HybridModel):
    def setup(self):
        self.omega_sq = self.parameter(init=4.0, bounds=(0.1, 20.0))

    def derivatives(self, t, s, u):
        return {"x": s.v, "v": -self.omega_sq * s.x}


class Hybrid(HybridModel):
    def setup(self):
        self.omega_sq = self.parameter(init=4.0, bounds=(0.1, 20.0))
        self.g = Closure(inputs=("x", "v"), hidden=(8,))

    def derivatives(self, t, s, u):
        return {"x": s.v, "v": -self.omega_sq * s.x + self.g(s.x, s.v)}


def oscillator(t: torch.Tensor, omega: float = 2.0) -> torch.Tensor:
    amp = torch.tensor([1.0, 0.3, -0.7])
    arg = omega * t[None, :] + torch.tensor([0.0, 1.0, 2.0])[:, None]
    return torch.stack([amp[:, None] * torch.cos(arg), -amp[:, None] * omega * torch.sin(arg)], -1)


@pytest.mark.parametrize("method", ["rk4", "euler", "midpoint"])
def test_fast_loop_matches_torchdiffeq_fixed_grid(method):
    """Shared float steps give torchdiffeq's own fixed-grid answer, step for step."""
    t = torch.linspace(0, 3, 16, dtype=torch.float64)
    model = Oscillator(("x", "v")).double()
    y0 = oscillator(t).double()[:, 0]
    ours = integrate(model.vector_field, y0, t.expand(3, -1), method=method)
    ref = torchdiffeq.odeint(lambda tt, y: model.vector_field(tt.expand(3), y, None), y0, t,
                             method=method).movedim(0, 1)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_fast_loop_equals_the_per_trajectory_path():
    """The same grid given as 'shared' and as 'per trajectory' integrates identically."""
    t = torch.linspace(0, 2, 11, dtype=torch.float64).expand(3, -1)
    jitter = t.clone()
    jitter[1] += 1e-3 * torch.arange(11, dtype=torch.float64) ** 2 / 100  # not shared
    assert shared_steps(t) is not None and shared_steps(jitter) is None
    model = Oscillator(("x", "v")).double()
    y0 = oscillator(t[0]).double()[:, 0]
    fast = integrate(model.vector_field, y0, t, substeps=3)
    # the general path, forced by a grid equal to t except that rows differ by a shift
    shifted = t + torch.tensor([[0.0], [5.0], [9.0]], dtype=torch.float64)
    general = integrate(model.vector_field, y0, shifted, substeps=3)
    torch.testing.assert_close(fast, general, rtol=1e-12, atol=1e-12)


def test_fast_loop_meets_the_exact_solution_with_dopri5_and_substeps():
    t = torch.linspace(0, 10, 41)
    data = Trajectories.from_arrays(t, oscillator(t), states=("x", "v"))
    model = Oscillator(("x", "v"))
    exact = data.y
    coarse = (rollout(model, data, substeps=2) - exact).abs().max()
    fine = (rollout(model, data, substeps=4) - exact).abs().max()
    assert fine < coarse / 10  # fourth order: 2x smaller steps, about 16x smaller error
    torch.testing.assert_close(rollout(model, data, method="dopri5"), exact, rtol=0, atol=5e-5)


def test_cached_parameters_change_nothing_and_keep_gradients():
    t = torch.linspace(0, 2, 9)
    data = Trajectories.from_arrays(t, oscillator(t), states=("x", "v"))
    model = Oscillator(("x", "v"), replicas=2)
    model.set_physical({"omega_sq": [4.0, 3.0]})
    cached = rollout(model, data)  # rollout caches the transformed parameters
    plain = integrate(model.vector_field, data.y0().expand(2, -1, -1), data.t)
    torch.testing.assert_close(cached, plain, rtol=0, atol=0)
    (g1,) = torch.autograd.grad(cached.sum(), model.physical_raw_parameters())
    (g2,) = torch.autograd.grad(plain.sum(), model.physical_raw_parameters())
    torch.testing.assert_close(g1, g2)
    assert "omega_sq" not in model.__dict__  # dropped after the rollout
    with model.cached_parameters():
        with model.cached_parameters():  # re-entrant
            assert "omega_sq" in model.__dict__
        assert "omega_sq" in model.__dict__
    assert "omega_sq" not in model.__dict__
    model.set_physical({"omega_sq": [1.0, 1.0]})  # a change after a rollout is seen
    torch.testing.assert_close(model.omega_sq, torch.ones(2, 1))


@pytest.mark.parametrize("replicas", [1, 3])
def test_prepared_closure_layers_give_the_same_field_and_gradients(replicas):
    """A rollout builds each Closure's layers once (input scaling folded into the first
    weight): same outputs and gradients as the per-call path, weights updates still seen."""
    torch.manual_seed(0)
    model = Hybrid(("x", "v"), replicas=replicas, scales={"x": 2.0, "v": 0.5})
    for p in model.parameters():
        torch.nn.init.normal_(p)
    t = torch.linspace(0, 2, 9)
    data = Trajectories.from_arrays(t, oscillator(t), states=("x", "v"))
    y0 = data.y0().expand(replicas, -1, -1) if replicas > 1 else data.y0()
    prepared = rollout(model, data)
    plain = integrate(model.vector_field, y0, data.t)  # no cache: layers built per call
    torch.testing.assert_close(prepared, plain, rtol=1e-5, atol=1e-6)
    params = model.neural_parameters()
    for a, b in zip(torch.autograd.grad(prepared.square().sum(), params),
                    torch.autograd.grad(plain.square().sum(), params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # the scale is really applied: x / scale through the first layer by hand
    g = model.g
    x = torch.stack([y0[..., 0], y0[..., 1]], -1) / torch.tensor([2.0, 0.5])
    w, b = g.weights[0], g.biases[0]
    h = torch.tanh(x @ w[0] + b[0] if replicas == 1 else torch.baddbmm(b.unsqueeze(1), x, w))
    w2, b2 = g.weights[1], g.biases[1]
    out = h @ w2[0] + b2[0] if replicas == 1 else torch.baddbmm(b2.unsqueeze(1), h, w2)
    torch.testing.assert_close(g(y0[..., 0], y0[..., 1]), out.squeeze(-1), rtol=1e-5, atol=1e-6)
    assert g._layers is None  # nothing cached outside a rollout
    with torch.no_grad():
        for p in params:
            p.add_(0.1)
    torch.testing.assert_close(rollout(model, data), integrate(model.vector_field, y0, data.t),
                               rtol=1e-5, atol=1e-6)


def test_fast_stack_and_its_errors_match_the_general_path():
    model = Oscillator(("x", "v"))
    y = torch.randn(5, 2)
    out = model.vector_field(torch.zeros(5), y, None)
    torch.testing.assert_close(out, torch.stack([y[:, 1], -4.0 * y[:, 0]], -1))
    # broadcasting and bad names still go through the checked path
    assert model.stack_derivatives({"x": 1.0, "v": y[:, 0]}, y)[:, 0].eq(1.0).all()
    with pytest.raises(ContractError, match="missing derivative"):
        model.stack_derivatives({"x": y[:, 0]}, y)
    with pytest.raises(ContractError, match="expected"):
        model.stack_derivatives({"x": y[:, 0], "v": torch.zeros(4)}, y)


def test_named_is_traceable_and_still_strict():
    s = Named({"theta": torch.zeros(2)}, "state")
    with pytest.raises(AttributeError):
        s.__wrapped__  # noqa: B018 - dunder probes (copy, compile) get AttributeError
    with pytest.raises(ContractError, match="valid names: theta"):
        s.omega  # noqa: B018


def test_closure_fast_path_equals_a_plain_mlp():
    model = Hybrid(("x", "v"), scales={"x": 2.0, "v": 4.0})
    c = model.g
    with torch.no_grad():
        for w in c.weights:
            w.normal_()
    x, v = torch.randn(6), torch.randn(6)
    inp = torch.stack([x / 2.0, v / 4.0], -1)
    h = torch.tanh(inp @ c.weights[0][0] + c.biases[0][0])
    ref = (h @ c.weights[1][0] + c.biases[1][0]).squeeze(-1)
    torch.testing.assert_close(c(x, v), ref)
    assert set(c.state_dict()) == {"in_scale", "weights.0", "weights.1", "biases.0", "biases.1"}


def test_regularizer_points_subsample_evenly():
    pts = Points(torch.arange(10.0), torch.randn(10, 2), None)
    sub = pts.subsample(4)
    assert sub.t.tolist() == [0.0, 3.0, 6.0, 9.0]
    assert pts.subsample(10) is pts
    model = Hybrid(("x", "v"))
    full, red = field_parts(model, sub)
    assert full.shape == red.shape == (4, 2)


def _data(n: int = 6) -> tuple[Trajectories, Trajectories]:
    g = torch.Generator().manual_seed(1)
    t = torch.arange(21) * 0.25
    y0 = torch.randn(2 * n, 2, generator=g)
    model = Oscillator(("x", "v"))
    model.set_physical({"omega_sq": 2.5})
    seed = Trajectories.from_arrays(t, torch.zeros(2 * n, 21, 2), states=("x", "v"))
    with torch.no_grad():
        y = rollout(model, seed, y0=y0)
    data = Trajectories.from_arrays(t, y, states=("x", "v"))
    return data.select(range(n)), data.select(range(n, 2 * n))


def test_network_free_candidates_are_fitted_by_gauss_newton():
    """Levenberg-Marquardt on the windows and the full horizon: no Adam, a few steps."""
    train, val = _data()

    def factory(replicas=1):
        return Oscillator(("x", "v"), replicas=replicas)

    res = fit(factory, train, val, TrainConfig(windows=(2, 4), restarts=2, stage_iters=60))
    assert res.stopped == "gauss-newton converged"
    assert not any(h[0] in ("full", "lbfgs") for h in res.history)  # no Adam, no L-BFGS
    assert res.iterations < 40  # Adam needs hundreds
    assert abs(res.model.physical_values()["omega_sq"] - 2.5) / 2.5 < 1e-4
    assert len(res.history_seconds) == len(res.history)
    assert list(res.history_seconds) == sorted(res.history_seconds)


def test_without_gauss_newton_network_free_candidates_go_straight_to_lbfgs():
    train, val = _data()

    def factory(replicas=1):
        return Oscillator(("x", "v"), replicas=replicas)

    res = fit(factory, train, val, TrainConfig(windows=(2, 4), restarts=2, stage_iters=60,
                                               gauss_newton=False))
    assert res.stopped == "lbfgs converged"
    assert not any(h[0] == "full" for h in res.history)  # no full-horizon Adam at all
    assert abs(res.model.physical_values()["omega_sq"] - 2.5) / 2.5 < 1e-3
    # the old schedule is still there when asked for
    res2 = fit(factory, train, val, TrainConfig(windows=(2,), restarts=1, stage_iters=30,
                                                final_iters=20, lbfgs="never",
                                                gauss_newton=False))
    assert any(h[0] == "full" for h in res2.history)


def test_hybrid_training_uses_window_minibatches_and_still_fits():
    train, val = _data()

    def factory(replicas=1):
        return Hybrid(("x", "v"), replicas=replicas)

    cfg = TrainConfig(windows=(2, 4), restarts=2, stage_iters=40, final_iters=40,
                      window_batch=16, eval_every=5, seed=3)
    res = fit(factory, train, val, cfg)
    assert math.isfinite(res.val_loss) and res.val_loss < 1e-2
    assert res.iterations <= 2 * 40 + 40


def test_config_rejects_bad_speed_settings():
    with pytest.raises(ValueError, match="window_batch"):
        TrainConfig(window_batch=0)
    with pytest.raises(ValueError, match="min_delta"):
        TrainConfig(min_delta=1.5)


def test_own_adam_matches_torch_adam_exactly():
    from hyarch.core.train import _Adam

    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(2))]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    ours = _Adam([{"params": a[:1], "lr": 0.05}, {"params": a[1:], "lr": 5e-3}])
    ref = torch.optim.Adam([{"params": b[:1], "lr": 0.05}, {"params": b[1:], "lr": 5e-3}])
    for _ in range(30):
        for ps, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            ((ps[0].sin() ** 2).sum() + (ps[1] ** 3).sum()).backward()
            opt.step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)


def test_full_horizon_stopping_rule_on_a_scripted_validation_curve():
    """Stops ``patience`` iterations after the last real (``min_delta``) gain; after the
    warm-up the phase is measured from where it stands, so a full horizon that first costs
    validation (the usual jump from the windows) still gets to improve."""
    from hyarch.core.data import state_scales
    from hyarch.core.train import _adam_full, _Trainer

    train, _ = _data()
    cfg = TrainConfig(final_iters=1000, patience=20, min_delta=0.05, eval_every=2, warmup=4)

    def run(curve):
        model = Hybrid(("x", "v"))
        tr = _Trainer(model, cfg, state_scales(train), deadline=math.inf)
        values = iter(curve)
        return _adam_full(model, tr, train, cfg, 0.1, lambda: next(values), 0)

    # validation jumps from the windows' 0.1 to 1.0, then falls 3% per check (a 5% gain
    # every second check) to 0.0098 at check 152, then stays flat: the phase runs through
    # the descent and stops 10 checks (patience 20) after its last real gain
    descent = [1.0 * 0.97 ** k for k in range(152)]
    best, n, why = run(descent + [descent[-1]] * 40)
    assert why == "early stopping"
    assert 2 * 151 + 20 <= n <= 2 * 152 + 20
    assert best == pytest.approx(descent[-1])
    # a phase that never recovers from the jump stops after warm-up + patience, and the
    # windows' weights (validation 0.1) are what it keeps
    best, n, why = run([1.0] * 200)
    assert why == "early stopping" and n == 4 + 20 and best == 0.1
