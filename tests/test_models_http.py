"""The openai: backend's own HTTP/1.1 client (xsafety.models.http) against a server that writes raw bytes.

Each test scripts the exact bytes of the server's answers, so every way of framing a body (length,
chunked, read to close), content coding, 1xx answers, and a keep-alive connection that the server
drops while idle are checked the way a real server would send them.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import zlib
from pathlib import Path
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from xsafety.models.base import ChatRequest, Decoding
from xsafety.models.http import Client, ProtocolError, proxy_for, split_url
from xsafety.models.openai import OpenAIChatModel

# Answers a connection's n-th request (0-based) with raw bytes; returning None closes the socket
# (so does an HTTP/1.0 or "Connection: close" answer, once sent).
Script = Callable[[int, bytes], bytes | None]


def _completion(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()


def _read_request(conn: socket.socket, buf: bytes) -> tuple[bytes, bytes] | None:
    """One request (head + body) from the socket; None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(rest) < length:
        rest += conn.recv(65536)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


@contextmanager
def raw_server(script: Script) -> Iterator[tuple[str, list[bytes], list[int]]]:
    """A server on 127.0.0.1: yields its base URL, the requests it got, and connections accepted."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    requests: list[bytes] = []
    accepted: list[int] = []
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        buf = b""
        n = 0
        with conn:
            while not stop.is_set():
                got = _read_request(conn, buf)
                if got is None:
                    return
                request, buf = got
                requests.append(request)
                answer = script(n, request)
                n += 1
                if answer is None:
                    return
                conn.sendall(answer)
                head = answer.split(b"\r\n\r\n", 1)[0]
                if head.startswith(b"HTTP/1.0") or b"Connection: close" in head:
                    return  # as a real server does after such an answer

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            accepted.append(1)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", requests, accepted
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body


def _post_all(url: str, n: int) -> list[object]:
    async def go() -> list[object]:
        client = Client({"Content-Type": "application/json"})
        try:
            return [(await client.post_json(url + "/chat/completions", {"i": i})).json() for i in range(n)]
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_keep_alive_sends_every_request_on_one_connection_with_a_json_body() -> None:
    with raw_server(lambda n, req: _ok(_completion(f"answer {n}"))) as (url, requests, accepted):
        out = _post_all(url, 3)
    assert [o["choices"][0]["message"]["content"] for o in out] == ["answer 0", "answer 1", "answer 2"]  # type: ignore[index]
    assert len(accepted) == 1
    head, _, body = requests[1].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in head and json.loads(body) == {"i": 1}


def test_chunked_gzip_and_deflate_bodies_are_decoded() -> None:
    payload = _completion("ünïcode answer")
    zipped = gzip.compress(payload)
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in (zipped[:7], zipped[7:])) + b"0\r\nX-Trailer: 1\r\n\r\n"
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + chunked,
        _ok(zlib.compress(payload), b"Content-Encoding: deflate\r\n"),
        _ok(zlib.compress(payload)[2:-4], b"Content-Encoding: deflate\r\n"),  # raw deflate, as some servers send
    ]
    with raw_server(lambda n, req: answers[n]) as (url, _, accepted):
        out = _post_all(url, 3)
    assert all(o["choices"][0]["message"]["content"] == "ünïcode answer" for o in out)  # type: ignore[index]
    assert len(accepted) == 1


def test_a_close_delimited_http10_body_and_connection_close_open_a_new_connection() -> None:
    answers = [
        b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + _completion("ten"),
        _ok(_completion("closing"), b"Connection: close\r\n"),
    ]
    calls: list[int] = []

    def answer(n: int, req: bytes) -> bytes | None:
        calls.append(1)
        return answers[len(calls) - 1] if len(calls) <= len(answers) else _ok(_completion("later"))

    with raw_server(answer) as (url, _, accepted):
        out = _post_all(url, 3)
    assert [o["choices"][0]["message"]["content"] for o in out] == ["ten", "closing", "later"]  # type: ignore[index]
    # The HTTP/1.0 body ends with the close, and "Connection: close" is obeyed: three connections.
    assert len(accepted) == 3


def test_interim_1xx_answers_are_skipped() -> None:
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    with raw_server(lambda n, req: early + _ok(_completion("after hints"))) as (url, _, _accepted):
        out = _post_all(url, 1)
    assert out[0]["choices"][0]["message"]["content"] == "after hints"  # type: ignore[index]


def test_a_keep_alive_connection_dropped_while_idle_is_replaced_without_an_error() -> None:
    # The server answers the first request, then closes the connection when the second arrives
    # without answering it (what a server's idle timeout looks like to the client).
    def script(n: int, req: bytes) -> bytes | None:
        return _ok(_completion(f"reply {n}")) if n == 0 else None

    with raw_server(script) as (url, requests, accepted):
        out = _post_all(url, 2)
    assert [o["choices"][0]["message"]["content"] for o in out] == ["reply 0", "reply 0"]  # type: ignore[index]
    assert len(accepted) == 2 and len(requests) == 3  # the dropped request was sent again, once


def test_garbage_instead_of_http_is_a_protocol_error() -> None:
    with raw_server(lambda n, req: b"SSH-2.0-OpenSSH\r\n\r\n") as (url, _, _accepted):
        with pytest.raises(ProtocolError, match="status line"):
            _post_all(url, 1)


def test_the_backend_retries_a_dropped_connection_and_reports_protocol_garbage() -> None:
    def script(n: int, req: bytes) -> bytes | None:
        return None  # every connection is closed without an answer

    with raw_server(script) as (url, _, _accepted):
        model = OpenAIChatModel("fake", [url], Decoding(max_new_tokens=8), max_retries=1, backoff_base_s=0.01)
        [result] = model.chat([ChatRequest(id="a", messages=({"role": "user", "content": "hi"},))])
    assert result.text == "" and result.error is not None
    assert "connection error: IncompleteReadError" in result.error and "after 2 attempts" in result.error


def test_the_httpx_path_used_behind_a_proxy_gives_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the environment names a proxy the backend hands requests to httpx; forced here (with
    no proxy actually set, httpx connects directly), the answers and errors read the same."""
    import xsafety.models.openai as openai_module

    with raw_server(lambda n, req: _ok(_completion(f"reply {n}"))) as (url, _, _accepted):
        requests = [ChatRequest(id=str(i), messages=({"role": "user", "content": f"q{i}"},)) for i in range(3)]
        lean = OpenAIChatModel("fake", [url], Decoding(max_new_tokens=8), concurrency=1).chat(requests)
        monkeypatch.setattr(openai_module, "proxy_for", lambda u: "http://proxy.invalid:3128")
        via_httpx = OpenAIChatModel("fake", [url], Decoding(max_new_tokens=8), concurrency=1).chat(requests)
    assert [r.text for r in lean] == ["reply 0", "reply 1", "reply 2"]
    assert [(r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens) for r in via_httpx] == \
        [(r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens) for r in lean]


def test_proxy_for_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("http://10.0.0.5:8000/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert proxy_for("http://10.0.0.5:8000/v1") is None  # only https is proxied
    assert proxy_for("https://api.example.com/v1") == "http://proxy.example:3128"
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert proxy_for("https://api.example.com/v1") is None


def test_split_url_keeps_path_and_query_and_default_ports() -> None:
    origin, target = split_url("https://Example.com/v1/chat/completions?api-version=2")
    assert (origin.scheme, origin.host, origin.port, target) == ("https", "example.com", 443, "/v1/chat/completions?api-version=2")
    with pytest.raises(ProtocolError):
        split_url("ftp://example.com/x")


def test_https_is_spoken_with_the_certificate_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local TLS server whose self-signed certificate is trusted through SSL_CERT_FILE answers
    over https; with the system's trust store instead, the same server is refused."""
    import shutil
    import ssl
    import subprocess

    from xsafety.models import http

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    port = sock.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = sock.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    got = _read_request(tls, b"")  # type: ignore[arg-type]
                    if got is not None:
                        tls.sendall(_ok(_completion("over tls")))
            except (OSError, ssl.SSLError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"https://localhost:{port}/v1"
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        http.ssl_context.cache_clear()
        out = _post_all(url, 1)
        assert out[0]["choices"][0]["message"]["content"] == "over tls"  # type: ignore[index]
        monkeypatch.delenv("SSL_CERT_FILE")
        http.ssl_context.cache_clear()
        with pytest.raises(ssl.SSLCertVerificationError):
            _post_all(url, 1)
    finally:
        http.ssl_context.cache_clear()
        sock.close()
        thread.join(timeout=5)
