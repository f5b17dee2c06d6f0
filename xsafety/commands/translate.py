"""`xsafety translate` and `xsafety translate eval` (owned by the translation work)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
