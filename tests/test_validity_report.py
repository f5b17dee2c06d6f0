"""A run with a labelled calibration file for some locales: those get corrected gaps with wider
intervals and "validated on N labels"; the rest say "unvalidated" in plain words."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from xsafety.errors import InputError
from xsafety.records import Response
from xsafety.report import build_report, compute
from xsafety.report.synthetic import SYNTH_JUDGE, random_run
from xsafety.report.validity import Calibration, Confusion, write_calibration
from xsafety.store import Store


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_run(tmp_path_factory.mktemp("valid") / "run", n_prompts=150, seed=4)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cal = Calibration(judge=SYNTH_JUDGE)
    for metric in ("refusal", "unsafe"):
        cal.add("en", metric, Confusion(tp=95, fn=5, tn=95, fp=5, n_pos=100, n_neg=100), "judge eval en")
        cal.add("es", metric, Confusion(tp=56, fn=24, tn=72, fp=8, n_pos=80, n_neg=80), "judge eval es")
    return write_calibration(cal, tmp_path_factory.mktemp("cal") / "calibration.json")


def test_calibrated_locales_get_wider_corrected_gaps_and_the_rest_unvalidated(run: Path, calibration: Path) -> None:
    data = compute(run, calibration=calibration, n_boot=400)
    corr = data.tables["gaps_corrected"]
    es = corr.filter((pl.col("locale") == "es") & (pl.col("metric") == "unsafe")).to_dicts()[0]
    assert es["status"] == "corrected" and es["corr_gap_pp"] is not None
    assert es["corr_ci_high_pp"] - es["corr_ci_low_pp"] > es["raw_ci_high_pp"] - es["raw_ci_low_pp"]
    sw = corr.filter((pl.col("locale") == "sw") & (pl.col("metric") == "unsafe")).to_dicts()[0]
    assert sw["status"] == "unvalidated" and sw["corr_gap_pp"] is None
    summary = {r["locale"]: r for r in data.summary.to_dicts()}
    assert summary["es"]["validity"] == "validated on 160 labels (sensitivity 70%, specificity 90%)"
    assert summary["sw"]["validity"] == "unvalidated"
    full = data.tables["validity"].filter((pl.col("locale") == "es") & (pl.col("metric") == "unsafe"))["validity"][0]
    assert full.startswith("validated on 160 labels: sensitivity 70% [59%-79%] (n=80), specificity 90% [81%-95%]")
    assert summary["es"]["n_labels"] == 160 and summary["sw"]["n_labels"] == 0


def test_report_files_say_validated_or_unvalidated(run: Path, calibration: Path, tmp_path: Path) -> None:
    out = build_report(run, tmp_path / "rep", calibration=calibration, n_boot=300)
    summary = (out / "summary.md").read_text()
    es_line = next(line for line in summary.splitlines() if line.startswith("| es |"))
    sw_line = next(line for line in summary.splitlines() if line.startswith("| sw |"))
    assert "validated on 160 labels" in es_line and "unvalidated" in sw_line
    assert "judge unvalidated in sw" in summary
    es_md = (out / "es.md").read_text()
    assert "## Judge validity in this locale" in es_md and "judge eval es" in es_md
    page = (out / "index.html").read_text()
    assert "judge (unsafe): validated on 160 labels" in page
    assert "judge (unsafe): unvalidated" in page


def test_a_calibration_of_another_judge_is_not_applied(run: Path, tmp_path: Path) -> None:
    cal = Calibration(judge="llamaguard|model:x")
    cal.add("es", "unsafe", Confusion(9, 1, 9, 1, 10, 10), "other")
    path = write_calibration(cal, tmp_path / "other.json")
    data = compute(run, calibration=path, n_boot=50)
    assert data.tables["validity"].get_column("n_labels").sum() == 0
    assert any("not the primary judge" in note for note in data.calibration_notes)


def test_config_names_the_calibration_relative_to_the_config(run: Path, calibration: Path, tmp_path: Path) -> None:
    info = json.loads((run / "run.json").read_text())
    info["config_file"] = str(calibration.parent / "run.toml")
    info["config"] = {"report": {"calibration": calibration.name}}
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "run.json").write_text(json.dumps(info))
    # A run.json with a config is a directory `xsafety run` made: it has its cells.
    (copy / "cells.json").write_text(json.dumps({"responses": sorted(Store(copy).table(Response).keys())}))
    data = compute(copy, n_boot=50)
    assert data.summary.filter(pl.col("locale") == "es")["n_labels"].to_list() == [160]
    info["config"] = {"report": {"calibration": "missing.json"}}
    (copy / "run.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="missing.json"):
        compute(copy, n_boot=50)


def test_run_config_names_a_calibration_file(calibration: Path, tmp_path: Path) -> None:
    from xsafety.config import load_config
    from xsafety.plan import validate

    shutil.copy(calibration, tmp_path / "cal.json")
    cfg = tmp_path / "run.toml"
    cfg.write_text('[run]\nlocales = ["es"]\n\n[report]\ncalibration = "cal.json"\n')
    config = load_config(cfg)
    assert config.calibration == "cal.json"
    validate(config, ["en", "es"])
    cfg.write_text('[run]\nlocales = ["es"]\n\n[report]\ncalibration = "gone.json"\n')
    with pytest.raises(InputError) as err:
        validate(load_config(cfg), ["en", "es"])
    assert "run.toml:5" in str(err.value) and "report.calibration" in str(err.value) and "gone.json" in str(err.value)
