"""Drive headless Chromium over the Chrome DevTools Protocol, with no dependency beyond the stdlib.

    with Browser() as b:
        b.open(Path("report/index.html"))
        b.wait("document.getElementById('xs-explorer').dataset.ready === '1'")
        b.select("[data-f=locale]", "es"); b.click("tr.item"); b.type("[data-f=search]", "phrase")

Used by ``tests/test_explorer_browser.py`` (filter, open, search in the item explorer) and by
``scripts/bench/explorer.py`` (page load time). A minimal RFC 6455 client talks to the browser's
websocket; pages are driven through a flat target session (``Target.attachToTarget``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    """Debian's chromium (or any chromium/chrome on PATH)."""
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class WebSocket:
    """A blocking websocket client: text frames out (masked), whole messages in."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        m = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
        if m is None:
            raise ValueError(f"not a ws:// url: {url}")
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text: str) -> None:
        """Send one masked text frame (clients must mask)."""
        data = text.encode("utf-8")
        header = bytearray([0x81])
        n = len(data)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(bytes(header) + mask + masked)

    def recv(self) -> str:
        """The next whole text message (continuation frames joined; pings answered)."""
        parts: list[bytes] = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x9:  # ping
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode("utf-8")

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class Browser:
    """One headless Chromium with a fresh profile and one page, driven over CDP."""

    def __init__(self, width: int = 1280, height: int = 1000, timeout: float = 90.0) -> None:
        chromium = find_chromium()
        if chromium is None:
            raise FileNotFoundError("chromium is not installed")
        self.timeout = timeout
        self.profile = tempfile.TemporaryDirectory(prefix="xsafety-cdp-", ignore_cleanup_errors=True)
        self.proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={self.profile.name}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        url = self._devtools_url()
        self.ws = WebSocket(url, timeout=timeout)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)

    def _devtools_url(self) -> str:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + self.timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                # Keep draining stderr: a full pipe would stall the browser.
                threading.Thread(target=self._drain, daemon=True).start()
                return m.group(1)
        self.close()
        raise RuntimeError("chromium did not start its DevTools endpoint: " + "".join(lines)[-500:])

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one CDP command and wait for its answer (events that arrive meanwhile are kept)."""
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (exceptions raise)."""
        res = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page error in {expression!r}: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    def open(self, page: Path) -> float:
        """Navigate to a local file; returns the wall seconds until its load event."""
        t0 = time.perf_counter()
        self.call("Page.navigate", session=True, url=page.resolve().as_uri())
        self.wait("document.readyState === 'complete'")
        return time.perf_counter() - t0

    def wait(self, condition: str, timeout: float | None = None) -> None:
        """Poll until a JavaScript condition is true."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            try:
                if self.eval(condition):
                    return
            except RuntimeError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"page never satisfied: {condition}")

    def select(self, selector: str, value: str) -> None:
        """Choose an option of a <select> and fire its change event, as a user's choice does."""
        self.eval(
            f"(function(){{var s=document.querySelector({json.dumps(selector)}); s.value={json.dumps(value)};"
            "s.dispatchEvent(new Event('change', {bubbles: true})); return s.value;})()"
        )

    def select_text(self, selector: str, text: str) -> str:
        """Choose the option whose visible text is ``text``; returns its value."""
        value = self.eval(
            f"(function(){{var s=document.querySelector({json.dumps(selector)});"
            f"for (var i=0;i<s.options.length;i++){{ if (s.options[i].text === {json.dumps(text)}) return s.options[i].value; }}"
            "return null;})()"
        )
        if value is None:
            raise LookupError(f"{selector} has no option {text!r}")
        self.select(selector, value)
        return str(value)

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) in the middle of the first matching element."""
        box = self.eval(
            f"(function(){{var e=document.querySelector({json.dumps(selector)}); if(!e) return null;"
            "e.scrollIntoView({block: 'center'}); var r=e.getBoundingClientRect();"
            "return [r.left + Math.min(r.width / 2, 20), r.top + r.height / 2];})()"
        )
        if box is None:
            raise LookupError(f"nothing matches {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        """Focus an input and type ``text`` into it (fires the input events a user's typing does)."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", session=True, text=text)

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        try:
            if hasattr(self, "ws"):
                self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.profile.cleanup()

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
