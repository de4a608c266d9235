"""Fit scores on predictions with a known error, masks, scales, parameter errors."""

from __future__ import annotations

import math

import pytest
import torch

from hyarch.core.data import Trajectories, named_scales, state_scales
from hyarch.core.metrics import fit_scores, normalised_mse, parameter_errors


def data_and_pred(nan_at=None):
    t = torch.linspace(0, 1, 6)
    B, T = 3, 6
    a = torch.arange(B * T, dtype=torch.float32).reshape(B, T) / 10
    b = torch.sin(a)
    y = torch.stack([a, b], -1)
    pred = y.clone()
    pred[..., 0] += 0.1  # state a: error 0.1 everywhere
    pred[..., 1] -= 0.2  # state b: error 0.2
    pred[:, 0] += 100.0  # the initial point is given, never scored
    if nan_at is not None:
        y = y.clone()
        y[nan_at] = math.nan
        pred[nan_at] += 1000.0  # a wild prediction where nothing was observed
    return Trajectories.from_arrays(t, y, states=("a", "b")), pred


def test_fit_scores_with_a_known_error():
    data, pred = data_and_pred()
    scales = torch.tensor([2.0, 4.0])
    res = fit_scores(pred, data, scales)
    ps = res["per_state"]
    assert ps["a"]["mse"] == pytest.approx(0.01, rel=1e-4)
    assert ps["b"]["mse"] == pytest.approx(0.04, rel=1e-4)
    assert ps["a"]["nmse"] == pytest.approx(0.01 / 4, rel=1e-4)
    assert ps["b"]["nmse"] == pytest.approx(0.04 / 16, rel=1e-4)
    assert res["mse"] == pytest.approx(0.025, rel=1e-4)  # mean over states
    assert res["nmse"] == pytest.approx((0.01 / 4 + 0.04 / 16) / 2, rel=1e-4)
    assert res["log10_mse"] == pytest.approx(math.log10(0.025), abs=1e-4)
    assert res["log10_nmse"] == pytest.approx(math.log10(0.0025), abs=1e-4)
    # the normalised loss used for training agrees
    assert float(normalised_mse(pred, data, scales)) == pytest.approx(res["nmse"], rel=1e-4)


def test_masked_values_are_excluded():
    data, pred = data_and_pred(nan_at=(1, 3, 0))  # one missing value of state a
    assert not bool(data.mask[1, 3, 0]) and bool(data.mask[1, 3, 1])
    assert float(data.y[1, 3, 0]) == 0.0  # zero-filled, flagged by the mask
    res = fit_scores(pred, data, torch.tensor([2.0, 4.0]))
    assert res["per_state"]["a"]["mse"] == pytest.approx(0.01, rel=1e-4)
    assert res["per_state"]["b"]["mse"] == pytest.approx(0.04, rel=1e-4)
    nmse = float(normalised_mse(pred, data, torch.tensor([2.0, 4.0])))
    assert nmse == pytest.approx((0.01 / 4 + 0.04 / 16) / 2, rel=1e-3)


def test_a_perfect_fit_has_no_log10():
    data, _ = data_and_pred()
    res = fit_scores(data.y.clone(), data, torch.tensor([1.0, 1.0]))
    assert res["mse"] == 0.0 and res["log10_mse"] is None


def test_non_finite_predictions_become_none():
    data, pred = data_and_pred()
    pred[0, 2, 1] = math.nan
    res = fit_scores(pred, data, torch.tensor([1.0, 1.0]))
    assert res["per_state"]["b"]["mse"] is None
    assert res["per_state"]["a"]["mse"] == pytest.approx(0.01, rel=1e-4)
    assert res["mse"] is None and res["log10_mse"] is None


def test_normalised_mse_per_replica():
    data, pred = data_and_pred()
    stacked = torch.stack([data.y, pred])
    out = normalised_mse(stacked, data, torch.tensor([2.0, 4.0]))
    assert out.shape == (2,)
    assert float(out[0]) == 0.0 and float(out[1]) > 0


def test_state_scales_are_masked_standard_deviations():
    t = torch.linspace(0, 1, 4)
    y = torch.tensor([[[1.0, 5.0], [3.0, 5.0], [math.nan, 5.0], [1.0, 5.0]]])
    data = Trajectories.from_arrays(t, y, states=("a", "b"))
    scales = state_scales(data)
    a = torch.tensor([1.0, 3.0, 1.0])
    assert float(scales[0]) == pytest.approx(float(a.std(unbiased=False)), rel=1e-6)
    assert float(scales[1]) == pytest.approx(5.0)  # a constant state: its magnitude
    named = named_scales(data)
    assert named["a"] == pytest.approx(float(scales[0]))
    assert named["__time__"] == pytest.approx(1.0)


def test_parameter_errors():
    errs = parameter_errors({"a": 1.1, "b": -1.8, "c": 3.0, "z": 0.5},
                            {"a": 1.0, "b": -2.0, "c": 3.0, "z": 0.0, "missing": 1.0})
    assert errs == {"a": pytest.approx(0.1), "b": pytest.approx(0.1), "c": 0.0}


def test_block_errors_are_the_folds_of_a_blocked_cross_validation():
    from hyarch.core.metrics import per_trajectory_nmse

    data, pred = data_and_pred()
    pred = pred.clone()
    pred[1, 4:, 0] += 0.3  # trajectory 1 errs more over its last two scored points
    scales = torch.tensor([1.0, 1.0])
    plain = (0.1 ** 2 + 0.2 ** 2) / 2
    worse = (0.4 ** 2 + 0.2 ** 2) / 2
    # one block per trajectory: the per-trajectory errors
    per = per_trajectory_nmse(pred, data, scales, 1)
    assert per.tolist() == pytest.approx([plain, (3 * plain + 2 * worse) / 5, plain], rel=1e-5)
    # five scored points in two blocks (3 + 2), trajectory by trajectory
    blocks = per_trajectory_nmse(pred, data, scales, 2).reshape(3, 2)
    assert blocks[0].tolist() == pytest.approx([plain, plain], rel=1e-5)
    assert blocks[1].tolist() == pytest.approx([plain, worse], rel=1e-5)
    # the blocks' mean, weighted by their points, is the trajectory's error
    assert float(blocks[1, 0] * 3 + blocks[1, 1] * 2) / 5 == pytest.approx(float(per[1]), rel=1e-5)
    # by default, enough blocks for MIN_FOLDS (5) folds: 3 trajectories, 2 blocks each
    assert per_trajectory_nmse(pred, data, scales).tolist() == pytest.approx(
        blocks.reshape(-1).tolist(), rel=1e-6)
    # a block of points that are not scored (a conditioning window) is never a fold: the
    # blocks cut the observed points
    held = Trajectories(t=data.t, y=data.y, mask=data.mask.clone(), u=None,
                        state_names=data.state_names)
    held.mask[:, 1:4] = False
    two = per_trajectory_nmse(pred, held, scales, 2).reshape(3, 2)
    assert two[1].tolist() == pytest.approx([worse, worse], rel=1e-5)
    assert (two > 0).all()
