"""LLMProposer end to end against the scripted server: prompts out, proposals back."""

import pytest
from fake_openai import FakeOpenAI

from hyarch.agent.base import Feedback, PoolEntry
from hyarch.agent.llm import LLMClient, LLMConfig, LLMConfigError
from hyarch.agent.llm_proposer import LLMProposer, make_llm_proposer
from hyarch.runs import Run, read_jsonl
from hyarch.spaces.loader import load_space

GOOD = '''import torch

from hyarch import HybridModel


class Model(HybridModel):
    """Pendulum with viscous friction."""

    def setup(self):
        self.omega0_sq = self.parameter(init=1.0, bounds=(0.01, 10.0))
        self.alpha = self.parameter(init=0.5, bounds=(0.0, 5.0))

    def derivatives(self, t, s, u):
        return {"theta": s.omega,
                "omega": -self.omega0_sq * torch.sin(s.theta) - self.alpha * s.omega}
'''
BROKEN = GOOD.replace("s.omega}", "s.omega")  # an unclosed brace


def fenced(code, text="Friction is missing, so I add a viscous term."):
    return f"{text}\n\n```python\n{code}```\n"


@pytest.fixture(scope="module")
def space():
    return load_space("damped_pendulum")


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


def proposer(server, log=None, **kw):
    cfg = LLMConfig(model="fake-model", base_url=server.url, api_key="k", timeout=5.0,
                    retries=kw.pop("retries", 1), backoff=0.01, prices={"input": 1, "output": 2})
    return LLMProposer(LLMClient(cfg, log=log), **kw)


def entry(cid, source=GOOD, **kw):
    return PoolEntry(id=cid, source=source, proposer="llm:fake-model", status=kw.pop("status", "ok"),
                     **kw)


def test_first_round_asks_for_n_samples_with_the_propose_prompt(space, server):
    server.reply(fenced(GOOD), prompt_tokens=900, completion_tokens=300)
    server.reply(fenced(BROKEN))
    server.reply("I would add friction, but I am not sure how.")
    got = proposer(server).propose(space, Feedback(round=0), n=3)
    assert len(got) == 3 and len(server.requests) == 3
    good, broken, chatty = got
    assert good.source == GOOD and good.reason is None and good.proposer == "llm:fake-model"
    assert good.parents == () and good.reply.startswith("Friction is missing")
    assert good.usage["prompt_tokens"] == 900 and good.usage["completion_tokens"] == 300
    assert good.usage["total_tokens"] == 1200
    assert good.usage["cost"] == pytest.approx((900 + 600) / 1e6)
    # a syntax error is extracted as written: failing it is the loop's job, with the reason
    assert broken.source == BROKEN
    with pytest.raises(SyntaxError):
        compile(broken.source, "model.py", "exec")
    assert chatty.source is None and "no ```python block defining class Model" in chatty.reason
    user = server.bodies[0]["messages"][1]["content"]
    assert server.bodies[0]["messages"][0]["role"] == "system"
    assert "Propose one candidate model" in user and "linear_friction" in user
    assert "omega0_sq * torch.sin(s.theta)" in user  # the prior's code
    assert [dict(m) for m in good.messages] == server.bodies[0]["messages"]


def test_two_blocks_take_the_model(space, server):
    server.reply(fenced(GOOD) + "\nTo try it:\n```python\nmodel = Model(('theta', 'omega'))\n```")
    (p,) = proposer(server).propose(space, Feedback(round=0), n=1)
    assert p.source == GOOD


def test_failing_server_gives_transport_failures_not_a_crash(space, server):
    server.default.message = "upstream overloaded"
    got = proposer(server, retries=1).propose(space, Feedback(round=0), n=2)
    assert [p.source for p in got] == [None, None]
    # a failure of the call, not of a candidate: the loop neither counts nor shows it
    assert all(p.reason is None and "upstream overloaded" in p.transport_error for p in got)
    assert got[0].usage["attempts"] == 2 and len(server.requests) == 4


def test_each_sample_has_its_own_reproducible_seed(space, server):
    server.default = type(server.default)("reply", text=fenced(GOOD))
    proposer(server, seed=3).propose(space, Feedback(round=1), n=3)
    proposer(server, seed=3).propose(space, Feedback(round=1), n=3)
    proposer(server, seed=4).propose(space, Feedback(round=1), n=1)
    seeds = [b["seed"] for b in server.bodies]
    assert len(set(seeds[:3])) == 3  # samples of a round differ
    assert seeds[3:6] == seeds[:3]  # the same search seed asks the same way again
    assert seeds[6] not in seeds[:3]
    assert all(isinstance(x, int) and 0 <= x < 2**31 for x in seeds)


def test_a_duplicate_is_answered_in_the_same_conversation(space, server):
    server.reply(fenced(GOOD))
    server.reply(fenced(BROKEN, "Then a different one."))
    prop = proposer(server).propose(space, Feedback(round=0), n=1)[0]
    earlier = entry("c0004", parameters={"omega0_sq": 1.0, "alpha": 0.1}, val_nmse=1e-4)
    again = proposer(server).retry_duplicate(space, prop, earlier, attempt=1)
    assert again.source == BROKEN
    msgs = server.bodies[1]["messages"]
    assert msgs[:2] == server.bodies[0]["messages"]  # the same conversation...
    assert msgs[2] == {"role": "assistant", "content": prop.reply}  # ...its repeat...
    assert "same model as candidate `c0004`" in msgs[3]["content"]  # ...and why it is not new
    assert "alpha = 0.1" in msgs[3]["content"]
    assert server.bodies[1]["seed"] != server.bodies[0]["seed"]
    assert proposer(server).retry_duplicate(space, prop, earlier, attempt=3) is None  # 2 allowed


def test_transient_errors_are_absorbed(space, server):
    server.error(429).error(500).reply(fenced(GOOD))
    (p,) = proposer(server, retries=2).propose(space, Feedback(round=0), n=1)
    assert p.source == GOOD and p.usage["attempts"] == 3


def test_bad_key_or_model_stops_the_search(space):
    with FakeOpenAI(models={"served"}) as server:
        with pytest.raises(LLMConfigError, match="fake-model"):
            proposer(server).propose(space, Feedback(round=0), n=3)
        assert len(server.requests) == 1


def test_failures_reach_the_next_prompt_before_anything_scored(space, server):
    failure = entry("c0001", source=BROKEN, status="failed",
                    reason="syntax error at line 15: '{' was never closed")
    server.reply(fenced(GOOD))
    (p,) = proposer(server).propose(space, Feedback(round=2, failures=(failure,)), n=1)
    user = server.bodies[0]["messages"][1]["content"]
    assert "Propose one candidate model" in user  # still the first-round prompt
    assert "### `c0001`: syntax error at line 15: '{' was never closed" in user
    assert BROKEN.strip() in user and p.parents == ()


def test_later_rounds_refine_from_the_pool(space, server):
    best = entry("c0003", parameters={"omega0_sq": 1.09662, "alpha": 0.19871},
                 val_nmse=1.234e-5, train_nmse=1.1e-5,
                 val_per_state={"theta": 1.5e-5, "omega": 9.8e-6},
                 regularizers={"closure_norm": 0.0}, closure_share=0.0, n_neural_params=0,
                 notes=("looks physical",), verdict="approved")
    second = entry("c0001", source=GOOD.replace("alpha", "c_drag"), val_nmse=0.031,
                   parameters={"omega0_sq": 1.2, "c_drag": 0.05})
    failure = entry("c0004", source=BROKEN, status="failed",
                    reason="syntax error at line 15: '{' was never closed")
    rejected = entry("c0002", status="ok", verdict="rejected",
                     notes=("a network on theta makes no physical sense",))
    fb = Feedback(round=2, pool=(best, second), failures=(failure,), rejected=(rejected,),
                  notes=("the friction is probably viscous",))
    server.reply(fenced(GOOD))
    (p,) = proposer(server).propose(space, fb, n=1)
    assert p.parents == ("c0003", "c0001")
    user = server.bodies[0]["messages"][1]["content"]
    assert "Round 2" in user and "The best candidates so far" in user
    assert user.index("c0003") < user.index("c0001")
    for text in ("omega0_sq = 1.0966", "alpha = 0.19871", "1.234e-05", "theta 1.5e-05",
                 "omega 9.8e-06", "closure share: 0", "reviewer: approved",
                 '"looks physical"', "'{' was never closed",
                 "a network on theta makes no physical sense",
                 "> the friction is probably viscous", BROKEN.strip()):
        assert text in user, text


def test_repair_prompt_carries_the_error(space, server, tmp_path):
    run = Run(tmp_path / "run")
    failed = entry("c0007", source=GOOD.replace("self.alpha * s.omega", "self.alpah * s.omega"),
                   status="failed",
                   reason="AttributeError at line 15: 'Model' object has no attribute 'alpah'",
                   traceback='Traceback (most recent call last):\n  File "model.py", line 15,'
                             " in derivatives\nAttributeError: 'Model' has no attribute 'alpah'")
    server.reply(fenced(GOOD, "A typo: alpah for alpha."))
    prop = proposer(server, log=run.log_llm, repair_attempts=2)
    p = prop.repair(space, failed, attempt=1)
    assert p.source == GOOD and p.repair_of == "c0007" and p.parents == ("c0007",)
    user = server.bodies[0]["messages"][1]["content"]
    assert "has no attribute 'alpah'" in user and 'File "model.py", line 15' in user
    assert "repair attempt 1 of 2" in user
    assert "self.alpah * s.omega" in user
    (logged,) = read_jsonl(run.llm_log)
    assert logged["purpose"] == "repair:c0007:1" and logged["prompt_tokens"] == 11
    assert logged["cost"] == pytest.approx((11 + 14) / 1e6)
    assert prop.repair(space, failed, attempt=3) is None and len(server.requests) == 1


def test_make_llm_proposer_reads_the_space_and_environment(space, server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    prop = make_llm_proposer(space, model="local-coder")
    assert prop.name == "llm:local-coder" and prop.client.config.api_key == "local"
    assert prop.client.config.temperature == space.spec.llm.temperature
    server.reply(fenced(GOOD))
    (p,) = prop.propose(space, Feedback(round=0), n=1)
    assert p.source == GOOD and server.bodies[0]["model"] == "local-coder"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(LLMConfigError):
        make_llm_proposer(space)
    # the loop's entry point: an explicit key and the space's settings
    prop = LLMProposer.from_config(model="m", base_url=server.url, api_key="sk-1",
                                   settings=space.spec.llm, log=None, retries=0)
    assert prop.client.config.api_key == "sk-1" and prop.client.config.retries == 0
    assert prop.repair_attempts == space.spec.llm.repair_attempts
