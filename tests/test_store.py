"""The run store keeps every completed record through crashes, kills and reruns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from xsafety.errors import RunLockedError
from xsafety.records import Response
from xsafety.store import Store


def _resp(i: int) -> Response:
    return Response(key=f"k{i}", prompt_id=f"p{i}", set="s", locale="en", model="m", text=f"answer {i}")


def test_append_and_load_dedupes_by_key(tmp_path: Path) -> None:
    t = Store(tmp_path).table(Response)
    t.append([_resp(i) for i in range(5)])
    t.append([_resp(i) for i in range(3, 8)])
    loaded = t.load()
    assert list(loaded) == [f"k{i}" for i in range(8)]
    assert t.last_load.duplicates == 2
    assert loaded["k4"].text == "answer 4"


def test_torn_last_line_is_dropped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = Store(tmp_path).table(Response)
    t.append([_resp(i) for i in range(3)])
    shard = t.shards()[0]
    with open(shard, "ab") as fh:
        fh.write(b'{"key": "k9", "prompt_id": "p9", "te')
    assert set(t.load()) == {"k0", "k1", "k2"}
    assert t.last_load.torn == 1
    assert "torn" in caplog.text
    # A writer holding the lock repairs the tail so later loads are clean.
    store = Store(tmp_path)
    with store.locked():
        pass
    assert shard.read_bytes().endswith(b"\n")
    assert set(t.load()) == {"k0", "k1", "k2"} and t.last_load.torn == 0


def test_frame_reads_into_polars(tmp_path: Path) -> None:
    t = Store(tmp_path).table(Response)
    assert t.frame().is_empty()
    t.append([_resp(i) for i in range(4)])
    df = t.frame()
    assert df.height == 4 and set(df["key"]) == {"k0", "k1", "k2", "k3"}
    # The shards themselves are plain NDJSON that polars reads directly.
    direct = pl.concat([pl.read_ndjson(s) for s in t.shards()], how="diagonal_relaxed")
    assert direct.height == 4


def test_second_writer_is_refused(tmp_path: Path) -> None:
    code = (
        "import sys,time; from xsafety.store import Store\n"
        "with Store(sys.argv[1]).locked():\n    print('locked', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            with Store(tmp_path).locked():
                pass
    finally:
        proc.kill()
        proc.wait()
    # The kernel drops the lock with the process: the run is usable again.
    with Store(tmp_path).locked():
        pass


WRITER = """
import sys, time
from xsafety.records import Response
from xsafety.store import Store
store = Store(sys.argv[1])
n = int(sys.argv[2])
with store.locked():
    table = store.table(Response)
    done = table.keys()
    with table.writer() as w:
        for i in range(n):
            if f"k{i}" in done:
                continue
            w.write(Response(key=f"k{i}", prompt_id=f"p{i}", set="s", locale="en", model="m", text="x" * 2000))
            print(i, flush=True)
            time.sleep(0.002)
"""


def test_sigkill_mid_stream_then_rerun_completes_without_duplicates(tmp_path: Path) -> None:
    n = 400
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), str(n)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        seen = int(line) + 1
        if seen >= 50:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    table = Store(tmp_path).table(Response)
    after_kill = table.load()
    # Everything the writer reported as written survived the kill.
    assert len(after_kill) >= seen and len(after_kill) < n
    assert all(f"k{i}" in after_kill for i in range(seen))
    rerun = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), str(n)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    # The rerun wrote only what was missing.
    assert len(rerun.stdout.split()) == n - len(after_kill)
    final = table.load()
    assert list(final) == [f"k{i}" for i in range(n)] or set(final) == {f"k{i}" for i in range(n)}
    rows = sum(1 for s in table.shards() for line in s.read_text().splitlines() if line.strip())
    assert rows == n  # nothing duplicated on disk


def test_torn_write_from_a_real_kill(tmp_path: Path) -> None:
    # Simulate the worst case a kill can leave: half a JSON line at the end of a shard.
    table = Store(tmp_path).table(Response)
    table.append([_resp(0)])
    with open(table.shards()[0], "ab") as fh:
        fh.write(json.dumps(_resp(1).to_dict()).encode()[:25])
    time.sleep(0)
    assert list(table.load()) == ["k0"]


def test_a_reread_table_sees_every_change_made_since(tmp_path: Path) -> None:
    """Loads are served from memory only while no shard changed: an append to a shard, a new
    shard and a removed shard are all seen by the next load, and callers get their own dicts."""
    from xsafety.records import Prompt
    from xsafety.store import Store

    table = Store(tmp_path).table(Prompt)
    p = [Prompt(id=f"p{i}", set="s", text=f"text {i}", category="c", source="test") for i in range(4)]
    table.append(p[:2])
    first = table.load()
    first.clear()  # the caller's own dict: the next load is unaffected
    assert list(table.load()) == [r.key for r in p[:2]]
    with table.writer() as w:
        w.write(p[2])
        assert list(table.load()) == [r.key for r in p[:3]]  # same shard set, one shard grew
        w.write(p[3])
        assert len(table.load()) == 4
    table.shards()[0].unlink()
    assert list(table.load()) == [r.key for r in p[2:]]
