"""`kill -9` at stage boundaries and inside stages: a rerun resumes to byte-identical report tables
with no record duplicated.

The run's target model and an LLM judge (Llama Guard 3's format) both talk to a fault server on
127.0.0.1 that can hold the N-th request of either: the test waits until the run is exactly there,
kills it with SIGKILL, and resumes it. Kill points that no request marks (the judging -> report
boundary, inside the report, inside translation) are found by watching the run directory. The
default run tries one point inside generation and one inside judging; the long fault suite
(``scripts/faults.py``) tries every point.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fault_runs import LONG, cli, fast_config, report_tables
from fault_server import Fault, FaultServer, start_fault_server

from xsafety.data import judges_dir

REPO = Path(__file__).resolve().parent.parent
GUARD = "guard"


class Holder:
    """Decides the server's answers; can hold the N-th request to one model until released."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.after = 0
        self.count = 0
        self.lock = threading.Lock()
        self.reached = threading.Event()
        self.release = threading.Event()

    def arm(self, model: str | None, after: int) -> None:
        """Hold every request to ``model`` from the ``after``-th on (None: hold nothing)."""
        with self.lock:
            self.model, self.after, self.count = model, after, 0
        self.reached.clear()
        self.release.clear()

    def __call__(self, body: dict[str, Any], attempt: int) -> Fault:
        if body.get("model") == self.model:
            with self.lock:
                n = self.count
                self.count += 1
            if n >= self.after:
                self.reached.set()
                self.release.wait(60)
                return Fault(reset=True)
        return Fault(text="safe") if body.get("model") == GUARD else Fault(text="I cannot help with that.")


@dataclass
class Setup:
    server: FaultServer
    holder: Holder
    pristine: Path
    judge_toml: Path


def _guard_toml(path: Path, url: str) -> Path:
    template = judges_dir() / "templates" / "llama-guard-3.txt"
    path.write_text(
        f'kind = "llm"\nmodel = "openai:{GUARD}@{url}"\ntemplate = "{template}"\nformat = "llama-guard"\n'
        'input = "conversation"\nmax_new_tokens = 20\nmodel_options = {max_retries = 0, concurrency = 1}\n',
        encoding="utf-8",
    )
    return path


def _config(path: Path, run: Path, setup_url: str, judge_toml: Path, *, translate: bool = False) -> Path:
    cfg = fast_config(path, run, setup_url, extra="concurrency = 1")
    text = cfg.read_text().replace('judges = ["refusal-lexicon"]', f'judges = ["{judge_toml}", "refusal-lexicon"]')
    if translate:  # an attack applied before translation makes the run translate at run time
        text = text.replace("[[models]]", 'attacks = ["none", {name = "suffix_injection", stage = "before-translation"}]\n\n[[models]]', 1)
    cfg.write_text(text)
    return cfg


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    holder = Holder()
    server = start_fault_server(holder)
    base = tmp_path_factory.mktemp("kill-pristine")
    judge_toml = _guard_toml(base / "guard.toml", server.url)
    code, _, err = cli("run", str(_config(base / "run.toml", base / "run", server.url, judge_toml)))
    assert code == 0, err
    yield Setup(server, holder, base / "run", judge_toml)
    holder.release.set()
    server.stop()


def _start(cfg: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "XSAFETY_PROGRESS": "0"}
    return subprocess.Popen([str(REPO / ".venv" / "bin" / "xsafety"), "run", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen[bytes], ready: Any, what: str) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; fail if it ends first."""
    deadline = time.monotonic() + 180
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.stderr.read()[-2000:]!r}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached {what}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _keys_on_disk(run: Path, table: str) -> list[str]:
    keys = []
    for shard in sorted((run / table).glob("*.jsonl")):
        for line in shard.read_bytes().split(b"\n"):
            try:
                keys.append(json.loads(line)["key"])
            except (ValueError, KeyError, TypeError):
                continue
    return keys


# (name, model whose request is held or a file to wait for, how many requests go through first)
POINTS: list[tuple[str, str, int]] = [
    ("inside generation", "fake", 2),
    ("inside judging", GUARD, 3),
]
LONG_POINTS: list[tuple[str, str, int]] = [
    ("start of generation", "fake", 0),
    ("generation -> judging", GUARD, 0),
    ("last generation request", "fake", 5),
    ("judging -> report (cells.json)", "file:cells.json", 0),
    ("inside the report", "file:report", 0),
]


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS + (LONG_POINTS if LONG else []), ids=[p[0] for p in POINTS + (LONG_POINTS if LONG else [])])
def test_a_killed_run_resumes_to_the_same_tables(point: tuple[str, str, int], setup: Setup, tmp_path: Path) -> None:
    name, target, after = point
    run = tmp_path / "run"
    cfg = _config(tmp_path / "run.toml", run, setup.server.url, setup.judge_toml)
    if target.startswith("file:"):
        setup.holder.arm(None, 0)
        proc = _start(cfg)
        _kill_when(proc, lambda: (run / target[5:]).exists(), name)
    else:
        setup.holder.arm(target, after)
        proc = _start(cfg)
        try:
            _kill_when(proc, setup.holder.reached.is_set, name)
        finally:
            setup.holder.arm(None, 0)
            setup.holder.release.set()

    code, _, err = cli("run", str(cfg))
    assert code == 0, err
    for table in ("responses", "verdicts"):
        keys = _keys_on_disk(run, table)
        assert len(keys) == len(set(keys)), f"{table} duplicated on disk"
    assert report_tables(run / "report") == report_tables(setup.pristine / "report")


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="long fault suite only (scripts/faults.py)")
@pytest.mark.skipif(shutil.which("apertium") is None, reason="apertium is not installed (scripts/setup.sh installs it)")
def test_a_run_killed_inside_translation_resumes_to_the_same_tables(setup: Setup, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    code, _, err = cli("run", str(_config(tmp_path / "ref.toml", reference, setup.server.url, setup.judge_toml, translate=True)))
    assert code == 0, err
    run = tmp_path / "run"
    cfg = _config(tmp_path / "run.toml", run, setup.server.url, setup.judge_toml, translate=True)
    proc = _start(cfg)
    _kill_when(proc, lambda: any((run / "translated").rglob("*")) if (run / "translated").exists() else False, "translation")
    code, _, err = cli("run", str(cfg))
    assert code == 0, err
    assert report_tables(run / "report") == report_tables(reference / "report")
