"""`xsafety export --run-dir DIR --format parquet|jsonl|csv`: a run's items, one row per response and judge mode."""

from __future__ import annotations

from pathlib import Path

import typer

from xsafety.commands.common import fail, legacy_run_dir_argument, pick_run_dir, run_dir_option
from xsafety.errors import XSafetyError


def export_command(
    legacy_dir: Path = legacy_run_dir_argument(),
    run_dir: Path = run_dir_option(),
    fmt: str = typer.Option("parquet", "--format", "-f", help="parquet, jsonl or csv."),
    out: Path = typer.Option(None, "--out", "-o", help="Output file (default: RUN_DIR/export/items.FORMAT)."),
    judge: str = typer.Option(None, "--judge", help="Primary judge signature (default: the report's)."),
) -> None:
    """Write every response of a run with its prompts, back-translation and each judge's label and reason.

    One row per response and judge mode; the columns are documented in ``xsafety.export``. CSV cells
    that a spreadsheet would run as a formula (starting with = + - @) get a leading apostrophe.
    """
    from xsafety.export import FORMATS, export_run

    where = pick_run_dir(run_dir, legacy_dir)
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return
    try:
        path, rows = export_run(where, fmt, out, primary_judge=judge)
    except XSafetyError as exc:
        fail(str(exc))
        return
    typer.echo(f"{rows} rows written to {path}")
