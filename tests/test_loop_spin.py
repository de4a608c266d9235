"""The search loop cannot spin: a proposer that runs dry (only repeats, or nothing) ends the
search with a reason, whatever the number of workers and however large the budget; every
pass starts work, collects finished work or waits on it; rounds count proposal rounds.

The original failure: a space with two structures, ``--budget 6 --workers 2``, printed
``round 396`` for 12 minutes with no child running and a finished candidate never collected.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from hyarch.agent.base import Feedback, Proposal, Proposer
from hyarch.agent.loop import SearchConfig, Session
from hyarch.runs import Run
from hyarch.spaces.space import Space
from tests.search_fixtures import FRICTION, HYBRID, SPACE

MAX_PROGRESS_ROUNDS = 40  # a spinning loop prints 'round N' without end: fail instead
QUICK = {"stage_iters": 5, "final_iters": 5, "patience": 3, "restarts": 1, "max_seconds": 30}


class Spinning(AssertionError):
    pass


def _watch(lines: list[str]):
    """Progress callback that records lines and aborts a loop that spins."""
    def progress(msg: str) -> None:
        lines.append(msg)
        if sum(1 for x in lines if re.match(r"round \d+: proposing", x)) > MAX_PROGRESS_ROUNDS:
            raise Spinning("the search loop keeps proposing rounds: " + " | ".join(lines[-6:]))
    return progress


def _space(tmp_path: Path, hypotheses: bool = True) -> Path:
    text = SPACE
    if not hypotheses:  # two structures only: the prior alone, and the prior plus a closure
        text = re.sub(r"hypotheses:\n(?:  .*\n|    .*\n)+", "", text)
        assert "hypotheses" not in text
    path = tmp_path / "tiny_search.yaml"
    path.write_text(text)
    return path


class RunsDry(Proposer):
    """Two real candidates, then only repeats of them (``mode='repeat'``) or nothing at all
    (``mode='empty'``). It never says it is exhausted: the loop's patience must end it."""

    name = "runs-dry"

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls = 0
        self.sources = [FRICTION.read_text(), HYBRID]
        self.given = 0

    def propose(self, space: Space, feedback: Feedback, n: int) -> list[Proposal]:
        self.calls += 1
        out = []
        for _ in range(n):
            if self.given < len(self.sources):
                out.append(Proposal(self.sources[self.given], self.name))
                self.given += 1
            elif self.mode == "repeat":
                # the same code, reformatted: still a duplicate (hash ignores comments)
                out.append(Proposal(self.sources[self.calls % 2] + "\n# again\n", self.name))
        return out


def _search(tmp_path, space, proposer=None, **kw) -> tuple:
    lines: list[str] = []
    cfg = SearchConfig(space=str(space), run_dir=tmp_path / "run", distill=False,
                       overrides=QUICK, **kw)
    session = Session(cfg, proposer=proposer, progress=_watch(lines))
    t0 = time.monotonic()
    summary = session.run_search()
    return summary, lines, time.monotonic() - t0


def _rounds(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for x in lines if (m := re.match(r"round (\d+): proposing", x))]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_exhausted_offline_grammar_ends_the_search_with_its_reason(tmp_path, workers):
    """A budget larger than the grammar (two structures, budget 6)."""
    space = _space(tmp_path, hypotheses=False)
    summary, lines, seconds = _search(tmp_path, space, budget=6, per_round=4, workers=workers)
    assert "no untried structure left: 2 distinct candidates" in summary.stopped, lines
    run = Run(tmp_path / "run")
    recs = list(run.candidates())
    assert len(recs) == 2 and all(r.finished for r in recs), lines  # nothing left in flight
    assert summary.candidates == 2 and summary.pending == 0
    rounds = _rounds(lines)
    assert rounds == list(range(1, len(rounds) + 1)), lines  # proposal rounds, counted 1, 2, ..
    assert len(rounds) <= 2 + 2, lines  # one more round after each finished structure
    assert seconds < 60, (seconds, lines)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_proposer_that_only_repeats_ends_on_patience(tmp_path, workers):
    space = _space(tmp_path)
    proposer = RunsDry("repeat")
    summary, lines, seconds = _search(tmp_path, space, proposer, budget=40, per_round=2,
                                      workers=workers, patience_rounds=3)
    assert summary.stopped.startswith("no new proposals in 3 rounds"), (summary.stopped, lines)
    run = Run(tmp_path / "run")
    recs = list(run.candidates())
    assert all(r.finished for r in recs), lines
    trained = [r for r in recs if "duplicate of" not in str((r.result or {}).get("reason"))]
    assert len(trained) == 2, lines
    # the repeats are recorded as duplicates (a proposer is told), but only a few rounds' worth
    assert len(recs) <= 2 + 3 * 2, [r.id for r in recs]
    assert proposer.calls <= 6, lines
    assert seconds < 60, (seconds, lines)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_proposer_that_returns_nothing_waits_for_work_in_flight(tmp_path, workers):
    """The exact spin: nothing new to start while a candidate is in flight. The loop must
    wait for it, collect it, and stop once nothing is in flight."""
    space = _space(tmp_path)
    proposer = RunsDry("empty")
    summary, lines, seconds = _search(tmp_path, space, proposer, budget=6, per_round=4,
                                      workers=workers, patience_rounds=2)
    assert summary.stopped.startswith("no new proposals"), (summary.stopped, lines)
    recs = list(Run(tmp_path / "run").candidates())
    assert len(recs) == 2 and all(r.finished for r in recs), lines
    assert summary.candidates == 2 and summary.pending == 0
    assert proposer.calls <= 4, (proposer.calls, lines)
    # the status line counts finished candidates, not those in flight
    for x in lines:
        m = re.match(r"round \d+: (\d+)/6 candidates done \((\d+) ok, (\d+) failed", x)
        if m:
            assert int(m.group(1)) == int(m.group(2)) + int(m.group(3)), x
    assert seconds < 60, (seconds, lines)
