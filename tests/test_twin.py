"""Digital twins: latent states, observation models and random effects, on problems whose
answers are known (exact solutions, and simulated subjects whose deviations we drew)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyarch import HybridModel
from hyarch.core.data import Trajectories
from hyarch.core.fields import rollout
from hyarch.core.model import ContractError
from hyarch.core.train import TrainConfig
from hyarch.core.twin import Initial, attach
from hyarch.core.twin_fit import condition, fit_twin

CFG = TrainConfig(windows=(2, 4), restarts=2, max_seconds=120)


class Cascade(HybridModel):
    """x' = -a x + z, z' = -c z: z is never measured."""

    def setup(self):
        self.a = self.parameter(1.0, (0.05, 5.0))
        self.c = self.parameter(1.0, (0.05, 5.0))

    def derivatives(self, t, s, u):
        return {"x": -self.a * s.x + s.z, "z": -self.c * s.z}


def cascade_exact(t, x0, z0, a, c):
    return x0 * np.exp(-a * t) + z0 / (a - c) * (np.exp(-c * t) - np.exp(-a * t))


def test_latent_state_start_fitted_per_trajectory_recovers_the_exact_solution():
    a, c = 0.5, 1.5
    t = np.linspace(0, 6, 25)
    x0s, z0s = [1.0, 0.5, 2.0], [1.0, 2.5, 0.4]
    rng = np.random.default_rng(0)
    y = np.stack([cascade_exact(t, x0, z0, a, c) for x0, z0 in zip(x0s, z0s)])[..., None]
    y = y + 1e-3 * rng.normal(size=y.shape)
    y[:, 0, 0] = x0s  # the measured start
    data = Trajectories.from_arrays(t, y, states=("x",), ids=["p", "q", "r"])
    res = fit_twin(lambda replicas=1: Cascade(("x", "z"), replicas=replicas), data, data, CFG,
                   initial={"z": Initial(bounds=(0.0, 5.0), init=1.0)})
    m = res.model
    assert m.physical_values()["a"] == pytest.approx(a, rel=1e-2)
    assert m.physical_values()["c"] == pytest.approx(c, rel=1e-2)
    starts = m.twin_.values_by_trajectory(m)["z(0)"]
    for k, z0 in zip("pqr", z0s):
        assert starts[k] == pytest.approx(z0, rel=2e-2)
    # the noise level is estimated from the residuals: the 1e-3 that was added
    assert m.twin_.fit_.sigma["x"] == pytest.approx(1e-3, rel=0.3)
    # predictions are of what was measured, the latent state is there on request
    with torch.no_grad():
        assert rollout(m, data).shape == (3, 25, 1)
        z = rollout(m, data, states=True)[..., 1]
    assert float(z[1, 0]) == pytest.approx(2.5, rel=2e-2)


class Sensor(HybridModel):
    """A first-order decay seen through a sensor with a gain and an offset."""

    def setup(self):
        self.k = self.parameter(0.5, (0.01, 5.0))
        self.gain = self.parameter(1.0, (0.1, 10.0))
        self.offset = self.parameter(0.0, (-5.0, 5.0))

    def derivatives(self, t, s, u):
        return {"x": -self.k * s.x}

    def observe(self, s, u):
        return {"reading": self.gain * s.x + self.offset}


def test_observation_model_with_a_gain_and_an_offset():
    k, gain, offset = 0.8, 2.5, 0.7
    t = np.linspace(0, 5, 30)
    rng = np.random.default_rng(1)
    x0s = np.array([1.0, 2.0, 3.0])
    reading = gain * x0s[:, None] * np.exp(-k * t) + offset
    y = (reading + 0.01 * rng.normal(size=reading.shape))[..., None]
    data = Trajectories.from_arrays(t, y, states=("reading",), inputs=("x0",),
                                    u=np.broadcast_to(x0s[:, None, None], (3, 30, 1)).copy())
    res = fit_twin(lambda replicas=1: Sensor(("x",), ("x0",), replicas=replicas), data, data,
                   CFG, initial={"x": Initial(expr="x0")})
    v = res.model.physical_values()
    assert v["k"] == pytest.approx(k, rel=2e-2)
    assert v["gain"] == pytest.approx(gain, rel=2e-2)
    assert v["offset"] == pytest.approx(offset, abs=0.03)
    assert res.model.twin_.fit_.sigma["reading"] == pytest.approx(0.01, rel=0.3)


class Decay(HybridModel):
    def setup(self):
        self.k = self.parameter(0.5, (0.01, 5.0), individual=True)

    def derivatives(self, t, s, u):
        return {"x": -self.k * s.x}


def subjects(n: int, seed: int, k=0.3, omega=0.4, sigma=0.05):
    rng = np.random.default_rng(seed)
    eta = omega * rng.normal(size=n)
    t = np.array([0.0, 0.5, 1, 2, 3, 4, 6, 8])
    y = 10 * np.exp(-np.outer(k * np.exp(eta), t))
    y = y + sigma * rng.normal(size=y.shape)
    y[:, 0] = 10.0
    ids = [f"s{i}" for i in range(n)]
    return Trajectories.from_arrays(t, y[..., None], states=("x",), ids=ids), eta


def test_random_effect_recovered_on_simulated_subjects_with_known_spread():
    data, eta = subjects(40, seed=2)
    res = fit_twin(lambda replicas=1: Decay(("x",), replicas=replicas), data, data, CFG)
    m = res.model
    # the estimates are of this sample: its subjects' mean log-rate and their spread
    sample_log_k = math.log(0.3) + eta.mean()
    assert math.log(m.physical_values()["k"]) == pytest.approx(sample_log_k, abs=0.02)
    assert m.twin_.fit_.omega["k"] == pytest.approx(eta.std(), rel=0.1)
    assert m.twin_.fit_.sigma["x"] == pytest.approx(0.05, rel=0.2)
    ind = m.twin_.values_by_trajectory(m)["k"]
    true_k = 0.3 * np.exp(eta)
    err = np.abs(np.array([ind[f"s{i}"] for i in range(40)]) / true_k - 1)
    assert np.median(err) < 0.03
    # what an information criterion counts: k, its spread and the noise level
    assert m.twin_.fit_.n_estimated == 3
    assert m.twin_.fit_.aic == pytest.approx(m.twin_.fit_.neg2loglik + 6)


def test_a_new_subject_is_predicted_better_once_conditioned_on_its_first_points():
    data, _ = subjects(30, seed=3)
    res = fit_twin(lambda replicas=1: Decay(("x",), replicas=replicas), data, data, CFG)
    new, eta = subjects(6, seed=4, omega=0.6)
    new = Trajectories.from_arrays(new.t, new.y, states=("x",), ids=[f"n{i}" for i in range(6)])
    cond = condition(res.model, new, points=3, cfg=CFG)
    with torch.no_grad():
        late = slice(3, None)
        pop_err = ((rollout(res.model, new) - new.y)[:, late] ** 2).mean()
        cond_err = ((rollout(cond, new) - new.y)[:, late] ** 2).mean()
    assert cond_err < 0.5 * pop_err
    # the population model is untouched by conditioning
    assert cond.physical_values() == res.model.physical_values()


def test_a_latent_state_with_no_initial_value_is_a_clear_error():
    data = Trajectories.from_arrays(np.linspace(0, 1, 5), np.ones((5, 1)), states=("x",))
    model = Cascade(("x", "z"))
    attach(model, data.ids)
    with pytest.raises(ContractError, match="'z' has no data column and no initial value"):
        rollout(model, data)


def test_observe_must_return_every_measured_quantity():
    data = Trajectories.from_arrays(np.linspace(0, 1, 5), np.ones((5, 1)), states=("volts",),
                                    inputs=("x0",), u=np.ones((5, 1)))
    model = Sensor(("x",), ("x0",))
    attach(model, data.ids, {"x": Initial(value=1.0)})
    with pytest.raises(ContractError, match=r"does not return \['volts'\]"):
        rollout(model, data)


def test_theophylline_space_holds_out_each_subjects_last_samples_from_its_start():
    from hyarch.spaces.loader import load_space

    space = load_space("theophylline")
    assert space.twin and space.measured == ("conc",)
    train, val, test = space.splits["train"], space.splits["val"], space.splits["test"]
    # the same subjects in every split, so their individual values carry over
    assert train.ids == val.ids == test.ids and len(train.ids) == 12
    # held-out segments keep the whole grid from the dose on, one sample observed each
    assert val.length == test.length == 11 and train.length == 9
    assert val.mask.sum(dim=(1, 2)).tolist() == [1] * 12
    assert bool((val.t[:, 0] == 0).all())
    rules = space.initial_rules()
    assert rules["gut"].expr == "dose" and rules["conc"].value == 0.0
    fit, selection = space.fit_and_selection()
    assert fit.ids == selection.ids == train.ids  # a twin fits every subject


def test_a_latent_state_without_a_start_is_a_space_error(tmp_path):
    from hyarch.spaces.loader import parse_spec

    text = """\
name: broken
states:
  gut: {measured: false}
  conc: {}
data: {csv: {path: x.csv}}
"""
    with pytest.raises(Exception, match="gut.*needs an initial value"):
        parse_spec(text, "broken.yaml")


@pytest.mark.skipif(__import__("shutil").which("Rscript") is None, reason="R is not installed")
def test_theophylline_fixed_effects_match_nlme_on_the_same_data_and_model():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import theophylline as bench

    from hyarch.spaces.loader import load_space

    space = load_space("theophylline")
    try:
        nlme = bench.run_nlme(space.path.parent / space.spec.data.csv.path)
    except RuntimeError as e:  # R without nlme
        pytest.skip(str(e)[:200])
    ours = bench.fit_all(space)
    for name in ("ka", "ke", "Cl"):
        assert ours["fixed_effects"][name] == pytest.approx(nlme["fixed_effects"][name],
                                                            rel=0.05)
    for name in ("ka", "Cl"):
        assert ours["omega"][name] == pytest.approx(nlme["omega"][name], rel=0.1)
    assert ours["sigma"] == pytest.approx(nlme["sigma"], rel=0.05)


def test_offline_grammar_makes_a_prior_parameter_individual_where_individuals_recur():
    from hyarch.agent.offline import OfflineProposer, individual_parameters
    from hyarch.core.candidate import load_model_class
    from hyarch.spaces.loader import load_space

    space = load_space("theophylline")  # chronological: validation sees the same subjects
    proposer = OfflineProposer()
    grammar = proposer._grammar(space)
    # ka and Cl are individual in the prior already; ke is the one left to try
    assert [k for k in grammar if k.startswith("individual:")] == ["individual:ke"]
    off = {k: v[0] for k, v in grammar.items()}
    source = proposer.render(space, {**off, "individual:ke": True})
    assert individual_parameters(source) >= {"ke"}
    model = load_model_class(source, "c.py")(space.states, space.inputs)
    assert set(model.individual_names) == {"ka", "ke", "Cl"}
    # a space that predicts new trajectories offers no such choice
    pendulum = load_space("damped_pendulum")
    assert not any(k.startswith("individual:") for k in proposer._grammar(pendulum))


def test_a_twins_spreads_and_fitted_starts_count_in_the_ranking_complexity():
    from hyarch.record import Evaluation

    base = {"status": "ok", "parameters": {"ka": 1.5, "ke": 0.08, "Cl": 0.04},
            "n_neural_params": 0, "metrics": {"val": {"nmse": 0.1, "mse": 0.3}}}
    pooled = Evaluation.from_dict(base)
    twin = Evaluation.from_dict({**base, "twin": {"n_random_effects": 2,
                                                  "n_fitted_starts": 12}})
    assert pooled.fitted_values == 3
    assert twin.fitted_values == 3 + 2 + 12


class TwoRates(HybridModel):
    """x' = -(a + b) x: only the sum of the rates is in the data."""

    def setup(self):
        self.a = self.parameter(0.3, (0.01, 5.0))
        self.b = self.parameter(0.3, (0.01, 5.0))

    def derivatives(self, t, s, u):
        return {"x": -(self.a + self.b) * s.x}


def test_uncertainty_flags_what_the_data_cannot_determine():
    t = np.linspace(0, 5, 20)
    rng = np.random.default_rng(5)
    y = np.exp(-0.8 * t)[None, :, None] * np.array([1.0, 2.0])[:, None, None]
    y = y + 0.01 * rng.normal(size=y.shape)
    data = Trajectories.from_arrays(t, y, states=("x",), ids=["p", "q"])
    res = fit_twin(lambda replicas=1: TwoRates(("x",), replicas=replicas), data, data, CFG,
                   initial={"x": Initial(bounds=(0.1, 5.0), init=1.0)})
    u = res.model.twin_.fit_.uncertainty
    assert u["parameters"]["a"] > 1 and u["parameters"]["b"] > 1
    assert any(f.startswith("a:") for f in u["flags"])
    # the cascade: both rates and the latent start are determined, no flag
    a, c = 0.5, 1.5
    t = np.linspace(0, 6, 25)
    y = np.stack([cascade_exact(t, 1.0, z0, a, c) for z0 in (1.0, 2.5)])[..., None]
    y = y + 1e-3 * rng.normal(size=y.shape)
    y[:, 0, 0] = 1.0
    data = Trajectories.from_arrays(t, y, states=("x",), ids=["p", "q"])
    res = fit_twin(lambda replicas=1: Cascade(("x", "z"), replicas=replicas), data, data, CFG,
                   initial={"z": Initial(bounds=(0.0, 5.0), init=1.0)})
    u = res.model.twin_.fit_.uncertainty
    assert u["flags"] == [] and u["states"]["z"] < 0.05
    assert u["parameters"]["a"] < 0.05


def test_partially_observed_epidemic_space_measures_only_reported_cases():
    from hyarch.sandbox.runner import check_candidate
    from hyarch.spaces.loader import load_space

    space = load_space("seir_reported")
    assert space.twin and space.measured == ("cases",)
    train, val = space.splits["train"], space.splits["val"]
    assert train.y.shape[-1] == 1 and train.ids == val.ids
    # the simulator's last column: rho * sigma * E, never negative before the noise
    assert float(train.y[:, 0].min()) >= 0
    assert check_candidate(space, space.prior_path().read_text(), "prior.py") is None


DECAY_SOURCE = '''from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        self.k = self.parameter(init=0.5, bounds=(0.01, 5.0), individual=True)

    def derivatives(self, t, s, u):
        return {"x": -self.k * s.x}
'''


def test_new_individuals_are_scored_conditioned_on_their_first_samples_and_from_the_population(
        tmp_path):
    from hyarch.evaluate import evaluate_source
    from hyarch.record import Evaluation
    from hyarch.spaces.loader import load_space

    data, _ = subjects(30, seed=6, omega=0.5)
    rows = ["subject,t,x"]
    for b, sid in enumerate(data.ids):
        rows += [f"{sid},{float(t)},{float(y)}" for t, y in zip(data.t[b], data.y[b, :, 0])]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "s.yaml").write_text("""\
name: decay_subjects
states:
  x: {initial: 10}
data: {csv: {path: d.csv, time: t, trajectory: subject}}
splits: {by: trajectory, fractions: {train: 0.6, val: 0.2, test: 0.2}, condition: 3}
""")
    space = load_space(tmp_path / "s.yaml")
    assert space.conditioning("val") == 3 and space.conditioning("train") == 0
    ev = Evaluation.from_dict(evaluate_source(space, DECAY_SOURCE, filename="m.py").result)
    assert ev.ok, ev.reason
    twin = dict(ev.extra)["twin"]
    for split in ("val", "test"):
        own, pop = ev.split(split).nmse, twin["population"][split]["nmse"]
        # the same held-out samples (after the first 3), each new subject's own rate wins
        assert own < 0.5 * pop
    assert twin["condition"] == 3


def test_prompts_tell_the_llm_what_is_latent_measured_and_individual():
    from hyarch.agent.prompting import propose_messages
    from hyarch.spaces.loader import load_space

    theoph = propose_messages(load_space("theophylline"))[1]["content"]
    assert "`gut` [mg/kg] (latent: never measured) (starts at `dose`)" in theophylline_line(
        theoph)
    assert "individual=True" in theoph
    epidemic = propose_messages(load_space("seir_reported"))[1]["content"]
    assert "## What the data measure" in epidemic and "observe(self, s, u)" in epidemic
    assert "individual=True" in epidemic  # a time split: the same regions later on
    pendulum = propose_messages(load_space("damped_pendulum"))[1]["content"]
    assert "latent" not in pendulum and "individual=True" not in pendulum


def theophylline_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("- `gut`"))


def test_the_structured_form_can_make_a_parameter_individual():
    from hyarch.agent.structured import FormError, describe, fill, schema
    from hyarch.core.candidate import load_model_class
    from hyarch.spaces.loader import load_space

    space = load_space("theophylline")
    assert schema(space)["properties"]["individual"]["items"]["enum"] == ["ke"]
    source, choices = fill(space, {"reasoning": "", "new_terms": [], "closures": [],
                                   "individual": ["ke"]})
    model = load_model_class(source, "c.py")(space.states, space.inputs)
    assert set(model.individual_names) == {"ka", "ke", "Cl"}
    assert "individual ke" in describe(choices)
    with pytest.raises(FormError, match="individual"):
        fill(space, {"new_terms": [], "individual": ["volume"]})
    assert "individual" not in schema(load_space("damped_pendulum"))["properties"]
