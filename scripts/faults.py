"""Run the long version of the fault suite: every store corruption on its own, every kill point
(each stage boundary, inside each stage, inside the report and inside translation), more full-disk
levels, and the table of bad inputs.

    .venv/bin/python scripts/faults.py            # the long suite
    .venv/bin/python scripts/faults.py -k kill    # extra pytest arguments pass through

The default ``pytest`` run covers a fast subset of the same tests (one combined corruption, two
kill points, two full-disk levels); this sets ``XSAFETY_LONG_FAULTS=1`` to run all of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILES = [
    "tests/test_faults_store.py",
    "tests/test_faults_kill.py",
    "tests/test_faults_disk.py",
    "tests/test_faults_server.py",
    "tests/test_faults_keys.py",
    "tests/test_faults_report.py",
    "tests/test_bad_input_commands.py",
    "tests/test_bad_input.py",
]


def main(argv: list[str]) -> int:
    """Run pytest on the fault tests with the long cases switched on; returns pytest's exit code."""
    env = {**os.environ, "XSAFETY_LONG_FAULTS": "1", "XSAFETY_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-ra", *FILES, *argv]
    return subprocess.call(cmd, cwd=REPO, env=env)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
