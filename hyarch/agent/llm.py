"""The LLM client: one chat completion at a time over the ``openai`` client.

Any OpenAI-compatible endpoint works (OpenAI, vLLM, Ollama, llama.cpp): the base URL comes
from the caller or ``OPENAI_BASE_URL``, the key from ``OPENAI_API_KEY`` (a local server
that needs none gets the placeholder ``"local"``).

A server's reply is untrusted input, like the code in it. The client therefore:

- bounds every attempt by a wall-clock deadline (``timeout``) on the whole exchange, a
  reply that drips one byte at a time included: the attempt runs on a helper thread and is
  abandoned (its connection closed) when the deadline passes;
- reads at most ``max_reply_chars`` of a reply and validates every field it uses (content
  must be text, token counts integers); anything else is "not a valid reply", never a crash;
- retries on its own terms (the ``openai`` client is built with ``max_retries=0``): 429,
  5xx and malformed replies up to ``retries`` times with backoff; a timeout once; a refused
  connection once after a short pause (a dead server costs seconds, not minutes); a
  ``Retry-After`` longer than ``max_backoff`` or than the time the caller has left ends the
  call at once with that reason;
- raises ``LLMConfigError`` for a bad key (401/403) or an unknown model (404), which no
  retry can fix, and ``LLMError`` (or its kind ``LLMUnreachable``) for a call that failed:
  the search treats both as failures of the transport, never as failed candidates.

Token counts a server does not report (some streaming servers) are estimated from the text
(4 characters a token) and marked ``tokens_estimated`` in the log, so a token budget never
counts a call as free.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

PLACEHOLDER_KEY = "local"
CHARS_PER_TOKEN = 4  # for estimates where a server reports no usage
MAX_REPLY_CHARS = 200_000  # a candidate file is a few thousand characters
REFUSED_PAUSE = 1.0  # seconds before the one retry of a refused connection

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


class LLMUnreachable(LLMError):
    """The endpoint could not be reached or did not answer in time."""


class _Retryable(Exception):
    """An attempt failed in a way another attempt may not (internal). ``kind``: timeout,
    refused or other; each has its own retry allowance."""

    def __init__(self, message: str, retry_after: float | None = None,
                 kind: str = "other") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.kind = kind


class _BadReply(ValueError):
    """The server's reply is not a valid chat completion (internal)."""


@dataclass(frozen=True)
class LLMConfig:
    """Where and how to ask. ``prices``: ``{"input": usd, "output": usd}`` per million
    tokens for this model, or a table ``{model: {"input": .., "output": ..}}``.
    ``timeout``: seconds for one attempt, start to last byte."""

    model: str
    base_url: str | None = None
    api_key: str | None = None
    timeout: float = 120.0
    retries: int = 3  # attempts after the first, for 429, 5xx and malformed replies
    timeout_retries: int = 1  # attempts after the first that timed out
    backoff: float = 1.0  # first retry delay (s); doubles each retry
    max_backoff: float = 30.0  # a longer Retry-After ends the call instead of waiting
    temperature: float = 0.7
    max_tokens: int | None = 2048
    stream: bool = False
    max_reply_chars: int = MAX_REPLY_CHARS
    prices: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(cls, model: str, base_url: str | None = None, *, api_key: str | None = None,
                env: Mapping[str, str] | None = None, **kw: Any) -> LLMConfig:
        """Fill the base URL and key from the environment; a local server needs no key."""
        env = os.environ if env is None else env
        base_url = base_url or env.get("OPENAI_BASE_URL") or None
        api_key = api_key or env.get("OPENAI_API_KEY") or None
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise LLMConfigError(f"base URL {base_url!r} is not an http:// or https:// URL"
                                 " (e.g. http://127.0.0.1:8080/v1)")
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
    tokens_estimated: bool = False  # the server reported no usage: counted from the text
    clipped: bool = False  # longer than max_reply_chars: the rest was not read

    @property
    def usage(self) -> dict[str, Any]:
        total = (self.prompt_tokens or 0) + (self.completion_tokens or 0)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": total, "cost": self.cost, "latency": round(self.latency, 3),
                "attempts": self.attempts, "tokens_estimated": self.tokens_estimated}


@dataclass
class _Reply:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish: str | None
    clipped: bool = False


class LLMClient:
    """Chat completions with retries, deadlines, cost accounting and a log entry per call.

    ``log`` receives one dict per call (the loop passes ``Run.log_llm``, which appends it to
    ``llm.jsonl``). ``deadline`` (a ``time.monotonic()`` value, or None) is when the caller's
    time runs out: no attempt or wait goes past it. Constructing a client does no I/O; the
    ``openai`` client is made on the first call.
    """

    def __init__(self, config: LLMConfig,
                 log: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = config
        self.log = log
        self.deadline: float | None = None
        self.spent = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}
        self._client = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"llm:{self.config.model}"

    def _openai(self):
        with self._lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(api_key=self.config.api_key or PLACEHOLDER_KEY,
                                             base_url=self.config.base_url,
                                             timeout=self.config.timeout, max_retries=0)
            return self._client

    def _abandon(self) -> None:
        """Drop the client whose request overran its deadline: closing it closes the
        connection the helper thread reads from (on another thread: a close never blocks
        the search); the next attempt makes a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            threading.Thread(target=_quiet_close, args=(client,), daemon=True).start()

    # -- one call ---------------------------------------------------------------------
    def complete(self, messages: Sequence[Mapping[str, str]], *, purpose: str = "",
                 temperature: float | None = None, stream: bool | None = None,
                 seed: int | None = None, **extra: Any) -> Completion:
        """One reply. Raises ``LLMConfigError`` (stop the search) or ``LLMError`` (this call
        failed after its retries); either way the call is logged. ``seed``: sent as the
        request's ``seed``, so that samples differ and a run can be reproduced on servers
        that honour it."""
        cfg = self.config
        stream = cfg.stream if stream is None else stream
        msgs = [dict(m) for m in messages]
        if seed is not None:
            extra["seed"] = int(seed)
        start = time.perf_counter()
        retries: list[dict[str, Any]] = []
        used = {"timeout": 0, "refused": 0, "other": 0}
        allowed = {"timeout": cfg.timeout_retries, "refused": 1, "other": cfg.retries}
        attempt = 0
        entry: dict[str, Any] = {"kind": "chat", "purpose": purpose, "model": cfg.model,
                                 "base_url": cfg.base_url, "stream": stream, "messages": msgs,
                                 "seed": seed}
        try:
            while True:
                attempt += 1
                self._check_time("before asking")
                try:
                    reply = self._bounded(lambda: self._attempt(msgs, temperature, stream,
                                                                extra))
                    break
                except _Retryable as e:
                    used[e.kind] += 1
                    if used[e.kind] > allowed[e.kind]:
                        kind = LLMUnreachable if e.kind in ("timeout", "refused") else LLMError
                        raise kind(f"{e} (gave up after {attempt} attempt(s))",
                                   attempts=attempt,
                                   latency=time.perf_counter() - start) from None
                    delay = self._delay(attempt, e, used[e.kind])
                    retries.append({"attempt": attempt, "error": str(e), "delay": round(delay, 3)})
                    log.warning("LLM %s: attempt %d failed (%s); retrying in %.2fs",
                                cfg.model, attempt, e, delay)
                    time.sleep(delay)
        except (LLMError, LLMConfigError) as e:
            latency = time.perf_counter() - start
            if isinstance(e, LLMError):
                e.attempts, e.latency = attempt, latency
            self._log({**entry, "reply": None, "prompt_tokens": None,
                       "completion_tokens": None, "total_tokens": 0, "cost": None,
                       "latency": round(latency, 3), "attempts": attempt, "retries": retries,
                       "error": str(e)})
            raise
        latency = time.perf_counter() - start
        pt, ct, estimated = reply.prompt_tokens, reply.completion_tokens, False
        if pt is None or ct is None:  # no usage reported: estimate, never count as free
            estimated = True
            if pt is None:
                pt = -(-sum(len(str(m.get("content") or "")) for m in msgs) // CHARS_PER_TOKEN)
            if ct is None:
                ct = -(-len(reply.text) // CHARS_PER_TOKEN)
        cost = self._cost(pt, ct)
        done = Completion(text=reply.text, model=cfg.model, prompt_tokens=pt,
                          completion_tokens=ct, cost=cost, latency=latency, attempts=attempt,
                          finish_reason=reply.finish, tokens_estimated=estimated,
                          clipped=reply.clipped)
        self.spent["calls"] += 1
        self.spent["prompt_tokens"] += pt
        self.spent["completion_tokens"] += ct
        self.spent["cost"] += cost or 0.0
        self._log({**entry, "reply": reply.text, "prompt_tokens": pt, "completion_tokens": ct,
                   "total_tokens": pt + ct, "tokens_estimated": estimated, "cost": cost,
                   "latency": round(latency, 3), "attempts": attempt, "retries": retries,
                   "finish_reason": reply.finish, "clipped": reply.clipped, "error": None})
        return done

    def _check_time(self, when: str) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise LLMError(f"the search's time budget ran out {when}")

    def _bounded(self, fn: Callable[[], _Reply]) -> _Reply:
        """``fn()`` within the attempt's deadline (and the caller's), on a helper thread."""
        limit = self.config.timeout
        if self.deadline is not None:
            limit = min(limit, max(0.0, self.deadline - time.monotonic()))
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = e

        worker = threading.Thread(target=target, name="hyarch-llm-attempt", daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():
            self._abandon()
            raise _Retryable(f"no reply within the {limit:g}s timeout",
                             kind="timeout")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _attempt(self, msgs, temperature, stream, extra) -> _Reply:
        import openai

        cfg = self.config
        kw: dict[str, Any] = {"model": cfg.model, "messages": msgs,
                              "temperature": cfg.temperature if temperature is None
                              else temperature, **extra}
        if cfg.max_tokens:
            kw["max_tokens"] = cfg.max_tokens
        chat = self._openai().chat.completions
        try:
            if stream:
                return self._read_stream(chat.create(
                    stream=True, stream_options={"include_usage": True}, **kw))
            with chat.with_streaming_response.create(**kw) as resp:
                return self._read_body(resp.iter_bytes())
        except openai.APIStatusError as e:
            raise self._status_error(e) from None
        except openai.APITimeoutError:
            raise _Retryable(f"no reply within the {cfg.timeout:g}s timeout",
                             kind="timeout") from None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e
            kind = "refused" if isinstance(_root(cause), ConnectionRefusedError) or \
                "refused" in str(cause).lower() else "other"
            raise _Retryable(f"cannot connect to {cfg.base_url or 'the OpenAI API'}: {cause}",
                             kind=kind) from None
        except _BadReply as e:
            raise _Retryable(f"the server's reply is not valid chat-completions JSON ({e})"
                             ) from None
        except Exception as e:
            # httpx, httpcore and h11, or their renamed successors (httpx2, httpcore2)
            if type(e).__module__.split(".")[0].rstrip("0123456789") in ("httpx", "httpcore",
                                                                        "h11"):
                # raised while reading a body, which the openai client does not wrap
                raise _Retryable(f"the connection failed mid-reply ({type(e).__name__}:"
                                 f" {e})") from None
            if not isinstance(e, (ValueError, AttributeError, TypeError, KeyError, IndexError)):
                raise
            raise _Retryable(f"the server's reply is not valid chat-completions JSON"
                             f" ({type(e).__name__}: {e})") from None

    def _read_body(self, chunks) -> _Reply:
        """A non-streamed reply, read up to a size cap and validated field by field."""
        cap = self.config.max_reply_chars * 4 + 65536  # bytes: JSON escapes, UTF-8
        data = bytearray()
        for chunk in chunks:
            data += chunk
            if len(data) > cap:
                raise _BadReply(f"the reply is larger than {cap} bytes")
        try:
            body = json.loads(bytes(data))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _BadReply(f"JSONDecodeError: {e}") from None
        if not isinstance(body, dict):
            raise _BadReply(f"the reply is a JSON {type(body).__name__}, not an object")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise _BadReply("no choices in the reply")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise _BadReply("the first choice has no message")
        content = message.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise _BadReply(f"the message's content is a {type(content).__name__}, not text")
        text, clipped = self._clip(content)
        pt, ct = _usage(body.get("usage"))
        finish = choices[0].get("finish_reason")
        return _Reply(text, pt, ct, finish if isinstance(finish, str) else None, clipped)

    def _read_stream(self, chunks) -> _Reply:
        parts: list[str] = []
        size = 0
        pt = ct = None
        finish = None
        clipped = False
        try:
            for chunk in chunks:
                got = _usage(getattr(chunk, "usage", None))
                if got != (None, None):
                    pt, ct = got
                for choice in getattr(chunk, "choices", None) or ():
                    delta = getattr(choice, "delta", None)
                    piece = getattr(delta, "content", None) if delta is not None else None
                    if piece is not None and not isinstance(piece, str):
                        raise _BadReply(f"a streamed delta's content is a"
                                        f" {type(piece).__name__}, not text")
                    if piece:
                        parts.append(piece)
                        size += len(piece)
                    reason = getattr(choice, "finish_reason", None)
                    if isinstance(reason, str) and reason:
                        finish = reason
                if size > self.config.max_reply_chars:
                    clipped = True
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing a broken stream
                    pass
        text, more = self._clip("".join(parts))
        return _Reply(text, pt, ct, finish, clipped or more)

    def _clip(self, text: str) -> tuple[str, bool]:
        cap = self.config.max_reply_chars
        return (text[:cap], True) if len(text) > cap else (text, False)

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
            if retry_after is not None and retry_after != retry_after:  # NaN
                retry_after = None
            return _Retryable(f"HTTP {status} from {where}: {detail}", retry_after)
        return LLMError(f"HTTP {status} from {where}: {detail}")

    def _delay(self, attempt: int, e: _Retryable, nth: int) -> float:
        """Seconds to wait before the next attempt; raises ``LLMError`` when the server
        asks for longer than the client may wait."""
        cfg = self.config
        if e.kind == "refused":
            base = min(REFUSED_PAUSE, cfg.backoff * 2.0 ** (nth - 1))
        else:
            base = cfg.backoff * 2.0 ** (attempt - 1)
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if e.retry_after is not None and e.retry_after > 0:
            if e.retry_after > cfg.max_backoff or (left is not None and e.retry_after > left):
                room = cfg.max_backoff if left is None else min(cfg.max_backoff, max(left, 0))
                raise LLMError(f"{e}; the server asks to retry after {e.retry_after:g} s,"
                               f" longer than the {room:.0f} s this search may wait")
            base = max(base, e.retry_after)
        delay = min(base, cfg.max_backoff) * (1.0 + 0.1 * random.random())
        if left is not None and delay >= left:
            raise LLMError(f"{e}; no time left in the search's budget to retry")
        return delay

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


def _usage(usage: Any) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens from a usage object or dict; a field that is not a
    non-negative integer is unknown (None)."""
    if usage is None:
        return None, None

    def get(name: str) -> int | None:
        v = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            return None
        return v

    return get("prompt_tokens"), get("completion_tokens")


def _root(e: BaseException) -> BaseException:
    seen = set()
    while e.__cause__ is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__
    return e


def _quiet_close(client) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - a broken connection is what we are dropping
        pass


def _message(e) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
    return str(getattr(e, "message", e))[:500]
