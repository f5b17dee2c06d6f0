"""Helpers shared by the fault suite (``tests/test_faults_*.py``, ``scripts/faults.py``).

A *fast run* is a real ``xsafety run`` whose target model is an OpenAI-compatible server on
127.0.0.1 (``fault_server``), so it loads no weights: English plus the committed Spanish
translations, the refusal-lexicon judge (native; back-translated through Apertium when it is
installed) and the report. ``cli`` runs the real console entry point (``xsafety.cli.main``)
in-process and returns its exit code and both streams.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    import pytest

# The long fault suite (scripts/faults.py sets it): every case on its own, every kill point.
LONG = os.environ.get("XSAFETY_LONG_FAULTS") == "1"

FAST_CONFIG = """\
[run]
dir = "{run_dir}"
locales = {locales}
limit = {limit}
judges = ["refusal-lexicon"]
judge_modes = {modes}

[[models]]
spec = "openai:fake@{url}"
name = "remote"
max_retries = 0
timeout_s = 10
{extra}
"""


def fast_config(path: Path, run_dir: Path, url: str, *, limit: int = 3, extra: str = "") -> Path:
    """Write a fast-run config (en + es, or en alone without Apertium) and return its path."""
    have_apertium = shutil.which("apertium") is not None
    locales = '["en", "es"]' if have_apertium else '["en"]'
    modes = '["native", "back-translated"]' if have_apertium else '["native"]'
    path.write_text(
        FAST_CONFIG.format(run_dir=run_dir, locales=locales, limit=limit, modes=modes, url=url, extra=extra),
        encoding="utf-8",
    )
    return path


def pristine_run(tmp_path_factory: "pytest.TempPathFactory", url: str) -> Path:
    """A finished fast run, made once per test session and shared read-only (copy it to change it).

    Its records do not depend on the server's URL (signatures name the served model, not where it
    is served), so any module's server can extend it.
    """
    base = tmp_path_factory.getbasetemp() / "fault-pristine"
    run = base / "run"
    if not (run / "report").is_dir():
        base.mkdir(exist_ok=True)
        code, _, err = cli("run", str(fast_config(base / "run.toml", run, url)))
        assert code == 0, err
    return run


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``xsafety ARGS`` through ``xsafety.cli.main`` (as the console script does): code, out, err."""
    from xsafety.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_argv = sys.argv
    sys.argv = ["xsafety", *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old_argv
    return code, out.getvalue(), err.getvalue()


def tree_digest(root: Path, *, skip: tuple[str, ...] = (".lock",)) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (what "stored results unchanged" means)."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in skip:
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def report_tables(report: Path) -> dict[str, bytes]:
    """The report's tables as canonical bytes: CSVs byte for byte, Parquet as sorted CSV text."""
    out: dict[str, bytes] = {}
    for path in sorted(report.rglob("*.csv")):
        out[str(path.relative_to(report))] = path.read_bytes()
    for path in sorted(report.rglob("*.parquet")):
        df = pl.read_parquet(path)
        if df.height:
            df = df.sort(df.columns, nulls_last=True)
        buf = io.BytesIO()
        df.write_csv(buf)
        out[str(path.relative_to(report))] = buf.getvalue()
    return out
