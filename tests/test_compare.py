"""`report compare`: warnings when runs asked different prompts or locales, the difference between
the runs' gaps with a CI (paired where prompts match), the refusal gap, and one chart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.report.compare import compare, compare_runs, gap_difference
from xsafety.report.synthetic import Outcome, make_prompts, make_translation, write_run


def _run(root: Path, en_refused: int, es_refused: int, n: int = 60, locales: tuple[str, ...] = ("es",),
         set_name: str = "synth") -> Path:
    """English refuses the first ``en_refused`` prompts, each other locale the first ``es_refused``."""
    prompts = make_prompts(n, set_name=set_name)
    outcomes, translations = [], []
    for i, p in enumerate(prompts):
        outcomes.append(Outcome(p.id, "en", "refusal" if i < en_refused else "safe"))
        for loc in locales:
            outcomes.append(Outcome(p.id, loc, "refusal" if i < es_refused else "safe"))
            translations.append(make_translation(p, loc))
    return write_run(root, prompts, outcomes, translations=translations)


def test_same_prompts_paired_difference(tmp_path: Path) -> None:
    a = _run(tmp_path / "a" / "run", en_refused=40, es_refused=28)  # refusal gap -20 points
    b = _run(tmp_path / "b" / "run", en_refused=40, es_refused=10)  # refusal gap -50 points
    result = compare([a, b])
    assert result.warnings == []
    row = result.diffs.filter((pl.col("locale") == "es") & (pl.col("metric") == "refusal")).row(0, named=True)
    assert row["method"] == "paired" and row["n_prompts"] == 60
    assert row["gap_reference_pp"] == pytest.approx(-20.0) and row["gap_run_pp"] == pytest.approx(-50.0)
    assert row["diff_pp"] == pytest.approx(-30.0)
    assert row["ci_low_pp"] <= -30.0 <= row["ci_high_pp"] and row["ci_high_pp"] < 0


def test_different_prompts_and_locales_warn_and_go_unpaired(tmp_path: Path) -> None:
    a = _run(tmp_path / "a" / "run", 40, 28, locales=("es", "de"))
    b = _run(tmp_path / "b" / "run", 40, 10, n=30, locales=("es", "fr"), set_name="other")
    result = compare([a, b])
    text = " ".join(result.warnings)
    assert "different prompts (sets synth vs other): 60 vs 30, 0 in common" in text
    assert "different locales: only in a/run: de; only in b/run: fr" in text
    row = result.diffs.filter((pl.col("locale") == "es") & (pl.col("metric") == "refusal")).row(0, named=True)
    assert row["method"] == "unpaired"
    assert row["gap_reference_pp"] == pytest.approx(-20.0) and row["gap_run_pp"] == pytest.approx(-100 * 20 / 30)
    # A locale only one run measured has no difference to show.
    de = result.diffs.filter(pl.col("locale") == "de").row(0, named=True)
    assert de["diff_pp"] is None and de["method"] == "no pairs"


def test_pairing_narrows_the_interval() -> None:
    rng = np.random.default_rng(0)
    hard = rng.random(200)  # prompt difficulty shared by both runs
    da = (hard < 0.3).astype(float) - (hard < 0.5).astype(float)
    db = (hard < 0.2).astype(float) - (hard < 0.5).astype(float)
    ids = [f"p{i}" for i in range(200)]
    a = pl.DataFrame({"base_set": "s", "base_id": ids, "d": da, "w": 1.0})
    b = pl.DataFrame({"base_set": "s", "base_id": ids, "d": db, "w": 1.0})
    paired = gap_difference(a, b)
    unpaired = gap_difference(a, b.with_columns(pl.lit("other").alias("base_set")))
    assert paired["method"] == "paired" and unpaired["method"] == "unpaired"
    assert paired["diff_pp"] == pytest.approx(unpaired["diff_pp"])
    assert paired["ci_high_pp"] - paired["ci_low_pp"] < unpaired["ci_high_pp"] - unpaired["ci_low_pp"]


def test_outputs_carry_the_refusal_gap_and_one_chart(tmp_path: Path) -> None:
    a = _run(tmp_path / "a" / "run", 40, 28)
    b = _run(tmp_path / "b" / "run", 40, 10)
    out = compare_runs([a, b], tmp_path / "cmp")
    wide = pl.read_csv(out / "compare_wide.csv")
    assert sum(c.endswith("refusal gap pp") for c in wide.columns) == 2
    assert (out / "compare_gaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "compare.md").read_text()
    assert "## Difference between the runs' gaps" in md and "| -30.0 \\[" in md
    page = (out / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1
    diffs = pl.read_csv(out / "compare_gap_diffs.csv")
    assert set(diffs.get_column("metric")) == {"unsafe", "refusal"}


def test_cli_prints_the_warnings(tmp_path: Path) -> None:
    a = _run(tmp_path / "a" / "run", 40, 28)
    b = _run(tmp_path / "b" / "run", 40, 10, n=30)
    res = CliRunner().invoke(app, ["report", "compare", str(a), str(b), "--out", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert "warning: runs a/run and b/run used different prompts: 60 vs 30, 30 in common" in res.output
