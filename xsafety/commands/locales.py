"""`xsafety locales list|show|add`: read and extend the locale registry (work lives in xsafety.locales)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from xsafety.commands.common import fail
from xsafety.errors import XSafetyError
from xsafety.locales import ENGINES, RESOURCES, get_locale, load_locales

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_command(
    resource: str | None = typer.Option(None, "--resource", help=f"Only this resource level ({'|'.join(RESOURCES)})."),
    engine: str | None = typer.Option(None, "--engine", help=f"Only locales whose default engine is this ({'|'.join(ENGINES)})."),
) -> None:
    """List registered locales."""
    try:
        if resource is not None and resource not in RESOURCES:
            fail(f"--resource must be one of {', '.join(RESOURCES)}, got '{resource}'")
        if engine is not None and engine not in ENGINES:
            fail(f"--engine must be one of {', '.join(ENGINES)}, got '{engine}'")
        locales = [
            loc
            for loc in load_locales().values()
            if (resource is None or loc.resource == resource) and (engine is None or loc.engine == engine)
        ]
    except XSafetyError as exc:
        fail(str(exc))
    table = Table(title=f"{len(locales)} locales")
    for column in ("code", "name", "native", "script", "resource", "engine", "langid", "nllb"):
        table.add_column(column)
    for loc in locales:
        # langdetect where it has a profile, else the fastText label the gates fall back on.
        langid = loc.langdetect or (f"ft:{loc.fasttext}" if loc.fasttext else "-")
        table.add_row(loc.code, loc.name, loc.native, loc.script, loc.resource, loc.engine, langid, loc.nllb or "-")
    # Wide enough for the eight columns even when output is piped (rich then assumes 80).
    Console(width=140).print(table)


@app.command("show")
def show_command(code: str = typer.Argument(..., help="Locale code, e.g. sw.")) -> None:
    """Show every field of one locale."""
    try:
        loc = get_locale(code)
    except XSafetyError as exc:
        fail(str(exc))
    table = Table(title=f"{loc.code}: {loc.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in loc.to_dict().items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v:g}" for k, v in value.items()) or "-"
        table.add_row(name, "-" if value is None else str(value))
    Console().print(table)


@app.command("add")
def add_command(
    code: str = typer.Argument(..., help="BCP-47 code: language[-Script][-REGION], e.g. 'yue', 'pt-BR'."),
    name: str = typer.Option(..., "--name", help="English name."),
    native: str = typer.Option(..., "--native", help="Endonym, e.g. 'Kiswahili'."),
    script: str = typer.Option(..., "--script", help="ISO 15924 script code, e.g. Latn, Cyrl, Arab, Deva."),
    resource: str = typer.Option(..., "--resource", help=f"Resource level: {'|'.join(RESOURCES)}."),
    engine: str = typer.Option("seq2seq", "--engine", help=f"Default translation engine: {'|'.join(ENGINES)}."),
    nllb: str | None = typer.Option(None, "--nllb", help="NLLB-200 / FLORES-200 code, e.g. swh_Latn."),
    m2m100: str | None = typer.Option(None, "--m2m100", help="M2M100 language id, e.g. sw."),
    langdetect: str | None = typer.Option(None, "--langdetect", help="langdetect profile code, if it has one."),
    fasttext: str | None = typer.Option(None, "--fasttext", help="fastText lid.176 label, e.g. sw."),
    opus_mt: str | None = typer.Option(None, "--opus-mt", help="Forward OPUS-MT hub id or local path."),
    opus_mt_token: str | None = typer.Option(None, "--opus-mt-token", help="Target token for multilingual OPUS-MT, e.g. >>swh<<."),
    opus_mt_back: str | None = typer.Option(None, "--opus-mt-back", help="Backward OPUS-MT hub id or local path."),
    apertium: str | None = typer.Option(None, "--apertium", help="Apertium mode English -> locale."),
    apertium_back: str | None = typer.Option(None, "--apertium-back", help="Apertium mode locale -> English."),
    safety_prompt: str | None = typer.Option(None, "--safety-prompt", help="Safety system prompt written in this language."),
    file: Path | None = typer.Option(None, "--file", help="Registry file to append to (default: your own, XSAFETY_HOME/locales.toml, never the packaged one)."),
) -> None:
    """Add a locale: validated first, then appended to the registry file (existing text kept as is)."""
    from xsafety.locales import add_locale

    entry = {
        "code": code,
        "name": name,
        "native": native,
        "script": script,
        "resource": resource,
        "engine": engine,
        "langdetect": langdetect,
        "fasttext": fasttext,
        "opus_mt": opus_mt,
        "opus_mt_token": opus_mt_token,
        "opus_mt_back": opus_mt_back,
        "nllb": nllb,
        "m2m100": m2m100,
        "apertium": apertium,
        "apertium_back": apertium_back,
        "safety_prompt": safety_prompt,
        "refusal_lexicon": code,
    }
    try:
        loc, path = add_locale(entry, file=file)
    except XSafetyError as exc:
        fail(str(exc))
    typer.echo(f"added locale {loc.code} ({loc.name}) to {path}")
    from xsafety.locales import refusal_list_for

    if refusal_list_for(loc.code) is None:
        typer.secho(
            f"warning: no refusal phrase list for {loc.code} (judges/refusal/{loc.code}.txt): the default judge "
            "checks its answers against the English list only and will miss refusals written in the language",
            fg="yellow", err=True,
        )
