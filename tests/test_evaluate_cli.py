"""``hyarch evaluate SPACE FILE --json``: exit codes and the JSON record's fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hyarch.evaluate import evaluate_source

HYBRID = textwrap.dedent("""\
    import torch
    from hyarch import Closure, HybridModel


    class Model(HybridModel):
        def setup(self):
            self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
            self.correction = Closure(inputs=("theta", "omega"), hidden=(8,))

        def derivatives(self, t, s, u):
            return {
                "theta": s.omega,
                "omega": -self.omega0_sq * torch.sin(s.theta)
                + self.correction(s.theta, s.omega),
            }
    """)

MISSING_STATE = HYBRID.replace('"theta": s.omega,\n', "")

SPLITS = ("train", "val", "test", "ood")
FIT_KEYS = {"mse", "nmse", "log10_mse", "per_state"}


def check_ok_record(res):
    assert res["status"] == "ok" and res["reason"] is None
    assert set(res["parameters"]) == {"omega0_sq"}
    assert 0.01 <= res["parameters"]["omega0_sq"] <= 10.0
    # alpha is known to the space but not a parameter of this candidate: no error for it
    assert set(res["param_rel_error"]) == {"omega0_sq"}
    err = abs(res["parameters"]["omega0_sq"] - 1.0966227112321507) / 1.0966227112321507
    assert res["param_rel_error"]["omega0_sq"] == pytest.approx(err, rel=1e-6)
    for part in ("metrics", "reduced"):
        # every split of the space, and the selection part of train that training stops on
        assert set(res[part]) == set(SPLITS) | {"selection"}
        for split in SPLITS:
            m = res[part][split]
            assert FIT_KEYS <= set(m)
            assert set(m["per_state"]) == {"theta", "omega"}
            assert m["mse"] > 0 and m["log10_mse"] == pytest.approx(__import__("math").log10(
                m["mse"]))
    assert set(res["regularizers"]) >= {"closure_norm", "reduced_fit", "decorrelation",
                                        "sensitivity"}
    assert all(isinstance(v, float) for k, v in res["regularizers"].items() if k != "errors")
    assert 0.0 <= res["closure_share"]
    assert res["n_neural_params"] == (2 * 8 + 8) + (8 + 1)
    assert res["seconds"] > 0


def test_evaluate_source_record(tiny_space):
    res = evaluate_source(tiny_space, HYBRID, filename="hybrid.py").result
    check_ok_record(res)
    json.dumps(res, allow_nan=False)  # strict JSON: no NaN or infinity

    # the console view shows every split, the parameter with its error, and the scores
    from rich.console import Console

    from hyarch.report.console import print_evaluation

    console = Console(record=True, width=120)
    print_evaluation(res, title="hybrid", console=console)
    text = console.export_text()
    for word in ("train", "val", "test", "ood", "omega0_sq", "closure share", "closure_norm"):
        assert word in text
    assert f"{100 * res['param_rel_error']['omega0_sq']:.3f}%" in text


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hyarch", "evaluate", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


def test_cli_good_candidate_exits_0_with_the_json(tiny_space_path, tmp_path):
    file = tmp_path / "hybrid.py"
    file.write_text(HYBRID)
    p = run_cli(tiny_space_path, file, "--json", "--device", "cpu")
    assert p.returncode == 0, p.stderr
    check_ok_record(json.loads(p.stdout))


def test_cli_failed_candidate_exits_1_and_still_prints_the_json(tiny_space_path, tmp_path):
    file = tmp_path / "broken.py"
    file.write_text(MISSING_STATE)
    p = run_cli(tiny_space_path, file, "--json")
    assert p.returncode == 1, p.stderr
    res = json.loads(p.stdout)
    assert res["status"] == "failed"
    assert "missing derivative" in res["reason"] and "'theta'" in res["reason"]
    for key in ("parameters", "param_rel_error", "metrics", "reduced", "regularizers",
                "closure_share", "n_neural_params", "seconds"):
        assert key in res


def test_cli_failed_candidate_without_json_says_why(tiny_space_path, tmp_path, capsys):
    from hyarch.cli import main

    file = tmp_path / "broken.py"
    file.write_text(MISSING_STATE)
    assert main(["evaluate", str(tiny_space_path), str(file)]) == 1
    out = capsys.readouterr().out
    assert "failed" in out and "missing derivative" in out


def test_cli_bad_space_path_exits_2(tmp_path):
    file = tmp_path / "hybrid.py"
    file.write_text(HYBRID)
    p = run_cli(tmp_path / "nowhere.yaml", file, "--json")
    assert p.returncode == 2
    assert "nowhere.yaml" in p.stderr and p.stdout == ""


def test_cli_missing_file_or_invalid_space_exits_2(tiny_space_path, tmp_path, capsys):
    from hyarch.cli import main

    assert main(["evaluate", str(tiny_space_path), str(tmp_path / "missing.py"), "--json"]) == 2
    io = capsys.readouterr()
    assert "missing.py" in io.err and io.out == ""

    file = tmp_path / "hybrid.py"
    file.write_text(HYBRID)
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_space_path.read_text().replace("name: tiny_pendulum", "nme: x"))
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(bad), str(file), "--json"])
    assert e.value.code == 2
    io = capsys.readouterr()
    assert "bad.yaml" in io.err and io.out == ""

    with pytest.raises(SystemExit) as e:
        main(["evaluate", "no_such_space", str(file)])
    assert e.value.code == 2
    assert "damped_pendulum" in capsys.readouterr().err  # the built-in names are listed


def test_public_evaluate_is_callable_whatever_was_imported_first(tiny_space_path, tmp_path):
    import hyarch
    import hyarch.evaluate  # rebinds the package attribute to the module

    file = tmp_path / "hybrid.py"
    file.write_text(HYBRID)
    from hyarch import evaluate

    res = evaluate(tiny_space_path, file)
    assert res["status"] == "ok"
    assert callable(hyarch.evaluate)


def test_a_bad_training_setup_is_bad_usage_not_a_failed_candidate(tiny_space_path, tmp_path,
                                                                   tiny_space, capsys):
    from hyarch.cli import main

    file = tmp_path / "hybrid.py"
    file.write_text(HYBRID)
    bad = tmp_path / "bad_method.yaml"
    bad.write_text(tiny_space_path.read_text().replace("  windows: [2, 4]",
                                                       "  method: rk5\n  windows: [2, 4]"))
    with pytest.raises(SystemExit) as e:
        main(["evaluate", str(bad), str(file), "--json"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "training.method" in err and "'rk5'" in err and "dopri5" in err
    with pytest.raises(ValueError, match="unknown solver"):
        evaluate_source(tiny_space, HYBRID, overrides={"method": "rk5"})
