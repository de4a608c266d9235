"""Untrusted candidates: everything they do wrong becomes a failed result with a reason."""

from __future__ import annotations

import json
import os

import pytest

from hyarch.sandbox.checks import CheckError, check_source, code_hash
from hyarch.sandbox.runner import Limits, clean_env, run_candidate
from tests.search_fixtures import FRICTION, write_space

GOOD = FRICTION.read_text()


def _with_setup(line: str) -> str:
    return GOOD.replace("def setup(self):", f"def setup(self):\n        {line}")


@pytest.fixture(scope="module")
def space_path(tmp_path_factory):
    return write_space(tmp_path_factory.mktemp("sandbox"))


@pytest.mark.parametrize("source, reason", [
    ("import os\n" + GOOD, "import of 'os' is not allowed"),
    ("import subprocess\n" + GOOD, "import of 'subprocess' is not allowed"),
    (GOOD.replace("class Model(", "class Model(:"), "syntax error"),
    (_with_setup("open('/etc/passwd')"), "open() is not allowed"),
    (_with_setup("torch.save(1, 'x')"), ".save is not allowed"),
    (GOOD.replace("class Model(", "class Other("), "must define `class Model"),
    ("", "empty"),
    (GOOD + "\n\nclass Model(HybridModel):\n    pass\n", "class Model is defined 2 times"),
])
def test_static_checks_reject_with_reason(source, reason):
    with pytest.raises(CheckError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        check_source(source)


CLOSURE = """import torch
from hyarch import Closure, HybridModel


class Model(HybridModel):
    def setup(self):
        self.k = self.parameter(init=1.0, bounds=(0.1, 10.0))
        self.net = Closure(inputs=("x", "v"), hidden=(8,))

    def derivatives(self, t, s, u):
        return {"x": s.v, "v": -self.k * s.x + self.net(CALL)}
"""


@pytest.mark.parametrize("call, ok", [
    ("s.x, s.v", True), ('s["x"], s.v', True),
    ("s.x * 2, s.v", True),  # computed arguments: only their shapes are checked, at run time
    ("s.v, s.x", False), ("s.x", False), ("s.x, s.v, s.v", False)])
def test_closures_are_called_with_their_inputs_in_the_declared_order(call, ok):
    source = CLOSURE.replace("CALL", call)
    if ok:
        check_source(source)
    else:
        with pytest.raises(CheckError, match=r"self.net is declared with inputs \('x', 'v'\)"):
            check_source(source)


def test_code_hash_ignores_comments_and_docstrings():
    edited = GOOD.replace('"""The true structure', '"""Another docstring') + "\n# a comment\n"
    assert code_hash(edited) == code_hash(GOOD)
    assert code_hash(GOOD.replace("0.5", "0.6")) != code_hash(GOOD)


def test_environment_is_an_allow_list(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("HF_TOKEN", "tok")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@h/db")
    monkeypatch.setenv("SOMETHING_HARMLESS_LOOKING", "x")
    env = clean_env(1, "/tmp")
    assert not {"OPENAI_API_KEY", "HF_TOKEN", "DATABASE_URL", "SOMETHING_HARMLESS_LOOKING"} & set(env)
    assert env["OMP_NUM_THREADS"] == "1" and env["HOME"] == "/tmp"


@pytest.mark.parametrize("source, reason", [
    (_with_setup("raise ValueError('boom')"), "ValueError at line"),
    (GOOD.replace("- self.alpha * s.omega", "- self.alpha * s.omega * float('nan')"),
     "NaN or infinite"),
    (GOOD.replace('"theta": s.omega,', ""), "missing derivative for state(s) 'theta'"),
    (GOOD.replace('"theta": s.omega,', '"theta": torch.stack([s.omega, s.omega], -1),'), "has shape"),
    # passes the static checks; the operating system refuses the read (no /etc in the view)
    ("import numpy\n" + _with_setup("numpy.lib.npyio.DataSource(None).open('/etc/hostname')"),
     "FileNotFoundError"),
])
def test_runtime_failures_become_failed_candidates(space_path, source, reason):
    res = run_candidate(space_path, source, limits=Limits(timeout=120))
    assert res.result["status"] == "failed"
    assert reason in res.result["reason"], res.result["reason"]


def test_hang_is_killed_at_the_timeout(space_path):
    src = GOOD.replace("def derivatives(self, t, s, u):",
                       "def derivatives(self, t, s, u):\n        while True:\n            pass")
    res = run_candidate(space_path, src, limits=Limits(timeout=8))
    assert res.result["status"] == "failed"
    assert "timed out after 8 s" in res.result["reason"]
    assert res.seconds < 30


def test_memory_limit_fails_the_candidate(space_path):
    src = _with_setup("self.big = torch.ones(3000, 1000, 1000)")  # 12 GB
    res = run_candidate(space_path, src, limits=Limits(timeout=60, memory_mb=3072))
    assert res.result["status"] == "failed"
    assert "memory" in res.result["reason"]


def test_good_candidate_returns_result_and_weights(space_path):
    res = run_candidate(space_path, GOOD, limits=Limits(timeout=120))
    assert res.result["status"] == "ok", res.result["reason"]
    assert set(res.result["parameters"]) == {"omega0_sq", "alpha"}
    assert res.weights and len(res.weights) > 100



def test_a_split_that_cannot_be_predicted_does_not_fail_the_candidate(space_path):
    # the model raises at the start of a trajectory beyond radius 2.5 (this space's OOD
    # starts are at 2.58 and 2.80; every other split's start is inside 2.3): the OOD
    # prediction fails, the candidate is still ranked on its validation split, and the
    # record says why its OOD split has no score
    src = GOOD.replace("def derivatives(self, t, s, u):", """def derivatives(self, t, s, u):
        if float(t.max()) == 0.0 and float((s.theta ** 2 + s.omega ** 2).max()) > 2.5 ** 2:
            raise ValueError("outside the domain this model knows")""")
    res = run_candidate(space_path, src, limits=Limits(timeout=120))
    assert res.result["status"] == "ok", res.result["reason"]
    assert res.result["metrics"]["val"]["nmse"] is not None
    assert res.result["metrics"]["ood"]["diverged"] and res.result["metrics"]["ood"]["nmse"] is None
    assert "outside the domain" in res.result["integration"]["ood"]["failed"]
    assert "failed" not in res.result["integration"]["test"]


# -- the operating system's layers, with and without bubblewrap ---------------------------
# Each attack passes the static checks (they are a filter, not the boundary) and reports
# what the kernel said in its failure reason, so that no training is needed.
MODES = {
    "namespaces+landlock+seccomp": {},
    "landlock+seccomp": {"HYARCH_SANDBOX_NO_BWRAP": "1"},
    "seccomp only": {"HYARCH_SANDBOX_NO_BWRAP": "1", "HYARCH_SANDBOX_NO_LANDLOCK": "1"},
}


@pytest.fixture(params=list(MODES))
def mode(request, monkeypatch):
    from hyarch.sandbox import isolation

    for k in ("HYARCH_SANDBOX_NO_BWRAP", "HYARCH_SANDBOX_NO_LANDLOCK", "HYARCH_SANDBOX_NO_SECCOMP"):
        monkeypatch.delenv(k, raising=False)
    for k, v in MODES[request.param].items():
        monkeypatch.setenv(k, v)
    isolation.detect.cache_clear()
    caps = isolation.detect()
    if request.param.startswith("namespaces") and not caps.bwrap:
        pytest.skip("bubblewrap is not available here")
    if "landlock" in request.param and not caps.landlock_abi:
        pytest.skip("this kernel has no Landlock")
    yield request.param
    isolation.detect.cache_clear()


def _report(expr: str) -> str:
    """A candidate whose setup() evaluates ``expr`` and raises with what it got."""
    return _with_setup(f"raise RuntimeError('G' + 'OT ' + repr({expr}))")


def test_process_start_is_refused(space_path, tmp_path, mode):
    canary = tmp_path / "spawned"
    src = _report(f"torch.os.posix_spawn('/bin/sh', ['/bin/sh', '-c', 'touch {canary}'], {{}})")
    res = run_candidate(space_path, src, limits=Limits(timeout=60))
    assert res.result["status"] == "failed"
    assert "GOT" not in res.result["reason"], res.result["reason"]  # posix_spawn raised
    assert not canary.exists()


def test_file_write_outside_scratch_is_refused(space_path, tmp_path, mode):
    target = tmp_path / "written"
    src = _report(f"torch.os.open({str(target)!r}, torch.os.O_WRONLY | torch.os.O_CREAT)")
    res = run_candidate(space_path, src, limits=Limits(timeout=60))
    if mode != "seccomp only":  # without namespaces or Landlock, files are not protected
        assert res.result["status"] == "failed" and "GOT" not in res.result["reason"]
        assert not target.exists()


def test_parent_environment_is_out_of_reach(space_path, monkeypatch, mode):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-0123456789")
    src = _report("torch.os.read(torch.os.open('/proc/%d/environ' % torch.os.getppid(),"
                  " torch.os.O_RDONLY), 100000)")
    res = run_candidate(space_path, src, limits=Limits(timeout=60))
    assert "sk-canary-0123456789" not in json.dumps(res.result) + res.stderr_tail
    if mode != "seccomp only":
        assert "GOT" not in res.result["reason"], res.result["reason"][:300]


def test_sockets_and_signals_to_others_are_refused(space_path, mode):
    libc = "torch.ctypes.CDLL(None, use_errno=True)"
    src = _report(f"({libc}.socket(2, 1, 0), {libc}.kill(torch.os.getppid(), 0),"
                  f" {libc}.kill(1, 0), {libc}['fo' + 'rk']())")
    res = run_candidate(space_path, src, limits=Limits(timeout=60))
    assert "GOT (-1, -1, -1, -1)" in res.result["reason"], res.result["reason"]


def test_forged_reply_cannot_set_scores(space_path, mode):
    """Whatever the candidate writes to the result channel, the parent computes the scores
    from predictions; a reply with metrics in it has them ignored."""
    from hyarch.sandbox.protocol import encode_reply

    forged = encode_reply({"status": "ok", "metrics": {"val": {"nmse": 0.0}},
                           "parameters": {"omega0_sq": 1.0966}}, {})
    src = _with_setup(
        "for f in range(3, 64):\n"
        "            try:\n"
        f"                torch.os.write(f, {forged!r})\n"
        "            except OSError:\n"
        "                pass\n"
        "        torch.os._exit(0)")
    res = run_candidate(space_path, src, limits=Limits(timeout=60))
    assert res.result["status"] == "failed"
    assert "no predictions" in res.result["reason"] or "no readable" in res.result["reason"]


def test_untrusted_reason_is_cut_and_scrubbed(space_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-canary-abcdef")
    src = _with_setup("raise ValueError('[/oops] ' + 'x' * 50_000_000 + ' tok-canary-abcdef')")
    res = run_candidate(space_path, src, limits=Limits(timeout=120))
    assert res.result["status"] == "failed"
    assert len(res.result["reason"]) < 3000 and "more characters cut" in res.result["reason"]
    # the secret is never seen by the child (its environment is an allow-list) ...
    src = _report("torch.os.environ.get('MY_SERVICE_TOKEN')")
    assert "GOT None" in run_candidate(space_path, src, limits=Limits(timeout=60)).result["reason"]
    # ... and were it echoed anyway, the parent redacts it
    from hyarch.sandbox.runner import scrub

    assert "tok-canary-abcdef" not in scrub("key=tok-canary-abcdef")


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def test_evaluation_dies_with_a_killed_parent(space_path, tmp_path):
    """SIGKILL the process that runs an evaluation: nothing it started survives it."""
    import signal
    import subprocess
    import sys
    import time

    hang = GOOD.replace("def derivatives(self, t, s, u):",
                        "def derivatives(self, t, s, u):\n        while True:\n            pass")
    (tmp_path / "hang.py").write_text(hang)
    code = ("from hyarch.sandbox.runner import run_file, Limits;"
            f"run_file({str(space_path)!r}, {str(tmp_path / 'hang.py')!r}, limits=Limits(timeout=600))")
    parent = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    seen: set[int] = set()
    def python_child(pids):
        for p in pids:
            try:
                if b"sandbox.child" in open(f"/proc/{p}/cmdline", "rb").read():
                    return True
            except OSError:
                pass
        return False

    while time.monotonic() < deadline and not python_child(seen):  # polls: it starts slowly
        seen |= _descendants(parent.pid)
        time.sleep(0.2)  # bounded by the deadline: another process's children, no event to wait on
    assert seen, "the evaluation never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    alive = seen
    while alive and time.monotonic() < deadline:
        alive = {p for p in seen if os.path.exists(f"/proc/{p}")
                 and open(f"/proc/{p}/stat").read().split()[2] != "Z"}
        time.sleep(0.2)  # bounded: the kernel tears the namespace down asynchronously
    assert not alive, f"processes outlived their killed parent: {alive}"
