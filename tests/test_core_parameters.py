"""Physical parameters: bounds kept by the transform, log scale for wide bounds, clear
errors for bad declarations, value round trips, replicas."""

from __future__ import annotations

import math

import pytest
import torch

from hyarch import ContractError, HybridModel


def make(init=1.0, bounds=(0.01, 10.0), replicas=1, **kw):
    class M(HybridModel):
        def setup(self):
            self.p = self.parameter(init=init, bounds=bounds, **kw)

        def derivatives(self, t, s, u):
            return {"x": -self.p * s.x}

    return M(("x",), replicas=replicas)


@pytest.mark.parametrize("bounds", [(0.01, 10.0), (0.0, 5.0), (-2.0, 3.0), (1e-6, 1e3)])
def test_values_stay_inside_bounds_whatever_the_raw_value(bounds):
    m = make(init=sum(bounds) / 2 if bounds[0] <= 0 else math.sqrt(bounds[0] * bounds[1]),
             bounds=bounds)
    lo, hi = torch.tensor(bounds, dtype=m._raw["p"].dtype)  # the bounds as the model holds them
    with torch.no_grad():
        for raw in (-1e4, -50.0, -3.0, 0.0, 3.0, 50.0, 1e4, math.inf, -math.inf):
            m._raw["p"].fill_(raw)
            assert lo <= m.p <= hi, (raw, float(m.p))
        m._raw["p"].copy_(torch.randn(1) * 30)
        assert lo <= m.p <= hi


def test_log_transform_for_wide_positive_bounds():
    wide = make(init=0.1, bounds=(1e-3, 10.0))
    assert wide.parameter_specs["p"].log
    with torch.no_grad():
        wide._raw["p"].fill_(0.0)
    # sigmoid(0) = 1/2: the geometric midpoint in log space
    assert wide.physical_values()["p"] == pytest.approx(math.sqrt(1e-3 * 10.0), rel=1e-5)

    narrow = make(init=1.0, bounds=(0.5, 5.0))
    assert not narrow.parameter_specs["p"].log
    with torch.no_grad():
        narrow._raw["p"].fill_(0.0)
    assert narrow.physical_values()["p"] == pytest.approx(2.75, rel=1e-6)

    assert not make(init=1.0, bounds=(0.0, 1e3)).parameter_specs["p"].log  # zero lower bound
    assert make(init=1.0, bounds=(0.5, 5.0), log=True).parameter_specs["p"].log


def test_init_value_is_the_starting_value():
    for bounds, init in [((0.01, 10.0), 1.0), ((0.0, 5.0), 0.5), ((-1.0, 1.0), -0.3)]:
        m = make(init=init, bounds=bounds)
        assert m.physical_values() == {"p": pytest.approx(init, rel=1e-5, abs=1e-6)}
        assert float(m.p.detach()) == pytest.approx(init, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"init": 20.0, "bounds": (0.01, 10.0)}, ["'p'", "init 20.0", "outside", "0.01", "10.0"]),
        ({"init": -1.0, "bounds": (0.0, 5.0)}, ["'p'", "outside"]),
        ({"init": 1.0, "bounds": (5.0, 0.5)}, ["'p'", "lower bound 5.0", "below", "0.5"]),
        ({"init": 1.0, "bounds": (1.0, 1.0)}, ["'p'", "lower bound"]),
        ({"init": 1.0, "bounds": (0.1,)}, ["'p'", "two numbers"]),
        ({"init": 1.0, "bounds": ("a", "b")}, ["'p'", "two numbers"]),
        ({"init": 1.0, "bounds": (0.0, 5.0), "log": True}, ["'p'", "log=True", "positive"]),
    ],
)
def test_bad_declarations_are_contract_errors_with_a_clear_message(kw, words):
    with pytest.raises(ContractError) as e:
        make(**kw)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("bounds,value", [((0.01, 10.0), 0.37), ((0.01, 10.0), 9.5),
                                          ((0.0, 5.0), 0.2), ((-2.0, 3.0), -1.75)])
def test_set_physical_and_physical_values_round_trip(bounds, value):
    m = make(init=1.0 if bounds[0] > 0 else 0.5, bounds=bounds)
    m.set_physical({"p": value})
    assert m.physical_values()["p"] == pytest.approx(value, rel=1e-5, abs=1e-6)
    assert float(m.p.detach()) == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_replicas_have_one_value_each():
    m = make(init=1.0, replicas=3)
    assert m.p.shape == (3, 1)  # broadcasts against states of shape (R, batch)
    assert make(init=1.0).p.shape == ()
    m.set_physical({"p": [0.5, 1.0, 2.0]})
    assert [m.physical_values(r)["p"] for r in range(3)] == pytest.approx([0.5, 1.0, 2.0],
                                                                          rel=1e-5)
    m.set_physical({"p": 4.0})  # one float: every replica
    assert m.p.detach().flatten().tolist() == pytest.approx([4.0] * 3, rel=1e-5)
    y = torch.ones(3, 5, 1)
    out = m.vector_field(torch.zeros(5), y, None)
    assert out.shape == (3, 5, 1)


def test_parameters_are_trainable_and_separate_from_the_networks():
    m = make(init=1.0)
    assert len(m.physical_raw_parameters()) == 1
    assert m.neural_parameters() == []
    assert m.n_neural_params() == 0
    (m.p * 2).backward()
    assert m._raw["p"].grad is not None and float(m._raw["p"].grad) != 0.0
    spec = m.parameter_specs["p"]
    assert (spec.name, spec.lower, spec.upper) == ("p", 0.01, 10.0)


def test_description_and_unit_are_kept():
    m = make(init=1.0, description="decay rate", unit="1/s")
    spec = m.parameter_specs["p"]
    assert (spec.description, spec.unit) == ("decay rate", "1/s")
