"""The command table: every command is reachable and groups with a default command show its options."""

from typer.testing import CliRunner

from xsafety.cli import app

runner = CliRunner()


def test_top_level_help_lists_every_command() -> None:
    out = runner.invoke(app, ["--help"]).output
    for name in ("run", "status", "import", "sets", "locales", "translate", "generate", "judge", "report"):
        assert name in out


def test_group_help_shows_the_default_command_options_and_the_subcommands() -> None:
    for group, option, sub in (("translate", "--locales", "eval"), ("judge", "--judge", "eval"), ("report", "--policy", "compare")):
        out = runner.invoke(app, [group, "--help"]).output
        assert option in out, group
        assert sub in out, group
