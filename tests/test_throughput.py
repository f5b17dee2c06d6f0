"""Throughput records per component signature and the time estimates made from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from xsafety import throughput


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XSAFETY_CACHE", str(tmp_path))
    return tmp_path


def test_no_measurement_means_no_estimate() -> None:
    assert throughput.estimate("generate", "hf|model:x", 100) is None
    assert throughput.estimate("generate", None, 100) is None
    assert "no estimate" in throughput.describe(None, "generate smollm2")


def test_estimate_pools_the_last_measurements_of_that_signature() -> None:
    throughput.record("generate", "sig-a", items=100, seconds=50.0, tokens=5000)
    throughput.record("generate", "sig-a", items=300, seconds=50.0, tokens=15000)
    throughput.record("generate", "sig-b", items=10, seconds=100.0)
    est = throughput.estimate("generate", "sig-a", 200)
    assert est is not None
    assert est.seconds == pytest.approx(200 * 100 / 400)
    assert (est.runs, est.measured, est.tokens_per_s) == (2, 400, pytest.approx(200.0))
    assert throughput.estimate("judge", "sig-a", 10) is None  # kinds are kept apart
    line = throughput.describe(est, "generate smollm2")
    assert "~50 s for 200 items" in line and "2 earlier runs" in line and "200 tok/s" in line


def test_only_the_last_few_measurements_count() -> None:
    throughput.record("generate", "s", items=10, seconds=1000.0)
    for _ in range(throughput.KEEP):
        throughput.record("generate", "s", items=10, seconds=10.0)
    est = throughput.estimate("generate", "s", 10)
    assert est is not None and est.seconds == pytest.approx(10.0)


def test_too_short_stages_and_a_corrupt_file_are_ignored(_cache: Path) -> None:
    throughput.record("generate", "s", items=10, seconds=0.2)
    assert throughput.estimate("generate", "s", 10) is None
    (_cache / throughput.THROUGHPUT_FILE).write_text("{not json", encoding="utf-8")
    assert throughput.estimate("generate", "s", 10) is None
    throughput.record("generate", "s", items=10, seconds=5.0)
    assert throughput.estimate("generate", "s", 20) is not None


def test_long_estimates_read_in_hours() -> None:
    throughput.record("generate", "s", items=1, seconds=2.0)
    assert "~2 h 0 min" in throughput.describe(throughput.estimate("generate", "s", 3600), "g")
