"""Write a run's report folder: tables, Markdown, heatmaps, ``index.html`` and variant effects.

``xsafety.report.build`` computes the tables; this module writes them with every page that
renders them (``markdown``, ``html``, ``plots``, ``variants``), so that the pages can use the
computed data without the computation depending on them.

The folder is replaced whole: everything is written into a hidden sibling folder, which then
takes the old folder's place, so a reader (or a kill) never sees pages of two reports mixed. A
folder built for ``xsafety run`` holds ``.stamp``, what the run built it from; ``xsafety report``
(another policy, another judge) writes none, so the next run knows the folder is not its own.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from xsafety.report import aggregate as agg
from xsafety.report import html, markdown, plots, variants
from xsafety.report.build import ReportData, compute, write_tables
from xsafety.report.explorer import render_explorer
from xsafety.report.stats import DEFAULT_B, DEFAULT_SEED
from xsafety.torch_runtime import available_cores, busy_elsewhere, cpu_sample, free_cores

log = logging.getLogger(__name__)


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    policy: str | None = None,
    *,
    thresholds: agg.Thresholds | None = None,
    primary_judge: str | None = None,
    n_boot: int = DEFAULT_B,
    seed: int = DEFAULT_SEED,
    calibration: str | Path | None = None,
    stamp: str | None = None,
) -> Path:
    """Write a run's report folder (``run_dir/report`` unless ``out_dir``) and return its path.

    The folder holds ``tables/*.parquet|csv``, ``summary.md``, one ``<locale>.md`` per locale,
    heatmap PNGs, a self-contained ``index.html`` and, with several variants, ``variants.*``.
    """
    data = compute(
        run_dir, policy, thresholds=thresholds, primary_judge=primary_judge, n_boot=n_boot, seed=seed,
        calibration=calibration,
    )
    return write_report(data, Path(out_dir) if out_dir is not None else Path(run_dir) / "report", stamp=stamp)


STAMP_FILE = ".stamp"
# Responses from which a worker process shares the charts (9 charts: 4.2 CPU-s of matplotlib at
# 28,000 answers, 2.5 at 2,800) while this one writes the tables and the item explorer, which grow
# with the run (1.7 CPU-s at 28,000 answers). Below this the worker's start (0.9 CPU-s, mostly
# importing matplotlib) would buy little time for the CPU it costs.
CHART_WORKER_MIN_RESPONSES = 10_000


def charts_in_worker(data: ReportData) -> bool:
    """Whether a worker process should draw the charts: a large run, and a core to spare.

    A core is spare when, over the report's computation so far (``data.started``), other
    processes kept busy at most one less than this process may use, so that the worker runs
    beside this process instead of taking turns with it (``free_cores``: only whole busy cores
    count, as for torch threads).
    """
    if data.run.n_responses < CHART_WORKER_MIN_RESPONSES:
        return False
    cores = available_cores()
    now = cpu_sample()
    busy = busy_elsewhere(data.started, now) if data.started is not None and now is not None else None
    return cores >= 2 and busy is not None and free_cores(cores, busy) >= 2


def write_report(data: ReportData, out: Path, *, stamp: str | None = None,
                 chart_worker: bool | None = None) -> Path:
    """Write a computed report as folder ``out`` (replacing it whole) and return it.

    ``stamp`` (from ``xsafety run``) is kept in the folder as ``.stamp``; see ``read_stamp``.
    ``chart_worker``: draw the charts in a worker process meanwhile (None: ``charts_in_worker``);
    the folder is the same either way.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    pending: plots.PendingCharts | None = None
    try:
        in_worker = charts_in_worker(data) if chart_worker is None else chart_worker
        if in_worker:
            log.info("report: charts drawn by a worker process meanwhile")
        pending = plots.PendingCharts(data, tmp, in_worker=in_worker)
        write_tables(data, tmp)
        # Before the pages: they link the variant-effects page when it is there.
        variants.write_variant_effects(data, tmp)
        explorer = render_explorer(data)
        images = pending.result()
        markdown.write_markdown(data, tmp, images)
        html.write_index(data, tmp, images, explorer)
        if stamp is not None:
            (tmp / STAMP_FILE).write_text(stamp + "\n", encoding="utf-8")
        _swap(tmp, out)
    except BaseException:
        if pending is not None:
            pending.abandon()  # a worker's charts would land in a folder being removed
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("report written to %s", out)
    return out


def _swap(new: Path, out: Path) -> None:
    """Put folder ``new`` in the place of ``out``: a rename each, the old folder removed after."""
    os.chmod(new, 0o755)  # mkdtemp makes it private; a report is for reading
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def read_stamp(out: Path) -> str | None:
    """The stamp a report folder was built with, or None (absent, or built by ``xsafety report``)."""
    try:
        return (Path(out) / STAMP_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
