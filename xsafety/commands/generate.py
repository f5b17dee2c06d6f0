"""`xsafety generate`: ask a target model every accepted prompt of a set, per locale."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from xsafety.commands.common import fail, legacy_run_option, parse_locales, pick_run_dir
from xsafety.errors import InputError, XSafetyError
from xsafety.models.base import DEFAULT_MAX_NEW_TOKENS
from xsafety.validate import decoding_problems, model_option_problem, spec_problem

if TYPE_CHECKING:
    from xsafety.models import Decoding
    from xsafety.plan import ModelPlan, TranslationIndex, Work
    from xsafety.runinfo import SignatureBook
    from xsafety.store import Store


def generate_command(
    model: str = typer.Option("smollm2", "--model", "-m", help="Model spec: smollm2, hf:ID_OR_PATH, gguf:FILE, openai:MODEL@URL[,URL...]"),
    set_name: str = typer.Option("builtin", "--set", "-s", help="Instruction set name or path to a prompts JSONL file."),
    locales: str = typer.Option("en", "--locales", "-l", help="Comma-separated locales, e.g. en,es,sw."),
    run_dir: str = typer.Option(None, "--run-dir", help="Run directory (created if missing; reruns resume)."),
    run: str = legacy_run_option("--run", "-r"),
    max_new_tokens: int = typer.Option(DEFAULT_MAX_NEW_TOKENS, "--max-new-tokens", help="Tokens to generate per answer (the run's default)."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy; above 0 samples with --seed."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (used when temperature > 0)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (per request: seed + request key)."),
    system_prompt: str | None = typer.Option(None, "--system-prompt", help="System message sent before every prompt."),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Requests in flight (openai: models; default 16)."),
    api_key_env: str | None = typer.Option(None, "--api-key-env", help="NAME of the environment variable holding the API key."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N prompts of the set."),
    sample: str | None = typer.Option(None, "--sample", help="A stratified sample N[:alert|source[:SEED]]: N prompts per category (before --limit)."),
    device: str | None = typer.Option(None, "--device", help="Local models: auto, cpu, cuda, cuda:1 ..."),
    batch_tokens: int | None = typer.Option(None, "--batch-tokens", help="Local models: token budget per batch."),
    emit_batch: Path | None = typer.Option(None, "--emit-batch", help="Write the pending requests as an OpenAI batch JSONL file (for `vllm run-batch` or a hosted batch API) instead of asking the server."),
    import_batch: Path | None = typer.Option(None, "--import-batch", help="Store the results file of a batch job written by --emit-batch (same options) as responses."),
) -> None:
    """Generate responses for the accepted prompts of a set in each locale, resuming where a run stopped."""
    run = pick_run_dir(run_dir, run)
    from xsafety.config import generation_config
    from xsafety.generate import generate
    from xsafety.models import Decoding, load_model
    from xsafety.models.spec import parse_spec
    from xsafety.plan import TranslationIndex, make_plan, resolve, snapshot_inputs
    from xsafety.runinfo import SignatureBook, check_store_format
    from xsafety.sampling import parse_sample
    from xsafety.store import Store

    try:
        wanted = parse_locales(locales)
        if limit is not None and limit < 1:
            raise InputError("--limit must be at least 1", field="limit")
        stratum = None if sample is None else parse_sample(sample, field="--sample")
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
        # Batch file paths are checked before the run directory is touched.
        if emit_batch is not None and import_batch is not None:
            raise InputError("give --emit-batch or --import-batch, not both", field="--import-batch")
        if import_batch is not None and not import_batch.is_file():
            raise InputError("no such file", file=import_batch, field="--import-batch")
        if emit_batch is not None and emit_batch.is_dir():
            raise InputError("is a directory, not a file", file=emit_batch, field="--emit-batch")
        parse_spec(model)  # a malformed spec should fail before any prompt is loaded
        problem = spec_problem(model)
        if problem:
            raise InputError(problem, field="--model")
        # The same item builder as `xsafety run`, on a one-model config: same items, same keys.
        options = {"concurrency": concurrency, "api_key_env": api_key_env, "device": device, "batch_tokens": batch_tokens}
        decoding = Decoding(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
        config = generation_config(model, set_name, tuple(wanted), Path(run), decoding=decoding,
                                   system_prompt=system_prompt, limit=limit, options=options,
                                   sample=stratum)
        work = resolve(config, wanted)
        store, book, index = Store(run), SignatureBook(run), TranslationIndex(Path(run))
        plan = make_plan(work, store, book, index)
        items, mp = plan.models[0].items, plan.models[0]
        missing: dict[str, int] = {}
        for (locale, _why), n in plan.items.skipped.items():
            missing[locale] = missing.get(locale, 0) + n
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
        check_store_format(run)  # an older key format would recompute every stored response
        if emit_batch is not None or import_batch is not None:
            _batch(work, store, book, index, mp, decoding, emit_batch, import_batch)
            return
        # Unset options are dropped; a set one the backend cannot use is an error.
        chat_model = load_model(model, decoding, **mp.model.options)
        try:
            with store.locked():
                # The run directory alone says what was asked (the report reads translations there).
                snapshot_inputs(work, store, index)
                book.put(mp.fingerprint, chat_model.signature())
                summary = generate(store, chat_model, items, lock=False)
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


def _batch(work: "Work", store: "Store", book: "SignatureBook", index: "TranslationIndex", mp: "ModelPlan",
           decoding: "Decoding", emit: Path | None, results: Path | None) -> None:
    """``--emit-batch`` / ``--import-batch``: hand the pending requests to a batch job, or store its results."""
    from xsafety.generate import emit_batch, import_batch
    from xsafety.models import load_model
    from xsafety.models.spec import parse_spec
    from xsafety.plan import snapshot_inputs

    if parse_spec(mp.model.spec).kind != "openai":
        raise InputError("a batch file needs an openai:MODEL@URL spec (the URL is not contacted)", field="--model")
    chat_model = load_model(mp.model.spec, decoding, **mp.model.options)

    def record_inputs() -> None:
        # What the run directory needs to be read without this command: the inputs and the signature.
        snapshot_inputs(work, store, index)
        book.put(mp.fingerprint, chat_model.signature())

    with store.locked():
        if emit is not None:
            record_inputs()
            written, cached = emit_batch(store, chat_model, mp.items, emit)
            typer.echo(f"{written} requests written to {emit} ({cached} already answered); run the batch, then "
                       f"`xsafety generate` with the same options and --import-batch RESULTS.jsonl")
            return
        assert results is not None
        # Nothing is written before the whole results file has been checked.
        summary = import_batch(store, chat_model, mp.items, results, before_write=record_inputs)
    typer.echo(f"{summary.new} responses stored, {summary.failed} failed, {summary.cached} already answered")
    if summary.failed:
        for error in summary.errors:
            typer.secho(f"  {error}", fg="red", err=True)
        typer.secho("failed requests are retried by the next run, or emit a new batch for just those", fg="red", err=True)
        raise typer.Exit(1)
