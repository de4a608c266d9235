"""Closures: null at init, switched off by ``reduced``, recorded, per replica, scaled."""

from __future__ import annotations

import pytest
import torch

from hyarch import Closure, ContractError, HybridModel
from hyarch.core.fields import recording, reduced


class Hybrid(HybridModel):
    """dx/dt = -k x + g_add(x, v), dv/dt = -x * g_mul(x)."""

    def setup(self):
        self.k = self.parameter(init=1.0, bounds=(0.1, 5.0))
        self.add = Closure(inputs=("x", "v"), hidden=(8, 8))
        self.mul = Closure(inputs=("x",), hidden=(8,), kind="multiplicative")

    def derivatives(self, t, s, u):
        return {"x": -self.k * s.x + self.add(s.x, s.v), "v": -s.x * self.mul(s)}


def randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.neural_parameters():
            p.copy_(torch.randn(p.shape, generator=g))


Y = torch.tensor([[0.5, 0.1], [1.0, -2.0], [-3.0, 0.3], [0.0, 0.0]])


def test_null_at_initialisation():
    m = Hybrid(("x", "v"))
    assert torch.equal(m.add(Y[:, 0], Y[:, 1]), torch.zeros(4))
    assert torch.equal(m.mul(Y[:, 0]), torch.ones(4))
    out = m.vector_field(torch.zeros(4), Y, None)
    torch.testing.assert_close(out, torch.stack([-Y[:, 0], -Y[:, 0]], -1))


def test_reduced_switches_every_closure_to_its_null_value():
    m = Hybrid(("x", "v"))
    randomise(m)
    full = m.vector_field(torch.zeros(4), Y, None)
    with reduced(m) as same:
        assert same is m
        assert torch.equal(m.add(Y[:, 0], Y[:, 1]), torch.zeros(4))
        assert torch.equal(m.mul(Y[:, 0]), torch.ones(4))
        red = m.vector_field(torch.zeros(4), Y, None)
    torch.testing.assert_close(red, torch.stack([-Y[:, 0], -Y[:, 0]], -1))
    assert not torch.allclose(full, red)
    torch.testing.assert_close(m.vector_field(torch.zeros(4), Y, None), full)  # restored


def test_reduced_is_restored_after_an_error():
    m = Hybrid(("x", "v"))
    with pytest.raises(RuntimeError), reduced(m):
        raise RuntimeError
    assert not any(c.null for c in m.closures())


def test_recording_collects_closure_outputs():
    m = Hybrid(("x", "v"))
    randomise(m)
    with recording(m) as outs:
        m.vector_field(torch.zeros(4), Y, None)
        m.vector_field(torch.zeros(4), Y, None)
    assert len(outs) == 4  # two closures, two calls
    torch.testing.assert_close(outs[0], m.add(Y[:, 0], Y[:, 1]))
    # the multiplicative closure records its deviation from 1, the part a norm penalises
    torch.testing.assert_close(outs[1], m.mul(Y[:, 0]) - 1)
    assert all(c.record is None for c in m.closures())
    m.vector_field(torch.zeros(4), Y, None)
    assert len(outs) == 4  # nothing recorded after the block


def test_replicas_hold_independent_networks():
    m = Hybrid(("x", "v"), replicas=3)
    assert m.add.weights[0].shape == (3, 2, 8)
    w = m.add.weights[0]
    assert not torch.allclose(w[0], w[1])  # independently initialised
    randomise(m)
    y = Y.expand(3, -1, -1)
    g = m.add(y[..., 0], y[..., 1])
    assert g.shape == (3, 4)
    assert not torch.allclose(g[0], g[1])
    # replica 0's output does not depend on replica 1's weights
    g[0].sum().backward()
    assert m.add.weights[0].grad[1].abs().max() == 0
    assert m.add.weights[0].grad[0].abs().max() > 0
    # each replica is the single network with that replica's weights
    one = Hybrid(("x", "v"))
    with torch.no_grad():
        for p1, pr in zip(one.add.parameters(), m.add.parameters(), strict=True):
            p1.copy_(pr[2])
    torch.testing.assert_close(one.add(Y[:, 0], Y[:, 1]), g[2].detach())
    assert m.n_neural_params() == one.n_neural_params()


def test_neural_parameter_count():
    m = Hybrid(("x", "v"))
    add = (2 * 8 + 8) + (8 * 8 + 8) + (8 + 1)
    mul = (1 * 8 + 8) + (8 + 1)
    assert m.n_neural_params() == add + mul


def test_inputs_are_divided_by_their_scale():
    big = Hybrid(("x", "v"), scales={"x": 100.0, "v": 10.0})
    unit = Hybrid(("x", "v"))
    assert big.add.in_scale.tolist() == [100.0, 10.0]
    randomise(big)
    unit.load_state_dict({k: v for k, v in big.state_dict().items() if "in_scale" not in k},
                         strict=False)
    torch.testing.assert_close(big.add(Y[:, 0] * 100, Y[:, 1] * 10), unit.add(Y[:, 0], Y[:, 1]))


def test_closure_arguments_and_options_are_checked():
    m = Hybrid(("x", "v"))
    with pytest.raises(ContractError, match="called with 1"):
        m.add(Y[:, 0])
    with pytest.raises(ContractError, match="additive, multiplicative"):
        Closure(inputs=("x",), kind="divisive")
    with pytest.raises(ContractError, match="tanh"):
        Closure(inputs=("x",), activation="sigmoidish")


def test_several_outputs():
    c = Closure(inputs=("x",), hidden=(4,), outputs=3)
    assert c(torch.zeros(5)).shape == (5, 3)
