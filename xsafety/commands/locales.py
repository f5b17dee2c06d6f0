"""`xsafety locales list|show|add` (owned by the locale registry work)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
