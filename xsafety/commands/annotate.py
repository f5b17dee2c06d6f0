"""`xsafety annotate`: export a sample to label, import labels, annotator agreement, calibration files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from xsafety.commands.common import fail, legacy_run_dir_argument, legacy_run_option, pick_run_dir, run_dir_option, split_list
from xsafety.errors import XSafetyError

if TYPE_CHECKING:
    from xsafety.report.validity import Calibration

app = typer.Typer(no_args_is_help=True)
console = Console(width=140)


@app.command("export", help="Write a stratified sample of a run's answers as an offline HTML page and a CSV.")
def export_command(
    legacy_dir: Path = legacy_run_dir_argument(),
    run_dir: Path = run_dir_option("Run directory with judged responses."),
    per_locale: int = typer.Option(30, "--per-locale", "-n", help="Answers to sample per locale."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (the same seed draws the same sample)."),
    locales: str = typer.Option("", "--locales", help="Comma-separated locales (default: every judged locale)."),
    out: Path = typer.Option(None, "--out", "-o", help="Folder for the page and CSV (default: RUN_DIR/annotations)."),
) -> None:
    """Draw the sample and print where the page and CSV are."""
    from xsafety.annotate import export_sample

    run_dir = pick_run_dir(run_dir, legacy_dir)

    try:
        sample, page, table = export_sample(run_dir, per_locale, seed=seed, locales=split_list(locales) or None, out_dir=out)
    except XSafetyError as exc:
        fail(str(exc))
        return
    counts: dict[str, int] = {}
    for item in sample.items:
        counts[item.locale] = counts.get(item.locale, 0) + 1
    console.print(f"sample {sample.sample_id}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    console.print(f"page: {page}\ncsv:  {table}")


@app.command("import", help="Store labels (the page's JSONL download, or the filled-in CSV) in a run, append-only.")
def import_command(
    file: Path = typer.Argument(..., help="Labels: JSONL from the page, or the sample CSV with a label column."),
    run_dir: Path = run_dir_option("Run directory the sample was drawn from."),
    run: Path = legacy_run_option("--run"),
    annotator: str = typer.Option(None, "--annotator", help="Annotator id for rows that carry none (CSV)."),
) -> None:
    """Import and print how many labels were new."""
    from xsafety.annotate import agreement, import_labels

    run_dir = pick_run_dir(run_dir, run)

    try:
        summary = import_labels(file, run_dir, annotator=annotator)
    except XSafetyError as exc:
        fail(str(exc))
        return
    console.print(f"{summary.new} new labels ({summary.duplicate} already stored) from "
                  f"{', '.join(summary.annotators) or 'nobody'} -> {summary.path}")
    _print_agreement(agreement(run_dir))


@app.command("agreement", help="Cohen's kappa per locale between annotators who labelled the same items.")
def agreement_command(
    legacy_dir: Path = legacy_run_dir_argument(),
    run_dir: Path = run_dir_option(),
) -> None:
    """Print agreement per locale."""
    from xsafety.annotate import agreement

    run_dir = pick_run_dir(run_dir, legacy_dir)

    rows = agreement(run_dir)
    if not rows:
        console.print("no item has labels from two annotators yet")
    _print_agreement(rows)


def _print_agreement(rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    table = Table(title="annotator agreement (first two annotators per item)")
    for col in ("locale", "items", "agreement", "kappa"):
        table.add_column(col)
    for r in rows:
        kappa = r["kappa"]
        table.add_row(str(r["locale"]), str(r["n_items"]), f"{float(r['agreement']):.1%}",  # type: ignore[arg-type]
                      "-" if kappa is None else f"{float(kappa):.2f}")  # type: ignore[arg-type]
    console.print(table)


@app.command("calibrate", help="Write a judge calibration file from `judge eval` metrics and/or labelled data.")
def calibrate_command(
    out: Path = typer.Option(..., "--out", "-o", help="Calibration file to write (JSON)."),
    eval_files: list[Path] = typer.Option([], "--eval", help="Metrics JSON written by `xsafety judge eval --out`."),
    data: Path = typer.Option(None, "--data", help="Labelled JSONL (judge eval format, with `lang`): judged now."),
    judge: str = typer.Option("default", "--judge", help="Judge for --data (name in judges/ or a TOML path)."),
    run_dir: Path = typer.Option(None, "--run-dir", "--run", help="Also a run's own annotations, against its primary judge."),
) -> None:
    """Combine the sources, write the file and print the validity per locale."""
    from xsafety.report.validity import Calibration, from_eval_metrics, validity_rows, write_calibration

    try:
        cal = Calibration()
        for path in eval_files:
            try:
                metrics = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                fail(f"{path}: cannot read judge eval metrics: {exc}")
                return
            cal = cal.merged(from_eval_metrics(metrics, f"judge eval {path.name}"))
        if data is not None:
            from xsafety.judges import load_judge
            from xsafety.judges.evaluate import evaluate, load_rows

            rows = load_rows(data)
            judge_obj = load_judge(judge)
            try:
                metrics = evaluate(judge_obj, rows)
            finally:
                judge_obj.close()
            cal = cal.merged(from_eval_metrics(metrics, f"judge eval {data.name}"))
        if run_dir is not None:
            cal = cal.merged(_run_annotations(run_dir))
        if not cal.locales():
            fail("no labelled rows per language found: give --eval METRICS.json, --data LABELS.jsonl or --run-dir RUN")
        write_calibration(cal, out)
    except XSafetyError as exc:
        fail(str(exc))
        return
    table = Table(title=f"judge validity: {cal.judge or 'judge not named'}")
    for col in ("locale", "metric", "validity"):
        table.add_column(col)
    for r in validity_rows(cal, cal.locales()):
        table.add_row(r["locale"], r["metric"], r["validity"])
    console.print(table)
    console.print(f"calibration written to {out}")


def _run_annotations(run_dir: Path) -> "Calibration":
    """A run's annotations scored against its primary judge's native verdicts, as a calibration."""
    import polars as pl

    from xsafety.annotate import run_calibration
    from xsafety.report.frame import PRIMARY_MODE, load_run

    run = load_run(run_dir)
    native = run.verdicts.filter((pl.col("judge") == run.primary_judge) & (pl.col("mode") == PRIMARY_MODE))
    predicted = dict(zip(native.get_column("response_key").to_list(), native.get_column("label").to_list()))
    return run_calibration(run_dir, predicted, run.primary_judge)
