"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions API, with fault injection.

Used by the generation, chat-translation and LLM-judge tests, and by the HTTP benchmark. It is a
scripted stand-in for a remote API only: everything between the client and the socket is real.

Usage::

    from fake_openai_server import Reply, start_server

    with start_server(script={"capital of France": "Paris."}, latency_s=0.05) as server:
        model = load_model(f"openai:fake@{server.url}")
        ...
        server.requests          # POSTs received
        server.status_counts     # {200: 10, 429: 3, ...}

``script`` decides each answer from the request: ``None`` echoes the last user message
(``"echo: <text>"``), a dict maps a substring of the last user message to the answer (first
match wins; unmatched requests get the echo), and a callable ``(body) -> str | Reply`` decides
anything. ``faults`` is a list of ``Reply`` objects served, in order, to the first attempts *of
each distinct conversation*: ``faults=[Reply(status=429, retry_after="1"), Reply(malformed=True)]``
makes every conversation fail twice before it is answered, whatever the client's concurrency.

Run standalone (e.g. for a subprocess test): ``python tests/fake_openai_server.py --latency 0.2``
prints the base URL on its first line and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer or fault.

    ``status`` other than 200 sends an error body (with ``Retry-After: retry_after`` if given);
    ``malformed`` sends a 200 whose body is not valid JSON; ``no_choices`` a JSON body without
    ``choices``; ``delay_s`` sleeps before answering (past a client's timeout, it is a timeout).
    """

    text: str = ""
    status: int = 200
    delay_s: float = 0.0
    retry_after: str | None = None
    malformed: bool = False
    no_choices: bool = False
    finish_reason: str = "stop"
    body: str | None = None
    # Token log-probabilities sent as ``choices[0].logprobs.content`` (the OpenAI format).
    logprobs: list[dict[str, Any]] | None = None


Script = Callable[[dict[str, Any]], "str | Reply"] | dict[str, str] | None


def last_user_text(body: dict[str, Any]) -> str:
    """The content of the last user message of a chat-completions body ("" when there is none)."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


@dataclass
class FakeServer:
    """Handle on a running fake server: its base URL, what it saw, and ``stop()``."""

    url: str
    httpd: ThreadingHTTPServer
    thread: threading.Thread
    requests: int = 0
    status_counts: Counter = field(default_factory=Counter)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)
    max_in_flight: int = 0
    _in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        """Stop serving and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    # Many clients connect at once in the benchmark; the default listen backlog of 5 refuses some.
    request_queue_size = 256
    daemon_threads = True


def _conversation_key(body: dict[str, Any]) -> str:
    return json.dumps(body.get("messages"), sort_keys=True, ensure_ascii=False)


def start_server(
    script: Script = None,
    *,
    faults: list[Reply] | tuple[Reply, ...] = (),
    latency_s: float = 0.0,
    model: str | None = None,
    port: int = 0,
) -> FakeServer:
    """Start the server on 127.0.0.1 (a free port unless ``port``) in a daemon thread.

    ``latency_s`` is added to every answer; ``model``, when given, makes requests for any other
    model name fail with 404 as a real server would.
    """
    handle: FakeServer

    def decide(body: dict[str, Any]) -> Reply:
        with handle.lock:
            attempt = handle.attempts[_conversation_key(body)]
            handle.attempts[_conversation_key(body)] += 1
        if attempt < len(faults):
            return faults[attempt]
        prompt = last_user_text(body)
        if callable(script):
            answer = script(body)
            return answer if isinstance(answer, Reply) else Reply(text=str(answer))
        if isinstance(script, dict):
            for needle, answer in script.items():
                if needle in prompt:
                    return Reply(text=answer)
        return Reply(text=f"echo: {prompt}")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, the second waits for a delayed ACK.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return

        def _send(self, status: int, payload: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): that is the point of a delay fault

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, json.dumps({"data": [{"id": model or "fake"}]}).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, b'{"error": "not found"}')
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, b'{"error": "body is not JSON"}')
                return
            with handle.lock:
                handle.requests += 1
                handle.bodies.append(body)
                handle.headers.append(dict(self.headers.items()))
                handle._in_flight += 1
                handle.max_in_flight = max(handle.max_in_flight, handle._in_flight)
            try:
                self._answer(body)
            finally:
                with handle.lock:
                    handle._in_flight -= 1

        def _answer(self, body: dict[str, Any]) -> None:
            if model is not None and body.get("model") != model:
                self._record(404)
                self._send(404, json.dumps({"error": f"model {body.get('model')!r} not served"}).encode())
                return
            reply = decide(body)
            if latency_s or reply.delay_s:
                time.sleep(latency_s + reply.delay_s)
            self._record(reply.status)
            if reply.status != 200:
                extra = {"Retry-After": reply.retry_after} if reply.retry_after is not None else None
                body_text = reply.body if reply.body is not None else json.dumps({"error": {"message": f"injected {reply.status}"}})
                self._send(reply.status, body_text.encode("utf-8"), extra)
                return
            if reply.malformed:
                self._send(200, b'{"choices": [{"message": {"content": "cut sh')
                return
            if reply.no_choices:
                self._send(200, b'{"object": "chat.completion"}')
                return
            words = len(reply.text.split())
            payload = {
                "id": f"chatcmpl-{handle.requests}",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": reply.finish_reason,
                     **({"logprobs": {"content": reply.logprobs}} if reply.logprobs is not None else {})}
                ],
                "usage": {
                    "prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or []),
                    "completion_tokens": words,
                    "total_tokens": 0,
                },
            }
            self._send(200, json.dumps(payload, ensure_ascii=False).encode("utf-8"))

        def _record(self, status: int) -> None:
            with handle.lock:
                handle.status_counts[status] += 1

    httpd = _Server(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="fake-openai", daemon=True)
    handle = FakeServer(url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", httpd=httpd, thread=thread)
    thread.start()
    return handle


@contextmanager
def serving(script: Script = None, **options: Any) -> Iterator[FakeServer]:
    """``start_server`` as a context manager that always stops the server."""
    server = start_server(script, **options)
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    """Serve until killed, printing the base URL first (for subprocess tests and manual trials)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    args = parser.parse_args()
    server = start_server(latency_s=args.latency, port=args.port)
    print(server.url, flush=True)
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
