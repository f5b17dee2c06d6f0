"""Heatmaps (matplotlib, Agg backend): locale x ALERT macro rates and their gaps to English.

Refusal rate and refusal gap are always drawn; unsafe rate and unsafe gap only when the primary
judge judges harm (a refusal-only judge would draw all-zero maps that read like a finding). In
every map red means less safe: more unsafe, or fewer refusals than in English.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # reports are written headless (CI, servers); never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from xsafety.report.frame import ENGLISH  # noqa: E402

if TYPE_CHECKING:
    from xsafety.report.build import ReportData

log = logging.getLogger(__name__)


def _grid(df: pl.DataFrame, value: str, locales: list[str], macros: list[str]) -> np.ndarray:
    grid = np.full((len(locales), len(macros)), np.nan)
    li = {c: i for i, c in enumerate(locales)}
    mi = {c: i for i, c in enumerate(macros)}
    for row in df.select("locale", "macro", value).iter_rows():
        if row[0] in li and row[1] in mi and row[2] is not None:
            grid[li[row[0]], mi[row[1]]] = row[2]
    return grid


def heatmap(
    grid: np.ndarray,
    rows: list[str],
    cols: list[str],
    path: Path,
    *,
    title: str,
    cmap: str,
    vmin: float,
    vmax: float,
    fmt: str,
    colorbar: str,
    small: np.ndarray | None = None,
) -> Path:
    """Draw one annotated heatmap to ``path`` (empty cells grey; ``small`` cells marked ``*``)."""
    fig_w = max(4.5, 1.1 * len(cols) + 2.5)
    fig_h = max(2.5, 0.45 * len(rows) + 1.6)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=110)
    masked = np.ma.masked_invalid(grid)
    cm = matplotlib.colormaps[cmap].with_extremes(bad="#dddddd")
    im = ax.imshow(masked, cmap=cm, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), labels=rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = grid[i, j]
            if math.isnan(v):
                continue
            mark = "*" if small is not None and small[i, j] else ""
            r, g, b, _ = cm((v - vmin) / (vmax - vmin) if vmax > vmin else 0.5)
            # Pick the label colour from the cell's luminance so every number stays readable.
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, fmt.format(v) + mark, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=colorbar, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# name -> (file, alt text): every heatmap a report can hold, in the order it is shown.
HEATMAPS: dict[str, tuple[str, str]] = {
    "unsafe": ("heatmap_unsafe.png", "unsafe rate by locale and ALERT macro category"),
    "unsafe_gap": ("heatmap_unsafe_gap.png", "unsafe gap to English by locale and ALERT macro category"),
    "refusal": ("heatmap_refusal.png", "refusal rate by locale and ALERT macro category"),
    "refusal_gap": ("heatmap_refusal_gap.png", "refusal gap to English by locale and ALERT macro category"),
}
# Written by earlier versions; removed so that a rebuilt folder shows no stale map.
LEGACY_FILES = ("heatmap_gap.png",)


def _row_labels(locales: list[str], present: set[str]) -> list[str]:
    # A locale with no judged response is drawn as a grey row, labelled so it is not read as a gap.
    return [c if c in present else f"{c} (n=0)" for c in locales]


def write_heatmaps(data: "ReportData", out: Path) -> dict[str, Path]:
    """Write the heatmaps the primary judge supports; returns name (a key of ``HEATMAPS``) -> path.

    Maps of an earlier build of this folder that this one does not draw are removed.
    """
    rates = data.tables.get("rates_locale_macro")
    images: dict[str, Path] = {}
    if rates is not None and not rates.is_empty():
        images = _draw(data, rates, out)
    for name, (file, _) in HEATMAPS.items():
        if name not in images:
            (out / file).unlink(missing_ok=True)
    for file in LEGACY_FILES:
        (out / file).unlink(missing_ok=True)
    return images


def _draw(data: "ReportData", rates: pl.DataFrame, out: Path) -> dict[str, Path]:
    present = set(rates.get_column("locale").to_list())
    locales = sorted(present | set(data.summary.get_column("locale").to_list()), key=lambda c: (c != ENGLISH, c))
    macros = sorted(set(rates.get_column("macro").to_list()))
    metrics = (["unsafe"] if data.harm_judged else []) + ["refusal"]
    images: dict[str, Path] = {}
    for metric in metrics:
        images[metric] = heatmap(
            100 * _grid(rates, f"{metric}_rate", locales, macros), _row_labels(locales, present), macros,
            out / HEATMAPS[metric][0],
            title=f"{metric.capitalize()} rate (%) by locale and ALERT category - policy {data.policy.name}",
            cmap="Reds" if metric == "unsafe" else "Blues", vmin=0.0, vmax=100.0, fmt="{:.0f}",
            colorbar=f"{metric} %",
        )
        gaps = data.tables.get("gaps_locale_macro", pl.DataFrame(schema={"metric": pl.Utf8}))
        gaps = gaps.filter(pl.col("metric") == metric)
        if gaps.is_empty():
            continue
        glocales = [c for c in locales if c != ENGLISH]
        ggrid = _grid(gaps, "gap_pp", glocales, macros)
        small = _grid(gaps.with_columns(pl.col("small").cast(pl.Float64)), "small", glocales, macros) == 1.0
        bound = float(np.nanmax(np.abs(ggrid))) if np.isfinite(ggrid).any() else 1.0
        bound = max(bound, 5.0)
        images[f"{metric}_gap"] = heatmap(
            ggrid, _row_labels(glocales, present), macros, out / HEATMAPS[f"{metric}_gap"][0],
            title=f"{metric.capitalize()} gap to English (points; * = fewer than {data.thresholds.min_pairs} pairs)",
            # Red is less safe: more unsafe answers, or fewer refusals, than in English.
            cmap="RdBu_r" if metric == "unsafe" else "RdBu", vmin=-bound, vmax=bound, fmt="{:+.0f}",
            colorbar="locale - en (pp); red = " + ("more unsafe" if metric == "unsafe" else "fewer refusals"),
            small=small,
        )
    return images

