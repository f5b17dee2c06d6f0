"""The generation stage and `xsafety generate`: resume, retries, locks, and a kill -9 mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import Reply, last_user_text, start_server
from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.config import generation_config
from xsafety.errors import RunLockedError
from xsafety.generate import GenItem, ResponseError, generate, load_errors, load_responses, response_key
from xsafety.models import ChatRequest, Decoding, load_model
from xsafety.plan import TranslationIndex, build_items, resolve
from xsafety.records import Response, Translation
from xsafety.store import Store
from xsafety.taxonomy import load_set

REPO = Path(__file__).resolve().parent.parent
FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05}


def items(n: int, locale: str = "en") -> list[GenItem]:
    return [
        GenItem(f"p{i}", "t", locale, "none", "default", ({"role": "user", "content": f"prompt {i}"},), {"input_key": f"k{i}"})
        for i in range(n)
    ]


def test_response_key_changes_with_model_messages_and_identity() -> None:
    base = items(1)[0]
    key = response_key("m1", base)
    assert key == response_key("m1", base)
    assert key != response_key("m2", base)
    assert key != response_key("m1", GenItem("p0", "t", "en", "none", "default", ({"role": "user", "content": "other"},)))
    # Same messages under another attack or locale must not share a record.
    assert key != response_key("m1", GenItem("p0", "t", "en", "cou", "default", base.messages))
    assert key != response_key("m1", GenItem("p0", "t", "es", "none", "default", base.messages))


def test_generate_writes_resumes_and_counts(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with start_server() as server:
        model = load_model(f"openai:fake@{server.url}", Decoding(max_new_tokens=16))
        first = generate(store, model, items(5))
        assert (first.new, first.cached, first.failed) == (5, 0, 0)
        second = generate(store, model, items(7))
        assert (second.new, second.cached, second.failed) == (2, 5, 0)
        assert server.requests == 7
    stored = load_responses(store)
    assert len(stored) == 7
    rec = stored[response_key(model.signature(), items(1)[0])]
    assert rec.text == "echo: prompt 0" and rec.input_key == "k0" and rec.model == model.signature()
    assert rec.messages == items(1)[0].messages and rec.completion_tokens == 3


def test_failures_are_stored_apart_and_retried_until_they_succeed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    broken = {"on": True}

    def script(body: dict[str, Any]) -> Reply:
        if broken["on"] and last_user_text(body) == "prompt 1":
            return Reply(status=500)
        return Reply(text="ok " + last_user_text(body))

    with start_server(script=script) as server:
        model = load_model(f"openai:fake@{server.url}", max_retries=1, **FAST)
        first = generate(store, model, items(3))
        assert (first.new, first.failed) == (2, 1)
        assert "HTTP 500" in first.errors[0]
        errors = list(load_errors(store).values())
        assert len(errors) == 1 and isinstance(errors[0], ResponseError) and errors[0].prompt_id == "p1"
        again = generate(store, model, items(3))
        assert (again.new, again.cached, again.failed) == (0, 2, 1)
        broken["on"] = False
        last = generate(store, model, items(3))
        assert (last.new, last.cached, last.failed) == (1, 2, 0)
    stored = load_responses(store)
    assert sorted(r.text for r in stored.values()) == ["ok prompt 0", "ok prompt 1", "ok prompt 2"]
    assert all(r.error is None for r in stored.values())
    assert len(load_errors(store)) == 2  # the history of failures stays


def test_lock_is_held_unless_the_caller_holds_it(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with start_server() as server:
        model = load_model(f"openai:fake@{server.url}")
        with Store(tmp_path).locked():
            with pytest.raises(RunLockedError):
                generate(store, model, items(1))
            assert generate(store, model, items(1), lock=False).new == 1


def test_local_model_generation_matches_direct_chat(tmp_path: Path, tiny_llama_dir: Path) -> None:
    model = load_model(f"hf:{tiny_llama_dir}", Decoding(max_new_tokens=6))
    summary = generate(Store(tmp_path), model, items(4))
    assert summary.new == 4 and summary.completion_tokens > 0 and summary.tokens_per_s > 0
    stored = load_responses(Store(tmp_path))
    direct = model.chat([ChatRequest("x", items(4)[2].messages)])
    assert stored[response_key(model.signature(), items(4)[2])].text == direct[0].text


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("gen-tiny-llama"))


def _write_spanish(prompt_ids: list[str], rejected: str) -> Path:
    from xsafety.data import home_dir
    from xsafety.translate.files import translation_path, write_file

    records = [
        Translation(
            key=f"tr-{pid}",
            prompt_id=pid,
            set="builtin",
            locale="es",
            source="src",
            text=f"texto {pid}",
            engine="test",
            accepted=pid != rejected,
            reason="" if pid != rejected else "gate failed",
        )
        for pid in prompt_ids
    ]
    path = translation_path(home_dir() / "translations", "builtin", "es")
    write_file(path, records)
    return path


def test_build_items_uses_prompt_text_in_english_and_accepted_translations_elsewhere() -> None:
    prompts = load_set("builtin")[:3]
    path = _write_spanish([p.id for p in prompts], rejected=prompts[1].id)
    try:
        _check_items(prompts)
    finally:
        path.unlink()  # the user folder is shared by the session's tests


def _check_items(prompts: list[Any]) -> None:
    config = generation_config("smollm2", "builtin", ("en", "es"), Path("unused"), system_prompt="Be safe.", limit=3)
    got = build_items(resolve(config, ["en", "es"]), TranslationIndex(Path("unused")))
    built = got.items
    assert dict(got.skipped) == {("es", "translation rejected"): 1}
    english = [i for i in built if i.locale == "en"]
    spanish = [i for i in built if i.locale == "es"]
    assert [i.messages[1]["content"] for i in english] == [p.text for p in prompts]
    assert [i.prompt_id for i in spanish] == [prompts[0].id, prompts[2].id]
    assert spanish[0].messages == ({"role": "system", "content": "Be safe."}, {"role": "user", "content": f"texto {prompts[0].id}"})
    assert spanish[0].meta["input_key"] == f"tr-{prompts[0].id}"
    assert english[0].meta["input_key"] == prompts[0].key


def test_cli_generates_reports_counts_and_fails_on_failures(tmp_path: Path) -> None:
    runner = CliRunner()
    run_dir = tmp_path / "run"
    with start_server() as server:
        args = ["generate", "--model", f"openai:fake@{server.url}", "--set", "builtin", "--limit", "3", "--run", str(run_dir)]
        # Swahili is a registered locale with no translations of this set: its prompts are skipped
        # with a message; an unregistered code is a typo and stops before anything runs.
        result = runner.invoke(app, [*args, "--locales", "en,sw"])
        assert result.exit_code == 0, result.output
        assert "3 new, 0 cached, 0 failed" in result.output
        assert "sw: 3 prompt(s) have no accepted translation" in result.output
        typo = runner.invoke(app, [*args, "--locales", "en,zz"])
        assert typo.exit_code == 2 and "unknown locale 'zz'" in typo.output
        again = runner.invoke(app, [*args, "--locales", "en"])
        assert "0 new, 3 cached, 0 failed" in again.output
    bad = runner.invoke(app, ["generate", "--model", "llama", "--run", str(run_dir)])
    assert bad.exit_code == 2 and "unknown model spec" in bad.output
    wrong_option = runner.invoke(app, ["generate", "--model", "openai:m@http://127.0.0.1:9/v1", "--device", "cuda", "--run", str(run_dir)])
    assert wrong_option.exit_code == 2 and "device" in wrong_option.output
    # A server that does not serve the requested model answers 404, which is not retried.
    with start_server(model="another-model") as server:
        failing = runner.invoke(
            app,
            ["generate", "--model", f"openai:fake@{server.url}", "--set", "builtin", "--limit", "1", "--run", str(tmp_path / "f"),
             "--max-new-tokens", "9"],
            env={"XSAFETY_PROGRESS": "0"},
        )
    assert failing.exit_code == 1
    assert "0 new, 0 cached, 1 failed" in failing.output


def _shard_rows(run_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for shard in sorted((run_dir / "responses").glob("*.jsonl")):
        for line in shard.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a torn last line from the kill; the store drops it too
    return rows


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_records_without_duplicates(tmp_path: Path) -> None:
    n = 24
    with start_server(latency_s=0.15) as server:
        cmd = [sys.executable, "-m", "xsafety.cli", "generate", "--model", f"openai:fake@{server.url}", "--set", "builtin",
               "--limit", str(n), "--concurrency", "2"]
        env = {**os.environ, "XSAFETY_PROGRESS": "0"}
        killed_dir = tmp_path / "killed"
        proc = subprocess.Popen([*cmd, "--run", str(killed_dir)], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(_shard_rows(killed_dir)) < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done_before = len(_shard_rows(killed_dir))
        assert 4 <= done_before < n, "the kill should land mid-run"
        resumed = subprocess.run([*cmd, "--run", str(killed_dir)], env=env, cwd=REPO, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        assert f"{n - done_before} new, {done_before} cached, 0 failed" in resumed.stdout
        clean_dir = tmp_path / "clean"
        clean = subprocess.run([*cmd, "--run", str(clean_dir)], env=env, cwd=REPO, capture_output=True, text=True)
        assert clean.returncode == 0, clean.stderr
    rows = _shard_rows(killed_dir)
    assert len(rows) == n and len({r["key"] for r in rows}) == n  # nothing duplicated on disk
    killed = {(r.key, r.text) for r in Store(killed_dir).table(Response).load().values()}
    uninterrupted = {(r.key, r.text) for r in Store(clean_dir).table(Response).load().values()}
    assert killed == uninterrupted and len(killed) == n


def _run_config(path: Path, run_dir: Path, spec: str) -> Path:
    path.write_text(
        f'[run]\ndir = "{run_dir}"\nsets = ["builtin"]\nlocales = ["en", "es"]\nlimit = 3\njudge_modes = ["native"]\n\n'
        f'[[models]]\nspec = "{spec}"\n',
        encoding="utf-8",
    )
    return path


def test_generate_then_run_on_the_same_model_set_and_locales_computes_nothing(tmp_path: Path) -> None:
    """`xsafety generate` and `xsafety run` build their items with one builder and share the
    defaults (variant, token budget): the second command finds every response already stored."""
    from xsafety.config import load_config
    from xsafety.run import run
    from xsafety.runinfo import read_cells

    runner = CliRunner()
    run_dir = tmp_path / "run"
    with start_server() as server:
        spec = f"openai:fake@{server.url}"
        first = runner.invoke(app, ["generate", "--model", spec, "--set", "builtin", "--limit", "3",
                                    "--locales", "en,es", "--run", str(run_dir)])
        assert first.exit_code == 0, first.output
        generated = set(load_responses(Store(run_dir)))
        assert len(generated) == 6 and server.status_counts[200] == 6
        result = run(load_config(_run_config(tmp_path / "run.toml", run_dir, spec)))
        assert result.ok, result.failures
        # The run's plan knew the generated responses without loading the model: no request sent.
        assert result.models_loaded == [] and result.generated == {}
        assert server.status_counts[200] == 6
    cells = read_cells(run_dir)
    assert cells is not None and cells.responses == generated == set(load_responses(Store(run_dir)))


def test_run_then_generate_on_the_same_model_set_and_locales_computes_nothing(tmp_path: Path) -> None:
    from xsafety.config import load_config
    from xsafety.run import run

    run_dir = tmp_path / "run"
    with start_server() as server:
        spec = f"openai:fake@{server.url}"
        result = run(load_config(_run_config(tmp_path / "run.toml", run_dir, spec)))
        assert result.ok and result.generated[spec].new == 6
        again = CliRunner().invoke(app, ["generate", "--model", spec, "--set", "builtin", "--limit", "3",
                                         "--locales", "en,es", "--run", str(run_dir)])
        assert again.exit_code == 0, again.output
        assert "0 new, 6 cached, 0 failed" in again.output and server.status_counts[200] == 6
