"""Helpers shared by the command modules."""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup


def default_group(default: str) -> type[TyperGroup]:
    """A typer group class that runs ``default`` when the first word is not a subcommand.

    This gives ``xsafety report --run-dir DIR`` beside ``xsafety report compare A B``, and
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
            """One help page: the default command's usage and options (it is what most users run),
            with the group's other subcommands listed at the end instead of a second usage block."""
            command = self.commands.get(default)
            if command is None:
                super().format_help(ctx, formatter)
                return
            others = [(name, cmd) for name, cmd in self.commands.items() if name != default and not cmd.hidden]
            listing = "  \n".join(
                f"xsafety {ctx.info_name} {name} --help: {cmd.get_short_help_str(limit=70)}" for name, cmd in others
            )
            sub = click.Context(command, info_name=ctx.info_name, parent=ctx.parent)
            saved = command.epilog
            command.epilog = f"Subcommands:  \n{listing}" if listing else saved
            try:
                command.format_help(sub, formatter)
            finally:
                command.epilog = saved

    return DefaultGroup


RUN_DIR_HELP = "Run directory (holds responses/ and verdicts/)."


def run_dir_option(help: str = RUN_DIR_HELP, required: bool = False) -> Any:
    """The one spelling of the run directory in every command: ``--run-dir DIR``."""
    return typer.Option(... if required else None, "--run-dir", help=help, show_default=False)


def legacy_run_dir_argument() -> Any:
    """The positional RUN_DIR of earlier versions, still accepted but not documented."""
    return typer.Argument(None, hidden=True, metavar="RUN_DIR", show_default=False)


def legacy_run_option(*names: str) -> Any:
    """An older option spelling of ``--run-dir`` (``--run``, ``-r``), still accepted but hidden."""
    return typer.Option(None, *(names or ("--run",)), hidden=True)


def pick_run_dir(*given: Any) -> Any:
    """The run directory from ``--run-dir`` or an older spelling (first given); one-line error if none.

    Two different directories given through two spellings are an error, not a silent choice.
    """
    values = [g for g in given if g is not None]
    if not values:
        fail("no run directory: give --run-dir DIR")
    if len({str(v) for v in values}) > 1:
        fail(f"two run directories given ({', '.join(str(v) for v in values)}): give one --run-dir")
    return values[0]


def split_list(value: str | None) -> list[str]:
    """Split a comma-separated CLI value (``de,sw, fr``) into clean items."""
    if not value:
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_locales(value: str | None, field: str = "--locales") -> list[str]:
    """The comma-separated ``--locales`` codes in the registry's spelling (``ES`` -> ``es``), each
    once: an unknown code is a typo (not "nothing to do") and a code given twice an error."""
    from xsafety.errors import InputError
    from xsafety.locales import get_locale

    wanted: list[str] = []
    for code in split_list(value):
        try:
            canonical = get_locale(code).code
        except InputError as exc:
            raise InputError(exc.message, field=field) from None
        if canonical in wanted:
            raise InputError(f"locale '{canonical}' is given twice", field=field)
        wanted.append(canonical)
    if not wanted:
        raise InputError("no locales given", field=field)
    return wanted


def fail(message: str, code: int = 2) -> Any:
    """Print one error line and exit non-zero."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)
