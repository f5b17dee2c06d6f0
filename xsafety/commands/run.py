"""`xsafety run` and `xsafety status` (owned by the orchestration work)."""

from __future__ import annotations

import typer


def run_command() -> None:
    """Run the evaluation."""
    raise typer.Exit(2)


def status_command() -> None:
    """Show run status."""
    raise typer.Exit(2)
