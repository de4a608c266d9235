"""LLMClient against a scripted OpenAI-compatible server on loopback."""

import json
import time

import pytest
from fake_openai import FakeOpenAI

from hyarch.agent.llm import (
    LLMClient,
    LLMConfig,
    LLMConfigError,
    LLMError,
    LLMUnreachable,
    llm_available,
)
from hyarch.runs import Run, read_jsonl

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


def make(server, *, log=None, **kw):
    cfg = dict(model="fake-model", base_url=server.url, api_key="sk-test", timeout=5.0,
               retries=2, backoff=0.01)
    cfg.update(kw)
    return LLMClient(LLMConfig(**cfg), log=log)


def test_reply_usage_cost_and_request_body(server):
    server.reply("hi there", prompt_tokens=1000, completion_tokens=500)
    entries = []
    client = make(server, log=entries.append, prices={"input": 2.0, "output": 8.0},
                  temperature=0.3, max_tokens=256)
    done = client.complete(MSGS, purpose="propose")
    assert done.text == "hi there"
    assert (done.prompt_tokens, done.completion_tokens, done.attempts) == (1000, 500, 1)
    assert done.cost == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    body = server.bodies[0]
    assert body["model"] == "fake-model" and body["messages"] == MSGS
    assert body["temperature"] == 0.3 and body["max_tokens"] == 256
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test"
    assert client.spent == {"calls": 1, "prompt_tokens": 1000, "completion_tokens": 500,
                            "cost": pytest.approx(0.006)}
    (entry,) = entries
    assert entry["reply"] == "hi there" and entry["error"] is None
    assert entry["purpose"] == "propose" and entry["messages"] == MSGS


def test_calls_are_written_to_llm_jsonl(server, tmp_path):
    run = Run(tmp_path / "run")
    server.reply("one", prompt_tokens=10, completion_tokens=5)
    server.error(500, "boom")  # the second call fails for good: retries=0
    client = make(server, log=run.log_llm, retries=0, model="gpt-4o-mini")
    client.complete(MSGS)
    with pytest.raises(LLMError, match="HTTP 500"):
        client.complete(MSGS)
    ok, bad = read_jsonl(run.llm_log)
    assert ok["reply"] == "one" and ok["prompt_tokens"] == 10 and ok["completion_tokens"] == 5
    assert ok["cost"] == pytest.approx((10 * 0.15 + 5 * 0.60) / 1e6)  # the built-in table
    assert ok["latency"] >= 0 and ok["attempts"] == 1 and "time" in ok
    assert ok["messages"] == MSGS
    assert bad["reply"] is None and "boom" in bad["error"] and bad["attempts"] == 1


def test_unknown_model_has_no_cost(server):
    server.reply("x")
    assert make(server, model="my-local-llama").complete(MSGS).cost is None


def test_price_table_resolution():
    assert LLMConfig(model="gpt-4o-mini-2024-07-18").price() == (0.15, 0.60)
    assert LLMConfig(model="gpt-4o-2024-08-06").price() == (2.50, 10.00)
    assert LLMConfig(model="qwen2.5-coder").price() is None
    assert LLMConfig(model="qwen2.5-coder", prices={"qwen2.5-coder": {"input": 0.1,
                                                                         "output": 0.2}}
                     ).price() == (0.1, 0.2)
    assert LLMConfig(model="gpt-4o", prices={"input": 1, "output": 3}).price() == (1.0, 3.0)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_error_then_success(server, status):
    server.error(status, "try later").reply("recovered")
    entries = []
    done = make(server, log=entries.append).complete(MSGS)
    assert done.text == "recovered" and done.attempts == 2
    assert len(server.requests) == 2
    (entry,) = entries
    assert entry["attempts"] == 2 and f"HTTP {status}" in entry["retries"][0]["error"]


def test_retry_after_header_sets_the_delay(server):
    server.error(429, "rate limited", headers={"retry-after": "0.2"}).reply("ok")
    entries = []
    make(server, log=entries.append, backoff=0.001).complete(MSGS)
    assert entries[0]["retries"][0]["delay"] >= 0.2


def test_server_error_forever_gives_up_after_retries(server):
    server.default.message = "always broken"
    entries = []
    with pytest.raises(LLMError, match="always broken") as info:
        make(server, retries=2, log=entries.append).complete(MSGS)
    assert info.value.attempts == 3 and len(server.requests) == 3
    assert "gave up after 3 attempt(s)" in str(info.value)
    assert entries[0]["error"] and len(entries[0]["retries"]) == 2


def test_bad_request_is_not_retried(server):
    server.error(400, "context length exceeded")
    with pytest.raises(LLMError, match="context length exceeded"):
        make(server).complete(MSGS)
    assert len(server.requests) == 1


def test_hang_past_timeout_is_retried(server):
    server.hang().reply("late but fine")
    done = make(server, timeout=0.5, retries=1).complete(MSGS)
    assert done.text == "late but fine" and done.attempts == 2
    assert done.latency >= 0.5


def test_hang_forever_is_a_clear_error(server):
    server.hang().hang()
    with pytest.raises(LLMError, match=r"no reply within the 0.5s timeout"):
        make(server, timeout=0.5, retries=1).complete(MSGS)


def test_malformed_json_is_retried_then_reported(server):
    server.malformed().reply("fine")
    assert make(server).complete(MSGS).attempts == 2
    server.malformed().malformed()
    with pytest.raises(LLMError, match="not valid chat-completions JSON"):
        make(server, retries=1).complete(MSGS)


def test_streaming_reply(server):
    text = "```python\n" + "x = 1\n" * 20 + "```\n"
    server.reply(text, prompt_tokens=40, completion_tokens=30)
    done = make(server, stream=True, prices={"input": 1.0, "output": 1.0}).complete(MSGS)
    assert done.text == text
    assert (done.prompt_tokens, done.completion_tokens) == (40, 30)
    assert done.cost == pytest.approx(70 / 1e6)
    assert done.finish_reason == "stop"
    body = server.bodies[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_bad_key_stops_at_once():
    with FakeOpenAI(api_key="sk-right") as server:
        server.reply("never sent")
        entries = []
        with pytest.raises(LLMConfigError, match="refused the API key.*OPENAI_API_KEY"):
            make(server, api_key="sk-wrong", log=entries.append).complete(MSGS)
        assert len(server.requests) == 1 and entries[0]["error"]
        assert make(server, api_key="sk-right").complete(MSGS).text == "never sent"


def test_unknown_model_stops_at_once():
    with FakeOpenAI(models={"served-model"}) as server:
        with pytest.raises(LLMConfigError, match="no model 'typo-model'"):
            make(server, model="typo-model").complete(MSGS)
        assert len(server.requests) == 1


def test_connection_refused_is_retried_then_reported():
    with FakeOpenAI() as server:
        url = server.url
    with pytest.raises(LLMError, match="cannot connect"):
        LLMClient(LLMConfig(model="m", base_url=url, api_key="k", retries=1,
                            backoff=0.01)).complete(MSGS)


def test_endpoint_resolution_from_the_environment():
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    cfg = LLMConfig.resolve("llama3", env=env)
    assert cfg.base_url == "http://127.0.0.1:9/v1" and cfg.api_key == "local"
    cfg = LLMConfig.resolve("gpt-4o", env={"OPENAI_API_KEY": "sk-x"})
    assert cfg.api_key == "sk-x" and cfg.base_url is None
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY"):
        LLMConfig.resolve("gpt-4o", env={})
    assert not llm_available(env={}) and llm_available("http://x", env={})


def test_log_entries_are_json(server):
    server.reply("ok")
    entries = []
    make(server, log=entries.append).complete(MSGS)
    assert json.loads(json.dumps(entries[0]))["reply"] == "ok"


# -- a server that misbehaves: never a crash, never unbounded ---------------------------
def _chat(content, usage=None, finish="stop"):
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content}}]}
    if usage is not None:
        body["usage"] = usage
    return body


@pytest.mark.parametrize("content", [42, ["a", "list"], {"a": 1}])
def test_content_that_is_not_text_is_a_failed_call_not_a_crash(server, content):
    server.raw(_chat(content)).raw(_chat(content))
    with pytest.raises(LLMError, match="not text"):
        make(server, retries=1).complete(MSGS)


def test_token_counts_that_are_not_integers_are_estimated(server):
    server.raw(_chat("x" * 400, usage={"prompt_tokens": "many", "completion_tokens": 3.5}))
    entries = []
    done = make(server, log=entries.append).complete(MSGS)
    assert done.text == "x" * 400 and done.tokens_estimated
    # 4 characters a token: the 400-character reply is 100 tokens, the 13-character prompt 4
    assert done.completion_tokens == 100 and done.prompt_tokens == 4
    assert entries[0]["total_tokens"] == 104 and entries[0]["tokens_estimated"] is True


def test_a_dripping_reply_is_cut_at_the_deadline(server):
    server.raw(_chat("never finished " * 50), drip=0.05)
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match="no reply within the 1s timeout"):
        make(server, timeout=1.0, timeout_retries=0).complete(MSGS)
    assert time.perf_counter() - t0 < 3.0  # not the minutes the drip would take


def test_a_dripping_stream_is_cut_at_the_deadline(server):
    server.chunk = 1
    server.reply("y" * 400)  # one event per character; each event arrives fast...
    server.raw(b"data: {", drip=0.2)  # ...but this one never completes
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match="timeout"):
        make(server, timeout=1.0, timeout_retries=0, stream=True).complete(MSGS)
        make(server, timeout=1.0, timeout_retries=0, stream=True).complete(MSGS)
    assert time.perf_counter() - t0 < 4.0


def test_a_huge_reply_is_capped(server):
    server.reply("z" * 50_000)
    done = make(server, max_reply_chars=10_000).complete(MSGS)
    assert len(done.text) == 10_000 and done.clipped
    server.raw(_chat("z" * 200_000))  # far past the byte cap: not read at all
    with pytest.raises(LLMError, match="larger than"):
        make(server, max_reply_chars=10_000, retries=0).complete(MSGS)


def test_retry_after_longer_than_the_client_may_wait_ends_the_call(server):
    server.error(429, "slow down", headers={"Retry-After": "3600"})
    t0 = time.perf_counter()
    with pytest.raises(LLMError, match="retry after 3600 s"):
        make(server).complete(MSGS)
    assert time.perf_counter() - t0 < 2.0 and len(server.requests) == 1


def test_a_deadline_set_by_the_caller_bounds_the_call(server):
    server.hang()
    client = make(server, timeout=30.0)
    client.deadline = time.monotonic() + 0.5
    t0 = time.perf_counter()
    with pytest.raises(LLMError):
        client.complete(MSGS)
    assert time.perf_counter() - t0 < 2.0


def test_timeouts_are_retried_once_only(server):
    server.hang().hang().reply("third time")
    with pytest.raises(LLMError, match="gave up after 2 attempt"):
        make(server, timeout=0.3, retries=5).complete(MSGS)
    assert len(server.requests) == 2


def test_a_refused_connection_costs_seconds_not_minutes():
    with FakeOpenAI() as server:
        url = server.url
    t0 = time.perf_counter()
    with pytest.raises(LLMUnreachable, match="cannot connect"):
        LLMClient(LLMConfig(model="m", base_url=url, api_key="k", retries=4,
                            backoff=1.0)).complete(MSGS)
    assert time.perf_counter() - t0 < 3.0


def test_seed_is_sent_and_logged(server):
    server.reply("a").reply("b")
    entries = []
    client = make(server, log=entries.append)
    client.complete(MSGS, seed=17)
    client.complete(MSGS)
    assert server.bodies[0]["seed"] == 17 and "seed" not in server.bodies[1]
    assert entries[0]["seed"] == 17


def test_a_base_url_that_is_not_a_url_stops_at_once():
    with pytest.raises(LLMConfigError, match="'localhost:8080' is not an http"):
        LLMConfig.resolve("m", "localhost:8080")


def test_a_stream_cut_mid_reply_is_a_failed_call_not_a_crash(server):
    """A body that ends before its declared length, while a stream is read, is a failed
    attempt, retried, then a clear error (whether the openai client wraps the transport's
    error or it arrives as httpx's or httpx2's own)."""
    server.raw(b"data: {\"choices\": [{\"delta\": {\"content\": \"x\"}}]}\n\n", status=200,
               headers={"Content-Type": "text/event-stream", "Content-Length": "500"})
    server.raw(b"data: {\"choices\": [{\"delta\": {\"content\": \"x\"}}]}\n\n", status=200,
               headers={"Content-Type": "text/event-stream", "Content-Length": "500"})
    with pytest.raises(LLMError):
        make(server, stream=True, retries=1).complete(MSGS)
