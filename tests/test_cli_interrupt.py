"""Ctrl-C on ``hyarch search``: the children are killed, the command exits 130 within a few
seconds, and the summary names the candidates that were in flight (evaluated again on
``--resume``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.search_fixtures import SPACE

ROOT = Path(__file__).resolve().parents[1]
STOP_WITHIN_S = 10.0


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (the sandboxed evaluations)."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                     if x.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return " Z " not in state + " " and "zombie" not in state


def _poll(cond, deadline: float, step: float = 0.1) -> bool:
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)  # a condition in another process: nothing to wait on but time
    return cond()


def _as_from_a_terminal() -> None:
    """Ctrl-C's default disposition, as a terminal gives it. A test run started in the
    background by a non-interactive shell (`cmd &`) inherits SIGINT ignored, and Python then
    never raises KeyboardInterrupt: the search would rightly ignore the Ctrl-C too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_kills_the_children_and_exits_130(tmp_path):
    slow = (SPACE.replace("stage_iters: 15", "stage_iters: 100000")
            .replace("final_iters: 20", "final_iters: 100000")
            .replace("max_seconds: 60", "max_seconds: 900"))
    space = tmp_path / "slow.yaml"
    space.write_text(slow)
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hyarch", "search", str(space), "--run", str(run_dir),
         "--budget", "6", "--per-round", "2", "--workers", "2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True, preexec_fn=_as_from_a_terminal)
    try:
        # both evaluations running: two sandboxed children of the search process
        started = _poll(lambda: len(_children(proc.pid)) >= 2 or proc.poll() is not None,
                        time.monotonic() + 180)
        kids = _children(proc.pid)
        assert started and proc.poll() is None and kids, proc.communicate(timeout=30)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, out[-2000:], err[-2000:])
    assert took < STOP_WITHIN_S, (took, out[-2000:])
    assert "interrupted" in out and "in flight when interrupted: c0001, c0002" in out, out
    assert "--resume" in out
    gone = _poll(lambda: not any(_alive(k) for k in kids), time.monotonic() + 5)
    assert gone, [k for k in kids if _alive(k)]
