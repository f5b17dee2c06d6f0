"""`xsafety run` end to end: kill and resume, add a locale, dry runs, no-change reruns, failures.

A small real run: the tiny random Llama (``hf:/path``) as the target, English + Spanish (Apertium
at run time), one attack applied before translation, two variants (none vs the Spanish/English
safety prompt), the refusal-lexicon judge, native + back-translated, and the report.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.config import load_config
from xsafety.records import Response, Verdict
from xsafety.run import run
from xsafety.status import run_status
from xsafety.store import Store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
LIMIT = 2

CONFIG = """\
[run]
dir = "{run_dir}"
locales = {locales}
limit = {limit}
judges = ["refusal-lexicon"]
attacks = ["none", "suffix_injection"]

[[models]]
spec = "hf:{model}"
name = "tiny"
max_batch = 1

[decoding]
max_new_tokens = 12

[[variants]]
name = "none"

[[variants]]
name = "safety-prompt"
system = "locale"
"""


def _needs_apertium() -> None:
    if shutil.which("apertium") is None:
        pytest.skip("apertium is not installed (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def write_config(path: Path, run_dir: Path, model: Path, locales: list[str], limit: int = LIMIT) -> Path:
    """A run config for the tiny model in ``run_dir``."""
    locs = "[" + ", ".join(f'"{c}"' for c in locales) + "]"
    path.write_text(CONFIG.format(run_dir=run_dir, locales=locs, limit=limit, model=model), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """An uninterrupted run (en + es), done once for the module."""
    _needs_apertium()
    base = tmp_path_factory.mktemp("finished")
    os.environ["XSAFETY_PROGRESS"] = "0"
    cfg = write_config(base / "run.toml", base / "run", tiny_llama, ["en", "es"])
    result = run(load_config(cfg))
    assert result.ok, result.failures
    return base / "run", result


def _responses_on_disk(run_dir: Path) -> list[str]:
    keys = []
    for shard in sorted((run_dir / "responses").glob("*.jsonl")):
        for line in shard.read_bytes().split(b"\n"):
            if line.strip().endswith(b"}"):
                keys.append(line.split(b'"key":"', 1)[1].split(b'"', 1)[0].decode())
    return keys


def _tables(report: Path) -> dict[str, pl.DataFrame]:
    out = {}
    for path in sorted(report.rglob("*.parquet")):
        df = pl.read_parquet(path)
        out[str(path.relative_to(report))] = df.sort(df.columns, nulls_last=True) if df.height else df
    for path in sorted(report.rglob("*.csv")):
        out[str(path.relative_to(report))] = pl.read_csv(path, infer_schema_length=None)
    return out


def test_killed_run_resumes_to_the_same_report(tiny_llama: Path, finished: tuple[Path, Any], tmp_path: Path) -> None:
    run_dir, first = finished
    total = sum(s.new for s in first.generated.values())
    cfg = write_config(tmp_path / "run.toml", tmp_path / "run", tiny_llama, ["en", "es"])
    env = {**os.environ, "XSAFETY_PROGRESS": "0"}
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "xsafety"), "run", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            killed_at = len(_responses_on_disk(tmp_path / "run")) if (tmp_path / "run" / "responses").is_dir() else 0
            if killed_at >= 1:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]!r}"
    partial = len(set(_responses_on_disk(tmp_path / "run")))
    assert 1 <= partial < total
    status = run_status(tmp_path / "run")
    assert not status.complete

    resumed = run(load_config(cfg))
    assert resumed.ok, resumed.failures
    assert resumed.generated["tiny"].new == total - partial  # only what the kill left undone
    on_disk = _responses_on_disk(tmp_path / "run")
    assert len(on_disk) == len(set(on_disk)) == total  # nothing duplicated on disk
    a = {(r.key, r.text) for r in Store(tmp_path / "run").table(Response).load().values()}
    b = {(r.key, r.text) for r in Store(run_dir).table(Response).load().values()}
    assert a == b
    tables_a, tables_b = _tables(tmp_path / "run" / "report"), _tables(run_dir / "report")
    assert tables_a.keys() == tables_b.keys() and any(k.endswith(".parquet") for k in tables_a)
    for name in tables_a:
        assert tables_a[name].equals(tables_b[name]), name
    assert run_status(tmp_path / "run").complete


def test_adding_a_locale_computes_only_its_cells(tiny_llama: Path, finished: tuple[Path, Any], tmp_path: Path) -> None:
    run_dir, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    store = Store(copy)
    before_r = store.table(Response).load()
    before_v = store.table(Verdict).load()
    cfg = write_config(tmp_path / "run.toml", copy, tiny_llama, ["en", "es", "ca"])
    result = run(load_config(cfg))
    assert result.ok, result.failures
    from xsafety.plan import make_plan, resolve
    from xsafety.runinfo import SignatureBook

    done = make_plan(resolve(load_config(cfg)), store, SignatureBook(copy))
    assert done.nothing_to_do
    ca_items = [i for i in done.models[0].items if i.locale == "ca"]
    after_r = store.table(Response).load()
    after_v = store.table(Verdict).load()
    new_r = [r for k, r in after_r.items() if k not in before_r]
    new_v = [v for k, v in after_v.items() if k not in before_v]
    assert ca_items and len(new_r) == len(ca_items) == result.generated["tiny"].new
    assert result.generated["tiny"].cached == 0 and {r.locale for r in new_r} == {"ca"}
    # native + back-translated for every new Catalan response, and nothing else judged again
    assert Counter(v.mode for v in new_v) == {"native": len(new_r), "back-translated": len(new_r)}
    assert {v.response_key for v in new_v} == {r.key for r in new_r}


def test_no_change_rerun_loads_nothing_and_dry_run_says_zero(finished: tuple[Path, Any], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch, tiny_llama: Path) -> None:
    run_dir, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = write_config(tmp_path / "run.toml", copy, tiny_llama, ["en", "es"])
    _forbid_loading(monkeypatch)
    result = run(load_config(cfg))
    assert result.ok and not result.models_loaded and not result.judges_loaded and not result.report_rebuilt
    assert result.plan.nothing_to_do
    # cells.json names exactly the responses the config asks for (here: every stored one)
    import json

    cells = json.loads((copy / "cells.json").read_text())["responses"]
    assert sorted(cells) == sorted(Store(copy).table(Response).keys()) and len(cells) == 16
    out = CliRunner().invoke(app, ["run", str(cfg), "--dry-run"])
    assert out.exit_code == 0, out.output
    rows = _plan_rows(out.output)
    assert rows["generate"][:3] == ["16", "16", "0"] and rows["judge"][:3] == ["24", "24", "0"]


def test_a_report_with_another_policy_is_rebuilt_by_the_next_run(finished: tuple[Path, Any], tmp_path: Path,
                                                                tiny_llama: Path) -> None:
    """`report --policy X` then `run`: the run must rebuild its own report, not say "unchanged"
    while summary.md still shows policy X (issue 14 item 3)."""
    run_dir, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = write_config(tmp_path / "run.toml", copy, tiny_llama, ["en", "es"])
    other = CliRunner().invoke(app, ["report", str(copy), "--policy", "permissive-cannabis"])
    assert other.exit_code == 0, other.output
    summary = copy / "report" / "summary.md"
    assert "policy: `permissive-cannabis`" in summary.read_text(encoding="utf-8")
    result = run(load_config(cfg))
    assert result.ok and result.report_rebuilt and not result.models_loaded
    assert "policy: `default`" in summary.read_text(encoding="utf-8")
    again = run(load_config(cfg))
    assert again.ok and not again.report_rebuilt


def _forbid_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model, judge or translator was loaded")

    import xsafety.judges
    import xsafety.models
    import xsafety.translate

    monkeypatch.setattr(xsafety.models, "load_model", refuse)
    monkeypatch.setattr(xsafety.judges, "load_judge", refuse)
    monkeypatch.setattr(xsafety.translate, "translate_set", refuse)


def _plan_rows(output: str) -> dict[str, list[str]]:
    """stage -> [planned, stored, to compute, ...] from the dry-run table."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) >= 5 and cells[0] in ("translate", "generate", "judge"):
            rows[cells[0]] = cells[2:5]
    return rows


def test_dry_run_on_a_fresh_dir_counts_every_stage_and_loads_nothing(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_loading(monkeypatch)
    cfg = write_config(tmp_path / "run.toml", tmp_path / "run", tiny_llama, ["en", "es"])
    monkeypatch.setenv("COLUMNS", "200")
    out = CliRunner().invoke(app, ["run", str(cfg), "--dry-run"])
    assert out.exit_code == 0, out.output
    rows = _plan_rows(out.output)
    # Spanish needs the 4 prompts (less any committed translations) and their 4 attacked versions.
    from xsafety.taxonomy import load_set
    from xsafety.translate import load_translations

    ids = [p.id for p in load_set("builtin")[:LIMIT]]
    committed = load_translations("builtin", "es")
    have = [committed[i] for i in ids if i in committed]
    accepted = sum(t.accepted for t in have)
    assert rows["translate"][2] == str(2 * LIMIT - len(have))
    # English: 4 prompts x 2 attacks x 2 variants; Spanish: accepted translations now, the rest after.
    planned = 4 * LIMIT + 2 * accepted
    assert rows["generate"][:2] == [str(planned), "0"]
    assert rows["generate"][2] == f"{planned} + up to {2 * (2 * LIMIT - len(have))} after translation"
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_failed_items_end_non_zero_and_only_they_are_retried(tmp_path: Path) -> None:
    from fake_openai_server import Reply, last_user_text, start_server

    from xsafety.taxonomy import load_set

    broken = load_set("builtin")[1].text
    state = {"fail": True}

    def script(body: dict[str, Any]) -> Reply:
        if state["fail"] and broken in last_user_text(body):
            return Reply(status=500)
        return Reply(text="I cannot help with that request.")

    with start_server(script) as server:
        cfg = tmp_path / "run.toml"
        cfg.write_text(
            f'[run]\ndir = "{tmp_path / "run"}"\nlocales = ["en"]\nlimit = 3\njudges = ["refusal-lexicon"]\n'
            f'[[models]]\nspec = "openai:fake@{server.url}"\nname = "remote"\nmax_retries = 0\n',
            encoding="utf-8",
        )
        first = CliRunner().invoke(app, ["run", str(cfg)])
        assert first.exit_code == 1
        assert "1 item(s) failed" in first.output and "generate remote en xs-" in first.output
        status = run_status(tmp_path / "run")
        assert [r.failed for r in status.rows if r.stage == "generate"] == [1]
        seen = server.requests
        state["fail"] = False
        second = CliRunner().invoke(app, ["run", str(cfg)])
        assert second.exit_code == 0, second.output
        assert server.requests - seen == 1  # only the failed item was asked again
        assert run_status(tmp_path / "run").complete


def test_variant_effect_is_the_paired_difference_per_locale_and_pooled() -> None:
    from xsafety.report.variants import ALL_LOCALES, variant_effects

    rows = []
    for locale, unsafe_base, unsafe_sp in (("en", 6, 2), ("es", 8, 8)):
        for i in range(10):
            for variant, n_unsafe in (("none", unsafe_base), ("safety-prompt", unsafe_sp)):
                unsafe = int(i < n_unsafe)
                rows.append({"model_name": "m", "base_set": "s", "base_id": f"p{i}", "attack": "none",
                             "locale": locale, "variant": variant, "w": 1.0, "invalid": 0, "unsafe": unsafe,
                             "refusal": 1 - unsafe, "fail": unsafe, "model": "sig"})
    effects = variant_effects(pl.DataFrame(rows), "none", n_boot=500)
    unsafe = {r["locale"]: r for r in effects.filter(pl.col("metric") == "unsafe").iter_rows(named=True)}
    assert unsafe["en"]["effect_pp"] == pytest.approx(-40.0) and unsafe["en"]["n_pairs"] == 10
    assert (unsafe["en"]["b_variant_only"], unsafe["en"]["c_base_only"]) == (0, 4)
    assert unsafe["en"]["p_value"] == pytest.approx(0.125)  # exact McNemar, 4 discordant pairs
    assert unsafe["en"]["ci_high_pp"] < 0 and unsafe["en"]["small"]
    assert unsafe["es"]["effect_pp"] == 0 and unsafe["es"]["p_value"] == 1.0
    assert unsafe[ALL_LOCALES]["effect_pp"] == pytest.approx(-20.0) and unsafe[ALL_LOCALES]["n_pairs"] == 20


def test_dropping_a_locale_rebuilds_the_report_without_it(finished: tuple[Path, Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, tiny_llama: Path) -> None:
    run_dir, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = write_config(tmp_path / "run.toml", copy, tiny_llama, ["en"])
    _forbid_loading(monkeypatch)
    result = run(load_config(cfg))
    # No record changed, but the config did: the report must not keep showing Spanish.
    assert result.ok and not result.models_loaded and result.report_rebuilt
    locales = set(pl.read_csv(copy / "report" / "tables" / "rates_locale.csv")["locale"])
    assert locales == {"en"}


def test_dry_run_estimates_time_from_this_machines_earlier_runs(finished: tuple[Path, Any], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, tiny_llama: Path) -> None:
    """Issue 13 item 5: the dry run says how long each stage should take here, or that it cannot."""
    from xsafety import throughput

    run_dir, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = write_config(tmp_path / "run.toml", copy, tiny_llama, ["en", "es"], limit=LIMIT + 1)
    _forbid_loading(monkeypatch)
    monkeypatch.setenv("COLUMNS", "300")
    # A cache of its own: the module's finished run recorded its throughput in the shared one.
    monkeypatch.setenv("XSAFETY_CACHE", str(tmp_path / "cache"))

    def generate_row() -> list[str]:
        out = CliRunner().invoke(app, ["run", str(cfg), "--dry-run"])
        assert out.exit_code == 0, out.output
        line = next(x for x in out.output.splitlines() if x.strip("│┃ ").startswith("generate"))
        return [c.strip() for c in line.strip("│┃ ").split("│")]

    row = generate_row()
    todo = int(row[4].split()[0])
    assert todo > 0 and row[-1] == "no estimate yet"
    signature = next(iter(Store(copy).table(Response).load().values())).model
    throughput.record("generate", signature, items=10, seconds=20.0, tokens=400)
    row = generate_row()
    expected = throughput.format_seconds(todo * 2.0)
    assert row[-1] == f"~{expected} (from 1 earlier run here, 20 tok/s)"
