"""`xsafety sets list|show` and `xsafety import FORMAT PATH`: thin wrappers over taxonomy/importers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from xsafety.commands.common import fail
from xsafety.errors import XSafetyError
from xsafety.export import source_category
from xsafety.importers import FORMATS, import_set
from xsafety.importers.storage import META_FILE
from xsafety.records import Prompt
from xsafety.taxonomy import BUILTIN, list_sets, load_references, load_set, normalize_alert, set_dir

app = typer.Typer(no_args_is_help=True)
console = Console(soft_wrap=True)


def _origin(name: str) -> str:
    """Where a set came from, for the listing (format and file of an imported set)."""
    if name == BUILTIN:
        return "built-in (taxonomy/builtin.jsonl)"
    meta_path = set_dir(name) / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "imported"
    return f"{meta.get('format', '?')}: {Path(str(meta.get('file', '?'))).name}"


@app.command("list")
def list_command() -> None:
    """List instruction sets with prompt, category and reference counts."""
    try:
        table = Table(title="Instruction sets")
        for column in ("set", "prompts", "categories", "reference locales", "origin"):
            table.add_column(column, justify="right" if column in ("prompts", "categories") else "left")
        for name in list_sets():
            prompts = load_set(name)
            refs = load_references(name)
            ref_text = ", ".join(f"{loc} ({len(t)})" for loc, t in sorted(refs.items())) or "-"
            categories = len({p.category for p in prompts if p.category})
            table.add_row(name, str(len(prompts)), str(categories), ref_text, _origin(name))
        console.print(table)
    except XSafetyError as exc:
        fail(str(exc))


@app.command("show")
def show_command(
    name: str = typer.Argument(..., help="Set name (see `xsafety sets list`) or a prompts JSONL path."),
    category: str | None = typer.Option(
        None, "--category", "-c",
        help="Only this category: an ALERT category (aliases accepted) or the set's own (XSafety issue type, MultiJail tag, CatQA topic).",
    ),
    limit: int = typer.Option(20, "--limit", "-n", min=0, help="Show at most N prompts (0: counts only)."),
) -> None:
    """Show a set's prompts as a table, and how many prompts each category has."""
    try:
        prompts = load_set(name)
        if category:
            prompts = _in_category(prompts, category)
        if limit:
            table = Table(title=f"{name}: {len(prompts)} prompts" + (f" in {category}" if category else ""))
            # ids and labels are what users copy, so they never wrap; the text folds instead
            table.add_column("id", no_wrap=True)
            table.add_column("category", no_wrap=True)
            table.add_column("source category", overflow="fold")
            table.add_column("text", overflow="fold", ratio=1)
            for p in prompts[:limit]:
                table.add_row(p.id, p.category or "-", source_category(p), p.text)
            console.print(table)
        counts = Table(title="Prompts per category")
        counts.add_column("category")
        counts.add_column("prompts", justify="right")
        for cat, n in sorted(Counter(p.category or "(none)" for p in prompts).items()):
            counts.add_row(cat, str(n))
        console.print(counts)
    except XSafetyError as exc:
        fail(str(exc))


def _in_category(prompts: list[Prompt], category: str) -> list[Prompt]:
    """Prompts of an ALERT category, else of the set's own category (case and spacing ignored).

    An ALERT name wins when it is one; a name that is neither is one line naming both vocabularies.
    """
    try:
        wanted = normalize_alert(category)
    except KeyError as exc:
        alert_error = exc.args[0]
    else:
        return [p for p in prompts if p.category == wanted]
    key = " ".join(category.lower().replace("_", " ").split())
    own = [p for p in prompts if " ".join(source_category(p).lower().replace("_", " ").split()) == key]
    if not own:
        names = sorted({source_category(p) for p in prompts} - {"none"})
        shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        fail(f"{alert_error}; nor is it one of the set's own categories" + (f" ({shown})" if names else ""))
    return own


def import_command(
    fmt: str = typer.Argument(..., metavar="FORMAT", help=f"One of: {', '.join(FORMATS)}."),
    path: Path = typer.Argument(..., help="The file (or, for xsafety, the folder of per-language CSVs)."),
    name: str | None = typer.Option(None, "--name", help="Set name (default: the format, or the file name for jsonl/csv)."),
    mapping: str | None = typer.Option(
        None, "--map", help="Column mapping for jsonl/csv: text=COL,id=COL,category=COL,ref.<locale>=COL."
    ),
) -> None:
    """Import an instruction set; a failing import leaves any existing set of that name untouched."""
    try:
        summary = import_set(fmt, path, name=name, mapping=mapping)
    except XSafetyError as exc:
        fail(str(exc))
    console.print(f"imported [bold]{summary.name}[/bold] ({summary.format}) -> {summary.path}")
    console.print(f"  prompts: {summary.prompts} in {len(summary.categories)} categories")
    top = ", ".join(f"{c} {n}" for c, n in summary.categories.most_common(8))
    console.print(f"  categories: {top}" + (" ..." if len(summary.categories) > 8 else ""))
    if summary.references:
        refs = ", ".join(f"{loc} {n}" for loc, n in summary.references.items())
        console.print(f"  reference locales: {len(summary.references)} ({refs})")
    for reason, n in sorted(summary.skipped.items()):
        console.print(f"  skipped: {n} x {reason}")
    if summary.warnings:
        console.print(f"  warnings: {len(summary.warnings)} (see the log above)")
