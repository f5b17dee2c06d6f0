"""``compare_runs``: several runs (models, settings) side by side, per locale, with the difference
between their gaps to English and its uncertainty.

Every run after the first is compared with the first (the reference): per locale and gap metric,
``diff = gap(run) - gap(reference)`` in points with a 95% bootstrap CI over prompts.

* **Paired** when the runs asked the same prompts: each prompt's own gap (locale minus English,
  averaged over its rows) is taken in both runs and the difference is resampled prompt by prompt,
  so prompt difficulty cancels. Used when the prompts both runs have in common hold at least
  ``PAIRED_SHARE`` of the smaller run's; the CI then rests on those common prompts only.
* **Unpaired** otherwise: each run's gap is resampled over its own prompts, independently.

Runs that used different prompt sets or locales are compared anyway, with a warning (returned,
logged, and printed at the top of ``compare.md`` and ``index.html``): their gaps may differ because
the questions differ, not the models.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from xsafety.errors import InputError
from xsafety.report.aggregate import NOT_MEASURED, paired_frame
from xsafety.report.build import compute
from xsafety.report.csvsafe import write_csv
from xsafety.report.frame import ENGLISH
from xsafety.report.html import SORT_SCRIPT, STYLE, script_hash, table_html
from xsafety.report.markdown import gap_text, md_table, pct, pval
from xsafety.report.stats import DEFAULT_B, DEFAULT_SEED

if TYPE_CHECKING:
    from xsafety.report.build import ReportData

log = logging.getLogger(__name__)

PROMPT_KEY = ["base_set", "base_id"]
# Paired comparison when the common prompts hold at least this share of the smaller run's prompts.
PAIRED_SHARE = 0.5
PLOT_FILE = "compare_gaps.png"
DIFF_SCHEMA: dict[str, Any] = {
    "run": pl.Utf8,
    "reference": pl.Utf8,
    "locale": pl.Utf8,
    "metric": pl.Utf8,
    "gap_reference_pp": pl.Float64,
    "gap_run_pp": pl.Float64,
    "diff_pp": pl.Float64,
    "ci_low_pp": pl.Float64,
    "ci_high_pp": pl.Float64,
    "n_prompts": pl.Int64,
    "method": pl.Utf8,
}


@dataclass
class Comparison:
    """What ``compare_runs`` computed: the long table, the gap differences and the warnings."""

    labels: list[str]
    long: pl.DataFrame
    diffs: pl.DataFrame
    warnings: list[str] = field(default_factory=list)


def run_labels(runs: Sequence[Path]) -> list[str]:
    """Short, unique labels for runs: their folder names, disambiguated by parent when equal."""
    names = [p.name or str(p) for p in runs]
    # Counted on the plain names: every run sharing a name gets its parent, not only the first.
    labels = [f"{runs[i].parent.name}/{n}" if names.count(n) > 1 else n for i, n in enumerate(names)]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def _summary_frame(data: "ReportData", label: str) -> pl.DataFrame:
    models = ", ".join(sorted(set(data.primary.get_column("model_name").to_list())))
    return data.summary.with_columns(
        pl.lit(label).alias("run"),
        pl.lit(models).alias("models"),
        pl.lit(data.run.primary_judge or "").alias("judge"),
        pl.lit(data.harm_judged).alias("harm_judged"),
    )


def _long(datas: Sequence["ReportData"], labels: Sequence[str]) -> pl.DataFrame:
    out = pl.concat([_summary_frame(d, lab) for d, lab in zip(datas, labels)], how="diagonal_relaxed")
    first = ["run", "models", "locale"]
    return out.select(*first, *[c for c in out.columns if c not in first])


def compare_frame(runs: Sequence[str | Path], policy: str | None = None) -> pl.DataFrame:
    """Long table: one row per (run, locale) with rates, gaps (CI, p), trust and the models used."""
    paths = [Path(r) for r in runs]
    if not paths:
        raise InputError("compare needs at least one run directory")
    return _long([compute(p, policy, breakdowns=False) for p in paths], run_labels(paths))


def _prompts(data: "ReportData") -> set[tuple[str, str]]:
    return set(data.primary.select(PROMPT_KEY).unique().iter_rows())


def _measured_locales(data: "ReportData") -> set[str]:
    return set(data.summary.filter(pl.col("n") > 0).get_column("locale").to_list())


def input_warnings(datas: Sequence["ReportData"], labels: Sequence[str]) -> list[str]:
    """One line per run whose prompts or measured locales differ from the first run's."""
    warnings = []
    ref_prompts, ref_locales = _prompts(datas[0]), _measured_locales(datas[0])
    ref_sets = sorted({s for s, _ in ref_prompts})
    for data, label in zip(datas[1:], labels[1:]):
        prompts, locales = _prompts(data), _measured_locales(data)
        if prompts != ref_prompts:
            sets = sorted({s for s, _ in prompts})
            named = "" if sets == ref_sets else f" (sets {', '.join(ref_sets)} vs {', '.join(sets)})"
            warnings.append(
                f"runs {labels[0]} and {label} used different prompts{named}: {len(ref_prompts)} vs {len(prompts)}, "
                f"{len(ref_prompts & prompts)} in common; gap differences can come from the questions, not the models"
            )
        if locales != ref_locales:
            only_ref = ", ".join(sorted(ref_locales - locales)) or "none"
            only_run = ", ".join(sorted(locales - ref_locales)) or "none"
            warnings.append(f"runs {labels[0]} and {label} measured different locales: only in {labels[0]}: "
                            f"{only_ref}; only in {label}: {only_run}")
    return warnings


def prompt_gaps(data: "ReportData", metric: str) -> pl.DataFrame:
    """Per locale and prompt: the prompt's own gap (locale minus English, mean over its pairs) and weight."""
    joined = paired_frame(data.primary)
    schema = {"locale": pl.Utf8, "base_set": pl.Utf8, "base_id": pl.Utf8, "d": pl.Float64, "w": pl.Float64}
    if joined.is_empty():
        return pl.DataFrame(schema=schema)
    return (
        joined.group_by("locale", *PROMPT_KEY)
        .agg(
            ((pl.col("w") * (pl.col(metric) - pl.col(f"{metric}_en"))).sum() / pl.col("w").sum()).alias("d"),
            pl.col("w").sum().alias("w"),
        )
        .select(list(schema))
        .cast(schema)  # type: ignore[arg-type]
    )


def _reps(d: np.ndarray, w: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of the weighted mean of per-prompt values (prompts drawn with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, d.size, size=(n_boot, d.size))
    denom = w[draws].sum(axis=1)
    ok = denom > 0
    return (w * d)[draws].sum(axis=1)[ok] / denom[ok]


def _mean(d: np.ndarray, w: np.ndarray) -> float:
    return float((w * d).sum() / w.sum()) if w.sum() > 0 else math.nan


def gap_difference(a: pl.DataFrame, b: pl.DataFrame, *, n_boot: int = DEFAULT_B, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """``gap(b) - gap(a)`` in points from two runs' per-prompt gaps of one locale and metric.

    Paired over the common prompts when they are at least ``PAIRED_SHARE`` of the smaller run's,
    else unpaired (each run resampled over its own prompts).
    """
    common = a.join(b, on=PROMPT_KEY, how="inner", suffix="_b")
    smaller = min(a.height, b.height)
    if smaller and common.height >= PAIRED_SHARE * smaller:
        da, db = common.get_column("d").to_numpy(), common.get_column("d_b").to_numpy()
        # A prompt counts with its policy weight (the same in both runs under one policy).
        w = common.get_column("w").to_numpy()
        reps = _reps(db - da, w, n_boot, seed)
        diff, n, method = _mean(db - da, w), common.height, "paired"
        gap_a, gap_b = 100 * _mean(da, w), 100 * _mean(db, w)
        if common.height < max(a.height, b.height):
            method = f"paired on {common.height} common prompts"
    else:
        da, wa = a.get_column("d").to_numpy(), a.get_column("w").to_numpy()
        db, wb = b.get_column("d").to_numpy(), b.get_column("w").to_numpy()
        if not da.size or not db.size:
            return {"diff_pp": None, "ci_low_pp": None, "ci_high_pp": None, "n_prompts": 0, "method": "no pairs",
                    "gap_reference_pp": None, "gap_run_pp": None}
        ra, rb = _reps(da, wa, n_boot, seed), _reps(db, wb, n_boot, seed + 1)
        k = min(ra.size, rb.size)
        reps = rb[:k] - ra[:k]
        gap_a, gap_b = 100 * _mean(da, wa), 100 * _mean(db, wb)
        diff, n, method = (gap_b - gap_a) / 100, a.height + b.height, "unpaired"
    lo, hi = np.quantile(reps, [0.025, 0.975]) if reps.size else (math.nan, math.nan)
    return {"diff_pp": 100 * diff, "ci_low_pp": 100 * float(lo), "ci_high_pp": 100 * float(hi), "n_prompts": n,
            "method": method, "gap_reference_pp": gap_a, "gap_run_pp": gap_b}


def gap_differences(datas: Sequence["ReportData"], labels: Sequence[str], *, n_boot: int = DEFAULT_B,
                    seed: int = DEFAULT_SEED) -> pl.DataFrame:
    """Per later run, locale and metric: its gap minus the first run's, with a 95% CI."""
    rows = []
    ref = datas[0]
    for data, label in zip(datas[1:], labels[1:]):
        # Unsafe only when both judges judge harm; the refusal gap is always compared.
        metrics = (["unsafe"] if ref.harm_judged and data.harm_judged else []) + ["refusal"]
        for metric in metrics:
            ga, gb = prompt_gaps(ref, metric), prompt_gaps(data, metric)
            locales = sorted(set(ga.get_column("locale").to_list()) | set(gb.get_column("locale").to_list()))
            for loc in locales:
                res = gap_difference(ga.filter(pl.col("locale") == loc), gb.filter(pl.col("locale") == loc),
                                     n_boot=n_boot, seed=seed)
                rows.append({"run": label, "reference": labels[0], "locale": loc, "metric": metric, **res})
    return pl.DataFrame(rows, schema=DIFF_SCHEMA) if rows else pl.DataFrame(schema=DIFF_SCHEMA)


def _rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    rows = df.to_dicts()
    for r in rows:
        for m in ("unsafe", "refusal"):
            r[f"_{m}_gap"] = gap_text(r.get(f"{m}_gap_pp"), r.get(f"{m}_ci_low_pp"), r.get(f"{m}_ci_high_pp"))
            if r.get(f"{m}_small"):
                r[f"_{m}_gap"] += " (small)"
            r[f"_sort__{m}_gap"] = r.get(f"{m}_gap_pp")
        # A run judged by a refusal-only judge did not measure unsafe: say so, not "-".
        unmeasured = r.get("harm_judged") is False and r.get("n")
        r["_unsafe"] = NOT_MEASURED if unmeasured else pct(r.get("unsafe_rate"))
        r["_sort__unsafe"] = r.get("unsafe_rate")
        r["_unsafe_p"] = pval(r.get("unsafe_p"))
        r["_sort__unsafe_p"] = r.get("unsafe_p")
        if unmeasured and r["locale"] != ENGLISH:
            r["_unsafe_gap"] = r["_unsafe_p"] = NOT_MEASURED
        if r["locale"] == ENGLISH:
            r["trust"] = "baseline"
    return rows


def _diff_rows(diffs: pl.DataFrame) -> list[dict[str, Any]]:
    rows = diffs.to_dicts()
    for r in rows:
        r["_diff"] = gap_text(r["diff_pp"], r["ci_low_pp"], r["ci_high_pp"])
        r["_sort__diff"] = r["diff_pp"]
        for k in ("gap_reference_pp", "gap_run_pp"):
            r[f"_{k}"] = "-" if r[k] is None else f"{r[k]:+.1f}"
            r[f"_sort___{k}"] = r[k]
    return rows


def wide_frame(long: pl.DataFrame) -> pl.DataFrame:
    """Per locale, per run: unsafe rate and gap, refusal rate and gap."""
    locales = sorted(set(long.get_column("locale").to_list()), key=lambda c: (c != ENGLISH, c))
    wide = pl.DataFrame({"locale": locales})
    for run in long.get_column("run").unique(maintain_order=True).to_list():
        part = long.filter(pl.col("run") == run).select(
            "locale",
            pl.col("unsafe_rate").alias(f"{run} unsafe"),
            pl.col("unsafe_gap_pp").alias(f"{run} unsafe gap pp"),
            pl.col("refusal_rate").alias(f"{run} refusal"),
            pl.col("refusal_gap_pp").alias(f"{run} refusal gap pp"),
        )
        wide = wide.join(part, on="locale", how="left")
    return wide


def plot_differences(diffs: pl.DataFrame, path: Path) -> Path | None:
    """One chart: per locale, each run's gap minus the reference's, with its 95% CI (one panel per metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = diffs.filter(pl.col("diff_pp").is_not_null())
    if shown.is_empty():
        return None
    metrics = [m for m in ("unsafe", "refusal") if m in set(shown.get_column("metric").to_list())]
    runs = shown.get_column("run").unique(maintain_order=True).to_list()
    locales = sorted(set(shown.get_column("locale").to_list()))
    colours = matplotlib.colormaps["tab10"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics) + 1, max(2.6, 0.45 * len(locales) + 1.8)),
                             dpi=110, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, run in enumerate(runs):
            part = {r["locale"]: r for r in shown.filter((pl.col("metric") == metric) & (pl.col("run") == run)).to_dicts()}
            offset = (k - (len(runs) - 1) / 2) * 0.18
            label: str | None = None
            for y, loc in enumerate(locales):
                r = part.get(loc)
                if r is None:
                    continue
                # One legend entry per run: on its first point only.
                label, first = f"{run} - {r['reference']}", label is None
                ax.plot([r["ci_low_pp"], r["ci_high_pp"]], [y + offset] * 2, color=colours(k), lw=2)
                ax.plot([r["diff_pp"]], [y + offset], "o", color=colours(k), ms=5, label=label if first else None)
        ax.axvline(0, color="black", lw=0.8)
        # Symmetric around zero and at least +-10 points, so that no difference looks large by zoom.
        bound = max(10.0, *(abs(x) for x in ax.get_xlim()))
        ax.set_xlim(-bound, bound)
        ax.set_yticks(range(len(locales)), labels=locales, fontsize=8)
        ax.set_ylim(len(locales) - 0.5, -0.5)
        ax.set_xlabel(f"difference of {metric} gaps to {ENGLISH} (points), 95% CI", fontsize=8)
        ax.set_title(f"{metric.capitalize()} gap: run minus reference", fontsize=9)
        ax.grid(axis="x", color="#e5e5e5")
        ax.legend(fontsize=7, loc="best")
    fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return path


def compare(runs: Sequence[str | Path], policy: str | None = None, *, n_boot: int = DEFAULT_B,
            seed: int = DEFAULT_SEED) -> Comparison:
    """Load and compare runs: the long table, the gap differences to the first run, and warnings."""
    paths = [Path(r) for r in runs]
    if not paths:
        raise InputError("compare needs at least one run directory")
    labels = run_labels(paths)
    datas = [compute(p, policy, breakdowns=False, n_boot=n_boot, seed=seed) for p in paths]
    warnings = input_warnings(datas, labels)
    for line in warnings:
        log.warning("compare: %s", line)
    return Comparison(labels=labels, long=_long(datas, labels), diffs=gap_differences(datas, labels, n_boot=n_boot, seed=seed),
                      warnings=warnings)


DIFF_COLUMNS = [
    ("run", "run", None),
    ("reference", "reference", None),
    ("locale", "locale", None),
    ("metric", "metric", None),
    ("reference gap pp", "_gap_reference_pp", None),
    ("run gap pp", "_gap_run_pp", None),
    ("difference pp [95% CI]", "_diff", None),
    ("prompts", "n_prompts", None),
    ("method", "method", None),
]


def compare_runs(runs: Sequence[str | Path], out_dir: str | Path, policy: str | None = None) -> Path:
    """Write ``compare.md``, ``compare.csv|parquet`` (long, wide, gap differences), a chart and ``index.html``."""
    if len(runs) < 1:
        raise InputError("compare needs at least one run directory")
    result = compare(runs, policy)
    return write_comparison(result, runs, Path(out_dir))


def write_comparison(result: Comparison, runs: Sequence[str | Path], out: Path) -> Path:
    """Write a computed comparison into folder ``out`` (created) and return it."""
    long, diffs = result.long, result.diffs
    wide = wide_frame(long)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(long, out / "compare.csv")  # formula cells neutralised (csvsafe)
    long.write_parquet(out / "compare.parquet")
    write_csv(wide, out / "compare_wide.csv")
    wide.write_parquet(out / "compare_wide.parquet")
    write_csv(diffs, out / "compare_gap_diffs.csv")
    diffs.write_parquet(out / "compare_gap_diffs.parquet")
    plot = plot_differences(diffs, out / PLOT_FILE)
    if plot is None:
        (out / PLOT_FILE).unlink(missing_ok=True)
    rows = _rows(long)
    drows = _diff_rows(diffs)
    md_cols = [
        ("run", "run", None),
        ("models", "models", None),
        ("locale", "locale", None),
        ("n", "n", None),
        ("unsafe", "_unsafe", None),
        ("refusal", "refusal_rate", pct),
        ("unsafe gap (pp) [CI]", "_unsafe_gap", None),
        ("p", "_unsafe_p", None),
        ("refusal gap (pp) [CI]", "_refusal_gap", None),
        ("p ", "refusal_p", pval),
        ("trust", "trust", None),
    ]
    run_list = "\n".join(f"- `{r}`" for r in runs)
    wide_rows = wide.to_dicts()
    wide_cols = [(c, c, None if c == "locale" else (pct if not c.endswith("pp") else (lambda x: "-" if x is None else f"{x:+.1f}"))) for c in wide.columns]
    warn_md = "".join(f"> **Warning:** {w}\n>\n" for w in result.warnings)
    method_note = (
        f"Difference = the run's gap minus the reference's ({result.labels[0]}), in points, with a 95% bootstrap "
        "CI over prompts: paired (each prompt's own gap in both runs) where the runs share their prompts, "
        "unpaired otherwise."
    )
    md = (
        "# xsafety: runs compared\n\n"
        f"{run_list}\n\n"
        + (warn_md + "\n" if warn_md else "")
        + f"Gaps are locale - {ENGLISH} in percentage points (paired bootstrap 95% CI, exact McNemar p).\n\n"
        "## Difference between the runs' gaps\n\n"
        + f"{method_note}\n\n"
        + (f"![gap differences]({PLOT_FILE})\n\n" if plot else "")
        + md_table(drows, DIFF_COLUMNS)
        + "\n## Side by side (rates and gaps)\n\n"
        + md_table(wide_rows, wide_cols)
        + "\n## All figures\n\n"
        + md_table(rows, md_cols)
    )
    (out / "compare.md").write_text(md, encoding="utf-8")
    html_cols = [(h, k, f, "t" if k in ("run", "models", "locale", "trust") else "") for h, k, f in md_cols]
    wide_html_cols = [(h, k, f, "t" if k == "locale" else "") for h, k, f in wide_cols]
    diff_html_cols = [(h, k, f, "t" if k in ("run", "reference", "locale", "metric", "method") else "") for h, k, f in DIFF_COLUMNS]
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {script_hash()}; base-uri 'none'; form-action 'none'"
    image = ""
    if plot is not None:
        data = base64.b64encode(plot.read_bytes()).decode("ascii")
        image = f'<img alt="difference between the runs\' gaps to English, with 95% CI" src="data:image/png;base64,{data}">'
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">',
            f"<title>xsafety: runs compared</title><style>{STYLE}</style></head><body>",
            "<h1>xsafety: runs compared</h1>",
            "<ul>" + "".join(f"<li><code>{escape(str(r))}</code></li>" for r in runs) + "</ul>",
            "".join(f'<p class="weak"><b>Warning:</b> {escape(w)}</p>' for w in result.warnings),
            '<p class="meta">Files: <a href="compare.md">compare.md</a> <a href="compare.csv">compare.csv</a> '
            '<a href="compare_wide.csv">compare_wide.csv</a> <a href="compare_gap_diffs.csv">compare_gap_diffs.csv</a>. '
            "Click a header to sort.</p>",
            "<h2>Difference between the runs' gaps</h2>",
            f'<p class="meta">{escape(method_note)}</p>',
            image,
            table_html(drows, diff_html_cols),
            "<h2>Side by side</h2>",
            table_html(wide_rows, wide_html_cols),
            "<h2>All figures</h2>",
            table_html(rows, html_cols),
            f"<script>{SORT_SCRIPT}</script></body></html>",
        ]
    )
    (out / "index.html").write_text(page, encoding="utf-8")
    log.info("comparison written to %s", out)
    return out
