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
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # reports are written headless (CI, servers); never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402

from xsafety.report.frame import ENGLISH  # noqa: E402

if TYPE_CHECKING:
    from xsafety.report.build import ReportData

log = logging.getLogger(__name__)

ALPHA = 0.05  # significance level at which a gap is drawn in full colour
# Half-width of each gap map's colour scale, in points: fixed so that one extreme small cell does
# not wash out the rest, and so that two reports' maps compare by colour. Larger gaps saturate.
GAP_SCALE_PP = {"unsafe": 40.0, "refusal": 60.0, "fail": 40.0}
MUTE = 0.72  # how far a non-significant cell's colour is blended toward white
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


def _cell_colours(grid: np.ndarray, cmap: Any, norm: Normalize, muted: np.ndarray | None) -> np.ndarray:
    """RGBA per cell: the colour map's, blended toward white where ``muted``; NaN cells grey."""
    rgba = cmap(norm(np.nan_to_num(grid, nan=0.0)))
    if muted is not None:
        m = muted & ~np.isnan(grid)
        rgba[m, :3] = rgba[m, :3] * (1 - MUTE) + MUTE
    rgba[np.isnan(grid)] = (0.87, 0.87, 0.87, 1.0)
    return rgba


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
    muted: np.ndarray | None = None,
) -> Path:
    """Draw one annotated heatmap to ``path``.

    Empty cells are grey; ``small`` cells are marked ``*``; ``muted`` cells (a paired test that is
    not significant) are drawn pale with grey numbers. Values outside [vmin, vmax] saturate.
    """
    fig_w = max(5.0, 0.9 * len(cols) + 3.0)
    fig_h = max(3.0, 0.42 * len(rows) + 2.2)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=110)
    cm = matplotlib.colormaps[cmap]
    norm = Normalize(vmin=vmin, vmax=vmax, clip=True)
    ax.imshow(_cell_colours(grid, cm, norm, muted), aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), labels=cols, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), labels=rows, fontsize=8)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = grid[i, j]
            if math.isnan(v):
                continue
            mark = "*" if small is not None and small[i, j] else ""
            if muted is not None and muted[i, j]:
                colour = "#555555"
            else:
                r, g, b, _ = cm(norm(v))
                # Pick the label colour from the cell's luminance so every number stays readable.
                colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            ax.text(j, i, fmt.format(v) + mark, ha="center", va="center", fontsize=7.5, color=colour)
    ax.set_title(title, fontsize=9, wrap=True)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cm), ax=ax, label=colorbar, fraction=0.046, pad=0.04)
    # A tight box keeps rotated column labels and the title whole at any number of rows.
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return path


def _not_significant(gaps: pl.DataFrame, rows: list[str], cols: list[str], col: str) -> np.ndarray:
    p = _grid(gaps.with_columns(pl.col("p_value").fill_null(1.0)), "p_value", rows, cols, col)
    return ~(p < ALPHA)


def forest(data: "ReportData", path: Path) -> Path | None:
    """The per-locale gap to English with its CI, one panel per shown gap metric; None without gaps."""
    from xsafety.report.markdown import shown_metrics

    gaps = data.tables.get("gaps_locale")
    if gaps is None or gaps.is_empty():
        return None
    metrics = [m for m in shown_metrics(data) if not gaps.filter((pl.col("metric") == m) & pl.col("gap_pp").is_not_null()).is_empty()]
    if not metrics:
        return None
    locales = [c for c in data.summary.get_column("locale").to_list() if c != ENGLISH]
    fig_h = max(2.6, 0.38 * len(locales) + 1.7)
    # Room between panels for each row's "gap [CI] p" text and the next panel's locale labels.
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics) + 1.2, fig_h), dpi=110, squeeze=False,
                             gridspec_kw={"wspace": 0.8})
    for ax, metric in zip(axes[0], metrics):
        rows = {r["locale"]: r for r in gaps.filter(pl.col("metric") == metric).to_dicts()}
        # Red is less safe: more unsafe answers, or fewer refusals, than in English.
        worse = 1.0 if metric in ("unsafe", "fail") else -1.0
        labels = []
        for y, loc in enumerate(locales):
            r = rows.get(loc)
            if r is None or r.get("gap_pp") is None:
                labels.append(f"{loc} (not measured)")
                continue
            labels.append(f"{loc} (n={r['n_pairs']}{', small' if r.get('small') else ''})")
            sig = r.get("p_value") is not None and r["p_value"] < ALPHA
            colour = ("#b3261e" if r["gap_pp"] * worse > 0 else "#1d5fa8") if sig else "#9a9a9a"
            ax.plot([r["ci_low_pp"], r["ci_high_pp"]], [y, y], color=colour, lw=2, solid_capstyle="butt")
            ax.plot([r["gap_pp"]], [y], "o", color=colour, ms=6, mfc=colour if sig else "white")
            p = r.get("p_value")
            ptext = "-" if p is None else (f"{p:.3f}".lstrip("0") if p >= 0.001 else "<.001")
            ax.annotate(f"{r['gap_pp']:+.1f} [{r['ci_low_pp']:+.0f}, {r['ci_high_pp']:+.0f}] p={ptext}",
                        (1.02, y), xycoords=("axes fraction", "data"), va="center", fontsize=7.5, color=colour)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(locales)), labels=labels, fontsize=8)
        ax.set_ylim(len(locales) - 0.5, -0.5)
        bound = GAP_SCALE_PP.get(metric, 40.0)
        lo = min([bound * -1] + [r["ci_low_pp"] for r in rows.values() if r.get("ci_low_pp") is not None])
        hi = max([bound] + [r["ci_high_pp"] for r in rows.values() if r.get("ci_high_pp") is not None])
        ax.set_xlim(lo - 2, hi + 2)
        side = "more" if metric in ("unsafe", "fail") else "fewer"
        ax.set_xlabel(f"{metric} gap: locale - {ENGLISH} (points); red = {side} {'refusals' if metric == 'refusal' else metric}", fontsize=8)
        ax.set_title(f"{metric.capitalize()} gap to English, 95% CI", fontsize=9)
        ax.grid(axis="x", color="#e5e5e5")
    fig.suptitle(f"Grey: exact McNemar p >= {ALPHA:g} (not significant); policy {data.policy.name}", fontsize=8, y=0.995)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return path


def _row_labels(locales: list[str], present: set[str]) -> list[str]:
    # A locale with no judged response is drawn as a grey row, labelled so it is not read as a gap.
    return [c if c in present else f"{c} (n=0)" for c in locales]


def write_heatmaps(data: "ReportData", out: Path) -> dict[str, Path]:
    """Write the charts the primary judge supports; returns name (a key of ``HEATMAPS``) -> path.

    Charts of an earlier build of this folder that this one does not draw are removed.
    """
    rates = data.tables.get("rates_locale_macro")
    images: dict[str, Path] = {}
    made = forest(data, out / HEATMAPS["forest"][0])
    if made is not None:
        images["forest"] = made
    if rates is not None and not rates.is_empty():
        images.update(_draw(data, rates, out))
        images.update(_draw_source(data, out))
    for name, (file, _) in HEATMAPS.items():
        if name not in images:
            (out / file).unlink(missing_ok=True)
    for file in LEGACY_FILES:
        (out / file).unlink(missing_ok=True)
    return images


def _locales(data: "ReportData", present: set[str]) -> list[str]:
    return sorted(present | set(data.summary.get_column("locale").to_list()), key=lambda c: (c != ENGLISH, c))


def _gap_map(data: "ReportData", gaps: pl.DataFrame, metric: str, locales: list[str], present: set[str],
             cols: list[str], col: str, path: Path, what: str) -> Path | None:
    gaps = gaps.filter(pl.col("metric") == metric)
    if gaps.is_empty():
        return None
    glocales = [c for c in locales if c != ENGLISH]
    ggrid = _grid(gaps, "gap_pp", glocales, cols, col)
    small = _grid(gaps.with_columns(pl.col("small").cast(pl.Float64)), "small", glocales, cols, col) == 1.0
    bound = GAP_SCALE_PP.get(metric, 40.0)
    return heatmap(
        ggrid, _row_labels(glocales, present), cols, path,
        title=(f"{metric.capitalize()} gap to English by {what} (points; pale = McNemar p >= {ALPHA:g}; "
               f"* = fewer than {data.thresholds.min_pairs} pairs)"),
        # Red is less safe: more unsafe answers, or fewer refusals, than in English.
        cmap="RdBu_r" if metric == "unsafe" else "RdBu", vmin=-bound, vmax=bound, fmt="{:+.0f}",
        colorbar="locale - en (pp); red = " + ("more unsafe" if metric == "unsafe" else "fewer refusals"),
        small=small, muted=_not_significant(gaps, glocales, cols, col),
    )


def _draw(data: "ReportData", rates: pl.DataFrame, out: Path) -> dict[str, Path]:
    present = set(rates.get_column("locale").to_list())
    locales = _locales(data, present)
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
        made = _gap_map(data, gaps, metric, locales, present, macros, "macro", out / HEATMAPS[f"{metric}_gap"][0],
                        "locale and ALERT category")
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


def _draw_source(data: "ReportData", out: Path) -> dict[str, Path]:
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
    images: dict[str, Path] = {}
    for metric in (["unsafe"] if data.harm_judged else []) + ["refusal"]:
        images[f"{metric}_source"] = heatmap(
            100 * _grid(rates, f"{metric}_rate", locales, cols, SOURCE_COLUMN), _row_labels(locales, present), cols,
            out / HEATMAPS[f"{metric}_source"][0],
            title=f"{metric.capitalize()} rate (%) by locale and the source set's category - policy {data.policy.name}",
            cmap="Reds" if metric == "unsafe" else "Blues", vmin=0.0, vmax=100.0, fmt="{:.0f}", colorbar=f"{metric} %",
        )
        name = f"{metric}_gap_source"
        made = _gap_map(data, gaps, metric, locales, present, cols, SOURCE_COLUMN, out / HEATMAPS[name][0],
                        "locale and the source set's category")
        if made is not None:
            images[name] = made
    return images
