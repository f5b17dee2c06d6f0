"""`xsafety translate` (translate a set, with gates) and `xsafety translate eval` (against references)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from xsafety.commands.common import default_group, fail, parse_locales, split_list
from xsafety.errors import InputError, XSafetyError

app = typer.Typer(cls=default_group("main"), no_args_is_help=False)
console = Console()


def _gate_overrides(values: list[str]) -> dict[str, float]:
    """``--gate name=value`` options as a dict, with bad ones reported as input errors."""
    out: dict[str, float] = {}
    for raw in values:
        name, sep, value = raw.partition("=")
        if not sep:
            raise InputError(f"expected NAME=VALUE, got {raw!r}", field="gate")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"threshold must be a number, got {value!r}", field=f"gate {name.strip()}") from None
    return out


def _options(model: str | None, fallback: str | None, back_engine: str | None, gate: list[str], no_gate: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {"gates": _gate_overrides(gate), "disable_gates": split_list(",".join(no_gate))}
    if model:
        options["engine_options"] = {"model": model}
    if fallback:
        options["fallback"] = fallback
    if back_engine:
        options["back_engine"] = back_engine
    return options


def summary_rows(records: list[Any]) -> dict[str, Any]:
    """Items, accepted share, mean round-trip chrF, mean quality and rejections by gate."""
    chrf = [g.score for r in records for g in r.gates if g.name == "roundtrip_chrf" and g.score is not None]
    quality = [r.quality for r in records if r.quality is not None]
    rejected: dict[str, int] = {}
    for r in records:
        if not r.accepted:
            for g in r.gates:
                if not g.passed:
                    rejected[g.name] = rejected.get(g.name, 0) + 1
    return {
        "items": len(records),
        "accepted": sum(r.accepted for r in records) / len(records) if records else 0.0,
        "roundtrip_chrf": sum(chrf) / len(chrf) if chrf else None,
        "quality": sum(quality) / len(quality) if quality else None,
        "rejected": rejected,
    }


@app.command("main", hidden=True)
def main(
    set_name: str = typer.Option("builtin", "--set", "-s", help="Instruction set name or path to a prompts JSONL."),
    locales: str = typer.Option(..., "--locales", "-l", help="Comma-separated locales, e.g. es,ca,gl."),
    engine: str | None = typer.Option(None, "--engine", "-e", help="apertium|seq2seq|chat|reference (default: each locale's)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model for the seq2seq (hub id/path) or chat (model spec) engine."),
    fallback: str | None = typer.Option(None, "--fallback", help="Engine to try when every candidate fails a gate."),
    back_engine: str | None = typer.Option(None, "--back-engine", help="Engine for back-translation (default: the forward engine's reverse)."),
    gate: list[str] = typer.Option([], "--gate", "-g", help="Threshold override NAME=VALUE (repeatable)."),
    no_gate: list[str] = typer.Option([], "--no-gate", help="Gate(s) to switch off (repeatable or comma-separated)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: the repository's translations/ or ~/.xsafety/translations)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N prompts."),
    sample: str | None = typer.Option(None, "--sample", help="A stratified sample N[:alert|source[:SEED]]: N prompts per category (before --limit)."),
) -> None:
    """Translate a set into locales with quality gates; prints a per-locale table."""
    from xsafety.sampling import parse_sample, stratified_sample
    from xsafety.taxonomy import load_set
    from xsafety.translate import translate_set

    try:
        wanted = parse_locales(locales)  # ES -> es, each once, as `xsafety generate` reads them
        if limit is not None and limit < 1:
            raise InputError(f"must be at least 1, got {limit}", field="--limit")
        stratum = None if sample is None else parse_sample(sample, field="--sample")
        prompts = load_set(set_name)
        if stratum is not None:
            # The same sample as a run config's [run] sample, so a run finds these translations.
            prompts = stratified_sample(prompts, stratum)
        if limit is not None:
            prompts = prompts[:limit]
        results = translate_set(prompts, wanted, engine=engine, out_dir=out, **_options(model, fallback, back_engine, gate, no_gate))
    except XSafetyError as exc:
        fail(str(exc))
        return
    table = Table(title=f"translations of {set_name}")
    for col in ("locale", "items", "accepted", "round-trip chrF", "quality", "rejected by gate"):
        table.add_column(col, justify="left" if col in ("locale", "rejected by gate") else "right")
    for locale, records in results.items():
        s = summary_rows(records)
        table.add_row(
            locale,
            str(s["items"]),
            f"{s['accepted']:.1%}",
            "-" if s["roundtrip_chrf"] is None else f"{s['roundtrip_chrf']:.1f}",
            "-" if s["quality"] is None else f"{s['quality']:.3f}",
            ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items(), key=lambda kv: -kv[1])) or "-",
        )
    console.print(table)


def _fmt(rho: float | None) -> str:
    return "-" if rho is None or (isinstance(rho, float) and math.isnan(rho)) else f"{rho:+.3f}"


@app.command("eval")
def eval_command(
    set_name: str = typer.Option(..., "--set", "-s", help="A set with reference translations (e.g. an imported XSafety)."),
    locales: str | None = typer.Option(None, "--locales", "-l", help="Locales to score (default: every locale with references)."),
    engine: str | None = typer.Option(None, "--engine", "-e", help="Engine to score (default: each locale's)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model for the seq2seq or chat engine."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where the machine translations go (default ~/.xsafety/translations)."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N prompts with a reference."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the figures as JSON here."),
) -> None:
    """Score machine translations against the set's human references: chrF, BLEU, and how well each gate signal predicts them."""
    from xsafety.translate.evaluate import evaluate

    try:
        if limit is not None and limit < 1:
            raise InputError(f"must be at least 1, got {limit}", field="--limit")
        results = evaluate(set_name, split_list(locales) or None, engine=engine, out_dir=out, limit=limit, **_options(model, None, None, [], []))
    except XSafetyError as exc:
        fail(str(exc))
        return
    table = Table(title=f"{set_name}: machine translation vs human references")
    for col in ("locale", "items", "chrF", "BLEU", "accepted", "chrF accepted", "chrF rejected"):
        table.add_column(col, justify="left" if col == "locale" else "right")
    for r in results:
        table.add_row(
            r.locale, str(r.items), f"{r.chrf:.1f}", f"{r.bleu:.1f}", f"{r.accepted:.1%}",
            "-" if r.accepted_chrf is None else f"{r.accepted_chrf:.1f}",
            "-" if r.rejected_chrf is None else f"{r.rejected_chrf:.1f}",
        )
    console.print(table)
    for r in results:
        console.print(f"{r.locale}: engine {r.engine}", markup=False, soft_wrap=True)
        console.print(f"  {r.chrf_signature}\n  {r.bleu_signature}", markup=False, soft_wrap=True)
    corr = Table(title="Spearman correlation with sentence-level reference chrF")
    corr.add_column("signal")
    for r in results:
        corr.add_column(r.locale, justify="right")
    names = sorted({n for r in results for n in r.correlations}, key=lambda n: (n != "quality", n))
    for name in names:
        corr.add_row(name, *[_fmt(r.correlations.get(name)) for r in results])
    console.print(corr)
    if json_out is not None:
        json_out.write_text(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
