"""The Python API (``hyarch.search``, ``hyarch.evaluate``, ``hyarch.leaderboard``) and the
one-line messages for an optional dependency that is missing anyway."""

from __future__ import annotations

import importlib.util

import pytest

from hyarch.cli import main
from tests.search_fixtures import FRICTION, write_space


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


@pytest.mark.parametrize("module", ["pysindy", "optuna_dashboard", "psycopg"])
def test_the_default_install_brings_the_whole_product(module):
    assert importlib.util.find_spec(module) is not None
