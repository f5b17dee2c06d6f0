"""A small HTTP/1.1 client for the ``openai:`` backend: one keep-alive connection per worker and server.

Why not httpx for every request: against a server that answers at once, httpx and httpcore cost
about 3.6 ms of CPU per request on a 2-core machine (the pool's bookkeeping, and a failed
``import sniffio`` searched along ``sys.path`` on every request when sniffio is absent), while
writing the request and parsing the answer over a plain asyncio stream costs well under 0.1 ms. A
GPU server answering hundreds of requests a second would otherwise wait on xsafety's client.

The scope is what an OpenAI-compatible endpoint needs: a POST with a JSON body over http or https,
keep-alive, bodies framed by ``Content-Length``, chunked transfer coding or the connection's close,
and gzip/deflate content coding. Redirects are not followed (httpx does not follow them by default
either: a 3xx is an answer like any other). Proxies are not spoken: ``proxy_for`` tells the backend
when the environment names one for a URL, and the backend then uses httpx, which honours it.
Deadlines are the caller's (``asyncio.timeout`` around the whole attempt); a connection that saw an
exception or a cancellation mid-request is closed, never reused.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import urllib.request
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

# Longest status line plus headers accepted (asyncio's default limit is 64 KiB).
HEADER_LIMIT = 1 << 20
USER_AGENT = b"xsafety"


class ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.x response this client can read."""


class StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before it answered."""


@dataclass(frozen=True)
class Origin:
    """Where a request goes: scheme, host and port."""

    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class HttpResponse:
    """A complete response: status, headers (names lower-cased, the last of a repeated name wins)
    and the body after any content coding was undone."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as text: the charset the Content-Type names, else UTF-8; bad bytes replaced."""
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.body.decode(charset, errors="replace")
        except LookupError:
            return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not)."""
        return json.loads(self.body)


@lru_cache(maxsize=256)
def split_url(url: str) -> tuple[Origin, str]:
    """The origin of an absolute http(s) URL and its request target (path and query)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ProtocolError(f"not an http(s) URL: {url}")
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Origin(scheme, parts.hostname, port), target


def proxy_for(url: str) -> str | None:
    """The proxy the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, minus
    ``NO_PROXY``) names for ``url``, or None to connect directly."""
    origin, _ = split_url(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(origin.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(origin.host):
        return None
    return proxy


@lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    """Certificate checks as httpx makes them: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when set,
    else certifi's bundle when installed, else the system's."""
    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    if cafile is None and capath is None:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            pass
    context = ssl.create_default_context(cafile=cafile, capath=capath)
    context.set_alpn_protocols(["http/1.1"])
    return context


class Connection:
    """One HTTP/1.1 connection; ``post`` sends a request and reads the whole response."""

    def __init__(self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.open = True
        self.used = False
        host = origin.host if ":" not in origin.host else f"[{origin.host}]"
        default = 443 if origin.scheme == "https" else 80
        value = host if origin.port == default else f"{host}:{origin.port}"
        self.host_header = value.encode("ascii") if value.isascii() else value.encode("idna")

    @classmethod
    async def connect(cls, origin: Origin) -> "Connection":
        """Open a connection (TLS for https)."""
        tls = ssl_context() if origin.scheme == "https" else None
        reader, writer = await asyncio.open_connection(
            origin.host, origin.port, ssl=tls, server_hostname=origin.host if tls else None, limit=HEADER_LIMIT,
        )
        return cls(origin, reader, writer)

    def usable(self) -> bool:
        """Whether the connection can carry another request (the server has not closed it)."""
        return self.open and not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        """Close the socket; the connection is not used again."""
        self.open = False
        self.writer.close()

    async def post(self, target: str, headers: bytes, body: bytes) -> HttpResponse:
        """Send a POST and read its response; any failure closes the connection."""
        reused = self.used
        self.used = True
        try:
            self.writer.write(
                b"POST " + target.encode("ascii") + b" HTTP/1.1\r\nHost: " + self.host_header
                + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + headers + b"\r\n" + body
            )
            await self.writer.drain()
            response, keep = await self._read_response(reused)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return response

    async def _read_response(self, reused: bool) -> tuple[HttpResponse, bool]:
        while True:
            try:
                head = await self.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if reused and not exc.partial:
                    raise StaleConnection("the server closed an idle connection") from None
                raise
            except asyncio.LimitOverrunError:
                raise ProtocolError(f"response headers longer than {HEADER_LIMIT} bytes") from None
            version, status, headers = _parse_head(head)
            if not 100 <= status < 200:
                break  # 1xx answers (100 Continue, 103 Early Hints) come before the real one
        body, framed = await self._read_body(status, headers)
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            try:
                # wbits 47 reads gzip or zlib, whichever the header says; raw deflate is the fallback.
                body = zlib.decompress(body, 47) if encoding != "deflate" else _inflate(body)
            except zlib.error as exc:
                raise ProtocolError(f"a {encoding} body that does not decompress: {exc}") from None
        connection = headers.get("connection", "").lower()
        keep = framed and ("close" not in connection) and (version == "HTTP/1.1" or "keep-alive" in connection)
        return HttpResponse(status, headers, body), keep

    async def _read_body(self, status: int, headers: dict[str, str]) -> tuple[bytes, bool]:
        """The body and whether its end was framed (else the connection's close ended it)."""
        if status in (204, 304):
            return b"", True
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while True:
                line = await self.reader.readuntil(b"\r\n")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
                if size == 0:
                    while (await self.reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailer fields, unused
                    return b"".join(parts), True
                parts.append(await self.reader.readexactly(size))
                if await self.reader.readexactly(2) != b"\r\n":
                    raise ProtocolError("a chunk not followed by CRLF")
        length = headers.get("content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length!r}") from None
            return await self.reader.readexactly(n), True
        return await self.reader.read(), False


def _inflate(body: bytes) -> bytes:
    try:
        return zlib.decompress(body)
    except zlib.error:
        return zlib.decompress(body, -15)


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    """HTTP version, status code and headers from the bytes before the blank line."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise ProtocolError(f"bad status code in {lines[0][:80]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"a header line without a colon: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return parts[0], status, headers


class Client:
    """One worker's connections, one per origin, reused while the server keeps them open."""

    def __init__(self, headers: dict[str, str]) -> None:
        fixed = {"User-Agent": USER_AGENT.decode(), "Accept": "application/json",
                 "Accept-Encoding": "gzip, deflate", **headers}
        self.headers = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in fixed.items())
        self._connections: dict[Origin, Connection] = {}

    async def post_json(self, url: str, payload: Any) -> HttpResponse:
        """POST ``payload`` as JSON to ``url``; a stale keep-alive connection is replaced once."""
        origin, target = split_url(url)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        conn = self._connections.get(origin)
        if conn is not None and conn.usable():
            try:
                return await conn.post(target, self.headers, body)
            except StaleConnection:
                pass  # the server dropped it while idle: the request never reached it
        conn = await Connection.connect(origin)
        self._connections[origin] = conn
        return await conn.post(target, self.headers, body)

    async def aclose(self) -> None:
        """Close every connection."""
        for conn in self._connections.values():
            if conn.open:
                conn.close()
        self._connections.clear()
