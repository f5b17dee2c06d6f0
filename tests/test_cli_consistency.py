"""One consistent CLI: `--run-dir` everywhere (old spellings still work, hidden), `--version`, one
usage block per `--help`, no stray subcommands, and one line on Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from xsafety import __version__, cli
from xsafety.cli import app
from xsafety.report.synthetic import random_run

runner = CliRunner()


def _paths(group: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every visible command path of the CLI, groups included."""
    out = [prefix]
    commands = getattr(group, "commands", {})
    for name, cmd in commands.items():
        if not cmd.hidden:
            out += _paths(cmd, (*prefix, name))
    return out


PATHS = _paths(typer.main.get_command(app))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_run(tmp_path_factory.mktemp("cli") / "run", n_prompts=20)


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"xsafety {__version__}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "xsafety")
def test_one_usage_block_and_no_stray_subcommand(path: tuple[str, ...]) -> None:
    out = runner.invoke(app, [*path, "--help"], terminal_width=200).output
    assert out.count("Usage:") == 1, out
    assert " main " not in out.replace("xsafety main", "")


def test_every_command_list_is_complete() -> None:
    names = {p[0] for p in PATHS if p}
    assert {"run", "status", "export", "generate", "judge", "report", "translate", "sets", "locales", "import"} <= names
    assert ("judge", "main") not in PATHS and ("report", "main") not in PATHS and ("translate", "main") not in PATHS


RUN_DIR_COMMANDS = [("run",), ("status",), ("export",), ("generate",), ("judge",), ("report",), ("annotate", "export"),
                    ("annotate", "import"), ("annotate", "agreement")]


@pytest.mark.parametrize("path", RUN_DIR_COMMANDS, ids=" ".join)
def test_run_dir_is_spelled_run_dir_everywhere(path: tuple[str, ...]) -> None:
    out = runner.invoke(app, [*path, "--help"], terminal_width=200).output
    assert "--run-dir" in out
    # The old spellings are aliases, not documented options.
    assert "--run " not in out and "-r," not in out


def test_old_spellings_still_work(run: Path, tmp_path: Path) -> None:
    new = runner.invoke(app, ["status", "--run-dir", str(run)])
    old = runner.invoke(app, ["status", str(run)])
    assert new.exit_code == old.exit_code and new.output == old.output
    for args in (["report", str(run)], ["report", "--run-dir", str(run)]):
        res = runner.invoke(app, [*args, "--out", str(tmp_path / "rep")])
        assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["judge", "--run", str(run), "--judge", "default"]).exit_code in (0, 1)
    assert runner.invoke(app, ["judge", "--run-dir", str(tmp_path / "missing")]).exit_code == 2


def test_no_run_dir_or_two_different_ones_is_one_line_exit_2(run: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["status"])
    assert res.exit_code == 2 and res.output.strip() == "error: no run directory: give --run-dir DIR"
    res = runner.invoke(app, ["export", str(run), "--run-dir", str(tmp_path)])
    assert res.exit_code == 2 and "two run directories given" in res.output


def test_ctrl_c_is_one_line(run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import xsafety.status

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(xsafety.status, "run_status", interrupted)
    monkeypatch.setattr(sys, "argv", ["xsafety", "status", "--run-dir", str(run)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err and "Traceback" not in err
