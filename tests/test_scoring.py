"""The parent's scores: from predictions to metrics, with known answers; accurate rollouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyarch.core.data import Trajectories
from hyarch.core.fields import accurate_rollout, rollout
from hyarch.core.model import HybridModel
from hyarch.sandbox.protocol import Reply
from hyarch.sandbox.scoring import score_reply


def _reply(space, pred_of, **header):
    _, sel = space.fit_and_selection()
    splits = {**space.splits, "selection": sel}
    arrays = {}
    for name, data in splits.items():
        p = pred_of(name, data.y.numpy().astype(np.float64))
        arrays[f"{name}.full"] = p
        arrays[f"{name}.reduced"] = p
    return Reply({"status": "ok", "parameters": {"omega0_sq": 1.0}, "n_neural_params": 0,
                  **header}, arrays)


def test_perfect_predictions_score_zero_and_offsets_score_their_square(tiny_space):
    res = score_reply(tiny_space, _reply(tiny_space, lambda n, y: y), 1.0)
    assert res["status"] == "ok" and res["metrics"]["val"]["nmse"] == 0.0
    # one error per fold: per trajectory, in blocks of it when there are fewer than 5
    folds = tiny_space.val.n * math.ceil(5 / tiny_space.val.n)
    assert res["metrics"]["val"]["per_trajectory_nmse"] == [0.0] * folds
    # a constant offset of one training std on the first state: that state's nmse is 1
    scale = float(tiny_space.scales()[tiny_space.states[0]])

    def off(name, y):
        y = y.copy()
        y[:, 1:, 0] += scale
        return y

    res = score_reply(tiny_space, _reply(tiny_space, off), 1.0)
    first = res["metrics"]["val"]["per_state"][tiny_space.states[0]]["nmse"]
    assert first == pytest.approx(1.0, rel=1e-3)
    assert res["param_rel_error"]["omega0_sq"] == pytest.approx(
        abs(1.0 - tiny_space.truth["omega0_sq"]) / tiny_space.truth["omega0_sq"])


def test_a_diverged_split_is_flagged_not_blank(tiny_space):
    def blow_up(name, y):
        if name in ("test", "ood"):
            y = y.copy()
            y[:, -1] = np.inf
        return y

    res = score_reply(tiny_space, _reply(tiny_space, blow_up), 1.0)
    assert res["status"] == "ok"
    assert res["metrics"]["test"]["diverged"] and res["metrics"]["test"]["nmse"] is None
    assert not res["metrics"]["val"]["diverged"]
    res = score_reply(tiny_space, _reply(tiny_space, lambda n, y: y * np.nan), 1.0)
    assert res["status"] == "failed" and "NaN or infinite" in res["reason"]


def test_claims_are_numbers_or_dropped(tiny_space):
    rep = _reply(tiny_space, lambda n, y: y, closure_share="0.0", n_neural_params=-3,
                 regularizers={"closure_norm": "x", "decorrelation": float("nan")})
    res = score_reply(tiny_space, rep, 1.0)
    assert res["closure_share"] is None and res["n_neural_params"] is None
    assert res["regularizers"]["closure_norm"] is None
    rep = _reply(tiny_space, lambda n, y: y, parameters={"not an identifier": 1.0})
    assert score_reply(tiny_space, rep, 1.0)["status"] == "failed"


class Decay(HybridModel):
    def setup(self):
        self.k = self.parameter(init=1.0, bounds=(0.1, 10.0))

    def derivatives(self, t, s, u):
        return {"x": -self.k * s.x}


def test_accurate_rollout_meets_its_tolerance_on_an_exact_solution():
    """dx/dt = -x from x = 1 on a coarse grid (dt = 1): RK4 with one step is 1e-2 off;
    step doubling reaches the tolerance and the known answer exp(-t)."""
    t = torch.arange(0.0, 6.0, 1.0, dtype=torch.float64)
    y = torch.exp(-t).unsqueeze(-1)
    data = Trajectories.from_arrays(t, y, states=("x",))
    model = Decay(("x",), (), scales={"x": 1.0}).double()
    scales = torch.ones(1, dtype=torch.float64)
    pred, acc = accurate_rollout(model, data, scales, tol=1e-6)
    assert acc.converged and acc.substeps >= 4 and acc.error <= 1e-6
    assert float((pred[0, :, 0] - torch.exp(-t)).abs().max()) < 1e-6
    _, capped = accurate_rollout(model, data, scales, tol=1e-14, max_substeps=4)
    assert not capped.converged and capped.substeps == 4
    assert math.isfinite(capped.error)



def test_a_rollout_that_overflows_at_the_coarse_step_is_refined_not_given_up():
    """dx/dt = -k x with k = 10 on a grid of dt = 1: one RK4 step multiplies x by about 291
    (k dt is far outside RK4's stability region, |R| < 1 needs k dt < 2.79), so 30 steps
    overflow float32. The flow itself decays: step doubling must go on past the overflow
    and reach exp(-k t)."""
    t = torch.arange(0.0, 30.0, 1.0)
    data = Trajectories.from_arrays(t, torch.exp(-10 * t).unsqueeze(-1), states=("x",))
    model = Decay(("x",), (), scales={"x": 1.0})
    model.set_physical({"k": 10.0})
    scales = torch.ones(1)
    coarse = rollout(model, data, substeps=1)
    assert not bool(torch.isfinite(coarse).all())  # the premise: one step overflows
    pred, acc = accurate_rollout(model, data, scales, tol=1e-5)
    assert acc.converged and acc.substeps >= 8
    assert float((pred[0, :, 0] - torch.exp(-10 * t)).abs().max()) < 1e-5


def test_malformed_replies_are_reasons_not_crashes():
    import struct

    from hyarch.sandbox.protocol import MAGIC, ReplyError, decode_reply, encode_reply

    deep = b"[" * 200_000 + b"]" * 200_000
    cases = [b"", b"HYR1", MAGIC + struct.pack("<Q", 10 ** 12),
             MAGIC + struct.pack("<Q", len(deep)) + deep,
             MAGIC + struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc",
             encode_reply({"status": "ok"}, {"val.full": np.zeros((2, 3))}),  # wrong shape
             MAGIC + struct.pack("<Q", 12) + b'{"blobs": 3}',
             MAGIC + struct.pack("<Q", 30) + b'{"blobs": [["a", "x", [1], 9]]}']
    for data in cases:
        with pytest.raises(ReplyError):
            decode_reply(data, {"val.full": (2, 3, 1)})


class DecayWithClosure(HybridModel):
    """The prior knows a third of the decay rate; the network has to learn the rest."""

    def setup(self):
        from hyarch import Closure

        self.net = Closure(inputs=["x"], hidden=[8])

    def derivatives(self, t, s, u):
        return {"x": -0.4 * s.x + self.net(s.x)}


def test_a_hybrid_is_trained_at_the_substeps_it_is_scored_at():
    """dx/dt = -1.2 x sampled at dt = 1: one RK4 step decays by 0.318 where the flow
    decays by 0.301, so a network trained at one substep learns a faster decay (about
    1.28) that patches the integrator, and integrated accurately (as scores are) it misses.
    Trained on at the substeps that step doubling asks for, the error training reports is
    the one scoring sees."""
    from dataclasses import replace

    from hyarch.core.metrics import normalised_mse
    from hyarch.core.train import TrainConfig, fit
    from hyarch.sandbox.work import _refit_accurately

    t = torch.arange(0.0, 8.0, 1.0)

    def data(x0):
        x0 = torch.tensor(x0)
        return Trajectories.from_arrays(t, (x0[:, None] * torch.exp(-1.2 * t))[..., None],
                                        states=("x",))

    train, val = data([0.5, 1.0, 1.5, 2.0, -1.0, -2.0]), data([0.8, 1.8, -1.5])

    def factory(replicas=1):
        return DecayWithClosure(("x",), (), replicas=replicas)

    cfg = TrainConfig(windows=(2, 4), stage_iters=100, final_iters=600, patience=200,
                      restarts=1, regularizers={})
    coarse = fit(factory, train, val, cfg)

    def scored(fitted):  # as the child scores: integrated to SCORING_TOL
        with torch.no_grad():
            pred, _ = accurate_rollout(fitted.model, val, fitted.scales)
            return float(normalised_mse(pred, val, fitted.scales))

    before = scored(coarse)
    assert before > 10 * coarse.val_loss  # the premise: the network patched the integrator
    fine, substeps = _refit_accurately(factory, train, val, cfg, coarse)
    after = scored(fine)
    assert substeps > 1
    assert after < before / 5
    assert after < 3 * fine.val_loss + 1e-6
    # network-free or not, a model already integrated accurately is left as it is
    same, n = _refit_accurately(factory, train, val, replace(cfg, substeps=substeps), fine)
    assert same is fine and n == substeps
