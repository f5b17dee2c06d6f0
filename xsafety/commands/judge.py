"""`xsafety judge` (judge a run's responses) and `xsafety judge eval` (score a judge on human labels)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from xsafety.commands.common import default_group, fail, legacy_run_option, pick_run_dir, run_dir_option, split_list
from xsafety.config import JUDGE_MODES
from xsafety.errors import InputError, XSafetyError

app = typer.Typer(no_args_is_help=True, cls=default_group("main"))
# Wide enough for the metrics table; rich still wraps on narrow terminals.
console = Console(width=150)


@app.command("main", hidden=True, help="Judge every stored response of a run (native and back-translated).")
def judge_command(
    run_dir: Path = run_dir_option("Run directory holding the responses."),
    run: Path = legacy_run_option("--run"),
    judge: str = typer.Option("default", "--judge", help="Judge name in judges/ or a TOML path."),
    modes: str = typer.Option("native,back-translated", "--modes", help="Comma-separated: native, back-translated."),
    model: str | None = typer.Option(None, "--model", help="Override the judge's model spec (llm kinds)."),
) -> None:
    """Judge a run and print the summary and native/back-translated agreement per locale."""
    run = pick_run_dir(run_dir, run)
    from xsafety.judges import load_judge
    from xsafety.judges.stage import agreement, judge_run
    from xsafety.store import Store

    try:
        if not run.is_dir():
            raise InputError("no such run directory" if not run.exists() else "is a file, not a run directory",
                             file=run, field="--run-dir")
        wanted_modes = tuple(split_list(modes))
        for mode in wanted_modes or ("",):
            if mode not in JUDGE_MODES:  # checked before the judge (maybe a model) is loaded
                raise InputError(f"unknown judge mode {mode!r}; expected {', '.join(JUDGE_MODES)}", field="--modes")
        judge_obj = load_judge(judge, **({"model": model} if model else {}))
        try:
            summary = judge_run(Store(run), judge_obj, modes=wanted_modes)
        finally:
            judge_obj.close()
        console.print(
            f"judge {judge}: {summary.new} new, {summary.cached} cached, {summary.failed} failed (retried next run), "
            f"{summary.unparsable} unparsable, {summary.no_back_translation} without back-translation, "
            f"{summary.prompt_not_english} judged against a non-English prompt"
        )
        if summary.labels:
            console.print("labels: " + ", ".join(f"{k} {v}" for k, v in sorted(summary.labels.items())))
        for err in summary.errors:
            console.print(f"  error: {err}")
        frame = agreement(Store(run), summary.judge)
        if frame.height:
            table = Table(title="native vs back-translated")
            for col in ("locale", "items", "agreement", "kappa"):
                table.add_column(col)
            for row in frame.iter_rows(named=True):
                kappa = "-" if row["kappa"] is None else f"{row['kappa']:.2f}"
                table.add_row(row["locale"], str(row["items"]), f"{row['agreement']:.1%}", kappa)
            console.print(table)
    except XSafetyError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    if summary.failed:
        # As `xsafety run` and `xsafety generate` do: failed items are not results, and a script
        # must not take a run whose every judge call failed for a finished one.
        typer.secho(f"{summary.failed} judgement(s) failed: rerun the same command to retry just those", fg="red", err=True)
        raise typer.Exit(1)


@app.command("eval", help="Score a judge against human labels (a JSONL like judge_dev.jsonl), or on the lexicon's examples.")
def eval_command(
    judge: str = typer.Option("default", "--judge", help="Judge name in judges/ or a TOML path."),
    data: Path | None = typer.Option(None, "--data", help="Labelled JSONL: source, lang, prompt, response, label."),
    examples: bool = typer.Option(
        False, "--examples", help="Score every judges/refusal/examples/<locale>.jsonl (the lexicon's development set), one row per locale."
    ),
    limit: int | None = typer.Option(None, "--limit", help="Use only the first N rows (after --source)."),
    source: str | None = typer.Option(None, "--source", help="Keep only rows of this source."),
    out: Path | None = typer.Option(None, "--out", help="Write all metrics to this JSON file."),
    model: str | None = typer.Option(None, "--model", help="Override the judge's model spec (llm kinds)."),
) -> None:
    """Print 3-way, binary-unsafe and refusal-vs-rest metrics per source, language and class."""
    from xsafety.judges import load_judge
    from xsafety.judges.evaluate import evaluate, example_files, load_rows

    if (data is None) == (not examples):
        fail("give --data FILE or --examples (one of them)")
    try:
        files = [data] if data is not None else example_files()
        if not files:
            fail("no example files in judges/refusal/examples/")
        per_file = {path: load_rows(path, limit=limit, source=source) for path in files}
        if not any(per_file.values()):
            fail(f"{data or 'judges/refusal/examples/'}: no rows to score")
        judge_obj = load_judge(judge, **({"model": model} if model else {}))
        try:
            if data is not None:
                metrics = evaluate(judge_obj, per_file[data])
            else:
                metrics = {"judge": judge_obj.signature(), "examples": {}}
                for path, rows in per_file.items():
                    if rows:
                        metrics["examples"][path.stem] = evaluate(judge_obj, rows)
        finally:
            judge_obj.close()
    except XSafetyError as exc:
        fail(str(exc))
    if data is not None:
        _print_metrics(metrics)
    else:
        _print_examples(metrics)
    if out:
        out.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        console.print(f"metrics written to {out}")


def _print_examples(metrics: dict[str, Any]) -> None:
    """One row per locale's example file: refusal precision, recall, F1 and FPR (development scores)."""
    console.print(f"judge {metrics['judge']}")
    table = Table(title="refusal vs rest on judges/refusal/examples (development scores: the lists were written with these files)")
    for col in ("locale", "n", "refusals", "P", "R", "F1", "FPR", "missed", "false refusals"):
        table.add_column(col)
    for locale, m in metrics["examples"].items():
        ref = m["groups"]["all"]["refusal"] or {}
        table.add_row(
            locale, str(m["rows"]), str(ref.get("tp", 0) + ref.get("fn", 0)), _fmt(ref.get("precision")),
            _fmt(ref.get("recall")), _fmt(ref.get("f1")), _fmt(ref.get("fpr")), str(ref.get("fn", "-")), str(ref.get("fp", "-")),
        )
    console.print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_metrics(metrics: dict[str, Any]) -> None:
    console.print(f"judge {metrics['judge']}: {metrics['rows']} rows, {metrics['per_second']} rows/s")
    table = Table(title="judge vs human labels")
    for col in ("group", "n", "3-way acc", "macro-F1", "kappa", "refusal P", "R", "F1", "FPR", "unsafe F1", "unsafe acc"):
        table.add_column(col)
    for name, g in metrics["groups"].items():
        tw, ref, bi = g["three_way"] or {}, g["refusal"] or {}, g["binary_unsafe"] or {}
        table.add_row(
            name, str(g["n"]), _fmt(tw.get("accuracy")), _fmt(tw.get("macro_f1")), _fmt(tw.get("kappa")),
            _fmt(ref.get("precision")), _fmt(ref.get("recall")), _fmt(ref.get("f1")), _fmt(ref.get("fpr")),
            _fmt(bi.get("f1")), _fmt(bi.get("accuracy")),
        )
    console.print(table)
    overall = metrics["groups"]["all"]["three_way"]
    if overall:
        conf = Table(title="confusion (all 3-way rows): gold down, predicted across")
        predicted = list(next(iter(overall["confusion"].values())))
        conf.add_column("gold")
        for p in predicted:
            conf.add_column(p)
        for gold, row in overall["confusion"].items():
            conf.add_row(gold, *(str(row[p]) for p in predicted))
        console.print(conf)
