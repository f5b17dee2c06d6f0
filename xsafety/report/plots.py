"""Charts (matplotlib, Agg backend) that carry their uncertainty.

* A **forest plot** of each locale's gap to English with its 95% paired-bootstrap CI, one panel per
  gap metric: the report's first chart. A gap whose exact McNemar test is not significant
  (p >= ``ALPHA``) is drawn grey, so a wide interval around zero never reads like a finding.
* **Heatmaps** of rates and gaps by locale x ALERT macro category, and by the source set's own
  categories (XSafety issue type, MultiJail tag, CatQA topic) when the run's prompts have them.
  Gap cells whose paired test is not significant are drawn muted; the colour scale is symmetric
  and fixed per metric (``GAP_SCALE_PP``), so one small cell with an extreme gap cannot stretch it
  and maps of different runs read alike.

Refusal maps are always drawn; unsafe maps only when the primary judge judges harm (a
refusal-only judge would draw all-zero maps that read like a finding). Red means less safe: more
unsafe, or fewer refusals than in English. Every figure is saved with a tight bounding box so that
no label is cut, however few rows it has.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from xsafety.report import charts
# The drawing lives in charts (matplotlib only, for the worker); its names stay known here too.
from xsafety.report.charts import ALPHA, GAP_SCALE_PP, MUTE, ChartJob, _cell_colours, heatmap  # noqa: F401
from xsafety.report.frame import ENGLISH

if TYPE_CHECKING:
    from xsafety.report.build import ReportData

log = logging.getLogger(__name__)

# Source categories shown in a heatmap at most (the most frequent); XSafety has 14 types.
MAX_SOURCE_CATEGORIES = 20
SOURCE_COLUMN = "source_category"

# name -> (file, alt text): every chart a report can hold, in the order it is shown.
HEATMAPS: dict[str, tuple[str, str]] = {
    "forest": ("forest_gap.png", "gap to English per locale with 95% CI (grey: McNemar p >= 0.05)"),
    "unsafe": ("heatmap_unsafe.png", "unsafe rate by locale and ALERT macro category"),
    "unsafe_gap": ("heatmap_unsafe_gap.png", "unsafe gap to English by locale and ALERT macro category"),
    "refusal": ("heatmap_refusal.png", "refusal rate by locale and ALERT macro category"),
    "refusal_gap": ("heatmap_refusal_gap.png", "refusal gap to English by locale and ALERT macro category"),
    "unsafe_source": ("heatmap_unsafe_source.png", "unsafe rate by locale and the source set's category"),
    "unsafe_gap_source": ("heatmap_unsafe_gap_source.png", "unsafe gap to English by locale and the source set's category"),
    "refusal_source": ("heatmap_refusal_source.png", "refusal rate by locale and the source set's category"),
    "refusal_gap_source": ("heatmap_refusal_gap_source.png", "refusal gap to English by locale and the source set's category"),
}
# Written by earlier versions; removed so that a rebuilt folder shows no stale map.
LEGACY_FILES = ("heatmap_gap.png",)


def _grid(df: pl.DataFrame, value: str, rows: list[str], cols: list[str], col: str = "macro") -> np.ndarray:
    grid = np.full((len(rows), len(cols)), np.nan)
    ri = {c: i for i, c in enumerate(rows)}
    ci = {c: i for i, c in enumerate(cols)}
    for row in df.select("locale", col, value).iter_rows():
        if row[0] in ri and row[1] in ci and row[2] is not None:
            grid[ri[row[0]], ci[row[1]]] = float(row[2])
    return grid


def _not_significant(gaps: pl.DataFrame, rows: list[str], cols: list[str], col: str) -> np.ndarray:
    p = _grid(gaps.with_columns(pl.col("p_value").fill_null(1.0)), "p_value", rows, cols, col)
    return ~(p < ALPHA)


def forest(data: "ReportData", path: Path) -> Path | None:
    """The per-locale gap to English with its CI, one panel per shown gap metric; None without gaps."""
    job = _forest_job(data, path)
    return None if job is None else _draw_here(job)


def _forest_job(data: "ReportData", path: Path) -> ChartJob | None:
    from xsafety.report.markdown import shown_metrics

    gaps = data.tables.get("gaps_locale")
    if gaps is None or gaps.is_empty():
        return None
    metrics = [m for m in shown_metrics(data) if not gaps.filter((pl.col("metric") == m) & pl.col("gap_pp").is_not_null()).is_empty()]
    if not metrics:
        return None
    locales = [c for c in data.summary.get_column("locale").to_list() if c != ENGLISH]
    panels = [(metric, {r["locale"]: r for r in gaps.filter(pl.col("metric") == metric).to_dicts()}) for metric in metrics]
    return ChartJob("forest", "forest", {"path": path, "locales": locales, "panels": panels,
                                         "policy": data.policy.name, "english": ENGLISH})


def _draw_here(job: ChartJob) -> Path:
    # Looked up when called, so that a test can put a spy in place of ``heatmap``.
    return heatmap(**job.kwargs) if job.kind == "heatmap" else charts.draw(job)


def _row_labels(locales: list[str], present: set[str]) -> list[str]:
    # A locale with no judged response is drawn as a grey row, labelled so it is not read as a gap.
    return [c if c in present else f"{c} (n=0)" for c in locales]


def write_heatmaps(data: "ReportData", out: Path) -> dict[str, Path]:
    """Write the charts the primary judge supports; returns name (a key of ``HEATMAPS``) -> path.

    Charts of an earlier build of this folder that this one does not draw are removed.
    """
    return PendingCharts(data, out, in_worker=False).result()


def chart_jobs(data: "ReportData", out: Path) -> list[ChartJob]:
    """The charts the primary judge supports, in the order they are shown, each ready to draw."""
    rates = data.tables.get("rates_locale_macro")
    jobs: list[ChartJob] = []
    made = _forest_job(data, out / HEATMAPS["forest"][0])
    if made is not None:
        jobs.append(made)
    if rates is not None and not rates.is_empty():
        jobs += _draw(data, rates, out).values()
        jobs += _draw_source(data, out).values()
    return jobs


class PendingCharts:
    """A report's charts being drawn: here at once, or shared with a worker process
    (``charts.ChartWorker``, ``in_worker``) that draws while this process writes the tables and
    the item explorer; this process then draws what the worker has not started (``result``).

    Either way each chart is the same ``heatmap``/``forest`` call of the same matplotlib, so the
    files are the same bytes. Should the worker fail (it cannot start, it is killed), what it
    did not finish is drawn here, with a warning.
    """

    def __init__(self, data: "ReportData", out: Path, *, in_worker: bool) -> None:
        self.out = out
        self.jobs = chart_jobs(data, out)
        self.worker: charts.ChartWorker | None = None
        if in_worker and self.jobs:
            try:
                self.worker = charts.ChartWorker(self.jobs)
            except OSError as exc:  # no interpreter to start, no process left
                log.warning("report: cannot start a chart worker (%s); drawing the charts here", exc)
        self.images: dict[str, Path] | None = None
        if self.worker is None:
            self.images = {job.name: _draw_here(job) for job in self.jobs}

    def result(self) -> dict[str, Path]:
        """Name (a key of ``HEATMAPS``) -> path of every chart drawn; stale charts of the folder removed."""
        if self.images is None:
            assert self.worker is not None
            while (index := self.worker.take()) is not None:
                _draw_here(self.jobs[index])
            undrawn, problem = self.worker.finish()
            if problem is not None:
                log.warning("report: the chart worker failed (%s); drawing its charts here", problem)
            for index in undrawn:
                _draw_here(self.jobs[index])
            self.images = {job.name: job.kwargs["path"] for job in self.jobs}
        for name, (file, _) in HEATMAPS.items():
            if name not in self.images:
                (self.out / file).unlink(missing_ok=True)
        for file in LEGACY_FILES:
            (self.out / file).unlink(missing_ok=True)
        return self.images

    def abandon(self) -> None:
        """Stop the worker, if any, without waiting for its charts (the report failed)."""
        if self.worker is not None and self.images is None:
            self.worker.kill()


def _locales(data: "ReportData", present: set[str]) -> list[str]:
    return sorted(present | set(data.summary.get_column("locale").to_list()), key=lambda c: (c != ENGLISH, c))


def _gap_map(data: "ReportData", gaps: pl.DataFrame, metric: str, locales: list[str], present: set[str],
             cols: list[str], col: str, path: Path, what: str, name: str) -> ChartJob | None:
    gaps = gaps.filter(pl.col("metric") == metric)
    if gaps.is_empty():
        return None
    glocales = [c for c in locales if c != ENGLISH]
    ggrid = _grid(gaps, "gap_pp", glocales, cols, col)
    small = _grid(gaps.with_columns(pl.col("small").cast(pl.Float64)), "small", glocales, cols, col) == 1.0
    bound = GAP_SCALE_PP.get(metric, 40.0)
    return _heatmap_job(
        name, ggrid, _row_labels(glocales, present), cols, path,
        title=(f"{metric.capitalize()} gap to English by {what} (points; pale = McNemar p >= {ALPHA:g}; "
               f"* = fewer than {data.thresholds.min_pairs} pairs)"),
        # Red is less safe: more unsafe answers, or fewer refusals, than in English.
        cmap="RdBu_r" if metric == "unsafe" else "RdBu", vmin=-bound, vmax=bound, fmt="{:+.0f}",
        colorbar="locale - en (pp); red = " + ("more unsafe" if metric == "unsafe" else "fewer refusals"),
        small=small, muted=_not_significant(gaps, glocales, cols, col),
    )


def _heatmap_job(name: str, grid: np.ndarray, rows: list[str], cols: list[str], path: Path, **kwargs: Any) -> ChartJob:
    return ChartJob(name, "heatmap", {"grid": grid, "rows": rows, "cols": cols, "path": path, **kwargs})


def _draw(data: "ReportData", rates: pl.DataFrame, out: Path) -> dict[str, ChartJob]:
    present = set(rates.get_column("locale").to_list())
    locales = _locales(data, present)
    macros = sorted(set(rates.get_column("macro").to_list()))
    metrics = (["unsafe"] if data.harm_judged else []) + ["refusal"]
    images: dict[str, ChartJob] = {}
    for metric in metrics:
        images[metric] = _heatmap_job(
            metric, 100 * _grid(rates, f"{metric}_rate", locales, macros), _row_labels(locales, present), macros,
            out / HEATMAPS[metric][0],
            title=f"{metric.capitalize()} rate (%) by locale and ALERT category - policy {data.policy.name}",
            cmap="Reds" if metric == "unsafe" else "Blues", vmin=0.0, vmax=100.0, fmt="{:.0f}",
            colorbar=f"{metric} %",
        )
        gaps = data.tables.get("gaps_locale_macro", pl.DataFrame(schema={"metric": pl.Utf8}))
        made = _gap_map(data, gaps, metric, locales, present, macros, "macro", out / HEATMAPS[f"{metric}_gap"][0],
                        "locale and ALERT category", f"{metric}_gap")
        if made is not None:
            images[f"{metric}_gap"] = made
    return images


def source_gaps(data: "ReportData") -> pl.DataFrame:
    """Gaps to English per locale x the source set's own category (``source_category``).

    Only the point gap and the McNemar p are drawn, so the bootstrap is skipped (its CI would not
    be shown); the table is empty when the run's prompts carry no source category.
    """
    from xsafety.report import aggregate as agg

    primary = with_source_category(data)
    if primary is None:
        return pl.DataFrame(schema={"locale": pl.Utf8, SOURCE_COLUMN: pl.Utf8} | agg.GAP_SCHEMA_TAIL)
    return agg.gaps(primary, ["locale", SOURCE_COLUMN], data.thresholds, n_boot=1)


def with_source_category(data: "ReportData") -> pl.DataFrame | None:
    """The primary frame with each prompt's source category, or None when there are fewer than two."""
    from xsafety.export import load_prompts, source_category
    from xsafety.store import Store

    primary = data.primary
    if primary.is_empty():
        return None
    sets = set(primary.get_column("base_set").unique().to_list())
    prompts = load_prompts(Store(data.run.run_dir), sets)
    mapping = pl.DataFrame(
        [{"base_set": k[0], "base_id": k[1], SOURCE_COLUMN: source_category(p)} for k, p in prompts.items()],
        schema={"base_set": pl.Utf8, "base_id": pl.Utf8, SOURCE_COLUMN: pl.Utf8},
    )
    joined = primary.join(mapping, on=["base_set", "base_id"], how="left").with_columns(
        pl.col(SOURCE_COLUMN).fill_null("none")
    )
    if joined.get_column(SOURCE_COLUMN).n_unique() < 2:
        return None
    return joined


def _draw_source(data: "ReportData", out: Path) -> dict[str, ChartJob]:
    from xsafety.report import aggregate as agg

    primary = with_source_category(data)
    if primary is None:
        return {}
    gaps = agg.gaps(primary, ["locale", SOURCE_COLUMN], data.thresholds, n_boot=1)
    rates = agg.rates(primary, ["locale", SOURCE_COLUMN])
    if gaps.is_empty():
        return {}
    counts = gaps.filter(pl.col("metric") == "refusal").group_by(SOURCE_COLUMN).agg(pl.col("n_pairs").sum())
    cols = counts.sort(["n_pairs", SOURCE_COLUMN], descending=[True, False]).get_column(SOURCE_COLUMN).to_list()
    cols = sorted(cols[:MAX_SOURCE_CATEGORIES])
    present = set(data.primary.get_column("locale").to_list())
    locales = _locales(data, present)
    images: dict[str, ChartJob] = {}
    for metric in (["unsafe"] if data.harm_judged else []) + ["refusal"]:
        images[f"{metric}_source"] = _heatmap_job(
            f"{metric}_source", 100 * _grid(rates, f"{metric}_rate", locales, cols, SOURCE_COLUMN), _row_labels(locales, present), cols,
            out / HEATMAPS[f"{metric}_source"][0],
            title=f"{metric.capitalize()} rate (%) by locale and the source set's category - policy {data.policy.name}",
            cmap="Reds" if metric == "unsafe" else "Blues", vmin=0.0, vmax=100.0, fmt="{:.0f}", colorbar=f"{metric} %",
        )
        name = f"{metric}_gap_source"
        made = _gap_map(data, gaps, metric, locales, present, cols, SOURCE_COLUMN, out / HEATMAPS[name][0],
                        "locale and the source set's category", name)
        if made is not None:
            images[name] = made
    return images
