"""Draw the report's charts from plain data (numpy arrays, strings, numbers): matplotlib only.

``xsafety.report.plots`` decides what each chart shows (from the report's polars tables) and hands
it here as a ``ChartJob``; this module only draws. It imports nothing of xsafety, so a worker
process (``ChartWorker``) that shares a report's charts while the report process writes its
tables and pages starts with matplotlib alone, loaded straight from this file. The worker makes
the very same calls in the same matplotlib, so its PNG files are byte for byte the in-process ones.
"""

from __future__ import annotations

import math
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading
from collections import deque
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
_LENGTH = struct.Struct("<Q")
_DONE = -1


class ChartWorker:
    """A process that draws a share of a report's charts while this one works on.

    The jobs are handed out one at a time from a queue that this process drains from the other
    end (``take``) once its own work is done, so the two finish together however the work
    divides; a feeder thread answers the worker (it only waits on pipes, so it costs no CPU).
    Protocol: the pickled jobs (length first) go to the worker's stdin once; the worker says
    ``ready`` and, after each job, its index; the feeder answers with the next index or -1.
    """

    def __init__(self, jobs: list[ChartJob]) -> None:
        self.queue: deque[int] = deque(range(len(jobs)))
        self.sent: list[int] = []  # indices handed to the worker
        self.drawn: set[int] = set()  # indices the worker reported done
        # Its error output goes to a file: a pipe nobody reads while it fills could stall it.
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, os.path.abspath(__file__)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        )
        self._payload = pickle.dumps([(j.name, j.kind, j.kwargs) for j in jobs], protocol=pickle.HIGHEST_PROTOCOL)
        self._feeder = threading.Thread(target=self._feed, name="chart-worker-feeder", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            # Written here, not by the report's thread: the worker reads it once matplotlib is loaded.
            self.proc.stdin.write(_LENGTH.pack(len(self._payload)) + self._payload)
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            while line:
                if line.strip() != b"ready":
                    self.drawn.add(int(line))
                try:
                    index = self.queue.popleft()
                except IndexError:
                    index = _DONE
                else:
                    self.sent.append(index)
                self.proc.stdin.write(b"%d\n" % index)
                self.proc.stdin.flush()
                if index == _DONE:
                    return
                line = self.proc.stdout.readline()
        except (OSError, ValueError):
            return  # it died, or a garbled line: the worker is lost, its jobs are drawn here

    def take(self) -> int | None:
        """The next job for this process (from the queue's far end), or None when none is left."""
        try:
            return self.queue.pop()
        except IndexError:
            return None

    def finish(self) -> tuple[list[int], str | None]:
        """Wait for the worker; (the jobs it was given but did not draw, what went wrong or None)."""
        self._feeder.join()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        code = self.proc.wait()
        self._stderr.seek(0)
        err = self._stderr.read().decode("utf-8", "replace")
        self._stderr.close()
        undrawn = [i for i in self.sent if i not in self.drawn]
        if code == 0 and not undrawn:
            return [], None
        lines = [line for line in err.strip().splitlines() if line.strip()]
        return undrawn, f"exit {code}: {lines[-1] if lines else 'no message'}"

    def kill(self) -> None:
        """Stop the worker at once (the report failed)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._feeder.join()
        self._stderr.close()


def serve() -> None:
    """The worker's main (see ``ChartWorker``): draw the jobs it is handed, one at a time; any
    error ends it with a traceback and exit 1."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    header = inp.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return
    jobs = pickle.loads(inp.read(_LENGTH.unpack(header)[0]))
    out.write(b"ready\n")
    out.flush()
    for line in inp:
        index = int(line)
        if index == _DONE:
            return
        name, kind, kwargs = jobs[index]
        draw(ChartJob(name, kind, kwargs))
        out.write(b"%d\n" % index)
        out.flush()
