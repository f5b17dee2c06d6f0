"""Draw the report's charts from plain data (numpy arrays, strings, numbers): matplotlib only.

``xsafety.report.plots`` decides what each chart shows (from the report's polars tables) and hands
it here as a ``ChartJob``; this module only draws. It imports nothing of xsafety, so a worker
process (``start_worker``) that draws a report's charts while the report process writes its
tables and pages starts with matplotlib alone, loaded straight from this file. The worker draws
the very same calls in the same matplotlib, so its PNG files are byte for byte the in-process ones.
"""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are written headless (CI, servers); never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

ALPHA = 0.05  # significance level at which a gap is drawn in full colour
# Half-width of each gap map's colour scale, in points: fixed so that one extreme small cell does
# not wash out the rest, and so that two reports' maps compare by colour. Larger gaps saturate.
GAP_SCALE_PP = {"unsafe": 40.0, "refusal": 60.0, "fail": 40.0}
MUTE = 0.72  # how far a non-significant cell's colour is blended toward white


@dataclass(frozen=True)
class ChartJob:
    """One chart to draw: ``kind`` names the function (``heatmap`` or ``forest``), ``kwargs`` its
    arguments (plain data, picklable); ``name`` is the chart's key in ``plots.HEATMAPS``."""

    name: str
    kind: str
    kwargs: dict[str, Any]


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


def forest(
    path: Path,
    *,
    locales: list[str],
    panels: list[tuple[str, dict[str, dict[str, Any]]]],
    policy: str,
    english: str,
) -> Path:
    """The per-locale gap to English with its CI: one panel per ``(metric, gap row by locale)``.

    A row is a ``gaps_locale`` table row as a dict; a locale without one reads "not measured".
    """
    fig_h = max(2.6, 0.38 * len(locales) + 1.7)
    # Room between panels for each row's "gap [CI] p" text and the next panel's locale labels.
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels) + 1.2, fig_h), dpi=110, squeeze=False,
                             gridspec_kw={"wspace": 0.8})
    for ax, (metric, rows) in zip(axes[0], panels):
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
        ax.set_xlabel(f"{metric} gap: locale - {english} (points); red = {side} {'refusals' if metric == 'refusal' else metric}", fontsize=8)
        ax.set_title(f"{metric.capitalize()} gap to English, 95% CI", fontsize=9)
        ax.grid(axis="x", color="#e5e5e5")
    fig.suptitle(f"Grey: exact McNemar p >= {ALPHA:g} (not significant); policy {policy}", fontsize=8, y=0.995)
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return path


def draw(job: ChartJob) -> Path:
    """Draw one job here and return its file."""
    return {"heatmap": heatmap, "forest": forest}[job.kind](**job.kwargs)


# The worker loads this file as a module of its own: importing ``xsafety.report.charts`` would
# run ``xsafety.report``'s package imports (polars, the whole report) for nothing.
_LAUNCH = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('xsafety_report_charts', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = module\n"  # dataclasses look their module up there
    "spec.loader.exec_module(module)\n"
    "module.serve()\n"
)


def start_worker(jobs: list[ChartJob]) -> subprocess.Popen[bytes]:
    """Start a process that draws ``jobs`` (``wait_worker`` says whether it drew them all)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, os.path.abspath(__file__)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    # A few kilobytes (grids of a few hundred cells): the write does not wait on the worker.
    proc.stdin.write(pickle.dumps([(j.name, j.kind, j.kwargs) for j in jobs], protocol=pickle.HIGHEST_PROTOCOL))
    proc.stdin.close()
    return proc


def wait_worker(proc: subprocess.Popen[bytes]) -> str | None:
    """Wait for a worker; None when it drew every job, else what went wrong (its last error line)."""
    assert proc.stderr is not None
    err = proc.stderr.read().decode("utf-8", "replace")
    code = proc.wait()
    if code == 0:
        return None
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return f"exit {code}: {lines[-1] if lines else 'no message'}"


def serve() -> None:
    """The worker's main: draw the pickled jobs read from stdin (from ``start_worker``, our own
    parent process), in order; any error ends it with a traceback and exit 1."""
    jobs = pickle.loads(sys.stdin.buffer.read())
    for name, kind, kwargs in jobs:
        draw(ChartJob(name, kind, kwargs))
