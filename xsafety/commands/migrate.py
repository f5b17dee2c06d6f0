"""`xsafety migrate --run-dir DIR`: re-key a run directory made before store format 2, once."""

from __future__ import annotations

from pathlib import Path

import typer

from xsafety.commands.common import fail, run_dir_option
from xsafety.errors import XSafetyError


def migrate_command(run_dir: Path = run_dir_option("Run directory to re-key.")) -> None:
    """Re-key a run directory's records to the current store format (nothing is recomputed)."""
    from xsafety.migrate import migrate

    if run_dir is None:
        fail("--run-dir is required")
        return
    try:
        done = migrate(run_dir)
    except XSafetyError as exc:
        fail(str(exc))
        return
    typer.echo(f"{run_dir}: {done.describe()}")
