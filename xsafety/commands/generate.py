"""`xsafety generate`: ask a target model every accepted prompt of a set, per locale."""

from __future__ import annotations

import typer

from pathlib import Path

from xsafety.commands.common import fail, legacy_run_option, pick_run_dir, split_list
from xsafety.errors import InputError, XSafetyError
from xsafety.validate import decoding_problems, model_option_problem, spec_problem


def _locales(value: str) -> list[str]:
    """The ``--locales`` codes in the registry's spelling (``ES`` -> ``es``), each once."""
    from xsafety.locales import get_locale

    wanted: list[str] = []
    for code in split_list(value):
        try:
            canonical = get_locale(code).code  # an unknown locale is a typo, not "nothing to generate"
        except InputError as exc:
            raise InputError(exc.message, field="--locales") from None
        if canonical in wanted:
            raise InputError(f"locale '{canonical}' is given twice", field="--locales")
        wanted.append(canonical)
    if not wanted:
        raise InputError("no locales given", field="--locales")
    return wanted


def generate_command(
    model: str = typer.Option("smollm2", "--model", "-m", help="Model spec: smollm2, hf:ID_OR_PATH, gguf:FILE, openai:MODEL@URL[,URL...]"),
    set_name: str = typer.Option("builtin", "--set", "-s", help="Instruction set name or path to a prompts JSONL file."),
    locales: str = typer.Option("en", "--locales", "-l", help="Comma-separated locales, e.g. en,es,sw."),
    run_dir: str = typer.Option(None, "--run-dir", help="Run directory (created if missing; reruns resume)."),
    run: str = legacy_run_option("--run", "-r"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Tokens to generate per answer."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy; above 0 samples with --seed."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (used when temperature > 0)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (per request: seed + request key)."),
    system_prompt: str | None = typer.Option(None, "--system-prompt", help="System message sent before every prompt."),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Requests in flight (openai: models; default 16)."),
    api_key_env: str | None = typer.Option(None, "--api-key-env", help="NAME of the environment variable holding the API key."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N prompts of the set."),
    device: str | None = typer.Option(None, "--device", help="Local models: auto, cpu, cuda, cuda:1 ..."),
    batch_tokens: int | None = typer.Option(None, "--batch-tokens", help="Local models: token budget per batch."),
) -> None:
    """Generate responses for the accepted prompts of a set in each locale, resuming where a run stopped."""
    run = pick_run_dir(run_dir, run)
    from xsafety.generate import build_items, generate
    from xsafety.models import Decoding, load_model
    from xsafety.models.spec import parse_spec
    from xsafety.store import Store

    try:
        wanted = _locales(locales)
        if limit is not None and limit < 1:
            raise InputError("--limit must be at least 1", field="limit")
        # Every option is checked before a prompt is loaded or a model built, and nothing is
        # stored on a bad value (a negative token budget or top_p 7 once reached the records).
        for name, problem in decoding_problems(max_new_tokens, temperature, top_p, seed):
            raise InputError(problem, field=f"--{name.replace('_', '-')}")
        for name, value in (("concurrency", concurrency), ("batch_tokens", batch_tokens), ("api_key_env", api_key_env), ("device", device)):
            problem = None if value is None else model_option_problem(name, value)
            if problem:
                raise InputError(problem, field=f"--{name.replace('_', '-')}")
        run_path = Path(run)
        if not run.strip():
            raise InputError("must name a folder", field="--run-dir")
        if run_path.exists() and not run_path.is_dir():
            raise InputError("is a file, not a run directory", file=run_path, field="--run-dir")
        parse_spec(model)  # a malformed spec should fail before any prompt is loaded
        problem = spec_problem(model)
        if problem:
            raise InputError(problem, field="--model")
        items, missing = build_items(set_name, wanted, system_prompt=system_prompt, limit=limit)
        for locale, count in missing.items():
            if count:
                typer.secho(
                    f"{locale}: {count} prompt(s) have no accepted translation and are skipped "
                    f"(run `xsafety translate --set {set_name} --locales {locale}`)",
                    fg="yellow",
                    err=True,
                )
        if not items:
            raise InputError(f"nothing to generate for set {set_name!r} in {', '.join(wanted)}", field="locales")
        # Unset options are dropped by load_model; a set one the backend cannot use is an error.
        options = {"concurrency": concurrency, "api_key_env": api_key_env, "device": device, "batch_tokens": batch_tokens}
        decoding = Decoding(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
        chat_model = load_model(model, decoding, **options)
        try:
            summary = generate(Store(run), chat_model, items)
        finally:
            chat_model.close()
    except XSafetyError as exc:
        fail(str(exc))
        return
    typer.echo(
        f"{summary.new} new, {summary.cached} cached, {summary.failed} failed; "
        f"{summary.completion_tokens} tokens in {summary.seconds:.1f} s ({summary.tokens_per_s:.1f} tok/s)"
    )
    if summary.failed:
        for error in summary.errors:
            typer.secho(f"  {error}", fg="red", err=True)
        typer.secho("some items failed: rerun the same command to retry just those", fg="red", err=True)
        raise typer.Exit(1)
