"""Key material never appears in any output: a whole run against a server that echoes the
Authorization header back in its error bodies, with the key at every offset from 0 to past the
point where error bodies are cut, and every stream and file the run wrote searched for any piece
of the key."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from fault_runs import cli, fast_config
from fault_server import Fault, fault_server

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-LEAKCHECK-7f3a9c2e1b8d4f60a5e2"
FRAGMENT = 8  # any run of this many characters of the key counts as a leak
ATTEMPTS = 42  # per item: 6 items x 42 attempts cover offsets 0..251 (bodies are cut at 200)


def _fragments() -> set[bytes]:
    return {KEY[i : i + FRAGMENT].encode() for i in range(len(KEY) - FRAGMENT + 1)}


def test_no_piece_of_the_key_reaches_any_stream_or_file(tmp_path: Path) -> None:
    lock = threading.Lock()
    seen = {"n": 0}

    def echo(body: dict[str, Any], attempt: int) -> Fault:
        with lock:
            offset = seen["n"]
            seen["n"] += 1
        return Fault(status=500, echo_auth_at=offset)  # 500: retried, so every attempt echoes once

    home, cache = tmp_path / "home", tmp_path / "cache"
    with fault_server(echo) as server:
        cfg = fast_config(tmp_path / "run.toml", tmp_path / "run", server.url,
                          extra=f'api_key_env = "FAULT_KEY"\nbackoff_base_s = 0\nbackoff_cap_s = 0\nconcurrency = 6')
        cfg.write_text(cfg.read_text().replace("max_retries = 0", f"max_retries = {ATTEMPTS - 1}"))
        env = {**os.environ, "FAULT_KEY": KEY, "XSAFETY_HOME": str(home), "XSAFETY_CACHE": str(cache), "XSAFETY_PROGRESS": "0"}
        xsafety = str(REPO / ".venv" / "bin" / "xsafety")
        proc = subprocess.run([xsafety, "-v", "run", str(cfg)], env=env, capture_output=True, timeout=300)
        streams = [("run", proc.returncode, proc.stdout + proc.stderr)]
        requests = server.requests
    code, out, err = cli("status", str(tmp_path / "run"))  # it prints the stored errors
    streams.append(("status", code, (out + err).encode()))
    assert requests >= 6 * ATTEMPTS  # every item used every attempt: the echo was never cut short
    assert streams[0][1] == 1 and b"HTTP 500" in streams[0][2] and b"***" in streams[0][2]
    leaks = []
    for name, _, output in streams:
        leaks += [f"{name} output: {frag!r}" for frag in _fragments() if frag in output]
    written = [p for root in (tmp_path / "run", home, cache) if root.exists() for p in root.rglob("*") if p.is_file()]
    assert any(p.parent.name == "response_errors" for p in written)  # the errors were stored ...
    for path in written:
        data = path.read_bytes()
        leaks += [f"{path}: {frag!r}" for frag in _fragments() if frag in data]
    assert leaks == []  # ... with the key masked wherever it was cut
