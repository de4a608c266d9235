"""benchmarks/odebench.py: the converted systems, the drop-a-term cases, the simulated data
and the reading of a winner's added term, each against a known answer (no search here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ob():
    spec = importlib.util.spec_from_file_location("bench_odebench",
                                                  ROOT / "benchmarks" / "odebench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def every(ob):
    return {c.name: c for c in ob.cases(ob.load_systems())}


def test_the_copy_holds_odebench_with_its_citation_and_licence(ob):
    doc = json.loads(ob.DATA.read_text())
    assert "ODEFormer" in doc["citation"] and "ICLR 2024" in doc["citation"]
    assert doc["licence"].startswith("MIT License") and "d'Ascoli" in doc["licence"]
    systems = doc["systems"]
    dims = [s["dim"] for s in systems]
    assert len(systems) == 63 and [dims.count(d) for d in (1, 2, 3, 4)] == [23, 28, 10, 2]
    lorenz = next(s for s in systems if s["id"] == 55)  # written 8. / 3. in the source
    assert lorenz["consts"][0][2] == pytest.approx(8 / 3)
    for s in systems:
        assert len(s["init"]) == 2 and all(len(x) == s["dim"] for x in s["init"])
        assert len(s["eq"].split("|")) == s["dim"]


def test_every_case_is_the_truth_minus_one_term(ob, every):
    assert len(every) == 153
    for case in every.values():
        full, prior = case.equations(), case.prior_equations()
        for i, (f, p) in enumerate(zip(full, prior)):
            diff = sp.simplify(f - p - (case.removed() if i == case.state else 0))
            assert diff == 0, case.name
        assert sp.simplify(full[case.state] - prior[case.state]) != 0
    # a single-term equation gives no case; each term of a sum does
    assert "s2_x0_t0" not in every and "s24_x0_t0" not in every
    assert {n for n in every if n.startswith("s16_")} == {"s16_x0_t0", "s16_x0_t1", "s16_x0_t2"}
    assert str(every["s18_x0_t1"].removed()) == "-c_2*x_0/(c_3 + x_0)"


def test_the_truth_candidate_is_the_system_with_its_constants_at_their_values(ob, every):
    import torch

    from hyarch.core.candidate import load_model_class, make_factory

    rng = np.random.default_rng(0)
    for name in ("s12_x0_t0", "s41_x0_t0", "s43_x1_t2"):
        case = every[name]
        dim = case.system["dim"]
        states = tuple(f"x_{i}" for i in range(dim))
        model = make_factory(load_model_class(ob.truth_source(case)), states, (),
                             dict.fromkeys(states, 1.0))()
        assert model.physical_values() == pytest.approx(case.truth, rel=1e-6)
        x = rng.uniform(0.2, 2.0, size=(5, dim))
        with torch.no_grad():
            got = model.vector_field(torch.zeros(5), torch.tensor(x, dtype=torch.float32),
                                     None).numpy()
        syms = sp.symbols(states)
        for i, eq in enumerate(case.equations()):
            f = sp.lambdify(syms, eq.subs({sp.Symbol(k): v for k, v in case.truth.items()}))
            want = np.array([float(f(*row)) for row in x])
            assert got[:, i] == pytest.approx(want, rel=1e-4, abs=1e-5), name


def test_the_prior_starts_away_from_the_truth_within_bounds(ob, every):
    case = every["s18_x0_t1"]
    src = ob.prior_source(case)
    assert "c_2" not in src and "c_3" not in src  # only the removed term used them
    assert "self.c_0 = self.parameter(init=0.52, bounds=(0.052, 5.2))" in src
    assert "self.c_1 = self.parameter(init=76.9231, bounds=(7.69231, 769.231))" in src
    for c in every.values():
        for name in c.prior_constants():
            init, (lo, hi) = ob.initial_guess(name, c.truth[name])
            assert init != c.truth[name] and lo < c.truth[name] < hi


def test_simulated_data_follow_the_equation(ob):
    systems = {s["id"]: s for s in ob.load_systems()}
    t = np.linspace(0.0, 10.0, 100)
    x = ob.simulate(systems[2], [4.78], t)  # dx/dt = 0.23 x
    assert np.allclose(x[:, 0], 4.78 * np.exp(0.23 * t), rtol=1e-4)
    # van der Pol without its damping term: a prior with no constants, the harmonic
    # oscillator, which the benchmark integrates itself (hyarch fits nothing there)
    case = next(c for c in ob.cases([systems[37]]) if c.name == "s37_x1_t1")
    assert case.prior_constants() == []
    x = ob.simulate(systems[37], [2.2, 0.0], t, case.prior_equations())
    assert np.allclose(x[:, 0], 2.2 * np.cos(t), atol=1e-4)
    x = ob.simulate(systems[25], [0.12, 0.043], t)  # a damped oscillator, solved exactly
    a, b = 0.43 / 2, np.sqrt(4.5 - 0.43 ** 2 / 4)
    c2 = (0.043 + a * 0.12) / b
    assert np.allclose(x[:, 0], np.exp(-a * t) * (0.12 * np.cos(b * t) + c2 * np.sin(b * t)),
                       atol=1e-5)


def test_the_space_holds_the_second_initial_condition_as_its_test_split(ob, every, tmp_path):
    from hyarch.spaces.loader import load_space

    case = every["s25_x1_t1"]
    space = load_space(ob.write_space(case, tmp_path, budget=3))
    clean = np.load(tmp_path / "clean.npz")
    assert np.allclose(clean["test"][0], case.system["init"][1])
    assert np.allclose(clean["train0"][0], case.system["init"][0])
    test = ob._load_csv(tmp_path / "data.csv", "test", 2)
    assert len(test) == 1 and len(ob._load_csv(tmp_path / "data.csv", "train", 2)) == 5
    noise = (test[0] - clean["test"]) / clean["test"].std(axis=0)
    assert 0.005 < noise.std() < 0.02  # 1% of each state's std
    assert space.truth == {"c_0": 4.5, "c_1": 0.43}
    assert [c.state for c in space.spec.closures] == ["x_0", "x_1"]
    assert not space.spec.hypotheses


HOLLING = '''class Model(Prior):
    def setup(self):
        super().setup()
        self.k_x_0_c3 = self.parameter(init=-0.2, bounds=(-2.0, -0.02))
        self.K_c3 = self.parameter(init=40.0, bounds=(1.0, 400.0))

    def derivatives(self, t, s, u):
        d = super().derivatives(t, s, u)
        d["x_0"] = d["x_0"] + (self.k_x_0_c3 * (s.x_0 / (self.K_c3 + s.x_0)))
        return d
'''


def test_a_winners_added_term_is_read_from_its_code_and_compared(ob, every):
    case = every["s18_x0_t1"]  # loses -0.24 x_0 / (50 + x_0)
    added = ob.added_terms(HOLLING, {"k_x_0_c3": -0.25, "K_c3": 52.0})
    assert ob.term_recovered(added, case) is True
    assert ob.term_recovered(ob.added_terms(HOLLING, {"k_x_0_c3": -0.25, "K_c3": 60.0}),
                             case) is False  # K 20% off
    linear = HOLLING.replace("(s.x_0 / (self.K_c3 + s.x_0))", "s.x_0")
    case6 = every["s6_x0_t1"]  # loses -0.5 x_0^2
    quad = linear.replace("* s.x_0)", "* s.x_0 ** 2)")
    assert ob.term_recovered(ob.added_terms(quad, {"k_x_0_c3": -0.53, "K_c3": 1.0}), case6)
    assert not ob.term_recovered(ob.added_terms(quad, {"k_x_0_c3": -0.6, "K_c3": 1.0}), case6)
    assert not ob.term_recovered(ob.added_terms(linear, {"k_x_0_c3": -0.5, "K_c3": 1.0}), case6)
    # c (1 - x) fitted as two coefficients: the same monomials, each within 10% (PySINDy's
    # rule); with a monomial too many, or one coefficient 20% off, it is not the term
    case45 = every["s45_x0_t0"]  # loses c_0 (1 - x_0)
    c = case45.truth["c_0"]
    two = HOLLING.replace("(s.x_0 / (self.K_c3 + s.x_0))", "1.0").replace(
        "+ (self.k_x_0_c3 * 1.0)", "+ (self.k_x_0_c3 + self.K_c3 * s.x_0)")
    assert ob.term_recovered(ob.added_terms(two, {"k_x_0_c3": 0.99 * c, "K_c3": -c}),
                             case45) is True
    assert ob.term_recovered(ob.added_terms(two, {"k_x_0_c3": c, "K_c3": -1.2 * c}),
                             case45) is False
    three = two.replace("self.K_c3 * s.x_0)", "self.K_c3 * s.x_0 + 0.01 * s.x_0 ** 2)")
    assert ob.term_recovered(ob.added_terms(three, {"k_x_0_c3": c, "K_c3": -c}),
                             case45) is False
    # something the reader cannot name is unknown, not a guess
    odd = quad.replace("s.x_0 ** 2", "torch.special.erf(s.x_0)")
    assert ob.added_terms(odd, {"k_x_0_c3": -0.5, "K_c3": 1.0}) is None
    assert ob.term_recovered(None, case6) is None
    # the prior file itself adds nothing
    prior = ob.prior_source(case6)
    assert ob.term_recovered(ob.added_terms(prior, {}, prior), case6) is False


def test_r2_and_the_summary_count_what_they_say(ob):
    clean = np.stack([np.linspace(0, 1, 10), np.linspace(1, 3, 10)], axis=1)
    assert ob.r2(clean, clean) == 1.0
    assert ob.r2(clean * np.nan, clean) is None
    assert ob.r2(np.tile(clean.mean(axis=0), (10, 1)), clean) == pytest.approx(0.0)
    row = {m: {"r2": r, "recovered": rec, "seconds": 1.0, "param_rel_error": {}}
           for m, r, rec in (("hyarch", 0.995, True), ("prior", 0.95, False),
                             ("aphynity", None, False), ("pysindy", 0.5, None))}
    s = ob.summary([row, {**row, "hyarch": {**row["hyarch"], "r2": 0.5, "recovered": False}}])
    assert s["hyarch"] == {"cases": 2, "recovered_fraction": 0.5, "recovered_unknown": 0,
                           "accuracy_r2_0.9": 0.5, "accuracy_r2_0.99": 0.5,
                           "median_r2": pytest.approx(0.7475), "seconds": 2.0}
    assert s["prior"]["accuracy_r2_0.9"] == 1.0 and s["prior"]["accuracy_r2_0.99"] == 0.0
    assert s["aphynity"]["accuracy_r2_0.9"] == 0.0
    assert s["pysindy"]["recovered_unknown"] == 2


@pytest.mark.slow
def test_quick_mode_runs_all_four_methods_on_a_case_and_reads_it_back(ob, every, tmp_path,
                                                                     capsys):
    """The logistic case (s6 loses -0.5 x^2): PySINDy's cubic library recovers it from clean
    enough data, the exponential prior cannot fit the second start; a second call reads the
    stored case instead of running it again. The case's search had stopped after one
    candidate (the machine went down): it is resumed, that candidate kept."""
    import hyarch

    case = tmp_path / "quick" / "s6_x0_t1"
    space = ob.write_space(every["s6_x0_t1"], case / "space", budget=1,
                           condition=ob.CONDITION)
    hyarch.search(space, run=case / "run", budget=1, workers=1, seed=0,
                  overrides=ob.QUICK_TRAINING)
    kept = (case / "run" / "candidates" / "c0001" / "metrics.json").read_bytes()
    argv = ["--quick", "--cases", "s6_x0_t1", "--budget", "2", "--out", str(tmp_path), "--json"]
    assert ob.main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert set(first) == {"hyarch", "prior", "aphynity", "pysindy"}
    for name, m in first.items():
        assert m["cases"] == 1 and (m["seconds"] > 0 or name == "pysindy")
        assert {"recovered_fraction", "accuracy_r2_0.9", "accuracy_r2_0.99"} <= set(m)
    assert first["pysindy"]["recovered_fraction"] == 1.0
    assert first["prior"]["recovered_fraction"] == 0.0 and first["prior"]["accuracy_r2_0.9"] == 0
    assert first["aphynity"]["recovered_fraction"] == 0.0
    row = json.loads((tmp_path / "quick" / "s6_x0_t1" / "result.json").read_text())
    assert len(list((case / "run" / "candidates").iterdir())) >= 2
    assert (case / "run" / "candidates" / "c0001" / "metrics.json").read_bytes() == kept
    assert row["prior"]["r2"] is not None and row["prior"]["r2"] < 0.9
    assert ob.main(argv) == 0
    assert json.loads(capsys.readouterr().out) == first
    # what the data can tell: the truth, refitted, against the prior and hyarch's winner
    assert ob.main(["--quick", "--cases", "s6_x0_t1", "--out", str(tmp_path), "--oracle"]) == 0
    oracle = json.loads((case / "result.json").read_text())["oracle"]
    assert oracle["identifiable"] is True  # the prior's exponential misses the saturation
    assert oracle["truth_r2"] > 0.99
    assert oracle["val_score"]["truth"] < oracle["val_score"]["prior"]
    assert "| s6_x0_t1 |" in capsys.readouterr().out
    # a table outlives the machine: its results go to one file and come back elsewhere
    saved, elsewhere = tmp_path / "table.jsonl", tmp_path / "elsewhere"
    assert ob.main(["--quick", "--cases", "s6_x0_t1", "--out", str(tmp_path),
                    "--export", str(saved)]) == 0
    assert ob.main(["--out", str(elsewhere), "--quick", "--restore", str(saved)]) == 0
    back = json.loads((elsewhere / "quick" / "s6_x0_t1" / "result.json").read_text())
    assert back == json.loads((case / "result.json").read_text())
    capsys.readouterr()  # and a run there reads it back, its search not redone
    assert ob.main([*argv[:-3], "--out", str(elsewhere), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert not (elsewhere / "quick" / "s6_x0_t1" / "run").exists()


def test_why_a_term_was_not_put_back_follows_the_validation_comparison(ob):
    def row(recovered, neural, identifiable, as_good):
        return {"hyarch": {"recovered": recovered, "neural": neural},
                "oracle": {"identifiable": identifiable, "hyarch_as_good_as_truth": as_good}}

    assert ob.why_not(row(True, False, True, True)) == "recovered"
    assert ob.why_not(row(False, False, False, True)).startswith("not identifiable")
    assert ob.why_not(row(False, True, True, True)) == "a network fits as well as the truth"
    assert ob.why_not(row(False, False, True, True)) == "another form fits as well as the truth"
    assert ob.why_not(row(False, True, True, False)) == "short of the truth: a network"
    assert ob.why_not(row(False, False, True, False)) == "short of the truth: network-free"
    assert ob.why_not({"hyarch": {"recovered": False}}) == "unknown"
