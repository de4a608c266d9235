"""The candidate contract's errors, raised directly and as failed evaluation records."""

from __future__ import annotations

import textwrap

import pytest
import torch

from hyarch import ContractError, HybridModel
from hyarch.core.candidate import load_model_class
from hyarch.core.model import Named
from hyarch.evaluate import evaluate_source

STATES = ("theta", "omega")

HEADER = "import torch\nfrom hyarch import Closure, HybridModel\n\n"


def candidate(returns: str, setup: str = "self.w = self.parameter(init=1.0, bounds=(0.1, 5.0))"):
    return HEADER + textwrap.dedent(f"""\
        class Model(HybridModel):
            def setup(self):
                {setup}

            def derivatives(self, t, s, u):
                return {returns}
        """)


GOOD = '{"theta": s.omega, "omega": -self.w * torch.sin(s.theta)}'

# (code, words the error must contain)
BAD = {
    "missing state": (candidate('{"theta": s.omega}'),
                      ["missing derivative", "'omega'", "theta, omega"]),
    "extra state": (candidate('{"theta": s.omega, "omega": -s.theta, "phi": s.theta}'),
                    ["unknown state", "'phi'"]),
    "wrong shape": (candidate('{"theta": s.omega, "omega": torch.stack([s.theta, s.omega], -1)}'),
                    ["'omega'", "shape", "expected"]),
    "not a dict": (candidate("(s.omega, -s.theta)"), ["must return a dict", "tuple"]),
    "unknown state name": (candidate('{"theta": s.omega, "omega": -s.phi}'),
                           ["unknown state 'phi'", "valid names: theta, omega"]),
    "unknown input name": (candidate('{"theta": s.omega, "omega": -s.theta + u.dose}'),
                           ["unknown input 'dose'"]),
    "closure on an unknown name": (
        candidate(GOOD, 'self.w = self.parameter(init=1.0, bounds=(0.1, 5.0)); '
                        'self.g = Closure(inputs=("theta", "x"), hidden=(4,))'),
        ["'x'", "not states or inputs", "omega", "theta"]),
    "bad parameter": (candidate(GOOD, "self.w = self.parameter(init=9.0, bounds=(0.1, 5.0))"),
                      ["'w'", "outside bounds"]),
    "no Model": (HEADER + "class Pendulum(HybridModel):\n    pass\n", ["class Model(HybridModel)"]),
    "Model not a HybridModel": (HEADER + "class Model(torch.nn.Module):\n    pass\n",
                                ["subclass of hyarch.HybridModel"]),
    "Model not a class": (HEADER + "Model = 3\n", ["subclass of hyarch.HybridModel"]),
    "NaN derivative": (candidate('{"theta": s.omega, "omega": s.theta * float("nan")}'),
                       ["NaN"]),
}
DIRECT = [k for k in BAD if k not in ("no Model", "Model not a HybridModel", "Model not a class")]


def build(code):
    return load_model_class(code, "cand.py")(STATES)


def field(model):
    y = torch.tensor([[0.5, 0.1], [1.0, -0.2], [0.0, 0.3]])
    return model.vector_field(torch.zeros(3), y, None)


def test_good_candidate_passes():
    out = field(build(candidate(GOOD)))
    assert out.shape == (3, 2)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.1, -0.2, 0.3]))
    torch.testing.assert_close(out[:, 1], -torch.sin(torch.tensor([0.5, 1.0, 0.0])))


@pytest.mark.parametrize("case", [k for k in DIRECT if k != "NaN derivative"])
def test_contract_errors_are_raised_with_a_clear_message(case):
    code, words = BAD[case]
    with pytest.raises(ContractError) as e:
        field(build(code))
    for w in words:
        assert w in str(e.value), (case, str(e.value))


@pytest.mark.parametrize("case", ["no Model", "Model not a HybridModel", "Model not a class"])
def test_file_level_errors(case):
    code, words = BAD[case]
    with pytest.raises(ContractError) as e:
        load_model_class(code, "cand.py")
    for w in words:
        assert w in str(e.value)


def test_a_constant_derivative_broadcasts():
    out = field(build(candidate('{"theta": s.omega, "omega": -self.w}')))
    torch.testing.assert_close(out[:, 1], torch.full((3,), -1.0))


def test_states_are_read_only_and_indexable():
    s = Named({"theta": torch.zeros(2)}, "state")
    assert s["theta"] is s.theta and "theta" in s and list(s) == ["theta"]
    with pytest.raises(ContractError, match="read-only"):
        s.theta = torch.ones(2)


def test_a_model_needs_a_state():
    class M(HybridModel):
        def derivatives(self, t, s, u):
            return {}

    with pytest.raises(ContractError, match="at least one state"):
        M(())


@pytest.mark.parametrize("case", list(BAD))
def test_evaluate_source_turns_contract_errors_into_failed_records(tiny_space, case):
    code, words = BAD[case]
    if case == "Model not a class":  # the static checks see it before anything runs
        words = ["must define `class Model(HybridModel)`"]
    res = evaluate_source(tiny_space, code, filename="cand.py").result
    assert res["status"] == "failed"
    for w in words:
        assert w in res["reason"], (case, res["reason"])
    assert res["parameters"] == {} and res["metrics"] == {}
    assert res["seconds"] >= 0


@pytest.mark.parametrize(
    "code,words",
    [
        (HEADER + "class Model(HybridModel)\n    pass\n", ["syntax error at line 4"]),
        (candidate('{"theta": s.omega, "omega": 1 / 0}'),
         ["ZeroDivisionError", "line 9", "1 / 0"]),
        (candidate('{"theta": s.omega, "omega": s.theta}') + "\nraise RuntimeError('boom')\n",
         ["RuntimeError", "boom"]),
        (HEADER + "import os\nraise RuntimeError('boom')\n", ["import of 'os' is not allowed"]),
    ],
)
def test_evaluate_source_never_raises_for_a_broken_candidate(tiny_space, code, words):
    res = evaluate_source(tiny_space, code, filename="cand.py").result
    assert res["status"] == "failed"
    for w in words:
        assert w in res["reason"], res["reason"]
