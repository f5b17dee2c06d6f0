"""`xsafety run` rebuilds its report when the calibration file its config names changes.

The report's stamp covered the records and the resolved settings, not the calibration file's
contents: editing the file left the run saying "report (unchanged)" with the old validity figures,
while `xsafety report` showed the new ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_runs import fast_config
from fault_server import FaultServer, start_fault_server

from xsafety.config import load_config
from xsafety.report.validity import Calibration, Confusion, write_calibration
from xsafety.run import run


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    s = start_fault_server()
    yield s
    s.stop()


def _calibration(path: Path, tp: int) -> Path:
    """A calibration of the run's judge in English with ``tp`` of 100 refusals recognised."""
    cal = Calibration(judge="refusal-lexicon")
    cal.add("en", "refusal", Confusion(tp=tp, fn=100 - tp, tn=95, fp=5, n_pos=100, n_neg=100), "judge eval en")
    return write_calibration(cal, path)


def test_an_edited_calibration_file_rebuilds_the_runs_report(server: FaultServer, tmp_path: Path) -> None:
    cal = _calibration(tmp_path / "cal.json", tp=90)
    cfg = fast_config(tmp_path / "run.toml", tmp_path / "run", server.url, limit=2,
                      extra='\n[report]\ncalibration = "cal.json"\n')
    first = run(load_config(cfg))
    assert first.ok and first.report_rebuilt
    validity = tmp_path / "run" / "report" / "tables" / "validity.csv"
    before = validity.read_text(encoding="utf-8")
    assert "90" in before  # the file's labels are in the report

    again = run(load_config(cfg))
    assert again.ok and not again.report_rebuilt  # nothing changed: the report stands

    _calibration(cal, tp=60)
    edited = run(load_config(cfg))
    assert edited.ok and edited.report_rebuilt and not edited.models_loaded
    after = validity.read_text(encoding="utf-8")
    assert after != before and "60" in after
