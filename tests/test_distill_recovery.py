"""End to end on the built-in spaces: a trained hybrid's closure back to the missing physics.

Every candidate trains in the sandbox, whose child distils and profiles the trained model
(``post``); this process reads what it returns. Training is shortened (``SHORT``) and the
pendulum's closure is 16x16 rather than 64x64; the evaluations are shared between tests
through module fixtures.
"""

from __future__ import annotations

import pytest

from hyarch.distill import identifiability
from hyarch.distill.candidate import resize_closures
from hyarch.distill.identifiability import profile_options
from hyarch.evaluate import evaluate_source
from hyarch.spaces.loader import builtin_dir, load_space

pytestmark = pytest.mark.slow

SHORT = {"stage_iters": 80, "final_iters": 250, "restarts": 1, "patience": 100}

LV_HYBRID = '''\
from hyarch import Closure, HybridModel


class Model(HybridModel):
    """Classical Lotka-Volterra plus a closure on the prey's growth."""

    def setup(self):
        self.alpha = self.parameter(init=0.8, bounds=(0.01, 5.0))
        self.beta = self.parameter(init=0.3, bounds=(0.01, 5.0))
        self.delta = self.parameter(init=0.3, bounds=(0.01, 5.0))
        self.gamma = self.parameter(init=0.8, bounds=(0.01, 5.0))
        self.correction = Closure(inputs=("prey", "predator"), hidden=(16, 16))

    def derivatives(self, t, s, u):
        return {
            "prey": self.alpha * s.prey - self.beta * s.prey * s.predator
            + self.correction(s.prey, s.predator),
            "predator": self.delta * s.prey * s.predator - self.gamma * s.predator,
        }
'''


def train(space, source, *, overrides=SHORT, distill=False, profile=False):
    post = {}
    if distill:
        post["distill"] = {"always": True}
    if profile:
        post["profile"] = profile_options(space, overrides, points=21)
    out = evaluate_source(space, source, overrides=overrides, post=post)
    assert out.result["status"] == "ok", out.result["reason"]
    assert "distill_error" not in out.extra and "profile_error" not in out.extra, out.extra
    return out


@pytest.fixture(scope="module")
def pendulum():
    return load_space("damped_pendulum")


@pytest.fixture(scope="module")
def hybrid(pendulum):
    """The APHYNITY-style hybrid (ideal pendulum + closure on d(omega)/dt), 16x16."""
    aphynity = (builtin_dir("search_spaces") / "damped_pendulum" / "aphynity.py").read_text()
    source = resize_closures(aphynity, 0.25)
    return source, train(pendulum, source, distill=True, profile=True)


@pytest.fixture(scope="module")
def distilled(pendulum, hybrid):
    _, out = hybrid
    (entry,) = out.extra["distilled"]
    assert entry["source"] is not None, entry["reason"]
    return entry, train(pendulum, entry["source"], profile=True)


def test_pendulum_closure_distils_to_linear_friction(distilled):
    entry, _ = distilled
    assert entry["state"] == "omega"
    (term,) = entry["terms"]
    assert term["name"] == "linear_friction" and term["code"] == "-1.0 * s.omega"
    # the term is -alpha * omega: its coefficient on omega is -alpha
    assert -term["coefficient"] == pytest.approx(-0.2, rel=0.10)
    assert entry["r2"] > 0.95


def test_candidate_built_from_the_distillation_recovers_alpha(distilled):
    _, out = distilled
    assert out.result["n_neural_params"] == 0 and out.extra["profile"]["closures"] == []
    params = out.result["parameters"]
    assert set(params) == {"omega0_sq", "alpha"}
    assert params["alpha"] == pytest.approx(0.2, rel=0.02)
    assert params["omega0_sq"] == pytest.approx(1.0966227112321507, rel=0.005)


def test_omega0_sq_moves_with_capacity_in_the_hybrid_not_in_the_friction_model(
        pendulum, hybrid, distilled):
    source, out = hybrid
    rep = identifiability(pendulum, source, overrides=SHORT, factors=(0.5, 2.0),
                          remove=False, points=21, trained=out)
    w = rep["parameters"]["omega0_sq"]
    assert w["moves_with_capacity"] and w["verdict"] == "confounded with the closure"
    assert "omega0_sq: confounded with the closure" in rep["flags"]

    entry, friction = distilled
    rep = identifiability(pendulum, entry["source"], points=21, trained=friction)
    w = rep["parameters"]["omega0_sq"]
    assert w["pinned"] and not w["moves_with_capacity"] and w["verdict"] == "identified"
    assert w["rel_width"] < 0.01
    assert rep["parameters"]["alpha"]["pinned"]


def test_lotka_volterra_missing_logistic_term_is_recovered():
    space = load_space("lotka_volterra")
    out = train(space, LV_HYBRID, distill=True)
    (entry,) = out.extra["distilled"]
    assert entry["state"] == "prey"
    names = {t["name"]: t for t in entry["terms"]}
    assert "logistic_prey" in names
    assert all(t["kind"] != "generic" for t in entry["terms"])
    # -alpha_k * prey^2 with alpha_k = alpha / K = 1 / 15
    assert names["logistic_prey"]["coefficient"] == pytest.approx(1 / 15, rel=0.10)
    # the prey growth the closure took from alpha comes back as a shift of alpha
    alpha = out.result["parameters"]["alpha"] + entry["shifts"].get("alpha", 0.0)
    assert alpha == pytest.approx(1.0, rel=0.10)
    assert "self.alpha_k = self.parameter(" in entry["source"]


LV_HYBRID_LOOP = '''\
from hyarch import Closure as Net, HybridModel


class Model(HybridModel):
    """Classical Lotka-Volterra plus closures built in a loop, kept in a dict."""

    def setup(self):
        self.alpha = self.parameter(init=0.8, bounds=(0.01, 5.0))
        self.beta = self.parameter(init=0.3, bounds=(0.01, 5.0))
        self.delta = self.parameter(init=0.3, bounds=(0.01, 5.0))
        self.gamma = self.parameter(init=0.8, bounds=(0.01, 5.0))
        self.nets = self._networks()

    def _networks(self):
        import torch
        return torch.nn.ModuleDict({name: Net(inputs=("prey", "predator"), hidden=(16, 16))
                                    for name in ("prey",)})

    def derivatives(self, t, s, u):
        d = {"prey": self.alpha * s.prey - self.beta * s.prey * s.predator,
             "predator": self.delta * s.prey * s.predator - self.gamma * s.predator}
        for name, net in self.nets.items():
            d[name] = d[name] + net(s.prey, s.predator)
        return d
'''


def test_a_closure_in_a_loop_and_a_dict_is_distilled_into_a_working_candidate():
    space = load_space("lotka_volterra")
    out = train(space, LV_HYBRID_LOOP, distill=True)
    (entry,) = out.extra["distilled"]
    assert entry["source"] is not None, entry["reason"]
    assert "self.without_closure('nets.prey')" in entry["source"]
    refit = train(space, entry["source"])
    assert refit.result["n_neural_params"] == 0
    assert refit.result["parameters"]["alpha"] == pytest.approx(1.0, rel=0.10)
