"""Long commands show progress (issue #14): the sandboxed child reports its training steps
on a pipe of their own, the parent reads them defensively and shows them on stderr."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading

import pytest

from hyarch.core.progress import PHASES, Schedule, TrainingProgress, remaining_seconds
from hyarch.report.progress import MAX_LINES, ProgressDisplay
from hyarch.sandbox.protocol import MAX_PROGRESS_BYTES, encode_progress
from hyarch.sandbox.runner import Limits, _read_progress, run_candidate
from tests.search_fixtures import FRICTION, write_space

GOOD = FRICTION.read_text()


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    return write_space(tmp_path_factory.mktemp("progress"))


@pytest.fixture(scope="module")
def space(space_file):
    from hyarch.spaces.loader import load_space

    return load_space(space_file)


@pytest.fixture(scope="module")
def clean(space):
    events: list[TrainingProgress] = []
    res = run_candidate(space, GOOD, limits=Limits(timeout=300), progress=events.append)
    return res, events


# -- the schedule: exact counts --------------------------------------------------------------


def test_schedule_plans_the_caps_and_gives_back_what_a_phase_did_not_use():
    seen: list[TrainingProgress] = []
    s = Schedule(seen.append, min_interval=0.0)
    s.expect([("windows", 10), ("windows", 10), ("full horizon", 100)])
    s.begin("windows", 10)
    s.step(3)  # the first stage plateaus after 3 of its 10 steps
    assert s.planned == 3 + 7 + 10 + 100
    s.begin("windows", 10)
    assert s.planned == 3 + 10 + 100
    s.step(10)
    s.begin("full horizon", 100)
    s.step(5)  # early stopping after 5
    assert s.planned == 18 + 95
    s.end()
    assert seen[-1] == TrainingProgress("full horizon", 18, 18)
    assert [e.phase for e in seen].index("full horizon") > 0
    # a path that changes (a solver that failed) replaces what is expected
    s2 = Schedule(None)
    s2.expect([("windows", 50), ("full horizon", 50)])
    s2.begin("windows", 50)
    s2.step(2)
    s2.expect([("windows", 300), ("l-bfgs", 200)])
    assert s2.planned == 2 + 48 + 500


def test_remaining_time_is_the_rate_so_far_times_the_steps_left():
    assert remaining_seconds(10, 30, 5.0) == pytest.approx(10.0)
    assert remaining_seconds(0, 30, 5.0) is None  # no rate before the first step
    assert remaining_seconds(30, 30, 5.0) == 0.0


# -- a real sandboxed evaluation ------------------------------------------------------------


def test_a_sandboxed_evaluation_reports_its_phases_in_order(clean):
    res, events = clean
    assert res.result["status"] == "ok", res.result["reason"]
    assert res.result["isolation"] != "none (in process)"
    assert events, "no progress report reached the parent"
    assert all(e.phase in PHASES for e in events)
    training = [e for e in events if e.phase in ("windows", "full horizon", "l-bfgs")]
    first = [e for e in training if e.fit == 1]
    phases = [e.phase for e in first]
    assert phases[0] == "windows" and "full horizon" in phases
    assert phases.index("full horizon") > max(i for i, p in enumerate(phases) if p == "windows")
    # steps only go up within a fit, never past the plan, and the fit ends on its plan
    for fit in {e.fit for e in training}:
        done = [e.done for e in training if e.fit == fit]
        assert done == sorted(done)
        assert all(e.done <= e.planned for e in training if e.fit == fit)
        last = [e for e in training if e.fit == fit][-1]
        assert last.done == last.planned > 0
    # a refit (fit 2) comes after the first fit, and predicting after all training
    fits = [e.fit for e in training]
    assert fits == sorted(fits)
    # then predicting, split by split (train, val, test, ood, selection), after all training
    predicting = [e for e in events if e.phase == "predicting"]
    assert [(e.done, e.planned) for e in predicting] == [(i, 5) for i in range(5)]
    assert events[-len(predicting):] == predicting


# A candidate that writes to the progress pipe (the non-blocking pipe among its descriptors):
# garbage, an over-long line, forged reports and a forged result, then LINES lines of 101
# bytes (30000: 3 MB, more than the parent reads); then it trains as GOOD does.
FLOOD = '''import torch

B = torch.sys.modules["builtins"]
SENT = []


def flood():
    o = torch.os
    st = B.__import__("stat")
    junk = [b"\\xff\\xfe not json\\n", b"{\\"phase\\": \\"windows\\"\\n", b"[1, 2]\\n",
            b"{" * 200 + b"\\n", b"x" * 100_000 + b"\\n",
            b'{"phase": "windows", "done": 777, "planned": 3000000000000, "fit": 1}\\n',
            b'{"phase": "windows", "done": -1, "planned": 7777, "fit": 1}\\n',
            b'{"phase": "windows", "done": true, "planned": 7777, "fit": 1}\\n',
            b'{"phase": "\\\\u001b[31mowned", "done": 777, "planned": 7777, "fit": 1}\\n',
            b'{"phase": "windows", "done": 777, "planned": 7777, "fit": 1, "status": "ok"}\\n',
            b'{"status": "ok", "reason": null, "metrics": {"val": {"nmse": 0.0}}}\\n',
            b"HYR1" + bytes(8) + b"{}"]
    for fd in range(3, 256):
        try:
            if not st.S_ISFIFO(o.fstat(fd).st_mode) or o.get_blocking(fd):
                continue
            o.set_blocking(fd, True)
            for j in junk + [b"0123456789" * 10 + b"\\n"] * LINES:
                o.write(fd, j)
                SENT.append(len(j))
        except OSError:
            pass


'''


@pytest.mark.parametrize("lines", [0, 30000], ids=["garbage", "flood"])
def test_a_child_writing_garbage_or_floods_on_the_progress_pipe_gets_its_own_result(
        space, clean, lines):
    source = GOOD.replace("class Model(", "flood()\n\n\nclass Model(", 1)
    source = source.replace("import torch\n", FLOOD.replace("LINES", str(lines)), 1)
    events: list[TrainingProgress] = []
    res = run_candidate(space, source, limits=Limits(timeout=300), progress=events.append)
    assert res.result["status"] == "ok", res.result["reason"]
    # the parent's own scores, as without the flood: nothing written there reached them
    want = clean[0].result
    assert res.result["parameters"] == pytest.approx(want["parameters"], rel=1e-9)
    assert res.result["metrics"]["val"]["nmse"] == pytest.approx(want["metrics"]["val"]["nmse"],
                                                                 rel=1e-9)
    # every report that got through is a well-formed one; none of the forged ones did
    assert all(e.phase in PHASES and 0 <= e.done <= e.planned <= 10**9 for e in events)
    assert not any(777 in (e.done, e.planned) or e.planned == 7777 for e in events)
    if not lines:  # garbage alone: the child's own reports still come through after it
        assert [e.phase for e in events][-1] == "predicting"
        assert {"windows", "full horizon"} <= {e.phase for e in events}
    else:  # the parent stopped reading at its cap, long before training began
        assert not events


def _pipe_with(chunks: list[bytes]) -> int:
    r, w = os.pipe()

    def write():
        try:  # (the reader closes its end at its cap)
            with os.fdopen(w, "wb") as fh:
                for c in chunks:
                    fh.write(c)
        except BrokenPipeError:
            pass

    threading.Thread(target=write, daemon=True).start()
    return r


def test_the_parent_keeps_only_well_formed_reports_in_order():
    good = [TrainingProgress("windows", 0, 40), TrainingProgress("windows", 7, 33),
            TrainingProgress("full horizon", 9, 20, fit=2), TrainingProgress("predicting")]
    chunks = [encode_progress(good[0]), b"garbage\n", b"y" * 10_000,  # a line cut in two
              b"y" * 10_000 + b'{"phase": "windows", "done": 1, "planned": 2, "fit": 1}\n',
              encode_progress(good[1])[:10], encode_progress(good[1])[10:],
              b'{"phase": "windows", "done": 1.5, "planned": 2, "fit": 1}\n',
              b'{"phase": "windows", "done": 1, "planned": 2, "fit": 3}\n',
              b'{"phase": "other", "done": 1, "planned": 2, "fit": 1}\n',
              encode_progress(good[2]), b"\n\n", encode_progress(good[3])]
    seen: list[TrainingProgress] = []
    _read_progress(_pipe_with(chunks), seen.append, threading.Event())
    assert seen == good


def test_the_parent_stops_reading_a_flood_and_a_failing_display_is_dropped():
    line = encode_progress(TrainingProgress("windows", 1, 2))
    n = 3 * MAX_PROGRESS_BYTES // len(line)
    calls = []

    def broken(event):
        calls.append(event)
        raise RuntimeError("a display bug")

    done = threading.Event()
    reader = threading.Thread(target=lambda: (_read_progress(_pipe_with([line] * n), broken,
                                                             threading.Event()), done.set()))
    reader.start()
    reader.join(timeout=60)  # bounded: a reader that did not stop at the cap is the failure
    assert done.is_set()
    assert len(calls) == 1


# -- what the user sees ------------------------------------------------------------------


def test_plain_lines_name_the_phase_the_steps_and_the_time():
    out = io.StringIO()
    with ProgressDisplay(stream=out, live=False) as show:
        with show.task("neural_ode", kind="baseline", index=2, total=3) as task:
            task(TrainingProgress("windows", 0, 400))
            task(TrainingProgress("windows", 10, 390))  # same phase: no new line
            task(TrainingProgress("full horizon", 100, 300))
            task.finish("ok")
    lines = out.getvalue().splitlines()
    assert lines[0] == "hyarch: baseline 2/3 neural_ode: starting"
    assert lines[1].startswith("hyarch: baseline 2/3 neural_ode: windows, step 0 of at most 400")
    assert "full horizon, step 100 of at most 300" in lines[2] and "left" in lines[2]
    assert lines[3].startswith("hyarch: baseline 2/3 neural_ode: ok in ")
    assert len(lines) == 4


def test_a_child_switching_phases_cannot_flood_the_log():
    out = io.StringIO()
    with ProgressDisplay(stream=out, live=False) as show, show.task("x") as task:
        for i in range(1000):
            task(TrainingProgress(PHASES[i % 2], i, 2000))
    assert len(out.getvalue().splitlines()) == MAX_LINES + 1  # and the closing line


def test_the_live_display_shows_phase_steps_and_estimate():
    out = io.StringIO()
    with ProgressDisplay(stream=out, live=True) as show:
        with show.task("prior", kind="baseline", index=1, total=1) as task:
            task(TrainingProgress("windows", 0, 100))
            task(TrainingProgress("full horizon", 50, 100))
            task.finish("ok")
    text = out.getvalue()
    assert "baseline 1/1 prior: ok" in text and "in 0 s" in text


def test_baselines_piped_prints_progress_lines_to_stderr(space_file):
    proc = subprocess.run([sys.executable, "-m", "hyarch", "baselines", str(space_file),
                           "--quick", "--only", "prior", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["prior"]["status"] == "ok"  # stdout stays the record
    lines = [x for x in proc.stderr.splitlines() if x.startswith("hyarch: baseline 1/1 prior:")]
    assert lines[0].endswith("prior: starting")
    assert any(": windows, step 0 of at most " in x for x in lines)
    assert any(": full horizon, step " in x for x in lines)
    assert lines[-1].startswith("hyarch: baseline 1/1 prior: ok in ")
