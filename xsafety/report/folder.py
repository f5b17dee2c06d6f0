"""Write a run's report folder: tables, Markdown, heatmaps and ``index.html``.

``xsafety.report.build`` computes the tables; this module writes them with every page that
renders them (``markdown``, ``html``, ``plots``), so that the pages can use the computed data
without the computation depending on them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xsafety.report import aggregate as agg
from xsafety.report import html, markdown, plots
from xsafety.report.build import ReportData, compute, write_tables
from xsafety.report.stats import DEFAULT_B, DEFAULT_SEED

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
) -> Path:
    """Write a run's report folder (``run_dir/report`` unless ``out_dir``) and return its path.

    The folder holds ``tables/*.parquet|csv``, ``summary.md``, one ``<locale>.md`` per locale,
    heatmap PNGs and a self-contained ``index.html``.
    """
    data = compute(
        run_dir, policy, thresholds=thresholds, primary_judge=primary_judge, n_boot=n_boot, seed=seed,
        calibration=calibration,
    )
    return write_report(data, Path(out_dir) if out_dir is not None else Path(run_dir) / "report")


def write_report(data: ReportData, out: Path) -> Path:
    """Write a computed report into folder ``out`` (created) and return it."""
    out.mkdir(parents=True, exist_ok=True)
    write_tables(data, out)
    images = plots.write_heatmaps(data, out)
    markdown.write_markdown(data, out, images)
    html.write_index(data, out, images)
    log.info("report written to %s", out)
    return out
