"""The LLM path against a real model behind a real server (llama.cpp's llama-server with
Qwen2.5-Coder-0.5B, started by ``.ci/llm_server.sh start``; ``.ci/run`` does it).

These tests assert the plumbing, never the model's quality: tokens and latency logged for
every call, the prompt and the reply stored with every candidate, the exit status, resume.
They skip, saying why, when no server is configured (``HYARCH_TEST_LLM_BASE_URL``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hyarch.runs import Run, read_jsonl
from tests.search_fixtures import ROOT, write_space

BASE_URL = os.environ.get("HYARCH_TEST_LLM_BASE_URL")
MODEL = os.environ.get("HYARCH_TEST_LLM_MODEL", "qwen2.5-coder-0.5b")

pytestmark = pytest.mark.skipif(
    not BASE_URL, reason="no real LLM server"
    + (f" ({os.environ['HYARCH_TEST_LLM_UNAVAILABLE']})"
       if os.environ.get("HYARCH_TEST_LLM_UNAVAILABLE") else "")
    + ": start one with `eval \"$(.ci/llm_server.sh start)\"` (sets HYARCH_TEST_LLM_BASE_URL);"
    " .ci/run does")


def _search(space, run_dir, *args, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "hyarch", "search", str(space), "--run", str(run_dir),
         "--llm", MODEL, "--base-url", BASE_URL, "--per-round", "1", "--quick",
         "--llm-timeout", "300", "--temperature", "0.7", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def _check_calls(run: Run) -> list[dict]:
    calls = read_jsonl(run.llm_log)
    assert calls
    for c in calls:
        assert c["error"] is None, c["error"]
        assert c["model"] == MODEL and c["messages"] and isinstance(c["reply"], str)
        # llama-server reports its own token counts: nothing is estimated
        assert c["prompt_tokens"] > 0 and c["completion_tokens"] > 0, c
        assert not c["tokens_estimated"] and c["total_tokens"] == (c["prompt_tokens"]
                                                                   + c["completion_tokens"])
        assert c["latency"] > 0 and isinstance(c["seed"], int)
    return calls


def _check_candidates(run: Run) -> None:
    for rec in run.candidates():
        if not rec.proposer.startswith("llm:"):
            continue
        folder = run.candidate_dir(rec.id)
        prompt = json.loads((folder / "prompt.json").read_text())
        assert prompt[0]["role"] == "system" and prompt[-1]["role"] == "user"
        assert (folder / "reply.txt").is_file()
        assert rec.finished and rec.result["status"] in ("ok", "failed")
        if rec.result["status"] == "failed":
            assert rec.result["reason"]


def test_structured_search_and_resume_on_a_real_server(tmp_path):
    space = write_space(tmp_path)
    run_dir = tmp_path / "run"
    out = _search(space, run_dir, "--budget", "2", "--llm-format", "structured")
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode in (0, 1), out.stderr[-3000:]  # 1: no candidate trained (quality)
    assert "search stopped" in out.stdout
    run = Run(run_dir)
    calls = _check_calls(run)
    assert all(c["purpose"].startswith(("form:", "repair:", "duplicate:")) for c in calls)
    # every request asked for the form's JSON schema, with a different seed per sample
    seeds = [c["seed"] for c in calls]
    assert len(set(seeds)) == len(seeds)
    _check_candidates(run)
    n = len(list(run.candidates()))
    assert 1 <= n <= 2
    # resume to a larger budget: the calls and tokens of the first session still count
    tokens_before = sum(c["total_tokens"] for c in calls)
    out = _search(space, run_dir, "--resume", "--budget", str(n + 1), "--llm-format",
                  "structured", "--tokens", str(tokens_before + 100_000))
    assert "Traceback" not in out.stderr and out.returncode in (0, 1), out.stderr[-3000:]
    assert len(list(Run(run_dir).candidates())) >= n
    _check_calls(Run(run_dir))
    # a token budget already spent stops the resumed search before any call
    calls_now = len(read_jsonl(run.llm_log))
    out = _search(space, run_dir, "--resume", "--budget", str(n + 5), "--tokens", "1")
    assert out.returncode in (0, 1) and "token budget" in out.stdout, out.stdout[-2000:]
    assert len(read_jsonl(run.llm_log)) == calls_now


def test_code_format_on_a_real_server(tmp_path):
    space = write_space(tmp_path)
    run_dir = tmp_path / "run"
    out = _search(space, run_dir, "--budget", "1", "--llm-format", "code")
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode in (0, 1) and "search stopped" in out.stdout, out.stderr[-3000:]
    run = Run(run_dir)
    _check_calls(run)
    _check_candidates(run)
