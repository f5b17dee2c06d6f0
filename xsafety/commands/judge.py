"""`xsafety judge` and `xsafety judge eval` (owned by the judges work)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
