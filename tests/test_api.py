"""The Python API (``hyarch.search``, ``hyarch.evaluate``, ``hyarch.leaderboard``) and the
one-line messages for an optional dependency that is missing anyway."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import yaml

import hyarch
from hyarch.agent.loop import SearchError
from hyarch.cli import main
from hyarch.spaces.errors import SpaceError
from tests.search_fixtures import FRICTION, write_space

QUICK = {"stage_iters": 5, "final_iters": 5, "restarts": 1}  # training settings: seconds


def _hide(monkeypatch, module: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *a, **kw):
        return None if name.split(".")[0] == module else real(name, *a, **kw)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_distill_without_pysindy_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    _hide(monkeypatch, "pysindy")
    rc = main(["distill", str(write_space(tmp_path)), str(FRICTION)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip().splitlines() == [
        "hyarch: distill needs PySINDy, which is not installed: pip install 'pysindy>=1.7,<3'"]


def test_review_serve_without_the_dashboard_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "run.yaml").write_text("space: x\n")
    _hide(monkeypatch, "optuna_dashboard")
    for flag in ("--serve", "--sync"):
        rc = main(["review", str(tmp_path), flag])
        err = capsys.readouterr().err
        assert rc == 2
        assert err.strip().splitlines() == [
            "hyarch: error: --serve needs optuna-dashboard, which is not installed: "
            "pip install 'optuna-dashboard>=0.15,<1'"]


def test_a_search_without_pysindy_says_so_at_start(tmp_path, monkeypatch):
    from hyarch.agent.loop import SearchConfig, Session

    _hide(monkeypatch, "pysindy")
    lines: list[str] = []
    cfg = SearchConfig(space=str(write_space(tmp_path)), run_dir=tmp_path / "run", budget=1)
    Session(cfg, progress=lines.append)._prepare()
    assert lines == ["note: no closure will be distilled in this run: PySINDy is not"
                     " installed (pip install 'pysindy>=1.7,<3')"]


@pytest.mark.parametrize("module", ["pysindy", "optuna_dashboard", "psycopg"])
def test_the_default_install_brings_the_whole_product(module):
    assert importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def space_path(tmp_path_factory):
    return write_space(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def pathless(space_path):
    """A Space made in memory: no file behind it."""
    return dataclasses.replace(hyarch.load_space(space_path), path=None)


def test_search_takes_a_loaded_space_and_reports_through_the_callback(space_path, tmp_path,
                                                                      capsys):
    lines: list[str] = []
    summary = hyarch.search(hyarch.load_space(space_path), run=tmp_path / "run", budget=2,
                            distill=False, overrides=QUICK, progress=lines.append)
    assert summary.candidates == 2 and summary.run_dir == tmp_path / "run"
    assert any(line.startswith("round 1:") for line in lines), lines
    assert capsys.readouterr().out == ""  # the callback got the lines, stdout none
    cfg = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert cfg["space"] == str(space_path.resolve()) and cfg["space_name"] == "tiny_search"
    assert [r["id"] for r in hyarch.leaderboard(tmp_path / "run")]


def test_search_takes_a_space_without_a_file_and_prints_nothing_by_default(pathless, tmp_path,
                                                                          capsys):
    summary = hyarch.search(pathless, run=tmp_path / "run", budget=2, distill=False,
                            overrides=QUICK)
    assert summary.candidates == 2
    assert capsys.readouterr().out == ""
    cfg = yaml.safe_load((tmp_path / "run" / "run.yaml").read_text())
    assert cfg["space"] is None and cfg["space_name"] == "tiny_search"
    run = hyarch.load_run(tmp_path / "run")
    assert len(hyarch.leaderboard(run)) == 2
    # resuming it needs the same space again (by name: there is no file to compare)
    other = dataclasses.replace(pathless, spec=pathless.spec.model_copy(update={"name": "x"}))
    with pytest.raises(SearchError, match="made on tiny_search, not x"):
        hyarch.search(other, run=tmp_path / "run", resume=True)


def test_search_takes_a_name_or_a_path_and_refuses_anything_else(space_path, tmp_path):
    with pytest.raises(TypeError, match="takes a Space"):
        hyarch.search({"name": "tiny_search"}, run=tmp_path / "a")
    with pytest.raises(SpaceError, match="no search space"):
        hyarch.search("no_such_space", run=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_evaluate_takes_a_space_without_a_file(pathless):
    rec = hyarch.evaluate(pathless, FRICTION, overrides=QUICK)
    assert rec["status"] == "ok", rec.get("reason")
