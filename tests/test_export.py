"""`xsafety export`: the explorer's rows as Parquet/JSONL/CSV with a fixed schema, readable by polars
and by Hugging Face `datasets`; spreadsheet formulas in CSV cells are neutralised."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from xsafety.api import ITEM_SCHEMA, load_items, load_rates
from xsafety.cli import app
from xsafety.export import neutralise_cell
from xsafety.report.synthetic import Outcome, make_prompts, make_translation, write_run

runner = CliRunner()
FORMULA = "=HYPERLINK(\"http://x\",\"click\")"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prompts = make_prompts(8)
    outcomes = []
    for i, p in enumerate(prompts):
        outcomes.append(Outcome(p.id, "en", "refusal" if i % 2 else "safe"))
        outcomes.append(Outcome(p.id, "es", "safe", back_label="refusal", text=FORMULA if i == 0 else "+1 and -2 @home"))
    outcomes.append(Outcome("p0000", "de", "safe", error="HTTP 500"))
    translations = [make_translation(p, loc) for p in prompts for loc in ("es", "de")]
    return write_run(tmp_path_factory.mktemp("export") / "run", prompts, outcomes, translations=translations)


def test_one_row_per_response_and_judge_mode(run: Path) -> None:
    items = load_items(run)
    assert items.schema == pl.Schema(ITEM_SCHEMA)
    # 8 English (native) + 8 Spanish x 2 modes + 1 failed German response with no verdict.
    assert items.height == 8 + 16 + 1
    failed = items.filter(pl.col("locale") == "de").row(0, named=True)
    assert failed["response_error"] == "HTTP 500" and failed["judge"] is None and failed["primary"] is False
    assert items.filter(pl.col("primary")).height == 16
    assert set(items.filter(pl.col("locale") == "es").get_column("mode")) == {"native", "back-translated"}


def test_rates_frame_matches_the_report_summary(run: Path) -> None:
    rates = load_rates(run)
    es = rates.filter(pl.col("locale") == "es").row(0, named=True)
    assert es["n"] == 8 and es["refusal_rate"] == 0.0
    by_macro = load_rates(run, by="macro")
    assert "macro" in by_macro.columns


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_cli_writes_every_format(run: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"items.{fmt}"
    result = runner.invoke(app, ["export", "--run-dir", str(run), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "25 rows written" in result.output
    frame = {"parquet": pl.read_parquet, "jsonl": pl.read_ndjson, "csv": pl.read_csv}[fmt](out)
    assert frame.height == 25 and frame.columns == list(ITEM_SCHEMA)


def test_positional_run_dir_still_works(run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(run), "--format", "jsonl", "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 0, result.output


def test_bad_format_is_one_line_exit_2(run: Path) -> None:
    result = runner.invoke(app, ["export", "--run-dir", str(run), "--format", "xlsx"])
    assert result.exit_code == 2 and "--format must be one of parquet, jsonl, csv" in result.output


def test_csv_neutralises_formulas(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "items.csv"
    assert runner.invoke(app, ["export", "--run-dir", str(run), "--format", "csv", "--out", str(out)]).exit_code == 0
    with out.open(encoding="utf-8", newline="") as fh:
        cells = [c for row in csv.reader(fh) for c in row]
    assert "'" + FORMULA in cells and FORMULA not in cells
    assert "'+1 and -2 @home" in cells
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    assert neutralise_cell("plain") == "plain" and neutralise_cell(3) == 3


def test_parquet_schema_and_datasets(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "items.parquet"
    assert runner.invoke(app, ["export", "--run-dir", str(run), "--out", str(out)]).exit_code == 0
    schema = pq.read_schema(out)
    assert schema.names == list(ITEM_SCHEMA)
    assert str(schema.field("label").type) in ("string", "large_string")
    assert str(schema.field("primary").type) == "bool"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # a local file: never ask the hub
    datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed")
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 25 and ds.column_names == list(ITEM_SCHEMA)
    assert sum(ds["primary"]) == 16


def test_rows_from_the_tables_the_report_holds_equal_rows_parsed_from_disk(run: Path) -> None:
    from xsafety import store as store_module
    from xsafety.export import item_rows
    from xsafety.records import Response, Verdict
    from xsafety.report.frame import load_run
    from xsafety.store import Store

    store_module._LOAD_CACHE.clear()
    data = load_run(run)  # loads (and so holds) the responses and verdicts
    assert Store(run).table(Response).loaded() is not None and Store(run).table(Verdict).loaded() is not None
    held = item_rows(data)
    store_module._LOAD_CACHE.clear()
    assert Store(run).table(Response).loaded() is None
    parsed = item_rows(data)
    assert held == parsed and len(held) == 8 + 16 + 1
