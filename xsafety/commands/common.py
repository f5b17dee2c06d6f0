"""Helpers shared by the command modules."""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup


def default_group(default: str) -> type[TyperGroup]:
    """A typer group class that runs ``default`` when the first word is not a subcommand.

    This gives ``xsafety report RUN_DIR`` beside ``xsafety report compare A B``, and
    ``xsafety translate --set S`` beside ``xsafety translate eval``.
    """

    class DefaultGroup(TyperGroup):
        def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
            if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
                args = [default, *args]
            return super().parse_args(ctx, args)

        def list_commands(self, ctx: click.Context) -> list[str]:
            return [c for c in super().list_commands(ctx)]

    return DefaultGroup


def split_list(value: str | None) -> list[str]:
    """Split a comma-separated CLI value (``de,sw, fr``) into clean items."""
    if not value:
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def fail(message: str, code: int = 2) -> Any:
    """Print one error line and exit non-zero."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)
