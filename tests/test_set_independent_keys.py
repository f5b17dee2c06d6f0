"""Record keys that do not depend on the set's name, and the one-time migration of older run dirs.

A prompt is its id and text: a subset imported under another name (same ids, same texts) reuses
the full set's translations, responses and verdicts, and the other way round. A run directory
keyed the old way (format 1: the set's name in prompt and response keys) is refused with the
command that migrates it, and once migrated a rerun computes nothing.

Driven like ``test_run_e2e``: the tiny random Llama, English + Spanish (Apertium), the lexicon judge.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.config import load_config
from xsafety.errors import InputError
from xsafety.report.categories import UNCATEGORISED
from xsafety.report.frame import load_run
from xsafety.records import Prompt, Response, Verdict, stable_hash
from xsafety.run import run
from xsafety.runinfo import STORE_FORMAT, STORE_FORMAT_FILE, read_cells, read_store_format, store_format
from xsafety.store import Store
from xsafety.taxonomy import load_set

pytestmark = pytest.mark.slow

CONFIG = """\
[run]
dir = "{run_dir}"
sets = ["{set_path}"]
locales = ["en", "es"]
judges = ["refusal-lexicon"]

[[models]]
spec = "hf:{model}"
name = "tiny"
max_batch = 1

[decoding]
max_new_tokens = 8
"""


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("apertium") is None:
        pytest.skip("apertium is not installed (scripts/setup.sh installs it)")
    from tiny_models import build_tiny_llama

    os.environ["XSAFETY_PROGRESS"] = "0"
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _write_set(path: Path, name: str, count: int) -> Path:
    """The first ``count`` built-in prompts imported as set ``name`` (a JSONL file)."""
    rows = [{**p.to_dict(), "set": name} for p in load_set("builtin")[:count]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(folder: Path, run_dir: Path, set_path: Path, model: Path) -> Path:
    path = folder / f"{set_path.stem}.toml"
    path.write_text(CONFIG.format(run_dir=run_dir, set_path=set_path, model=model), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("sets")
    return _write_set(folder / "mini.jsonl", "mini", 3), _write_set(folder / "mini-sub.jsonl", "mini-sub", 2)


def _nothing_to_do(config: Path) -> None:
    plan = run(load_config(config), dry_run=True).plan
    assert (plan.translations_todo, plan.responses_todo, plan.verdicts_todo) == (0, 0, 0)
    assert all(m.exact for m in plan.models) and all(j.exact for j in plan.judges)


def test_a_subset_under_another_name_reuses_the_full_sets_records(
    tiny_llama: Path, sets: tuple[Path, Path], tmp_path: Path
) -> None:
    full, sub = sets
    run_dir = tmp_path / "run"
    first = run(load_config(_config(tmp_path, run_dir, full, tiny_llama)))
    assert first.ok, first.failures
    assert first.translated == 3 and first.generated["tiny"].new == 6  # 3 prompts x (en, es)
    translated_files = sorted(p.relative_to(run_dir) for p in (run_dir / "translated").rglob("*.jsonl"))

    sub_config = _config(tmp_path, run_dir, sub, tiny_llama)
    _nothing_to_do(sub_config)
    second = run(load_config(sub_config))
    assert second.ok, second.failures
    assert second.translated == 0
    assert second.generated.get("tiny") is None or second.generated["tiny"].new == 0
    assert not second.models_loaded and not second.judges_loaded
    # No translation file is written for the subset: it found the full set's by id and text.
    assert sorted(p.relative_to(run_dir) for p in (run_dir / "translated").rglob("*.jsonl")) == translated_files
    # The subset run's cells are 4 of the full set's 6 responses.
    cells = read_cells(run_dir)
    assert cells is not None and len(cells.responses) == 4
    assert cells.responses <= set(Store(run_dir).table(Response).keys())
    # The report counts them for the subset, with its categories and the Spanish translations.
    frame = load_run(run_dir).verdicts
    assert set(frame["set"].unique()) == {"mini-sub"} and frame["response_key"].n_unique() == 4
    assert UNCATEGORISED not in set(frame["category"].unique())
    assert frame.filter(pl.col("locale") == "es")["tr_accepted"].null_count() == 0


def test_the_full_set_reuses_a_subsets_records(tiny_llama: Path, sets: tuple[Path, Path], tmp_path: Path) -> None:
    full, sub = sets
    run_dir = tmp_path / "run"
    first = run(load_config(_config(tmp_path, run_dir, sub, tiny_llama)))
    assert first.ok, first.failures
    assert first.generated["tiny"].new == 4
    second = run(load_config(_config(tmp_path, run_dir, full, tiny_llama)))
    assert second.ok, second.failures
    assert second.translated == 1  # only the prompt the subset lacks
    assert second.generated["tiny"].new == 2  # the subset's 4 answers are the full set's too
    assert len(Store(run_dir).table(Response).keys()) == 6
    _nothing_to_do(_config(tmp_path, run_dir, full, tiny_llama))


# --- format 1 run directories -------------------------------------------------------------------


def _format1_response_key(row: dict[str, Any]) -> str:
    """How format 1 keyed a response: the set's name between the model and the prompt id."""
    return stable_hash("response", row["model"], row["set"], row["prompt_id"], row["locale"], row["attack"],
                       row["variant"], row["messages"])


def _downgrade(run_dir: Path) -> dict[str, str]:
    """Re-key a format-2 run directory the way format 1 keyed it (as a run before this change
    left it: no store-format file); returns old response key -> new."""
    mapping: dict[str, str] = {}

    def rewrite(table: str, change: Any) -> None:
        for shard in (run_dir / table).glob("*.jsonl"):
            rows = [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines() if line.strip()]
            shard.write_text("".join(json.dumps(change(r)) + "\n" for r in rows), encoding="utf-8")

    def prompt(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "key": Prompt.from_dict(row).set_key}

    def response(row: dict[str, Any]) -> dict[str, Any]:
        old = _format1_response_key(row)
        mapping[row["key"]] = old
        return {**row, "key": old}

    def verdict(row: dict[str, Any]) -> dict[str, Any]:
        old = mapping[row["response_key"]]
        return {**row, "response_key": old, "key": stable_hash("verdict", old, row["judge"], row["mode"])}

    rewrite("prompts", prompt)
    rewrite("responses", response)
    rewrite("verdicts", verdict)
    cells = json.loads((run_dir / "cells.json").read_text(encoding="utf-8"))
    (run_dir / "cells.json").write_text(json.dumps({**cells, "responses": [mapping[k] for k in cells["responses"]]}),
                                        encoding="utf-8")
    (run_dir / STORE_FORMAT_FILE).unlink()
    return mapping


def test_a_format1_run_dir_is_refused_then_migrated_once(tiny_llama: Path, sets: tuple[Path, Path], tmp_path: Path) -> None:
    full, _ = sets
    run_dir = tmp_path / "run"
    config = _config(tmp_path, run_dir, full, tiny_llama)
    assert run(load_config(config)).ok
    assert read_store_format(run_dir) == STORE_FORMAT
    verdicts_before = {(v.judge, v.mode, v.label) for v in Store(run_dir).table(Verdict).load().values()}
    mapping = _downgrade(run_dir)
    assert len(mapping) == 6 and all(old != new for new, old in mapping.items())
    assert store_format(run_dir) == 1

    # Refused, by the API and on the command line (one line naming the command), dry run or not.
    for dry in (True, False):
        with pytest.raises(InputError, match=r"xsafety migrate --run-dir"):
            run(load_config(config), dry_run=dry)
    refused = CliRunner().invoke(app, ["run", str(config)])
    assert refused.exit_code == 2
    assert f"xsafety migrate --run-dir {run_dir}" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    status = CliRunner().invoke(app, ["status", "--run-dir", str(run_dir)])
    assert status.exit_code == 2 and "xsafety migrate --run-dir" in status.output

    migrated = CliRunner().invoke(app, ["migrate", "--run-dir", str(run_dir)])
    assert migrated.exit_code == 0, migrated.output
    # 9 verdicts: English native, Spanish native and back-translated
    assert "re-keyed from store format 1 to 2: 6 responses, 9 verdicts" in migrated.output
    assert read_store_format(run_dir) == STORE_FORMAT
    assert set(Store(run_dir).table(Response).keys()) == set(mapping)
    cells = read_cells(run_dir)
    assert cells is not None and cells.responses == frozenset(mapping)
    again = CliRunner().invoke(app, ["migrate", "--run-dir", str(run_dir)])
    assert "already in store format 2: nothing to do" in again.output

    _nothing_to_do(config)
    rerun = run(load_config(config))
    assert rerun.ok, rerun.failures
    assert rerun.translated == 0 and not rerun.models_loaded and not rerun.judges_loaded
    assert {(v.judge, v.mode, v.label) for v in Store(run_dir).table(Verdict).load().values()} == verdicts_before
