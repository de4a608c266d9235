"""A scripted OpenAI-compatible chat-completions server on loopback, for tests.

``FakeOpenAI`` runs a threaded ``http.server`` on 127.0.0.1 (port 0: the OS picks one).
Each POST to ``/v1/chat/completions`` takes the next action from a queue (``reply``,
``error``, ``hang``, ``malformed``); when the queue is empty, ``default`` answers (a 500
unless set). Every request is recorded (path, lower-cased headers, JSON body) so a test can assert
what was sent. A request with ``"stream": true`` gets its reply as server-sent events.

    with FakeOpenAI() as server:
        server.reply("```python\\n...\\n```")
        client = LLMClient(LLMConfig(model="fake", base_url=server.url))

``api_key`` and ``models`` make the server check the key (401) and the model (404) the
way OpenAI does. ``hang`` blocks until ``stop()`` (or 30 s), so a hung request never holds
up the end of a test: handler threads are daemons and ``stop`` releases them.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Action:
    kind: str  # reply, error, hang, malformed
    text: str = ""
    status: int = 200
    message: str = ""
    prompt_tokens: int | None = 11
    completion_tokens: int | None = 7
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""  # raw: the exact body sent
    drip: float = 0.0  # raw: seconds between bytes (a server that drips its reply)
    delay: float = 0.0  # reply: seconds before answering (a slow model)


class FakeOpenAI:
    def __init__(self, *, api_key: str | None = None, models: set[str] | None = None,
                 chunk: int = 16) -> None:
        self.api_key = api_key
        self.models = set(models) if models else None
        self.chunk = chunk
        self.script: queue.Queue[Action] = queue.Queue()
        self.default = Action("error", status=500, message="the script is exhausted")
        self.requests: list[dict[str, Any]] = []
        self.received = threading.Semaphore(0)  # released once per request received
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting --------------------------------------------------------------------
    def reply(self, text: str, *, prompt_tokens: int | None = 11,
              completion_tokens: int | None = 7, delay: float = 0.0) -> FakeOpenAI:
        self.script.put(Action("reply", text=text, prompt_tokens=prompt_tokens,
                               completion_tokens=completion_tokens, delay=delay))
        return self

    def error(self, status: int, message: str = "scripted error",
              headers: dict[str, str] | None = None) -> FakeOpenAI:
        self.script.put(Action("error", status=status, message=message,
                               headers=dict(headers or {})))
        return self

    def hang(self) -> FakeOpenAI:
        self.script.put(Action("hang"))
        return self

    def raw(self, data: bytes | dict, *, drip: float = 0.0, status: int = 200,
            headers: dict[str, str] | None = None) -> FakeOpenAI:
        """Send exactly ``data`` (a dict is sent as JSON), ``drip`` seconds per byte."""
        if isinstance(data, dict):
            data = json.dumps(data).encode()
        self.script.put(Action("raw", data=data, drip=drip, status=status,
                               headers=dict(headers or {})))
        return self

    def malformed(self) -> FakeOpenAI:
        self.script.put(Action("malformed"))
        return self

    @property
    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r["body"] for r in self.requests]

    # -- lifecycle --------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- called by the handler ----------------------------------------------------------
    def _record(self, path: str, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "body": body})
        self.received.release()

    def _next(self) -> Action:
        try:
            return self.script.get_nowait()
        except queue.Empty:
            return self.default


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.0"  # one request per connection: simple and enough here

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = {"_raw": raw.decode(errors="replace")}
        fake = self.fake
        fake._record(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._error(404, f"unknown path {self.path}", "invalid_request_error")
        if fake.api_key is not None:
            sent = self.headers.get("Authorization", "")
            if sent != f"Bearer {fake.api_key}":
                return self._error(401, "Incorrect API key provided.", "invalid_request_error",
                                   code="invalid_api_key")
        model = body.get("model")
        if fake.models is not None and model not in fake.models:
            return self._error(404, f"The model `{model}` does not exist or you do not have"
                               " access to it.", "invalid_request_error",
                               code="model_not_found")
        action = fake._next()
        if action.kind == "hang":
            fake._release.wait(30.0)
            return self._safe(lambda: self._error(504, "released"))
        if action.kind == "error":
            return self._error(action.status, action.message, "server_error",
                               headers=action.headers)
        if action.delay and fake._release.wait(action.delay):
            return None
        if action.kind == "raw":
            return self._safe(lambda: self._raw(action))
        if action.kind == "malformed":
            return self._send(200, b'{"id": "chatcmpl-x", "choices": [{"mess', "application/json")
        if body.get("stream"):
            return self._safe(lambda: self._stream(action, model,
                                                   (body.get("stream_options") or {})))
        payload = {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": action.text}}],
        }
        if action.prompt_tokens is not None:
            payload["usage"] = {
                "prompt_tokens": action.prompt_tokens,
                "completion_tokens": action.completion_tokens,
                "total_tokens": action.prompt_tokens + (action.completion_tokens or 0),
            }
        self._send(200, json.dumps(payload).encode(), "application/json")

    # -- responses ------------------------------------------------------------------------
    def _send(self, status: int, data: bytes, ctype: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, etype: str = "server_error",
               code: str | None = None, headers: dict[str, str] | None = None) -> None:
        body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _stream(self, action: Action, model: str, options: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model}

        def event(obj: Any) -> None:
            self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
            self.wfile.flush()

        event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]})
        text = action.text
        for i in range(0, len(text), self.fake.chunk):
            event({**base, "choices": [{"index": 0, "delta": {"content": text[i:i + self.fake.chunk]},
                                        "finish_reason": None}]})
        event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if options.get("include_usage") and action.prompt_tokens is not None:
            event({**base, "choices": [], "usage": {
                "prompt_tokens": action.prompt_tokens,
                "completion_tokens": action.completion_tokens,
                "total_tokens": action.prompt_tokens + (action.completion_tokens or 0)}})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _raw(self, action: Action) -> None:
        self.send_response(action.status)
        given = {k.lower() for k in action.headers}
        if "content-type" not in given:
            self.send_header("Content-Type", "application/json")
        if "content-length" not in given:  # a larger one given: the body ends early
            self.send_header("Content-Length", str(len(action.data)))
        for k, v in action.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not action.drip:
            self.wfile.write(action.data)
            return
        for i in range(len(action.data)):
            if self.fake._release.wait(action.drip):
                return
            self.wfile.write(action.data[i:i + 1])
            self.wfile.flush()

    def _safe(self, fn) -> None:
        """Write a response the client may have given up on (a timed-out request)."""
        try:
            fn()
        except (BrokenPipeError, ConnectionResetError):
            pass
