"""`xsafety generate` (owned by the generation work)."""

from __future__ import annotations

import typer


def generate_command() -> None:
    """Generate responses."""
    raise typer.Exit(2)
