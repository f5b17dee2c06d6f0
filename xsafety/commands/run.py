"""`xsafety run [CONFIG]` and `xsafety status --run-dir DIR`: thin wrappers over ``xsafety.run``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from xsafety.commands.common import fail, legacy_run_dir_argument, pick_run_dir, run_dir_option
from xsafety.errors import XSafetyError

if TYPE_CHECKING:
    from xsafety.plan import Plan
    from xsafety.run import RunResult

out = Console()


def run_command(
    config: Path = typer.Argument(None, help="Run config (TOML). Without it: the built-in default run."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what each stage would compute; load and write nothing."),
    run_dir: Path = typer.Option(None, "--run-dir", help="Run directory (overrides the config's run dir)."),
    sample: str | None = typer.Option(None, "--sample", help="N[:alert|source[:SEED]]: overrides the config's [run] sample."),
) -> None:
    """Run the whole evaluation: translations if missing, generation, judging, report."""
    from xsafety.config import load_config
    from xsafety.run import run

    try:
        cfg = load_config(config)
        if run_dir is not None:
            cfg = dataclasses.replace(cfg, run_dir=run_dir)
        if sample is not None:
            from xsafety.sampling import parse_sample

            cfg = dataclasses.replace(cfg, sample=parse_sample(sample, field="--sample"))
        result = run(cfg, dry_run=dry_run)
    except XSafetyError as exc:
        fail(str(exc))
        return
    if dry_run:
        out.print(plan_table(result.plan))
        return
    _print_done(result)
    if result.failures:
        typer.secho(f"{len(result.failures)} item(s) failed; rerun the same command to retry only them:", fg="red", err=True)
        for line in result.failures[:50]:
            typer.echo(f"  {line}", err=True)
        if len(result.failures) > 50:
            typer.echo(f"  ... and {len(result.failures) - 50} more (see `xsafety status --run-dir {result.run_dir}`)", err=True)
        raise typer.Exit(1)


def plan_table(plan: "Plan") -> Table:
    """The dry-run table: per stage, what exists and what would be computed."""
    table = Table(title=f"plan for {plan.config.run_dir} (locales: {', '.join(plan.locales)})")
    for name, justify in (("stage", "left"), ("what", "left"), ("planned", "right"), ("stored", "right"),
                          ("to compute", "right"), ("note", "left"), ("estimated time", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    by_locale: dict[str, int] = {}
    for need in plan.translations:
        by_locale[need.locale] = by_locale.get(need.locale, 0) + len(need.prompts)
    engines = {n.locale: n.engine or "locale default" for n in plan.translations}
    table.add_row("translate", "all locales", "", "", str(plan.translations_todo),
                  "" if plan.translations_todo else "all translations exist")
    for locale, n in by_locale.items():
        table.add_row("", locale, "", "", str(n), f"engine: {engines[locale]}")
    for (locale, why), n in sorted(plan.items.skipped.items()):
        if why == "no translation" and plan.translations_todo:
            continue  # counted below as items that follow the translations
        table.add_row("", locale, "", "", "", f"{n} left out: {why}")
    pending = plan.pending
    n_pending = sum(pending.values())
    after = f" + up to {n_pending} after translation" if n_pending else ""
    for mp in plan.models:
        note = "" if mp.exact else "model not yet run here: upper bound"
        if mp.failed:
            note = f"{mp.failed} failed before (retried)"
        table.add_row("generate", mp.model.name, str(len(mp.items)), str(mp.stored), f"{len(mp.todo)}{after}", note,
                      _estimate("generate", mp.signature, len(mp.todo)))
    from xsafety.plan import modes_for

    per_model = sum(n * len(modes_for(loc, plan.config.judge_modes)) for loc, n in pending.items())
    judge_after = f" + up to {per_model * len(plan.models)} after translation" if per_model else ""
    for jp in plan.judges:
        note = "" if jp.exact else "judge not yet run here: upper bound"
        table.add_row("judge", jp.name, str(jp.planned), str(jp.stored), f"{jp.todo}{judge_after}", note,
                      _estimate("judge", jp.signature, jp.todo))
    return table


def _estimate(kind: str, signature: str | None, todo: int) -> str:
    """Expected time for ``todo`` items from this machine's earlier runs of the same component."""
    from xsafety import throughput

    if not todo:
        return ""
    found = throughput.estimate(kind, signature, todo)
    if found is None:
        return "no estimate yet" if signature else "no estimate (not run here yet)"
    rate = f", {found.tokens_per_s:.0f} tok/s" if found.tokens_per_s else ""
    runs = "run" if found.runs == 1 else "runs"
    return f"~{throughput.format_seconds(found.seconds)} (from {found.runs} earlier {runs} here{rate})"


def _print_done(result: "RunResult") -> None:
    parts = [f"translated {result.translated}"]
    for name, s in result.generated.items():
        parts.append(f"{name}: {s.new} new, {s.cached} cached, {s.failed} failed ({s.tokens_per_s:.0f} tok/s)")
    for name, s in result.judged.items():
        parts.append(f"judge {name}: {_judge_summary_text(s)}")
    if not result.models_loaded and not result.judges_loaded and not result.translated:
        parts.append("nothing new to compute")
    typer.echo("; ".join(parts), err=True)
    if result.report is not None:
        try:
            from xsafety.report import summary_table
            from xsafety.report.build import summary_rich

            # A rebuilt report was computed once already; an unchanged one is read from the store.
            data = result.report_data
            out.print(summary_rich(data) if data is not None else summary_table(result.run_dir))
        except XSafetyError as exc:
            typer.secho(f"summary unavailable: {exc}", fg="yellow", err=True)
        typer.echo(f"report: {result.report}" + ("" if result.report_rebuilt else " (unchanged)"), err=True)
    typer.echo(f"done in {result.seconds:.1f} s", err=True)


def _judge_summary_text(summary: object) -> str:
    fields = [f"{k} {v}" for k, v in vars(summary).items() if isinstance(v, int) and not isinstance(v, bool)]
    return ", ".join(fields) or str(summary)


def status_command(
    legacy_dir: Path = legacy_run_dir_argument(),
    run_dir: Path = run_dir_option("A run directory written by `xsafety run`."),
) -> None:
    """Show per-stage progress of a run: records stored vs planned, and errors."""
    from xsafety.status import run_status, status_table

    run_dir = pick_run_dir(run_dir, legacy_dir)
    try:
        status = run_status(run_dir)
    except XSafetyError as exc:
        fail(str(exc))
        return
    out.print(status_table(status))
    for line in status.errors:
        typer.echo(f"  {line}")
    typer.echo("complete" if status.complete else "incomplete: `xsafety run` on the same config resumes it")
