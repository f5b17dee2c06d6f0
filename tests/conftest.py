"""Shared fixtures: where ../shared is, isolated user folders, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"

os.environ.setdefault("XSAFETY_PROGRESS", "0")
# Tiny-model tests compare greedy outputs across batchings in fp32; on a CPU whose bf16 probe says
# "faster" auto would pick bf16 there. Tests of the probe itself unset this.
os.environ.setdefault("XSAFETY_CPU_BF16", "0")


def shared_file(name: str) -> Path:
    """Path of a file in ../shared/data, or skip the test with the reason when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"../shared/data/{name} is not here (a fresh clone has no ../shared/)")
    return path


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's imported sets and caches out of the real home folder."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("XSAFETY_HOME", str(base / "xsafety-home"))
    if "XSAFETY_CACHE" not in os.environ or not os.environ["XSAFETY_CACHE"].startswith(str(base)):
        monkeypatch.setenv("XSAFETY_CACHE", str(base / "xsafety-cache"))
