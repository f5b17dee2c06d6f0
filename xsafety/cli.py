"""The ``xsafety`` command line: one explicit table of command modules, each thin.

Every command is a plain function in ``xsafety.commands.*`` that tests can call with typer's
CliRunner; the work itself lives in the library modules.
"""

from __future__ import annotations

import logging
import sys

import typer

from xsafety.commands import generate, judge, locales, report, run, sets, translate
from xsafety.errors import XSafetyError

app = typer.Typer(
    name="xsafety",
    help="Measure how much less safe a language model becomes outside English.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
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
app.command("run", help="Run the whole evaluation from a TOML config (or the built-in default).")(run.run_command)
app.command("status", help="Show per-stage progress of a run directory.")(run.status_command)


def main() -> None:
    """Console entry point: user errors become one line and exit code 2."""
    try:
        app()
    except XSafetyError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted: finished records are stored; rerun the same command to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
