"""The report's charts drawn by a worker process are the same files as drawn in the report process;
a worker that fails leaves the charts to the report process; the worker is asked for only where a
large run meets a spare core."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from xsafety.records import Prompt
from xsafety.report import charts, folder, plots
from xsafety.report.build import compute
from xsafety.report.synthetic import Outcome, make_translation, write_run
from xsafety.torch_runtime import CpuSample

TYPES = ("Insult", "Unfairness And Discrimination", "Crimes And Illegal Activities")
CATS = ("hate_women", "crime_theft", "weapon_firearm")


def _run(root: Path, n: int = 60) -> Path:
    """English and two locales, unsafe and refusal labels, source categories: every chart kind."""
    prompts = [Prompt(id=f"p{i:03d}", text=f"prompt {i}", category=CATS[i % 3], source="xsafety", set="synth",
                      xsafety_type=TYPES[(i // 3) % 3]) for i in range(n)]
    u = np.random.default_rng(4).random(n)
    outcomes, translations = [], []
    for loc, (unsafe, refusal) in {"en": (0.1, 0.6), "es": (0.2, 0.5), "zh": (0.4, 0.2)}.items():
        for i, pr in enumerate(prompts):
            label = "unsafe" if u[i] < unsafe else "refusal" if u[i] < unsafe + refusal else "safe"
            outcomes.append(Outcome(pr.id, loc, label, back_label=None if loc == "en" else label))
            if loc != "en":
                translations.append(make_translation(pr, loc))
    return write_run(root, prompts, outcomes, translations=translations)


def _files(folder_path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder_path)): p.read_bytes() for p in sorted(folder_path.rglob("*")) if p.is_file()}


def test_worker_writes_the_same_report_folder_byte_for_byte(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = compute(_run(tmp_path / "run"))
    here = folder.write_report(data, tmp_path / "here", chart_worker=False)
    there = folder.write_report(data, tmp_path / "there", chart_worker=True)
    assert "chart worker failed" not in caplog.text  # the worker drew them, not the fallback
    a, b = _files(here), _files(there)
    assert sorted(a) == sorted(b)
    pngs = [name for name in a if name.endswith(".png")]
    # The forest plot, rate and gap maps by ALERT category and by the source set's category.
    assert {"forest_gap.png", "heatmap_unsafe_gap.png", "heatmap_refusal_source.png"} <= set(pngs)
    assert [name for name in a if a[name] != b[name]] == []  # index.html embeds the PNG bytes too


def test_worker_and_report_process_share_the_charts(tmp_path: Path) -> None:
    """Charts drawn partly by the worker and partly here are those drawn all here."""
    data = compute(_run(tmp_path / "run"))
    (tmp_path / "shared").mkdir()
    (tmp_path / "here").mkdir()
    pending = plots.PendingCharts(data, tmp_path / "shared", in_worker=True)
    assert pending.worker is not None
    deadline = time.monotonic() + 120
    while not pending.worker.drawn and time.monotonic() < deadline:
        time.sleep(0.05)  # let the worker draw one before this process takes the rest
    assert pending.worker.drawn
    shared = pending.result()
    here = plots.PendingCharts(data, tmp_path / "here", in_worker=False).result()
    assert list(shared) == list(here)
    assert _files(tmp_path / "shared") == _files(tmp_path / "here")


def test_a_failed_worker_leaves_its_charts_to_the_report_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    data = compute(_run(tmp_path / "run"))
    jobs = plots.chart_jobs(data, tmp_path / "unused")
    assert jobs and {j.kind for j in jobs} == {"forest", "heatmap"}
    # A worker that takes its first chart and dies drawing it.
    monkeypatch.setattr(charts, "_LAUNCH", "import sys\nprint('ready', flush=True)\nsys.exit('worker lost')\n")
    out = folder.write_report(data, tmp_path / "report", chart_worker=True)
    assert "chart worker failed" in caplog.text and "worker lost" in caplog.text
    reference = folder.write_report(data, tmp_path / "reference", chart_worker=False)
    assert _files(out) == _files(reference)


def test_worker_only_for_a_large_run_with_a_spare_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = compute(_run(tmp_path / "run", n=12))
    assert not folder.charts_in_worker(data)  # 36 responses: the worker's start would not pay
    big = dataclasses.replace(data, run=dataclasses.replace(data.run, n_responses=folder.CHART_WORKER_MIN_RESPONSES))
    start = CpuSample(busy_ticks=0, total_ticks=0, own_seconds=0.0, at=0.0)
    ticks = 100  # per second, as os.sysconf("SC_CLK_TCK") on Linux
    monkeypatch.setattr(folder, "available_cores", lambda: 2)
    monkeypatch.setattr("os.sysconf", lambda name: ticks)

    def after(others_busy_cores: float) -> None:
        # 10 s on 2 cores; this process used 10 CPU-s of them, others the rest.
        busy = int((10.0 + 10.0 * others_busy_cores) * ticks)
        monkeypatch.setattr(folder, "cpu_sample", lambda: CpuSample(busy, 20 * ticks, 10.0, 10.0))

    after(0.2)
    assert folder.charts_in_worker(dataclasses.replace(big, started=start))
    after(1.0)  # another process keeps the other core busy: the worker would only take turns with us
    assert not folder.charts_in_worker(dataclasses.replace(big, started=start))
    after(0.2)
    assert not folder.charts_in_worker(dataclasses.replace(big, started=None))  # nothing measured
    monkeypatch.setattr(folder, "available_cores", lambda: 1)
    assert not folder.charts_in_worker(dataclasses.replace(big, started=start))


def test_a_worker_that_cannot_start_leaves_the_charts_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    data = compute(_run(tmp_path / "run", n=30))
    monkeypatch.setattr(charts.sys, "executable", str(tmp_path / "no-python"))
    out = folder.write_report(data, tmp_path / "report", chart_worker=True)
    assert "cannot start a chart worker" in caplog.text
    monkeypatch.undo()
    assert _files(out) == _files(folder.write_report(data, tmp_path / "reference", chart_worker=False))
