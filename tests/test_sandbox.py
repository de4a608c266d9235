"""Untrusted candidates: everything they do wrong becomes a failed result with a reason."""

from __future__ import annotations

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
])
def test_static_checks_reject_with_reason(source, reason):
    with pytest.raises(CheckError, match=reason.replace("(", r"\(").replace(")", r"\)")):
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
