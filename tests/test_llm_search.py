"""The search loop against an LLM endpoint that fails, repeats itself or is slow.

Transport failures are not candidates, repeats are sent back at no cost, budgets survive
--resume, no call is made after a budget is spent, and evaluations that finish during a
call are recorded before it returns. The endpoint is a scripted OpenAI-compatible server
on loopback (tests/fake_openai.py): the real ``openai`` client talks to it over HTTP.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hyarch.agent.loop import SearchConfig, Session
from hyarch.runs import Run, read_jsonl
from tests.fake_openai import Action, FakeOpenAI
from tests.search_fixtures import FRICTION, HYBRID, ROOT, write_space

QUICK = {"stage_iters": 10, "final_iters": 10, "patience": 5, "restarts": 1}
GOOD = "Friction.\n```python\n" + FRICTION.read_text() + "```\n"
HYB = "A closure.\n```python\n" + HYBRID + "```\n"
BROKEN = "```python\nimport torch\nclass Model(HybridModel:\n    pass\n```\n"


@pytest.fixture
def space(tmp_path):
    return write_space(tmp_path)


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def _session(space, run_dir, url, **kw):
    kw.setdefault("overrides", QUICK)
    kw.setdefault("distill", False)
    lines: list[str] = []
    cfg = SearchConfig(space=str(space), run_dir=run_dir, llm="fake-model", base_url=url, **kw)
    return Session(cfg, progress=lines.append), lines


def _hyarch(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "hyarch", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def test_a_dead_endpoint_stops_the_search_and_resume_finishes_the_budget(space, tmp_path):
    with FakeOpenAI() as server:
        dead = server.url  # nothing listens there once the server has stopped
    run_dir = tmp_path / "run"
    out = _hyarch("search", str(space), "--run", str(run_dir), "--llm", "fake-model",
                  "--base-url", dead, "--budget", "3", "--per-round", "2", "--quick")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "the LLM endpoint is unreachable" in out.stderr and "--resume" in out.stderr
    run = Run(run_dir)
    assert list(run.candidates()) == []  # the failed calls were not candidates
    failed_calls = read_jsonl(run.llm_log)
    assert len(failed_calls) == 2 and all(e["error"] for e in failed_calls)
    # the server is back: the resumed run reaches the budget it was started with
    with FakeOpenAI() as server:
        server.reply(GOOD).reply(HYB)
        server.default = Action("reply", text=BROKEN)
        session, lines = _session(space, run_dir, server.url, resume=True)
        summary = session.run_search()
        prompts = json.dumps(server.bodies)
    assert summary.error is None and summary.candidates == 3, lines
    assert "cannot connect" not in prompts and dead not in prompts  # never shown to the LLM


def test_a_round_with_some_failed_calls_goes_on(space, tmp_path):
    with FakeOpenAI() as server:
        server.error(400, "context length exceeded").reply(GOOD)
        server.default = Action("reply", text=HYB)
        session, lines = _session(space, tmp_path / "run", server.url, budget=2, per_round=2)
        summary = session.run_search()
    assert summary.error is None and summary.candidates == 2, lines
    assert any("the LLM call failed (not a candidate)" in x for x in lines), lines


def test_repeats_cost_no_budget_and_are_sent_back(space, tmp_path):
    with FakeOpenAI() as server:
        server.reply(GOOD).reply(GOOD)  # round 1: the second sample repeats the first
        server.reply(HYB)  # its answer to "already tried"
        server.default = Action("reply", text=BROKEN)
        session, lines = _session(space, tmp_path / "run", server.url, budget=2, per_round=2)
        summary = session.run_search()
        bodies = server.bodies
    run = Run(tmp_path / "run")
    sources = [r.source for r in run.candidates()]
    assert len(sources) == 2 and sources[0] != sources[1], lines
    assert summary.candidates == 2
    follow = bodies[2]["messages"]
    assert follow[-2]["role"] == "assistant" and "same model as candidate" in follow[-1]["content"]
    assert any("a repeat of c0001 (not evaluated again, not counted)" in x for x in lines)


def test_no_call_after_the_budget_is_spent(space, tmp_path):
    with FakeOpenAI() as server:
        server.default = Action("reply", text=BROKEN)
        session, lines = _session(space, tmp_path / "run", server.url, budget=1, per_round=1)
        summary = session.run_search()
        n = len(server.requests)
    assert summary.candidates == 1 and summary.failed == 1
    assert n == 1, lines  # no repair call: its reply could not have been evaluated


def test_tokens_survive_resume(space, tmp_path):
    run_dir = tmp_path / "run"
    with FakeOpenAI() as server:
        server.reply(GOOD, prompt_tokens=1000, completion_tokens=500)
        server.default = Action("reply", text=BROKEN, prompt_tokens=10, completion_tokens=10)
        summary = _session(space, run_dir, server.url, budget=1, per_round=1)[0].run_search()
        assert summary.tokens == 1500
        server.default = Action("reply", text=HYB)
        before = len(server.requests)
        # a token budget below what was spent: stops at once, no call made
        out = _hyarch("search", str(space), "--run", str(run_dir), "--resume", "--budget", "3",
                      "--tokens", "1200", "--llm", "fake-model", "--base-url", server.url)
        assert out.returncode == 0, out.stderr
        assert "token budget (1500 of 1200 tokens spent)" in out.stdout, out.stdout
        assert len(server.requests) == before
        assert len(list(Run(run_dir).candidates())) == 1


def test_evaluations_are_recorded_while_the_llm_is_asked(space, tmp_path):
    with FakeOpenAI() as server:
        server.reply(GOOD)  # round 1: one candidate, trained while...
        server.reply(HYB, delay=25.0)  # ...round 2's call takes long
        server.default = Action("reply", text=BROKEN)
        session, lines = _session(space, tmp_path / "run", server.url, budget=2, per_round=1,
                                  workers=2)
        session.run_search()
    run = Run(tmp_path / "run")
    first = run.read_candidate("c0001")
    calls = [e for e in read_jsonl(run.llm_log) if not e["error"]]
    slow_call_ended = calls[1]["time"]
    assert first.finished and first.meta["finished"] < slow_call_ended - 1.0, lines
