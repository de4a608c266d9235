"""The LLM client: one chat completion at a time over the ``openai`` client.

Any OpenAI-compatible endpoint works (OpenAI, vLLM, Ollama, llama.cpp): the base URL comes
from the caller or ``OPENAI_BASE_URL``, the key from ``OPENAI_API_KEY`` (a local server
that needs none gets the placeholder ``"local"``).

Retries are ours, not the ``openai`` client's (it is built with ``max_retries=0``), so that
every attempt is counted, logged and backed off with a delay a test can make small:
429, 5xx, timeouts, dropped connections and unreadable replies are retried; a bad key
(401/403) or an unknown model (404) raises ``LLMConfigError`` at once, because no retry
can fix them and the search must stop and say so.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "local"

# USD per million tokens (input, output): list prices when this table was written. They
# change; set your own with ``LLMConfig(prices=...)`` or the space's ``llm.prices``.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}


class LLMConfigError(Exception):
    """The endpoint, key or model is wrong: retrying cannot help, the search stops."""


class LLMError(Exception):
    """A call failed after its retries (or with an error retrying cannot fix)."""

    def __init__(self, message: str, *, attempts: int = 1, latency: float = 0.0) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.latency = latency


class _Retryable(Exception):
    """An attempt failed in a way another attempt may not (internal)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class LLMConfig:
    """Where and how to ask. ``prices``: ``{"input": usd, "output": usd}`` per million
    tokens for this model, or a table ``{model: {"input": .., "output": ..}}``."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    timeout: float = 120.0
    retries: int = 4  # attempts after the first
    backoff: float = 1.0  # first retry delay (s); doubles each retry
    max_backoff: float = 30.0
    temperature: float = 0.7
    max_tokens: int | None = 4096
    stream: bool = False
    prices: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(cls, model: str, base_url: str | None = None, *, api_key: str | None = None,
                env: Mapping[str, str] | None = None, **kw: Any) -> LLMConfig:
        """Fill the base URL and key from the environment; a local server needs no key."""
        env = os.environ if env is None else env
        base_url = base_url or env.get("OPENAI_BASE_URL") or None
        api_key = api_key or env.get("OPENAI_API_KEY") or None
        if api_key is None:
            if base_url is None:
                raise LLMConfigError(
                    f"no OPENAI_API_KEY and no base URL for model {model!r}: set OPENAI_API_KEY"
                    " for OpenAI, or --base-url / OPENAI_BASE_URL for a local server"
                    " (vLLM, Ollama, llama.cpp)")
            api_key = PLACEHOLDER_KEY
        return cls(model=model, base_url=base_url, api_key=api_key, **kw)

    def price(self) -> tuple[float, float] | None:
        """(input, output) USD per million tokens, or None when unknown."""
        p = self.prices
        if p and "input" in p and "output" in p:
            return float(p["input"]), float(p["output"])
        table: dict[str, tuple[float, float]] = dict(PRICES)
        for name, v in (p or {}).items():
            if isinstance(v, Mapping):
                table[name] = (float(v["input"]), float(v["output"]))
            else:
                table[name] = (float(v[0]), float(v[1]))
        if self.model in table:
            return table[self.model]
        # dated snapshots ("gpt-4o-mini-2024-07-18") cost what their family costs
        fams = [n for n in table if self.model.startswith(n + "-")]
        return table[max(fams, key=len)] if fams else None


def llm_available(base_url: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Whether an endpoint is configured at all (else the search runs offline)."""
    env = os.environ if env is None else env
    return bool(base_url or env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_KEY"))


@dataclass(frozen=True)
class Completion:
    """One reply with its accounting."""

    text: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    latency: float
    attempts: int
    finish_reason: str | None = None

    @property
    def usage(self) -> dict[str, Any]:
        total = (self.prompt_tokens or 0) + (self.completion_tokens or 0)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": total, "cost": self.cost, "latency": round(self.latency, 3), "attempts": self.attempts}


class LLMClient:
    """Chat completions with retries, cost accounting and a log entry per call.

    ``log`` receives one dict per call (the loop passes ``Run.log_llm``, which appends it to
    ``llm.jsonl``). Constructing a client does no I/O; the ``openai`` client is made on the
    first call.
    """

    def __init__(self, config: LLMConfig,
                 log: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = config
        self.log = log
        self.spent = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
        self._client = None

    @property
    def name(self) -> str:
        return f"llm:{self.config.model}"

    def _openai(self):
        if self._client is None:
            import openai

            self._client = openai.OpenAI(api_key=self.config.api_key or PLACEHOLDER_KEY,
                                         base_url=self.config.base_url,
                                         timeout=self.config.timeout, max_retries=0)
        return self._client

    # -- one call ---------------------------------------------------------------------
    def complete(self, messages: Sequence[Mapping[str, str]], *, purpose: str = "",
                 temperature: float | None = None, stream: bool | None = None,
                 **extra: Any) -> Completion:
        """One reply. Raises ``LLMConfigError`` (stop the search) or ``LLMError`` (this call
        failed after its retries); either way the call is logged."""
        cfg = self.config
        stream = cfg.stream if stream is None else stream
        msgs = [dict(m) for m in messages]
        start = time.perf_counter()
        retries: list[dict[str, Any]] = []
        attempt = 0
        entry: dict[str, Any] = {"kind": "chat", "purpose": purpose, "model": cfg.model,
                                 "base_url": cfg.base_url, "stream": stream, "messages": msgs}
        try:
            while True:
                attempt += 1
                try:
                    text, usage, finish = self._attempt(msgs, temperature, stream, extra)
                    break
                except _Retryable as e:
                    if attempt > cfg.retries:
                        raise LLMError(f"{e} (gave up after {attempt} attempt(s))",
                                       attempts=attempt,
                                       latency=time.perf_counter() - start) from None
                    delay = self._delay(attempt, e.retry_after)
                    retries.append({"attempt": attempt, "error": str(e), "delay": round(delay, 3)})
                    log.warning("LLM %s: attempt %d failed (%s); retrying in %.2fs",
                                cfg.model, attempt, e, delay)
                    time.sleep(delay)
        except (LLMError, LLMConfigError) as e:
            latency = time.perf_counter() - start
            if isinstance(e, LLMError):
                e.attempts, e.latency = attempt, latency
            self._log({**entry, "reply": None, "prompt_tokens": None,
                       "completion_tokens": None, "cost": None, "latency": round(latency, 3),
                       "attempts": attempt, "retries": retries, "error": str(e)})
            raise
        latency = time.perf_counter() - start
        pt, ct = usage
        cost = self._cost(pt, ct)
        done = Completion(text=text, model=cfg.model, prompt_tokens=pt, completion_tokens=ct,
                          cost=cost, latency=latency, attempts=attempt, finish_reason=finish)
        self.spent["calls"] += 1
        self.spent["prompt_tokens"] += pt or 0
        self.spent["completion_tokens"] += ct or 0
        self.spent["cost"] += cost or 0.0
        self._log({**entry, "reply": text, "prompt_tokens": pt, "completion_tokens": ct,
                   "cost": cost, "latency": round(latency, 3), "attempts": attempt,
                   "retries": retries, "finish_reason": finish, "error": None})
        return done

    def _attempt(self, msgs, temperature, stream, extra):
        import openai

        cfg = self.config
        kw: dict[str, Any] = {"model": cfg.model, "messages": msgs,
                              "temperature": cfg.temperature if temperature is None
                              else temperature, **extra}
        if cfg.max_tokens:
            kw["max_tokens"] = cfg.max_tokens
        try:
            if stream:
                return self._read_stream(self._openai().chat.completions.create(
                    stream=True, stream_options={"include_usage": True}, **kw))
            resp = self._openai().chat.completions.create(**kw)
            choice = resp.choices[0]
            usage = resp.usage
            return (choice.message.content or "",
                    (getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens",
                                                                     None)),
                    choice.finish_reason)
        except openai.APIStatusError as e:
            raise self._status_error(e) from None
        except openai.APITimeoutError:
            raise _Retryable(f"no reply within the {cfg.timeout:g}s timeout") from None
        except openai.APIConnectionError as e:
            raise _Retryable(f"cannot connect to {cfg.base_url or 'the OpenAI API'}: "
                             f"{e.__cause__ or e}") from None
        except Exception as e:
            if type(e).__module__.split(".")[0] in ("httpx2", "httpx", "httpcore"):
                # raised while reading a stream, which the openai client does not wrap
                raise _Retryable(f"the connection failed mid-reply ({type(e).__name__}:"
                                 f" {e})") from None
            if not isinstance(e, (ValueError, AttributeError, TypeError, KeyError, IndexError)):
                raise
            # JSONDecodeError is a ValueError; a reply without choices, an AttributeError
            raise _Retryable(f"the server's reply is not valid chat-completions JSON"
                             f" ({type(e).__name__}: {e})") from None

    @staticmethod
    def _read_stream(chunks) -> tuple[str, tuple[int | None, int | None], str | None]:
        parts: list[str] = []
        pt = ct = None
        finish = None
        for chunk in chunks:
            if chunk.usage is not None:
                pt, ct = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
            for choice in chunk.choices or ():
                if choice.delta is not None and choice.delta.content:
                    parts.append(choice.delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
        return "".join(parts), (pt, ct), finish

    def _status_error(self, e) -> Exception:
        cfg = self.config
        status = e.status_code
        detail = _message(e)
        where = cfg.base_url or "the OpenAI API"
        if status in (401, 403):
            return LLMConfigError(
                f"{where} refused the API key (HTTP {status}: {detail}); check OPENAI_API_KEY")
        if status == 404:
            return LLMConfigError(
                f"{where} has no model {cfg.model!r} (HTTP 404: {detail}); check --llm and"
                " --base-url (the server's /models lists what it serves)")
        if status in (408, 409, 429) or status >= 500:
            retry_after = None
            try:
                retry_after = float(e.response.headers.get("retry-after"))
            except (TypeError, ValueError, AttributeError):
                pass
            return _Retryable(f"HTTP {status} from {where}: {detail}", retry_after)
        return LLMError(f"HTTP {status} from {where}: {detail}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        base = cfg.backoff * 2.0 ** (attempt - 1)
        if retry_after is not None and retry_after > 0:
            base = max(base, retry_after)
        return min(base, cfg.max_backoff) * (1.0 + 0.1 * random.random())

    def _cost(self, pt: int | None, ct: int | None) -> float | None:
        price = self.config.price()
        if price is None or pt is None:
            return None
        return (pt * price[0] + (ct or 0) * price[1]) / 1e6

    def _log(self, entry: dict[str, Any]) -> None:
        if self.log is None:
            return
        try:
            self.log(entry)
        except Exception:  # a log that cannot be written must not lose the reply
            log.exception("could not write the LLM log entry")


def _message(e) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(getattr(e, "message", e))
