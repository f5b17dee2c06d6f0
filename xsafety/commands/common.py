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
        """Routes arguments that name no subcommand to the ``default`` command."""

        def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
            """Insert the default command's name unless a subcommand or ``--help`` comes first."""
            if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
                args = [default, *args]
            return super().parse_args(ctx, args)

        def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            """Show the default command's options first (it is what most users run), then the subcommands."""
            command = self.commands.get(default)
            if command is not None:
                sub = click.Context(command, info_name=ctx.info_name, parent=ctx.parent)
                command.format_help(sub, formatter)
            super().format_help(ctx, formatter)

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
