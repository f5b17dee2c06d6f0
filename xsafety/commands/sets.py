"""`xsafety sets ...` and `xsafety import` (owned by the taxonomy/importers work)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


def import_command() -> None:
    """Import an instruction set."""
    raise typer.Exit(2)
