"""A full disk: a run on a small tmpfs stops with one line (exit 1, no traceback) wherever the space
runs out, keeps what it finished, and a rerun after space is freed ends with the same report tables.

Needs root (to mount the tmpfs); skipped with the reason otherwise. The tmpfs is always unmounted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_runs import LONG, cli, fast_config, pristine_run, report_tables
from fault_server import FaultServer, start_fault_server

SIZE_KB = 2048


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 2 MiB tmpfs mounted under ``tmp_path`` (skips when it cannot be mounted)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_KB}k", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    s = start_fault_server()
    yield s
    s.stop()


def _fill(disk: Path, leave: int) -> Path:
    """Fill the disk so that about ``leave`` bytes stay free; returns the filler file."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb") as fh:
        try:
            fh.write(b"\0" * max(0, free - leave))
        except OSError:
            pass
    return filler


# Free bytes left before the run: none (run.json cannot be written), a few records' worth, more.
LEAVE = [0, 6_000] + ([2_000, 12_000, 20_000, 40_000, 80_000, 200_000] if LONG else [])


@pytest.mark.parametrize("leave", LEAVE)
def test_a_full_disk_is_one_line_and_a_rerun_finishes_the_same(
    leave: int, small_disk: Path, server: FaultServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pristine = pristine_run(tmp_path_factory, server.url)
    run = small_disk / "run"
    cfg = fast_config(tmp_path / "run.toml", run, server.url)
    filler = _fill(small_disk, leave)

    code, out, err = cli("run", str(cfg))

    assert "Traceback" not in out + err
    if code != 0:  # the disk ran out somewhere: one line that says so
        lines = err.strip().splitlines()
        assert code == 1 and lines[-1].startswith("error: ") and "no space left" in lines[-1], err
        assert sum(line.startswith("error:") for line in lines) == 1, err
    filler.unlink()
    code, out, err = cli("run", str(cfg))
    assert code == 0, err
    assert report_tables(run / "report") == report_tables(pristine / "report")
    shutil.rmtree(run)


def test_a_full_disk_reported_by_a_native_writer_is_still_a_full_disk() -> None:
    import errno

    import polars as pl

    from xsafety.cli import disk_full, os_error_line

    native = pl.exceptions.ComputeError("parquet: File out of specification: underlying IO error: No space left on device (os error 28)")
    assert disk_full(native) and disk_full(OSError(errno.ENOSPC, "No space left on device"))
    wrapped = RuntimeError("write failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert disk_full(wrapped) and not disk_full(ValueError("no"))
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device", "/r/run.json")).startswith("/r/run.json: no space left")
