"""`xsafety translate eval`: Spearman, corpus chrF/BLEU with signatures, and a real XSafety slice."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shared_file
from xsafety.cli import app
from xsafety.records import GateResult, Translation
from xsafety.translate.evaluate import rankdata, score_against_references, spearman


def test_rankdata_averages_ties_and_spearman_matches_known_values() -> None:
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Hand-computed: ranks x = 1,2,3,4,5 ; ranks y = 2,1,4,3,5 -> 1 - 6*4/(5*24) = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert spearman([1, None, 3, 4], [1, 5, 3, 4]) == pytest.approx(1.0)  # pairs with a gap are dropped
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=300), rng.normal(size=300)
    ranks_r = np.corrcoef(rankdata(x), rankdata(y))[0, 1]
    assert spearman(x, y) == pytest.approx(ranks_r)


def _rec(pid: str, text: str, quality: float, accepted: bool = True) -> Translation:
    gate = GateResult(name="roundtrip_chrf", score=quality * 100, threshold=25.0, passed=accepted)
    return Translation(key=pid, prompt_id=pid, set="s", locale="es", source="x", text=text, engine="e",
                       gates=(gate,), quality=quality, accepted=accepted, meta={"signals": {"mark_rate": 1 - quality}})


def test_score_against_references_reports_signatures_and_correlations() -> None:
    refs = {"a": "El gato está en la casa.", "b": "Quiero comprar un coche rojo.", "c": "¿Dónde está la estación de tren?", "d": "Hola."}
    recs = {
        "a": _rec("a", "El gato está en la casa.", 0.9),
        "b": _rec("b", "Quiero comprar un coche.", 0.6),
        "c": _rec("c", "Dónde es la tren?", 0.3, accepted=False),
        "d": _rec("d", "Adiós amigo mío.", 0.1, accepted=False),
    }
    ev = score_against_references(recs, refs, "es")
    assert ev.items == 4 and 0 < ev.chrf < 100 and ev.chrf_signature.startswith("chrF2|nrefs:1")
    assert ev.bleu_signature.startswith("BLEU|")
    assert ev.correlations["quality"] == pytest.approx(1.0)
    assert ev.correlations["signal:mark_rate"] == pytest.approx(-1.0)
    assert ev.accepted == 0.5 and ev.accepted_chrf > ev.rejected_chrf


@pytest.fixture(scope="module")
def xsafety_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = shared_file("xsafety_parallel.jsonl")
    if shutil.which("apertium") is None:
        pytest.skip("apertium is not installed")
    from xsafety.importers import import_set

    # Module fixtures run before conftest's per-test isolation: point the home at the same place.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XSAFETY_HOME", str(tmp_path_factory.getbasetemp() / "xsafety-home"))
        import_set("xsafety", path, name="xsafety-eval")
        yield "xsafety-eval"


def test_apertium_on_200_xsafety_rows(xsafety_set: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    from xsafety.translate.evaluate import evaluate

    out = tmp_path_factory.mktemp("eval")
    (ev,) = evaluate(xsafety_set, ["es"], engine="apertium", out_dir=out, limit=200)
    print(f"\nApertium en->es, 200 XSafety rows: chrF {ev.chrf} BLEU {ev.bleu}; Spearman: "
          + ", ".join(f"{k} {v:+.3f}" for k, v in sorted(ev.correlations.items()) if not math.isnan(v)))
    assert ev.items == 200
    assert 40 < ev.chrf < 62 and 10 < ev.bleu < 32  # 51.4 / 20.6 on all 2,800 rows
    assert ev.correlations["quality"] > ev.correlations["gate:roundtrip_chrf"]
    assert ev.correlations["gate:unknown_words"] < 0

    runner = CliRunner()
    result = runner.invoke(app, ["translate", "eval", "--set", xsafety_set, "--locales", "es", "--engine", "apertium",
                                 "--limit", "200", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "chrF2|nrefs:1" in result.output and "quality" in result.output and f"{ev.chrf:.1f}" in result.output


def test_eval_without_references_is_a_clear_error(xsafety_set: str) -> None:
    result = CliRunner().invoke(app, ["translate", "eval", "--set", xsafety_set, "--locales", "sw"])
    assert result.exit_code == 2 and "no references for sw" in result.output
