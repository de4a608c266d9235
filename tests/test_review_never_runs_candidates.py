"""Reports and review plot the predictions the evaluation stored; the reviewer's process
never runs candidate code (issue #12).

A finished run's code is replaced afterwards by code that would write a canary file the
moment it is imported; ``hyarch report``, ``hyarch show``, ``hyarch review`` (summary and one
candidate), the terminal review and the dashboard notes are then all made, with their
plots, and the canary never appears.
"""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
from rich.console import Console

import hyarch
import hyarch.cli
from tests.review_fixtures import demo_copy

FINISHED = ("c0000", "c0001", "c0002", "c0004")


def hostile(source: str, canary: Path) -> str:
    """``source`` with a first statement that writes ``canary``: whatever imports, loads or
    builds this model leaves the file behind. It passes the sandbox's static checks (they
    are a filter, not the boundary), and the class still satisfies the contract."""
    return ("import numpy\n"
            f"numpy.lib.format.open_memmap({str(canary)!r}, mode='w+', dtype='f8', shape=(1,))\n"
            + source)


def test_the_canary_would_fire(tmp_path):
    from hyarch.core.candidate import load_model_class
    from hyarch.report.demo import DRAG
    from hyarch.sandbox.checks import check_source

    src = hostile(DRAG, tmp_path / "CANARY")
    check_source(src)
    load_model_class(src)
    assert (tmp_path / "CANARY").exists()


def cli(monkeypatch, *argv: str) -> int:
    monkeypatch.setattr(hyarch.cli, "EXTRA_COMMANDS", [])
    return hyarch.cli.main(list(argv))


@pytest.fixture
def trapped(tmp_path_factory, monkeypatch):
    run = demo_copy(tmp_path_factory, "trapped")
    canary = run.path.parent / "CANARY"
    for cid in FINISHED:
        p = run.candidate_dir(cid) / "model.py"
        p.write_text(hostile(p.read_text(), canary))
        assert (run.candidate_dir(cid) / "predictions.npz").is_file()

    # belt and braces: loading a candidate in this process fails loudly
    import hyarch.core.candidate as candidate

    def refuse(*a, **k):
        raise AssertionError("the reviewer's process loaded candidate code")

    monkeypatch.setattr(candidate, "load_model_class", refuse)
    return run, canary


def test_report_show_and_review_never_run_candidate_code(trapped, monkeypatch, capsys):
    run, canary = trapped
    assert cli(monkeypatch, "report", str(run.path)) == 0
    text = (run.path / "report.html").read_text()
    # every best candidate's card has its trajectory plot, drawn from stored predictions
    cards = re.findall(r'<div class="card"><h3>(c\d+)', text)
    assert len(cards) == 3
    for cid in cards:
        assert f'alt="trajectories of {cid}"' in text, cid
    assert "no trajectory plot" not in text
    assert "0.01" in text  # a bound, from the stored parameter_specs
    assert not canary.exists()

    assert cli(monkeypatch, "show", str(run.path), "c0004") == 0
    assert cli(monkeypatch, "show", str(run.path)) == 0  # the best
    assert cli(monkeypatch, "show", str(run.path), "c0004", "--json") == 0
    assert not canary.exists()

    assert cli(monkeypatch, "review", str(run.path)) == 0  # the summary (no terminal)
    assert cli(monkeypatch, "review", str(run.path), "--candidate", "c0004") == 0
    out = capsys.readouterr().out
    assert "c0004" in out and "fit plot" in out
    assert (run.candidate_dir("c0004") / "fit.png").is_file()
    assert not canary.exists()

    from hyarch.review.terminal import TerminalReview

    lines = iter(["list", "show c0001", "show c0002", "done"])
    console = Console(record=True, file=io.StringIO(), width=120)
    TerminalReview(run, console, lambda prompt: next(lines)).loop()
    assert (run.candidate_dir("c0002") / "fit.png").is_file()
    assert not canary.exists()

    pytest.importorskip("optuna_dashboard")
    from hyarch.review.serve import prepare_dashboard

    assert prepare_dashboard(run, top=4)
    assert all((run.candidate_dir(c) / "fit.png").is_file() for c in FINISHED)
    assert not canary.exists()


def test_a_candidate_without_stored_predictions_is_shown_without_plots(trapped, monkeypatch,
                                                                       capsys):
    """Runs from before predictions were stored: tables yes, plots no, one line of why."""
    run, canary = trapped
    (run.candidate_dir("c0002") / "predictions.npz").unlink()
    from hyarch.report.html import build_report

    text = build_report(run).read_text()
    assert re.search(r"no trajectory plot: candidate c0002 has no stored predictions", text)
    assert 'alt="trajectories of c0004"' in text  # the others keep theirs

    assert cli(monkeypatch, "review", str(run.path), "--candidate", "c0002") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "fit plot: (none: candidate c0002 has no stored predictions" in out
    assert not (run.candidate_dir("c0002") / "fit.png").exists()

    pytest.importorskip("optuna_dashboard")
    from hyarch.report.summary import leaderboard
    from hyarch.review.serve import candidate_note, prepare_dashboard

    prepare_dashboard(run, top=2)
    row = next(r for r in leaderboard(run) if r.id == "c0002")
    note = candidate_note(run, row, None, "candidate c0002 has no stored predictions")
    assert "no fit plot: candidate c0002 has no stored predictions" in note
    assert not canary.exists()


def test_report_and_review_code_never_loads_candidates():
    """No function in hyarch/report or hyarch/review imports the candidate loader, calls
    ``load_model_class`` or ``torch.load``s weights (a static check of the source)."""
    root = Path(hyarch.__file__).parent
    for path in [*sorted((root / "report").glob("*.py")),
                 *sorted((root / "review").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "hyarch.core.candidate", path
            elif isinstance(node, ast.Import):
                assert all(a.name != "hyarch.core.candidate" for a in node.names), path
            elif isinstance(node, ast.Attribute):
                assert node.attr not in ("load_model_class", "make_factory"), path
            elif isinstance(node, ast.Name):
                assert node.id not in ("load_model_class", "make_factory"), path
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert not (node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                            and node.func.value.id == "torch"), path
