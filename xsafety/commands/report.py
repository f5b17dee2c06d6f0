"""`xsafety report --run-dir DIR` and `xsafety report compare` (owned by the reports work)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from xsafety.commands.common import default_group, fail, legacy_run_dir_argument, pick_run_dir, run_dir_option
from xsafety.errors import InputError, XSafetyError

app = typer.Typer(no_args_is_help=True, cls=default_group("main"))


@app.command("main", hidden=True)
def report_command(
    legacy_dir: Path = legacy_run_dir_argument(),
    run_dir: Path = run_dir_option(),
    policy: str = typer.Option(None, "--policy", "-p", help="Scoring policy: a name in taxonomy/policies or a TOML path."),
    out: Path = typer.Option(None, "--out", "-o", help="Report folder (default: RUN_DIR/report)."),
    judge: str = typer.Option(None, "--judge", help="Primary judge signature (default: from run.json, else the busiest)."),
    min_pairs: int = typer.Option(30, "--min-pairs", help="Flag gaps resting on fewer pairs than this."),
    calibration: Path = typer.Option(None, "--calibration", help="Judge calibration file (`xsafety annotate calibrate`)."),
) -> None:
    """Write the report of a run (tables, Markdown, heatmaps, index.html) and print its summary."""
    from xsafety.report.aggregate import Thresholds
    from xsafety.report.build import compute, summary_rich
    from xsafety.report.folder import write_report

    run_dir = pick_run_dir(run_dir, legacy_dir)
    try:
        if min_pairs < 0:
            raise InputError(f"must be 0 or more (0 flags no gap), got {min_pairs}", field="--min-pairs")
        data = compute(run_dir, policy, thresholds=Thresholds(min_pairs=min_pairs), primary_judge=judge,
                       calibration=calibration)
        folder = write_report(data, out if out is not None else run_dir / "report")
    except XSafetyError as exc:
        fail(str(exc))
        return
    console = Console()
    console.print(summary_rich(data))
    console.print(f"report: {folder / 'index.html'}")


@app.command("compare")
def compare_command(
    runs: list[Path] = typer.Argument(..., help="Two or more run directories."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for compare.md, compare.csv and index.html."),
    policy: str = typer.Option(None, "--policy", "-p", help="Scoring policy applied to every run."),
) -> None:
    """Put runs (models, settings) side by side per locale: rates, gaps with CIs, trust."""
    from xsafety.report.compare import compare, write_comparison

    try:
        result = compare(runs, policy)
        folder = write_comparison(result, runs, out)
    except XSafetyError as exc:
        fail(str(exc))
        return
    for line in result.warnings:
        typer.secho(f"warning: {line}", fg="yellow", err=True)
    typer.echo(f"comparison: {folder / 'index.html'}")
