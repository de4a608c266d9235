"""The review round trip through the real CLI: a search with --review-every 1 pauses, a
person (pexpect) rejects a candidate with a note, and the next LLM request carries the note
while the rejected candidate is out of the pool."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from hyarch.report.demo import QUICK_SPACE
from hyarch.runs import Run

ROOT = Path(__file__).resolve().parents[1]

HYBRID = """```python
import torch
from hyarch import Closure, HybridModel


class Model(HybridModel):
    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.g = Closure(inputs=("theta", "omega"), hidden=(8, 8))

    def derivatives(self, t, s, u):
        return {"theta": s.omega, "omega": -self.omega0_sq * torch.sin(s.theta) + self.g(s)}
```"""

FRICTION = "```python\n" + (
    ROOT / "search_spaces" / "damped_pendulum" / "friction.py").read_text() + "```"

NOTE = "the network does the damping; write the friction term instead"


@pytest.mark.slow
def test_rejected_with_a_note_reaches_the_next_prompt(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    from fake_openai import Action, FakeOpenAI

    space = tmp_path / "space.yaml"
    space.write_text(QUICK_SPACE)
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(TERM="dumb", COLUMNS="160", PYTHONUNBUFFERED="1")
    with FakeOpenAI() as server:
        server.reply(HYBRID)
        server.default = Action("reply", text=FRICTION)
        child = pexpect.spawn(
            sys.executable,
            ["-m", "hyarch", "search", str(space), "--llm", "fake-model", "--base-url",
             server.url, "--budget", "3", "--per-round", "1", "--review-every", "1",
             "--run", str(run_dir)],
            cwd=str(ROOT), env=env, encoding="utf-8", timeout=240, dimensions=(50, 160))
        try:
            child.expect_exact("review> ")
            (first,) = Run(run_dir).candidate_ids()
            n_before = len(server.requests)
            child.sendline(f"reject {first} {NOTE}")
            child.expect_exact(f"{first} rejected")
            child.sendline("done")
            # the hybrid's distilled candidate may take the next round (distilled candidates
            # are queued first); every later review continues, and the LLM is asked again
            while child.expect([r"review> ", pexpect.EOF]) == 0:
                child.sendline("done")
        finally:
            child.close()
        bodies = [r["body"] for r in server.requests]
    assert child.exitstatus == 0, child.before
    assert Run(run_dir).verdicts()[first] == {"verdict": "rejected", "notes": [NOTE]}
    later = [json.dumps(b) for b in bodies[n_before:]]
    assert later, "no LLM request after the review"
    prompt = json.loads(later[0])["messages"][-1]["content"]
    assert NOTE in prompt
    # shown as rejected, not as a pool entry to refine
    assert f"### Candidate `{first}`" not in prompt
    assert "rejected" in prompt
