"""Identifiability: profiles on models with known answers (no training), and the whole
report, trained in the sandbox."""

from __future__ import annotations

import math
import textwrap

import pytest

from hyarch.core.candidate import load_model_class, make_factory
from hyarch.distill import format_identifiability, identifiability
from hyarch.distill.identifiability import _interval, profile

W2 = (2 * math.pi / 6) ** 2

FRICTION = textwrap.dedent("""\
    import torch

    from hyarch import HybridModel


    class Model(HybridModel):
        def setup(self):
            self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
            self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))
            self.ghost = self.parameter(init=0.5, bounds=(0.0, 1.0))

        def derivatives(self, t, s, u):
            return {
                "theta": s.omega,
                "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega
                + 1e-9 * self.ghost,
            }
    """)


@pytest.fixture(scope="module")
def pendulum():
    from hyarch.spaces.loader import load_space

    return load_space("damped_pendulum")


@pytest.fixture(scope="module")
def true_model(pendulum):
    cls = load_model_class(FRICTION)
    model = make_factory(cls, pendulum.states, pendulum.inputs, pendulum.scales())()
    model.set_physical({"omega0_sq": W2, "alpha": 0.2, "ghost": 0.5})
    return model


def test_interval_interpolates_where_the_loss_crosses_the_limit():
    values = [0.0, 1.0, 2.0, 3.0, 4.0]
    losses = [5.0, 2.0, 1.0, 2.0, 3.0]
    import numpy as np

    lo, hi = _interval(np.array(values), np.array(losses), 2.0, 2.5)
    assert lo == pytest.approx(0.8333333) and hi == pytest.approx(3.5)
    lo, hi = _interval(np.array(values), np.array(losses), 2.0, 10.0)
    assert lo is None and hi is None  # below the limit up to both bounds


def test_the_data_pin_down_real_parameters_and_not_a_ghost(pendulum, true_model):
    rep = profile(true_model, pendulum, points=15)
    p = rep["parameters"]
    assert rep["val_nmse"] < 1e-3  # the true model: the data's 1% noise, and rk4 at dt = 0.5
    assert p["omega0_sq"]["value"] == pytest.approx(W2, rel=1e-5)
    assert p["omega0_sq"]["rel_width"] < 0.01 and p["alpha"]["rel_width"] < 0.05
    assert p["omega0_sq"]["curvature"] > 0 and p["omega0_sq"]["rel_sensitivity_1pct"] > 1.0
    assert p["ghost"]["interval_hits_bounds"] and p["ghost"]["rel_sensitivity_1pct"] < 1e-6
    values = p["omega0_sq"]["profile"]["values"]
    assert values == sorted(values) and min(values) >= 0.01 and max(values) <= 10.0


def test_profiles_are_plain_json(pendulum, true_model):
    import json

    rep = profile(true_model, pendulum, points=7)
    json.dumps(rep, allow_nan=False)  # they travel from the sandbox's child as JSON
    assert rep["closures"] == []


def test_report_flags_only_the_ghost_and_prints(tiny_space):
    """The candidate trains in the sandbox, whose child profiles it: the report flags the
    parameter the data cannot see, and only that one."""
    rep = identifiability(tiny_space, FRICTION, points=15)
    p = rep["parameters"]
    assert rep["split"] == "selection" and rep["val_nmse"] < 1e-3
    assert p["omega0_sq"]["verdict"] == "identified" and p["alpha"]["pinned"]
    assert p["omega0_sq"]["value"] == pytest.approx(1.0966, rel=0.01)
    assert not p["omega0_sq"]["moves_with_capacity"]
    assert rep["flags"] == ["ghost: not pinned down by the data"]
    assert rep["notes"] == ["no closure: the capacity test does not apply"]
    text = format_identifiability(rep)
    assert "omega0_sq" in text and "not pinned down" in text and "selection nMSE" in text


def test_identifiability_takes_no_model_and_reports_a_failed_training(tiny_space):
    from hyarch.distill.identifiability import IdentifiabilityError

    with pytest.raises(TypeError):
        identifiability(tiny_space, FRICTION, object())  # no trained model objects any more
    broken = FRICTION.replace('"theta": s.omega,', "")
    with pytest.raises(IdentifiabilityError, match="training failed"):
        identifiability(tiny_space, broken, retrain=False)


def test_identifiability_reuses_a_finished_evaluation_and_checks_its_profile(tiny_space):
    from hyarch.distill.identifiability import IdentifiabilityError
    from hyarch.evaluate import SandboxResult

    ok = {"status": "ok", "parameters": {"k": 2.0}}
    raw = {"val_nmse": None, "closures": [], "parameters": {
        "k": {"value": 2.0, "interval": [None, 3.0], "rel_width": None,
              "rel_sensitivity_1pct": None},
        "bad": {"value": "2", "interval": []}}}
    rep = identifiability(tiny_space, FRICTION, trained=SandboxResult(ok, extra={"profile": raw}))
    assert rep["parameters"]["k"]["verdict"] == "not pinned down by the data"
    assert "bad: malformed profile, left out" in rep["notes"] and "bad" not in rep["parameters"]
    assert "k" in format_identifiability(rep)  # None values print as "-"
    with pytest.raises(IdentifiabilityError, match="boom"):
        identifiability(tiny_space, FRICTION,
                        trained=SandboxResult(ok, extra={"profile_error": "boom"}))
