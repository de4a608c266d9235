"""The terminal review: leaderboard, candidate view, verdicts into reviews.jsonl, driven by a
script, through the CLI and through a real pseudo-terminal (pexpect)."""

from __future__ import annotations

import io
import shutil
import sys

import pytest
from rich.console import Console

import hyarch.cli
from hyarch.report.summary import Row, leaderboard, pareto_ids
from hyarch.review.terminal import (
    TerminalReview,
    declared_parameters,
    record_review,
    review_session,
)
from tests.review_fixtures import demo_copy


@pytest.fixture
def demo_run(tmp_path_factory):
    return demo_copy(tmp_path_factory, "review")


def _row(cid, val, share, neural, status="ok"):
    return Row(id=cid, index=0, proposer="x", round=1, parents=(), status=status,
               val_nmse=val, closure_share=share, n_neural=neural)


def test_pareto_front_of_three_objectives():
    rows = [_row("fit", 1e-4, 0.5, 1000),      # best fit
            _row("lean", 1e-2, 0.0, 0),         # no network at all
            _row("dominated", 1e-2, 0.1, 10),   # worse than lean everywhere
            _row("middle", 1e-3, 0.2, 100),     # a trade-off
            _row("broken", None, None, None, status="failed")]
    assert pareto_ids(rows) == {"fit", "lean", "middle"}


def test_leaderboard_ranks_finished_by_validation_error(demo_run):
    rows = leaderboard(demo_run)
    ranked = [r for r in rows if r.rank is not None]
    assert [r.rank for r in ranked] == list(range(1, len(ranked) + 1))
    vals = [r.val_nmse for r in ranked]
    assert vals == sorted(vals)
    assert {r.id for r in ranked} == {"c0000", "c0001", "c0002", "c0004"}
    failed = [r for r in rows if r.status == "failed"]
    assert [r.id for r in failed] == ["c0003"] and failed[0].rank is None
    # the friction model (no network, best fit) dominates every other candidate
    assert [r.id for r in rows if r.pareto] == ["c0002"]


def test_scripted_session_records_every_decision(demo_run):
    lines = iter(["list", "show c0001", "reject", "the closure does all the work",
                  "pin #1 keep the friction model", "note c0004 drag looks plausible",
                  "general try dissipation terms", "bogus", "done"])
    console = Console(record=True, width=120, force_terminal=False)
    recorded = TerminalReview(demo_run, console, lambda prompt: next(lines),
                              plots=False).loop()
    out = console.export_text()
    assert "c0001/model.py" in out and "diff to parent" in out
    assert "--- c0000/model.py" in out  # the diff is against the parent's code
    assert "physical parameters" in out and "0.01" in out and "1.09662" in out  # bound, truth
    assert "unknown command" in out
    assert len(recorded) == 4
    v = demo_run.verdicts()
    assert v["c0001"] == {"verdict": "rejected", "notes": ["the closure does all the work"]}
    assert v["c0002"] == {"verdict": "pinned", "notes": ["keep the friction model"]}
    assert v["c0004"] == {"notes": ["drag looks plausible"]}
    assert demo_run.general_notes() == ["try dissipation terms"]
    # the leaderboard now shows the verdicts
    rows = {r.id: r for r in leaderboard(demo_run)}
    assert rows["c0001"].verdict == "rejected"


def test_session_ends_on_end_of_input(demo_run):
    def eof(prompt):
        raise EOFError

    assert TerminalReview(demo_run, Console(file=io.StringIO()), eof).loop() == []


def test_review_session_never_blocks_without_a_terminal(demo_run, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("reject c0001 from stdin\n"))
    console = Console(record=True, file=io.StringIO())
    assert review_session(demo_run, console) == []
    assert demo_run.reviews() == []
    assert "not a terminal" in console.export_text()


def test_review_session_with_a_driver(demo_run):
    answers = iter(["approve c0002 good", "q"])
    got = review_session(demo_run, Console(file=io.StringIO()), lambda p: next(answers))
    assert [e["verdict"] for e in got] == ["approved"]


def test_record_review_rejects_bad_input(demo_run):
    with pytest.raises(ValueError, match="approved, rejected, pinned"):
        record_review(demo_run, "c0001", verdict="maybe")
    with pytest.raises(KeyError, match="c0000"):
        record_review(demo_run, "nope", verdict="rejected")
    with pytest.raises(ValueError, match="verdict, a note"):
        record_review(demo_run, "c0001", note="  ")


def cli(monkeypatch, *argv: str) -> int:
    """``hyarch ARGV`` in this process (main() registers the subcommands afresh each call)."""
    monkeypatch.setattr(hyarch.cli, "EXTRA_COMMANDS", [])
    return hyarch.cli.main(list(argv))


def test_cli_decides_without_a_terminal(demo_run, capsys, monkeypatch):
    rc = cli(monkeypatch, "review", str(demo_run.path), "--candidate", "c0001", "--reject",
             "--note", "network too big")
    assert rc == 0
    (entry,) = demo_run.reviews()
    assert (entry["candidate"], entry["verdict"], entry["note"], entry["source"]) == (
        "c0001", "rejected", "network too big", "cli")
    assert cli(monkeypatch, "review", str(demo_run.path), "--candidate", "zz", "--pin") == 2
    assert "no candidate 'zz'" in capsys.readouterr().err
    assert cli(monkeypatch, "review", str(demo_run.path), "--approve") == 2


def test_declared_parameters_read_without_running_the_code():
    src = ("class Model:\n    def setup(self):\n"
           "        self.k = self.parameter(init=0.5, bounds=(0.0, 2.0))\n"
           "        self.m = self.parameter(1.0, bounds=(0.1, 10.0), log=True)\n")
    assert declared_parameters(src) == {"k": {"init": 0.5, "lower": 0.0, "upper": 2.0},
                                        "m": {"init": 1.0, "lower": 0.1, "upper": 10.0}}
    assert declared_parameters("def (") == {}


def test_reject_with_a_note_through_the_real_cli(demo_run):
    pexpect = pytest.importorskip("pexpect")
    hyarch = shutil.which("hyarch")
    cmd, args = (hyarch, []) if hyarch else (sys.executable, ["-m", "hyarch"])
    child = pexpect.spawn(cmd, args + ["review", str(demo_run.path), "--no-plots"],
                          encoding="utf-8", timeout=60, dimensions=(50, 160),
                          env={"TERM": "dumb", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": ":".join(sys.path)})
    try:
        child.expect_exact("review> ")
        child.sendline("show c0001")
        child.expect_exact("review c0001> ")
        child.sendline("reject")
        child.expect_exact("why reject c0001?")
        child.sendline("the network absorbs the physics")
        child.expect_exact("c0001 rejected")
        child.expect_exact("review c0001> ")
        child.sendline("done")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    v = demo_run.verdicts()["c0001"]
    assert v == {"verdict": "rejected", "notes": ["the network absorbs the physics"]}
