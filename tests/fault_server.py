"""A misbehaving OpenAI-compatible server on 127.0.0.1, for the fault suite.

Every answer is decided by ``decide(body, attempt) -> Fault``, where ``attempt`` counts earlier
requests carrying the same conversation (0 for the first). A ``Fault`` can be any of:

* ``status`` other than 200, with an optional ``Retry-After`` header and ``body``;
* ``drip_s``: a 200 whose body trickles out one byte every ``drip_s`` seconds (a server that is
  never silent long enough for a read timeout, but never finishes);
* ``reset``: the connection is closed with a TCP reset before any byte is sent;
* ``raw``: a 200 with exactly these bytes as the body (wrong-shaped or broken JSON);
* ``usage``: a good answer whose ``usage`` field is this value instead of token counts;
* ``echo_auth_at``: an error body (``status``, default 400) that echoes the request's
  ``Authorization`` header after that many filler characters, as a careless proxy does.

Usage::

    with fault_server(lambda body, attempt: Fault(status=429, retry_after="1") if attempt == 0 else Fault()) as s:
        load_model(f"openai:fake@{s.url}")
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Fault:
    """One scripted answer; the default is a well-formed completion saying ``text``."""

    text: str = "I cannot help with that."
    status: int = 200
    retry_after: str | None = None
    body: str | None = None
    drip_s: float = 0.0
    reset: bool = False
    raw: bytes | None = None
    usage: Any = "default"
    echo_auth_at: int | None = None


Decide = Callable[[dict[str, Any], int], Fault]


@dataclass
class FaultServer:
    """A running fault server: base URL, counters, and ``stop()``."""

    url: str
    httpd: ThreadingHTTPServer
    thread: threading.Thread
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    attempts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        """Stop serving and free the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def _completion(body: dict[str, Any], text: str, usage: Any) -> bytes:
    payload: dict[str, Any] = {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }
    payload["usage"] = {"prompt_tokens": 3, "completion_tokens": len(text.split()), "total_tokens": 0} if usage == "default" else usage
    return json.dumps(payload).encode()


def start_fault_server(decide: Decide | None = None) -> FaultServer:
    """Start a fault server on a free port of 127.0.0.1 in a daemon thread."""
    decide = decide or (lambda body, attempt: Fault())
    handle: FaultServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            try:
                self.wfile.write(payload)
                self.wfile.flush()
            except OSError:
                pass  # the client gave up: that is what some faults are for

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, b'{"error": "body is not JSON"}')
                return
            conv = json.dumps(body.get("messages"), sort_keys=True)
            with handle.lock:
                attempt = handle.attempts[conv]
                handle.attempts[conv] += 1
                handle.requests += 1
            fault = decide(body, attempt)
            with handle.lock:
                handle.statuses["reset" if fault.reset else fault.status] += 1
            if fault.reset:
                # SO_LINGER with a zero timeout turns close() into a TCP reset.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if fault.echo_auth_at is not None:
                auth = self.headers.get("Authorization", "")
                echoed = "x" * fault.echo_auth_at + f"invalid credentials: {auth} (check your key)"
                self._send(fault.status if fault.status != 200 else 400, json.dumps({"error": echoed}).encode())
                return
            if fault.status != 200:
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
                self._send(fault.status, (fault.body or json.dumps({"error": f"injected {fault.status}"})).encode(), extra)
                return
            if fault.drip_s:
                payload = _completion(body, fault.text, fault.usage)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    for byte in payload:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(fault.drip_s)
                except OSError:
                    pass
                return
            if fault.raw is not None:
                self._send(200, fault.raw)
                return
            self._send(200, _completion(body, fault.text, fault.usage))

    httpd = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="fault-server", daemon=True)
    handle = FaultServer(url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", httpd=httpd, thread=thread)
    thread.start()
    return handle


@contextmanager
def fault_server(decide: Decide | None = None) -> Iterator[FaultServer]:
    """``start_fault_server`` as a context manager that always stops the server."""
    server = start_fault_server(decide)
    try:
        yield server
    finally:
        server.stop()
