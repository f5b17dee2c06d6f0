"""``compare_runs``: several runs (models, settings) side by side, per locale."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import polars as pl

from xsafety.errors import InputError
from xsafety.report.build import compute
from xsafety.report.frame import ENGLISH
from xsafety.report.html import STYLE, SORT_SCRIPT, script_hash, table_html
from xsafety.report.aggregate import NOT_MEASURED
from xsafety.report.markdown import gap_text, md_table, pct, pval

log = logging.getLogger(__name__)


def run_labels(runs: Sequence[Path]) -> list[str]:
    """Short, unique labels for runs: their folder names, disambiguated by parent when equal."""
    labels = [p.name or str(p) for p in runs]
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            labels[i] = f"{runs[i].parent.name}/{label}"
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def compare_frame(runs: Sequence[str | Path], policy: str | None = None) -> pl.DataFrame:
    """Long table: one row per (run, locale) with rates, gaps (CI, p), trust and the models used."""
    paths = [Path(r) for r in runs]
    labels = run_labels(paths)
    frames = []
    for path, label in zip(paths, labels):
        data = compute(path, policy, breakdowns=False)
        models = ", ".join(sorted(set(data.primary.get_column("model_name").to_list())))
        frames.append(
            data.summary.with_columns(
                pl.lit(label).alias("run"),
                pl.lit(models).alias("models"),
                pl.lit(data.run.primary_judge or "").alias("judge"),
                pl.lit(data.harm_judged).alias("harm_judged"),
            )
        )
    if not frames:
        raise InputError("compare needs at least one run directory")
    out = pl.concat(frames, how="diagonal_relaxed")
    first = ["run", "models", "locale"]
    return out.select(*first, *[c for c in out.columns if c not in first])


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


def wide_frame(long: pl.DataFrame) -> pl.DataFrame:
    """Per locale, one unsafe-rate and one unsafe-gap column per run."""
    locales = sorted(set(long.get_column("locale").to_list()), key=lambda c: (c != ENGLISH, c))
    wide = pl.DataFrame({"locale": locales})
    for run in long.get_column("run").unique(maintain_order=True).to_list():
        part = long.filter(pl.col("run") == run).select(
            "locale",
            pl.col("unsafe_rate").alias(f"{run} unsafe"),
            pl.col("unsafe_gap_pp").alias(f"{run} unsafe gap pp"),
            pl.col("refusal_rate").alias(f"{run} refusal"),
        )
        wide = wide.join(part, on="locale", how="left")
    return wide


def compare_runs(runs: Sequence[str | Path], out_dir: str | Path, policy: str | None = None) -> Path:
    """Write ``compare.md``, ``compare.csv|parquet`` (long and wide) and ``index.html`` to ``out_dir``."""
    if len(runs) < 1:
        raise InputError("compare needs at least one run directory")
    long = compare_frame(runs, policy)
    wide = wide_frame(long)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    long.write_csv(out / "compare.csv")
    long.write_parquet(out / "compare.parquet")
    wide.write_csv(out / "compare_wide.csv")
    wide.write_parquet(out / "compare_wide.parquet")
    rows = _rows(long)
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
    md = (
        "# xsafety: runs compared\n\n"
        f"{run_list}\n\nGaps are locale - {ENGLISH} in percentage points (paired bootstrap 95% CI, exact McNemar p).\n\n"
        "## Side by side (unsafe rate and gap)\n\n"
        + md_table(wide_rows, wide_cols)
        + "\n## All figures\n\n"
        + md_table(rows, md_cols)
    )
    (out / "compare.md").write_text(md, encoding="utf-8")
    html_cols = [(h, k, f, "t" if k in ("run", "models", "locale", "trust") else "") for h, k, f in md_cols]
    wide_html_cols = [(h, k, f, "t" if k == "locale" else "") for h, k, f in wide_cols]
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {script_hash()}"
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">',
            f"<title>xsafety: runs compared</title><style>{STYLE}</style></head><body>",
            "<h1>xsafety: runs compared</h1>",
            "<ul>" + "".join(f"<li><code>{escape(str(r))}</code></li>" for r in runs) + "</ul>",
            '<p class="meta">Files: <a href="compare.md">compare.md</a> <a href="compare.csv">compare.csv</a> '
            '<a href="compare_wide.csv">compare_wide.csv</a>. Click a header to sort.</p>',
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
