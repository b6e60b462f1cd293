"""A scripted OpenAI-compatible chat server for tests and benchmarks.

It speaks the real HTTP protocol (``POST /v1/chat/completions``, ``GET /v1/models``)
on 127.0.0.1 with a kernel-chosen port, so a client under test goes through its whole
stack: HTTP, JSON decoding, status handling, timeouts. What it answers is scripted:

- a queue of :class:`Action` (or plain strings, meaning "reply with this text"),
  consumed one per request in arrival order;
- or a function ``(request_json) -> Action | str``, for answers that depend on the
  request (needed when requests arrive concurrently in no fixed order).

Actions cover the faults a real endpoint shows: 429 with ``Retry-After``, 5xx, a body
that is not JSON, a slow reply, a dropped connection. Every request is recorded
(path, headers, parsed body) so tests can count retries exactly and check that cache
hits reach no server.

    with ScriptedServer([error(429, retry_after=0), "hello"]) as server:
        client = OpenAI(base_url=server.base_url, api_key="x")
        ...
        assert server.count == 2
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Union


@dataclass(frozen=True)
class Action:
    """How the server answers one request."""

    text: str | None = None  # assistant content of a 200 reply
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # raw body sent instead of the generated JSON
    delay_ms: int = 0  # wait before answering (or before dropping the connection)
    disconnect: bool = False  # close the socket without any response
    finish_reason: str = "stop"


Script = Union[Action, str]
ScriptFn = Callable[[dict], Script]


def reply(text: str, *, delay_ms: int = 0, finish_reason: str = "stop") -> Action:
    """A normal chat completion whose message content is ``text``."""
    return Action(text=text, delay_ms=delay_ms, finish_reason=finish_reason)


def error(
    status: int,
    message: str = "scripted failure",
    *,
    retry_after: float | str | None = None,
    delay_ms: int = 0,
) -> Action:
    """An error status with an OpenAI-style ``{"error": {...}}`` body."""
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    body = {"error": {"message": message, "type": "scripted_error", "code": status}}
    return Action(status=status, headers=headers, body=json.dumps(body).encode(), delay_ms=delay_ms)


def garbage(body: bytes = b"<html>upstream proxy error</html>", *, status: int = 200) -> Action:
    """A reply whose body is not JSON, although the status says all is well."""
    return Action(status=status, body=body, headers={"Content-Type": "text/html"})


def disconnect(*, delay_ms: int = 0) -> Action:
    """Drop the connection without sending a response."""
    return Action(disconnect=True, delay_ms=delay_ms)


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased (HTTP header names are case-insensitive)
    body: dict | None  # None when the body was not JSON


def _quiet_about_hang_ups(server, request, client_address) -> None:
    """A client that hangs up (a run that stops, a timeout) is normal here, not a traceback on stderr."""
    import sys

    if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
        ThreadingHTTPServer.handle_error(server, request, client_address)


class ScriptedServer:
    """Threaded HTTP server answering chat completions from a script.

    ``script`` is a queue (iterable of Action/str) or a function of the request JSON.
    ``default`` answers once a queue is empty; without it an exhausted queue yields a
    500 whose message says so, which makes an unexpected extra request visible.
    """

    def __init__(
        self,
        script: Iterable[Script] | ScriptFn | None = None,
        *,
        default: Script | ScriptFn | None = None,
        model: str = "scripted",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.model = model
        self.address = (host, port)  # port 0: the kernel picks a free one
        self._fn: ScriptFn | None = script if callable(script) else None
        self._queue: deque[Script] = deque() if callable(script) or script is None else deque(script)
        self._default = default
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> "ScriptedServer":
        handler = type("Handler", (_Handler,), {"owner": self})
        # socketserver's default listen backlog is 5: a burst of concurrent clients would
        # overflow it and wait a full SYN-retransmit second, which looks like client slowness.
        server_cls = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 256,
                                                             "handle_error": _quiet_about_hang_ups})
        self._httpd = server_cls(self.address, handler)
        self._httpd.daemon_threads = True  # a sleeping handler must not block shutdown
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "ScriptedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` of this server (ends in ``/v1``)."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- script and records ---------------------------------------------------
    def push(self, *actions: Script) -> None:
        """Append actions to the queue."""
        with self._lock:
            self._queue.extend(actions)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Chat-completion requests received so far, in arrival order (a copy)."""
        with self._lock:
            return [r for r in self._requests if r.path.endswith("/chat/completions")]

    @property
    def count(self) -> int:
        """Number of chat-completion requests received."""
        return len(self.requests)

    def reset(self) -> None:
        """Forget recorded requests (the script is kept)."""
        with self._lock:
            self._requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_action(self, body: dict | None) -> Action:
        with self._lock:
            if self._fn is None and self._queue:
                return _as_action(self._queue.popleft())
            source = self._fn if self._fn is not None else self._default
        if source is None:
            return error(500, "scripted server: script exhausted")
        # The function runs outside the lock: it may be slow or inspect the server.
        return _as_action(source(body or {}) if callable(source) else source)

    def _completion(self, action: Action, body: dict | None) -> bytes:
        messages = (body or {}).get("messages", [])
        prompt_words = sum(len(_text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))
        # Usage counts are whitespace words: the shape is what clients read, not the values.
        completion_words = len((action.text or "").split())
        payload = {
            "id": f"chatcmpl-scripted-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": (body or {}).get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": action.text},
                    "finish_reason": action.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_words,
                "completion_tokens": completion_words,
                "total_tokens": prompt_words + completion_words,
            },
        }
        return json.dumps(payload).encode()


def _as_action(item: Script) -> Action:
    return reply(item) if isinstance(item, str) else item


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class _Handler(BaseHTTPRequestHandler):
    owner: ScriptedServer
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def log_message(self, format, *args) -> None:  # noqa: A002 - stdlib signature
        """Silence per-request logging; tests read the records instead."""

    def _headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.headers.items()}

    def _read_body(self) -> tuple[bytes, dict | None]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return raw, parsed if isinstance(parsed, dict) else None

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            merged = {"Content-Type": "application/json", **(headers or {})}
            for name, value in merged.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout fired during a scripted delay).
            self.close_connection = True

    def do_GET(self) -> None:
        self.owner._record(RecordedRequest("GET", self.path, self._headers(), None))
        if self.path.rstrip("/").endswith("/models"):
            data = [{"id": self.owner.model, "object": "model", "created": 0, "owned_by": "vidcli-testing"}]
            self._send(200, json.dumps({"object": "list", "data": data}).encode())
        else:
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())

    def do_POST(self) -> None:
        _, body = self._read_body()
        self.owner._record(RecordedRequest("POST", self.path, self._headers(), body))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
            return
        action = self.owner._next_action(body)
        if action.delay_ms:
            time.sleep(action.delay_ms / 1000)
        if action.disconnect:
            self.close_connection = True
            return
        payload = action.body if action.body is not None else self.owner._completion(action, body)
        self._send(action.status, payload, action.headers)


def serve_until_signalled(make_server: Callable[[str, int], "ScriptedServer"], host: str, port: int,
                          url_file: str | None, name: str) -> int:
    """Start ``make_server(host, port)``, print its base URL (and write it to ``url_file`` atomically once
    listening), serve until SIGTERM or SIGINT, then stop and remove ``url_file``. Exit status 1
    with one line when the address cannot be taken."""
    stop = threading.Event()
    before = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _serve(make_server, host, port, url_file, name, stop)
    finally:  # the caller's handlers again (a program, or a test session, that goes on after serving)
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _serve(make_server: Callable[[str, int], "ScriptedServer"], host: str, port: int, url_file: str | None,
           name: str, stop: threading.Event) -> int:
    try:
        server = make_server(host, port).start()
    except OSError as exc:
        print(f"{name}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        if url_file:
            temporary = f"{url_file}.tmp-{os.getpid()}"
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(server.base_url + "\n")
            os.replace(temporary, url_file)
        print(server.base_url, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        if url_file and os.path.exists(url_file):
            os.remove(url_file)
    return 0
