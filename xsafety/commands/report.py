"""`xsafety report RUN_DIR` and `xsafety report compare` (owned by the reports work)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
