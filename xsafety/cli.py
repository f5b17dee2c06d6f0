"""The ``xsafety`` command line: one explicit table of command modules, each thin.

Every command is a plain function in ``xsafety.commands.*`` that tests can call with typer's
CliRunner; the work itself lives in the library modules.
"""

from __future__ import annotations

import errno
import gc
import logging
import sys

import typer

from xsafety.commands import annotate, export, generate, judge, locales, migrate, report, run, sets, translate
from xsafety.errors import XSafetyError
from xsafety.torch_runtime import check_environment

app = typer.Typer(
    name="xsafety",
    help="Measure how much less safe a language model becomes outside English.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    """``--version``: the installed package's version, then exit."""
    if value:
        from xsafety import __version__

        typer.echo(f"xsafety {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """xsafety: translate, generate, judge and report cross-lingual safety."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# The one table of commands. Adding a command is adding a line here.
app.add_typer(sets.app, name="sets", help="List and show instruction sets.")
app.command("import", help="Import an instruction set (alert, xsafety, multijail, harmfulqa, catqa, jsonl, csv).")(
    sets.import_command
)
app.add_typer(locales.app, name="locales", help="The locale registry: list, show, add.")
app.add_typer(translate.app, name="translate", help="Translate a set into locales, with quality gates; `eval` scores against references.")
app.command("generate", help="Ask a target model every accepted prompt, per locale.")(generate.generate_command)
app.add_typer(judge.app, name="judge", help="Judge stored responses; `eval` scores a judge against human labels.")
app.add_typer(report.app, name="report", help="Write the cross-lingual report of a run; `compare` puts runs side by side.")
app.add_typer(annotate.app, name="annotate", help="Native-speaker labels: export a sample page, import labels, calibrate the judge.")
app.command("run", help="Run the whole evaluation from a TOML config (or the built-in default).")(run.run_command)
app.command("status", help="Show per-stage progress of a run directory.")(run.status_command)
app.command("export", help="Write a run's items (every response, each judge's label and reason) as Parquet, JSONL or CSV.")(
    export.export_command
)
app.command("migrate", help="Re-key a run directory made before store format 2 (once; nothing is recomputed).")(
    migrate.migrate_command
)


# typer >= 0.16 vendors its own click, whose exceptions are not ``click.ClickException``: take the
# base class from typer's own hierarchy so this works with either.
_CLICK_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
INTERRUPTED = "interrupted: finished records are stored; rerun the same command to resume"
# What the machine, not the user, got wrong: worth one clear line, not a traceback.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


# Allocations between collections of young objects (Python's default is 700). Measured with the
# pipeline bench at 2,800 answers: the collector's CPU time was 1.3 s with the defaults, 0.9 s with
# the freeze alone and 0.4 s with the freeze and this (the run's CPU 11.5 -> 9.8 s); 100,000 gained
# nothing more.
GC_YOUNG_THRESHOLD = 20_000


def _tune_gc() -> None:
    """Make Python's cyclic garbage collector cheap for a batch job that keeps many records alive.

    The records are frozen dataclasses and strings, which do not form cycles, yet every full
    collection walks all of them: at 28,000 answers the collector took 6.3 of 58.9 CPU seconds of
    a run against an instant server. What was loaded at start-up (modules, classes) is moved out of
    the collector's sight (``gc.freeze``), and young objects are collected after
    ``GC_YOUNG_THRESHOLD`` allocations rather than 700, so the collector runs less often; cycles made
    after start-up are still collected.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


def main() -> None:
    """Console entry point: user errors become one line and exit code 2; an interrupt, a full disk
    or another system error one line and exit 130 or 1. Tracebacks are left to real bugs."""
    _tune_gc()
    try:
        check_environment()
        # Not standalone: click would otherwise turn Ctrl-C into a silent exit 130 before we see it.
        code = app(standalone_mode=False)
    except XSafetyError as exc:
        _error(str(exc), 2)
    except typer.Abort:
        _error("aborted", 1)
    except _CLICK_ERROR as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        _interrupted()
    except OSError as exc:
        _error(os_error_line(exc), 1)
    except UnicodeError as exc:
        _error(f"text that cannot be encoded ({exc.reason}): {exc.encoding} {type(exc).__name__}", 1)
    except Exception as exc:
        # Libraries with native writers (polars' Parquet, matplotlib) report a full disk as their
        # own exception types; it is still a full disk, not a bug.
        if not disk_full(exc):
            raise
        _error(DISK_FULL_LINE, 1)
    # typer turns Ctrl-C into exit code 130 (and nothing else here exits 130).
    if code == 130:
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)


DISK_FULL_LINE = "no space left on the device; free some and rerun the same command (finished records are kept)"


def disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) says the disk is full, whatever its type."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL:
            return True
        text = str(seen)
        if "No space left on device" in text or f"os error {errno.ENOSPC}" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def os_error_line(exc: OSError) -> str:
    """One line for a system error: what happened, to which file, and what to do."""
    where = f"{exc.filename}: " if exc.filename else ""
    if disk_full(exc):
        return where + DISK_FULL_LINE
    return f"{where}{exc.strerror or exc}"


def _error(message: str, code: int) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _interrupted() -> None:
    typer.secho(INTERRUPTED, err=True)
    sys.exit(130)


if __name__ == "__main__":
    main()
