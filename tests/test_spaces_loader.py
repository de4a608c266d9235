"""Loading search spaces and users' data: the errors a user sees and the data they get.

Every error test asserts what a user needs to act: the file, the line, the field and what
would be valid.
"""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest
import torch

from hyarch.spaces.errors import SpaceError
from hyarch.spaces.loader import load_space, parse_spec

CSV_SPACE = """\
name: csv_space
states:
  x: {description: position, unit: m}
  v: {description: velocity, unit: m/s}
inputs:
  f: {description: force, unit: N}
data:
  csv: {path: data.csv, time: t, trajectory: run}
"""

PRIOR = """\
from hyarch import HybridModel


class Model(HybridModel):
    def setup(self):
        self.k = self.parameter(init=1.0, bounds=(0.1, 10.0))

    def derivatives(self, t, s, u):
        return {"x": s.v, "v": -self.k * s.x + u.f}
"""


def long_csv(n_traj: int = 5, n_t: int = 6) -> str:
    """Trajectory r has x = r + t, v = 1, f = r / 10, at t = 0, 0.5, ..."""
    rows = ["run,t,x,v,f"]
    for r in range(n_traj):
        for k in range(n_t):
            t = 0.5 * k
            rows.append(f"r{r},{t},{r + t},1.0,{r / 10}")
    return "\n".join(rows) + "\n"


def write(tmp_path, space: str, csv: str | None = None, **files: str):
    (tmp_path / "space.yaml").write_text(textwrap.dedent(space))
    if csv is not None:
        (tmp_path / "data.csv").write_text(csv)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path / "space.yaml"


def error(ref) -> SpaceError:
    with pytest.raises(SpaceError) as e:
        load_space(ref)
    return e.value


# -- the YAML itself ----------------------------------------------------------------------
def test_misspelt_top_level_key_names_line_and_near_match(tmp_path):
    path = write(tmp_path, CSV_SPACE + "trainig:\n  lr: 0.01\n", long_csv())
    e = error(path)
    assert e.file == str(path) and e.line == 9
    assert "unknown key 'trainig'" in str(e) and "did you mean 'training'?" in str(e)


def test_misspelt_nested_key_lists_the_valid_ones(tmp_path):
    text = CSV_SPACE.replace("trajectory: run", "trajectori: run")
    e = error(write(tmp_path, text, long_csv()))
    assert e.line == 8
    msg = str(e)
    assert "data.csv.trajectori" in msg and "did you mean 'trajectory'?" in msg
    assert "valid keys here: path, time, trajectory" in msg


def test_malformed_yaml_says_where(tmp_path):
    path = write(tmp_path, "name: x\nstates: [a, b\ndata: {}\n")
    e = error(path)
    assert "malformed YAML" in str(e) and e.file == str(path) and e.line == 3


def test_missing_required_field_and_wrong_type(tmp_path):
    e = error(write(tmp_path, "name: x\ndata: {csv: {path: d.csv}}\n"))
    assert "states: required field is missing" in str(e)
    e = error(write(tmp_path, CSV_SPACE + "training: {lr: fast}\n", long_csv()))
    assert "training.lr" in str(e) and e.line == 9


def test_unknown_space_name_suggests_a_builtin(tmp_path):
    e = error("damped_pendulm")
    assert "did you mean 'damped_pendulum'?" in str(e)
    e = error(str(tmp_path / "nope.yaml"))
    assert "no such file" in str(e) and "damped_pendulum" in str(e)


def test_unknown_simulator_lists_the_valid_ones(tmp_path):
    text = "name: s\nstates: {x: {}}\ndata: {simulator: {name: pendulum}}\n"
    e = error(write(tmp_path, text))
    assert "unknown simulator 'pendulum'" in str(e) and "damped_pendulum" in str(e)


def test_simulator_missing_true_parameter_is_named(tmp_path):
    text = ("name: s\nstates: {prey: {}, predator: {}}\n"
            "data: {simulator: {name: lotka_volterra, trajectories: {train: 2, val: 1}}}\n"
            "truth: {alpha: 1.0, beta: 0.4, delta: 0.2, gamma: 0.5}\n")
    e = error(write(tmp_path, text))
    assert "needs parameter 'K'" in str(e) and e.field == "data.simulator.parameters"


def test_state_shape_must_match_the_simulated_data(tmp_path):
    text = ("name: s\nstates: {theta: {shape: [3]}, omega: {}}\n"
            "data: {simulator: {name: damped_pendulum, trajectories: {train: 2, val: 1}}}\n"
            "truth: {omega0_sq: 1.0, alpha: 0.2}\n")
    e = error(write(tmp_path, text))
    assert "2 value(s) per sample but the states need 4" in str(e)


# -- the prior ----------------------------------------------------------------------------
def test_prior_that_does_not_exist(tmp_path):
    path = write(tmp_path, CSV_SPACE + "prior: models/prior.py\n", long_csv())
    e = error(path)
    assert "prior file 'models/prior.py' does not exist" in str(e) and e.line == 9


def test_prior_that_breaks_the_contract_is_caught_by_validate(tmp_path, capsys):
    """Loading never runs the prior; ``hyarch validate`` checks it in the sandbox."""
    from hyarch.cli import main

    bad = PRIOR.replace('"v": -self.k * s.x + u.f', '"w": -self.k * s.x')
    path = write(tmp_path, CSV_SPACE + "prior: prior.py\n", long_csv(), **{"prior.py": bad})
    load_space(path)  # loads: the contract is checked where the code may run
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "prior.py") in err
    assert "does not satisfy the candidate contract" in err
    assert "missing derivative for state(s) 'v'" in err


def test_prior_with_a_forbidden_import_is_caught_at_load(tmp_path):
    bad = "import os\n" + PRIOR
    e = error(write(tmp_path, CSV_SPACE + "prior: prior.py\n", long_csv(), **{"prior.py": bad}))
    assert e.file == str(tmp_path / "prior.py") and "import of 'os' is not allowed" in str(e)
    assert e.line == 1


def test_prior_with_a_syntax_error_names_its_line(tmp_path):
    bad = PRIOR.replace("return {", "return {{")
    e = error(write(tmp_path, CSV_SPACE + "prior: prior.py\n", long_csv(), **{"prior.py": bad}))
    assert "syntax error" in str(e) and e.line == 9


def test_good_prior_loads(tmp_path):
    sp = load_space(write(tmp_path, CSV_SPACE + "prior: prior.py\n", long_csv(),
                          **{"prior.py": PRIOR}))
    assert sp.prior_path() == tmp_path / "prior.py"


# -- CSV data -----------------------------------------------------------------------------
def test_long_csv_by_trajectory(tmp_path):
    sp = load_space(write(tmp_path, CSV_SPACE + "splits: {fractions: {train: 0.6, val: 0.2,"
                          " test: 0.2}}\n", long_csv(5, 6)))
    assert {k: v.n for k, v in sp.splits.items()} == {"train": 3, "val": 1, "test": 1}
    seen = set()
    for tr in sp.splits.values():
        for i in range(tr.n):
            x0 = tr.y[i, 0, 0].item()
            seen.add(x0)
            # x = r + t, v = 1 and f = r/10 held in the input tensor
            assert torch.allclose(tr.y[i, :, 0], x0 + tr.t[i])
            assert torch.allclose(tr.u[i, :, 0], torch.full((6,), x0 / 10))
    assert seen == {0.0, 1.0, 2.0, 3.0, 4.0}


def test_missing_column_names_it_and_suggests(tmp_path):
    csv = long_csv().replace("run,t,x,v,f", "run,t,xx,v,f")
    e = error(write(tmp_path, CSV_SPACE, csv))
    assert e.file == str(tmp_path / "data.csv") and e.line == 1
    assert "missing column 'x' for state" in str(e) and "did you mean 'xx'?" in str(e)
    assert "data.csv.columns" in str(e)


def test_columns_map_headers_to_state_names(tmp_path):
    csv = long_csv().replace("run,t,x,v,f", "run,t,Position (m),v,f")
    text = CSV_SPACE.replace("trajectory: run}", "trajectory: run, columns: {x: 'Position (m)'}}")
    sp = load_space(write(tmp_path, text, csv))
    assert sp.states == ("x", "v")


def test_empty_cell_is_an_error_with_the_policy_or_masked(tmp_path):
    lines = long_csv().splitlines()
    lines[3] = "r0,1.0,,1.0,0.0"  # the x cell of file line 4
    csv = "\n".join(lines) + "\n"
    e = error(write(tmp_path, CSV_SPACE, csv))
    assert e.line == 4 and "empty or NaN cell in column 'x'" in str(e)
    assert "data.csv.missing: mask" in str(e)
    text = CSV_SPACE.replace("trajectory: run}", "trajectory: run, missing: mask}")
    sp = load_space(write(tmp_path, text + "splits: {fractions: {train: 0.6, val: 0.4}}\n", csv))
    masked = [(s, tr) for s, tr in sp.splits.items() if not bool(tr.mask.all())]
    assert len(masked) == 1
    tr = masked[0][1]
    assert int((~tr.mask).sum()) == 1 and not bool(tr.mask[..., 0].all())


def test_empty_input_cell_is_always_an_error(tmp_path):
    lines = long_csv().splitlines()
    lines[2] = "r0,0.5,0.5,1.0,"
    text = CSV_SPACE.replace("trajectory: run}", "trajectory: run, missing: mask}")
    e = error(write(tmp_path, text, "\n".join(lines) + "\n"))
    assert e.line == 3 and "column 'f'" in str(e) and "must always be present" in str(e)


def test_time_must_increase(tmp_path):
    lines = long_csv().splitlines()
    lines[3] = "r0,0.25,1.0,1.0,0.0"  # after t = 0.5
    e = error(write(tmp_path, CSV_SPACE, "\n".join(lines) + "\n"))
    assert e.line == 4 and "time must increase within trajectory 'r0': 0.5 then 0.25" in str(e)


def test_not_a_number(tmp_path):
    lines = long_csv().splitlines()
    lines[5] = "r0,2.0,abc,1.0,0.0"
    e = error(write(tmp_path, CSV_SPACE, "\n".join(lines) + "\n"))
    assert e.line == 6 and "'abc' is not a number" in str(e)


def test_data_file_that_does_not_exist(tmp_path):
    e = error(write(tmp_path, CSV_SPACE))
    assert "data file 'data.csv' does not exist" in str(e) and e.field == "data.csv.path"


WIDE_SPACE = """\
name: wide
states: {hare: {}, lynx: {}}
data:
  csv: {path: data.csv, time: year}
splits: {by: time, fractions: {train: 0.6, val: 0.2, test: 0.2}}
"""


def test_single_wide_series_split_chronologically(tmp_path):
    csv = "year,hare,lynx\n" + "".join(f"{1900 + k},{10 + k},{5 - 0.1 * k}\n" for k in range(10))
    sp = load_space(write(tmp_path, WIDE_SPACE, csv))
    tr, va, te = (sp.splits[k] for k in ("train", "val", "test"))
    assert (tr.n, va.n, te.n) == (1, 1, 1)
    assert tr.t[0].tolist() == [1900.0 + k for k in range(6)]
    assert va.t[0].tolist() == [1906.0, 1907.0] and te.t[0].tolist() == [1908.0, 1909.0]


def test_split_column(tmp_path):
    rows = ["run,t,x,v,f,split"]
    labels = ["train", "train", "val", "test", "ood"]
    for r, lab in enumerate(labels):
        rows += [f"r{r},{0.5 * k},{r + 0.5 * k},1,0,{lab}" for k in range(4)]
    text = CSV_SPACE.replace("trajectory: run}", "trajectory: run, split: split}")
    sp = load_space(write(tmp_path, text, "\n".join(rows) + "\n"))
    assert {k: v.n for k, v in sp.splits.items()} == {"train": 2, "val": 1, "test": 1, "ood": 1}
    assert sp.splits["ood"].y[0, 0, 0].item() == 4.0
    rows[7] = rows[7].replace(",train", ",trian")
    e = error(write(tmp_path, text, "\n".join(rows) + "\n"))
    assert e.line == 8 and "label 'trian' is not one of train, val, test, ood" in str(e)


def test_split_by_initial_condition_puts_the_largest_starts_in_ood(tmp_path):
    text = CSV_SPACE + ("splits: {by: initial_condition, state: x, in_distribution_quantile: 0.5,"
                        " ood_quantile: 0.7, fractions: {train: 0.5, val: 0.5}}\n")
    sp = load_space(write(tmp_path, text, long_csv(20, 4)))
    starts = {k: sorted(v.y[:, 0, 0].tolist()) for k, v in sp.splits.items()}
    assert starts["ood"] == [float(r) for r in range(14, 20)]  # x0 = r, the top 30%
    assert max(starts["train"] + starts["val"]) <= 9.5
    assert len(starts["train"]) + len(starts["val"]) == 10


def test_scales_come_from_the_training_split_only(tmp_path):
    """Normalisation must not peek at validation or test data."""
    rows = ["run,t,x,v,f,split"]
    for r in range(4):
        big = 1000.0 if r >= 2 else 1.0  # val and test trajectories are 1000 times larger
        lab = ["train", "train", "val", "test"][r]
        rows += [f"r{r},{k},{big * (r + k)},{big * k},0,{lab}" for k in range(5)]
    text = CSV_SPACE.replace("trajectory: run}", "trajectory: run, split: split}")
    sp = load_space(write(tmp_path, text, "\n".join(rows) + "\n"))
    train_x = np.array([r + k for r in range(2) for k in range(5)], dtype=float)
    assert sp.scales()["x"] == pytest.approx(train_x.std(), rel=1e-6)
    assert sp.scales()["v"] == pytest.approx(np.tile(np.arange(5.0), 2).std(), rel=1e-6)


def test_yaml_parse_spec_defaults():
    spec = parse_spec("name: s\nstates: {x: {}}\ndata: {csv: {path: d.csv}}\n")
    assert spec.splits.by == "trajectory" and spec.training.method == "rk4"
    assert spec.data.csv.time == "t" and spec.data.csv.missing == "error"


def test_validate_command_prints_the_summary(tmp_path, capsys):
    from hyarch.cli import main

    path = write(tmp_path, CSV_SPACE + "prior: prior.py\n", long_csv(), **{"prior.py": PRIOR})
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "csv_space" in out and "valid" in out and "train" in out
    bad = write(tmp_path, CSV_SPACE + "trainig: {}\n", long_csv())
    with pytest.raises(SystemExit) as e:
        main(["validate", str(bad)])
    assert e.value.code == 2
    assert "did you mean 'training'?" in capsys.readouterr().err


def test_hypothesis_terms_are_checked(tmp_path):
    text = CSV_SPACE + textwrap.dedent("""\
        hypotheses:
          v:
            - {name: drag, expr: "-c * s.v", parameters: {c: {init: 5, bounds: [0, 1]}}}
            - {name: typo, expr: "-c * (s.v"}
        """)
    e = error(write(tmp_path, text, long_csv()))
    assert "line 11: hypotheses.v.0.parameters" in str(e) and "init 5 is not a number" in str(e)
    assert "line 12: hypotheses.v.1.expr" in str(e) and "not a Python expression" in str(e)


def test_absurd_simulator_parameters_fail_instead_of_hanging(tmp_path):
    text = ("name: s\nstates: {theta: {}, omega: {}}\n"
            "data: {simulator: {name: damped_pendulum, options: {points: 6},"
            " trajectories: {train: 2, val: 1}}}\n"
            "truth: {omega0_sq: 1.0e+300, alpha: 0.2}\n")
    with warnings.catch_warnings():  # numpy overflows on the way; the answer is an error
        warnings.simplefilter("ignore", RuntimeWarning)
        e = error(write(tmp_path, text))
    # our own words, whatever the SciPy version says (its wording changes between releases)
    assert e.field == "data.simulator"
    assert ("simulator 'damped_pendulum': the simulator's ODE solver failed: the system is too"
            " stiff or too long for these parameters (") in str(e)
    e = error(write(tmp_path, text.replace("points: 6", "points: 6, dt: 1.0e+300")))
    assert "dt must be a positive number" in str(e)


@pytest.mark.parametrize("failure", ["unsuccessful", "raises", "not finite"])
def test_any_solver_failure_is_said_in_our_words(monkeypatch, failure):
    """Whatever SciPy answers (a solution without success, an exception, non-finite states),
    the simulator says the same thing, with SciPy's words only in parentheses."""
    from types import SimpleNamespace

    from hyarch.spaces import simulators

    def fake_solve_ivp(fun, t_span, y0, **kw):
        if failure == "raises":
            raise ValueError("some future SciPy wording")
        y = np.full((len(y0), 3), np.inf if failure == "not finite" else 0.0)
        return SimpleNamespace(success=failure != "unsuccessful", y=y,
                               message="some future SciPy wording")

    monkeypatch.setattr(simulators, "solve_ivp", fake_solve_ivp)
    with pytest.raises(simulators.SimulationError) as e:
        simulators.damped_pendulum({"omega0_sq": 1.0, "alpha": 0.2}, 1,
                                   np.random.default_rng(0), {"points": 3})
    assert str(e.value).startswith(simulators.SOLVER_FAILED + " (")


def test_simulated_data_cannot_be_split_by_a_csv_column(tmp_path):
    text = ("name: s\nstates: {theta: {}, omega: {}}\n"
            "data: {simulator: {name: damped_pendulum, trajectories: {train: 2, val: 1}}}\n"
            "truth: {omega0_sq: 1.0, alpha: 0.2}\nsplits: {by: column}\n")
    e = error(write(tmp_path, text))
    assert e.field == "splits.by" and "is for CSV data" in str(e)


def test_simulated_data_is_cached_between_loads_and_keyed_by_the_spec(tiny_space_path,
                                                                     tmp_path, monkeypatch):
    """The second load reads what the first simulated (the same numbers); a different seed
    is a different entry; a broken entry is simulated again; ``off`` writes nothing."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HYARCH_CACHE", str(cache))
    first = load_space(tiny_space_path)
    files = list(cache.glob("*.pkl"))
    assert len(files) == 1
    again = load_space(tiny_space_path)
    for name in first.splits:
        assert torch.equal(first.splits[name].y, again.splits[name].y)
    tiny_space_path.write_text(tiny_space_path.read_text().replace("seed: 0", "seed: 1"))
    reseeded = load_space(tiny_space_path)
    assert len(list(cache.glob("*.pkl"))) == 2
    assert not torch.equal(reseeded.splits["train"].y, first.splits["train"].y)
    tiny_space_path.write_text(tiny_space_path.read_text().replace("seed: 1", "seed: 0"))
    files[0].write_bytes(b"not a pickle")
    broken = load_space(tiny_space_path)
    assert torch.equal(broken.splits["train"].y, first.splits["train"].y)
    monkeypatch.setenv("HYARCH_CACHE", "off")
    for f in cache.glob("*.pkl"):
        f.unlink()
    assert torch.equal(load_space(tiny_space_path).splits["val"].y, first.splits["val"].y)
    assert not list(cache.glob("*.pkl"))


# -- numbers, duplicate keys, sizes, options, hypothesis names ------------------------------
SIM_SPACE = ("name: s\nstates: {theta: {}, omega: {}}\n"
             "data: {simulator: {name: damped_pendulum, options: {points: 6},"
             " trajectories: {train: 2, val: 1}}}\n"
             "truth: {omega0_sq: 1.0, alpha: 0.2}\n")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+400"])
def test_nan_and_infinity_are_errors_where_written(tmp_path, value):
    text = CSV_SPACE + f"splits: {{by: trajectory, fractions: {{train: {value}, val: 0.5}}}}\n"
    e = error(write(tmp_path, text, long_csv()))
    assert "space.yaml:9:" in str(e) and "splits.fractions.train" in str(e)
    assert "NaN and infinity are not allowed" in str(e)
    e = error(write(tmp_path, SIM_SPACE.replace("alpha: 0.2", f"alpha: {value}")))
    assert "space.yaml:4:" in str(e) and "truth.alpha" in str(e)


def test_nan_split_fraction_by_time_is_an_error_not_a_crash(tmp_path):
    text = CSV_SPACE + "splits: {by: time, fractions: {train: .nan, val: 0.5}}\n"
    e = error(write(tmp_path, text, long_csv()))
    assert "splits.fractions.train" in str(e) and "nan" in str(e)


def test_duplicate_keys_are_errors(tmp_path):
    e = error(write(tmp_path, CSV_SPACE + "name: again\n", long_csv()))
    assert "space.yaml:9:" in str(e) and "duplicate key 'name' (first given on line 1)" in str(e)
    nested = SIM_SPACE.replace("truth: {omega0_sq: 1.0, alpha: 0.2}",
                               "truth:\n  alpha: 0.1\n  omega0_sq: 1.0\n  alpha: 0.2")
    e = error(write(tmp_path, nested))
    assert "space.yaml:7:" in str(e) and "truth.alpha" in str(e) and "duplicate key" in str(e)


def test_absurd_sizes_are_errors(tmp_path):
    text = CSV_SPACE + "closures: [{state: v, inputs: [x, v], hidden: [[100000000000]]}]\n"
    e = error(write(tmp_path, text, long_csv()))
    assert "space.yaml:9:" in str(e) and "closures.0.hidden" in str(e) and "absurdly large" in str(e)
    text = CSV_SPACE + "closures: [{state: v, inputs: [x, v], hidden: [[50000]]}]\n"
    e = error(write(tmp_path, text, long_csv()))
    assert "space.yaml:9:" in str(e) and "closures.0.hidden" in str(e) and "4096 units" in str(e)
    e = error(write(tmp_path, SIM_SPACE.replace("points: 6", "points: 100000000000")))
    assert "space.yaml:3:" in str(e) and "data.simulator.options.points" in str(e)


def test_unknown_simulator_option_names_the_valid_ones(tmp_path):
    e = error(write(tmp_path, SIM_SPACE.replace("points: 6", "points: 6, radios: [1, 2]")))
    assert "space.yaml:3:" in str(e) and "data.simulator.options.radios" in str(e)
    assert "unknown option 'radios'" in str(e) and "did you mean 'radius'?" in str(e)
    assert "valid: dt, points, radius" in str(e)
    ood = SIM_SPACE.replace("trajectories: {train: 2, val: 1}",
                            "trajectories: {train: 2, val: 1}, ood: {options: {size: 3}}")
    e = error(write(tmp_path, ood))
    assert "data.simulator.ood.options.size" in str(e)


@pytest.mark.parametrize("expr, says", [
    ("-cc * s.x", "unknown name 'cc' (did you mean 'c'?)"),
    ("-c * s.vv", "s.vv: 'vv' is not a state"),
    ("-c * u.g", "u.g: 'g' is not an input"),
    ("-c * torch.sinn(s.x)", "torch.sinn does not exist"),
])
def test_hypothesis_names_are_checked_without_running_them(tmp_path, expr, says):
    text = CSV_SPACE + textwrap.dedent(f"""\
        hypotheses:
          v:
            - {{name: ok, expr: "-k * s.x + c * u.f + math.pi * t + abs(torch.sin(s.v))",
               parameters: {{c: {{init: 0.5, bounds: [0, 1]}}}}}}
            - {{name: bad, expr: "{expr}", parameters: {{c: {{init: 0.5, bounds: [0, 1]}}}}}}
        prior: prior.py
        """)
    e = error(write(tmp_path, text, long_csv(), **{"prior.py": PRIOR}))
    assert "space.yaml:13:" in str(e) and "hypotheses.v.1.expr" in str(e)
    assert "hypothesis 'bad'" in str(e) and says in str(e), str(e)


@pytest.mark.parametrize("also, says, field", [
    ('{vv: "c * s.x"}', "also: 'vv' is not a state", "hypotheses.v.0.also"),
    ('{x: "cc * s.x"}', "unknown name 'cc'", "hypotheses.v.0.expr"),
])
def test_a_hypothesis_across_states_is_checked_in_every_state(tmp_path, also, says, field):
    text = CSV_SPACE + textwrap.dedent(f"""\
        hypotheses:
          v:
            - {{name: flux, expr: "-c * s.x", also: {also},
               parameters: {{c: {{init: 0.5, bounds: [0, 1]}}}}}}
        prior: prior.py
        """)
    e = error(write(tmp_path, text, long_csv(), **{"prior.py": PRIOR}))
    assert "hypothesis 'flux'" in str(e) and says in str(e) and field in str(e), str(e)


def test_a_hypothesis_across_states_is_one_choice_that_enters_each(tmp_path):
    """A flux out of one compartment into another (the SEIR lockdown, predation) is one
    hypothesis: the offline grammar toggles it as a whole, the file adds it to each state."""
    from hyarch.agent.offline import OfflineProposer

    space = load_space("seir_lockdown")
    proposer = OfflineProposer()
    grammar = proposer._grammar(space)
    assert [k for k in grammar if k.startswith("term:")] == ["term:S:lockdown_contacts"]
    source = proposer.render(space, {k: (True if k.startswith("term:") else "none")
                                     for k in grammar})
    assert 'd["S"] = d["S"] + (self.beta0 * self.eta * u.lockdown * s.S * s.I)' in source
    assert 'd["E"] = d["E"] + (-self.beta0 * self.eta * u.lockdown * s.S * s.I)' in source
    assert source.count("self.eta = self.parameter(") == 1
