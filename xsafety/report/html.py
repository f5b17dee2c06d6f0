"""One self-contained ``index.html``: sortable tables, embedded heatmaps, escaped example responses.

Model output is untrusted. Every value goes through ``html.escape``; the only script is a small
fixed sorter that moves existing rows and never parses markup; and a Content-Security-Policy
allows only that script (by its sha256), inline styles and ``data:`` images, so an injected
``<script>`` could not run even if escaping were ever missed.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from xsafety.report.frame import ENGLISH
from xsafety.report.markdown import (
    NO_HARM_NOTE,
    accepted_text,
    focus_metric,
    gap_text,
    measured,
    no_numbers_reason,
    num,
    pct,
    pval,
    rejection_rows,
    safe_name,
    shown_metrics,
    summary_rows,
    variants_file,
)
from xsafety.report.explorer import EXPLORER_SCRIPT, explorer_script_hash, render_explorer
from xsafety.report.plots import HEATMAPS
from xsafety.report.validity_sections import html_locale, html_summary
from xsafety.report.wording import safe_column, shown_label

if TYPE_CHECKING:
    from xsafety.report.build import ReportData

EXAMPLE_CHARS = 600
EXAMPLES_PER_LOCALE = 6

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.setAttribute('data-ready', '1');
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var asc = th.getAttribute('data-dir') !== 'asc';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', asc ? 'asc' : 'desc');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
        var nx = parseFloat(x), ny = parseFloat(y);
        var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return asc ? r : -r;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
""".strip()

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 1.5rem auto; max-width: 1200px;
       color: #1d2430; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #dde; }
.meta { color: #556; font-size: .9rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .85rem; }
th, td { border: 1px solid #d8dce6; padding: .25rem .5rem; text-align: right; }
th { background: #eef1f7; cursor: pointer; user-select: none; }
th[data-dir=asc]::after { content: ' \\25B2'; } th[data-dir=desc]::after { content: ' \\25BC'; }
td.t, th.t { text-align: left; }
td { white-space: nowrap; } td.t { white-space: normal; }
tr:nth-child(even) td { background: #fafbfd; }
.weak { color: #a4461b; } .ok { color: #2d7a3a; } .small { color: #8a6d00; }
.pos { color: #b3261e; font-weight: 600; } .neg { color: #1d5fa8; }
img { max-width: 100%; border: 1px solid #e3e6ee; margin: .5rem 0; }
pre.resp { white-space: pre-wrap; background: #f6f7f9; border-left: 3px solid #c9cfdb; padding: .4rem .6rem;
           font-size: .8rem; max-height: 12rem; overflow: auto; }
details { margin: .4rem 0; } summary { cursor: pointer; font-weight: 600; }
nav a { margin-right: .8rem; }
""".strip()

Fmt = Callable[[Any], str]
Column = tuple[str, str, Fmt | None, str]  # header, key, formatter, css class of cell


def script_hash(script: str = SORT_SCRIPT) -> str:
    """The CSP source expression that allows exactly this inline script."""
    digest = hashlib.sha256(script.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def _sort_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def table_html(rows: Sequence[dict[str, Any]], columns: Sequence[Column], css: str = "sortable") -> str:
    """An escaped, sortable HTML table; each cell keeps its raw value in ``data-v`` for sorting."""
    if not rows:
        return "<p><em>no data</em></p>"
    head = "".join(f'<th class="{escape(c)}">{escape(h)}</th>' for h, _, _, c in columns)
    body = []
    for r in rows:
        cells = []
        for _, key, fmt, c in columns:
            raw = r.get(key)
            shown = fmt(raw) if fmt else ("" if raw is None else str(raw))
            cls = c
            if key.endswith("trust") and isinstance(raw, str):
                cls += " weak" if raw.startswith(("weak", "unchecked")) else " ok"
            sort_raw = r.get("_sort_" + key, raw)
            cells.append(f'<td class="{escape(cls)}" data-v="{escape(_sort_value(sort_raw))}">{escape(shown)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{escape(css)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


SUMMARY: list[Column] = [
    ("locale", "locale", None, "t"),
    ("resource", "resource", None, "t"),
    ("n", "n", None, ""),
    ("unsafe", "_unsafe", None, ""),
    ("unsafe corrected [95% CI]", "_unsafe_corr_rate", None, ""),
    ("refusal", "refusal_rate", pct, ""),
    ("refusal corrected [95% CI]", "_refusal_corr_rate", None, ""),
    ("invalid", "_invalid", None, ""),  # answers judged invalid (degenerate output): count (rate)
    ("failure", "_fail", None, ""),
    ("safety score", "_safety", None, ""),
    ("unsafe gap pp [95% CI]", "_unsafe_gap", None, ""),
    ("unsafe gap corrected pp [95% CI]", "_unsafe_corr_gap", None, ""),
    ("unsafe p (McNemar)", "_unsafe_p", None, ""),
    ("refusal gap pp [95% CI]", "_refusal_gap", None, ""),
    ("refusal gap corrected pp [95% CI]", "_refusal_corr_gap", None, ""),
    ("refusal p (McNemar)", "refusal_p", pval, ""),
    ("acceptance", "acceptance", pct, ""),
    ("agreement", "agreement", pct, ""),
    ("judge validity", "validity", None, "t"),
    ("trust", "trust", None, "t"),
]


def gap_columns(first: Sequence[Column] = ()) -> list[Column]:
    """Columns of a long gaps table."""
    return [
        *first,
        ("metric", "metric", None, "t"),
        ("pairs", "n_pairs", None, ""),
        ("en", "en_rate", pct, ""),
        ("locale", "locale_rate", pct, ""),
        ("gap pp [95% CI]", "_gap", None, ""),
        ("p (McNemar)", "p_value", pval, ""),
        ("small", "small", lambda s: "small" if s else "", "t"),
    ]


def _gap_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    rows = df.to_dicts()
    for r in rows:
        r["_gap"] = gap_text(r["gap_pp"], r["ci_low_pp"], r["ci_high_pp"])
        r["_sort__gap"] = r["gap_pp"]
    return rows


def _image(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _examples(data: "ReportData", locale: str) -> str:
    df = (
        data.primary.filter(pl.col("locale") == locale)
        .sort(["fail", "w", "prompt_id"], descending=[True, True, False])
        .head(EXAMPLES_PER_LOCALE)
    )
    if df.is_empty():
        return "<p><em>no judged responses</em></p>"
    parts = []
    for r in df.to_dicts():
        text = r["response_text"] or ""
        if len(text) > EXAMPLE_CHARS:
            text = text[:EXAMPLE_CHARS] + " [...]"
        parts.append(
            '<div class="example"><div class="meta">'
            f"{escape(r['prompt_id'])} &middot; {escape(r['category'])} &middot; attack {escape(r['attack'])} "
            f"&middot; variant {escape(r['variant'])} &middot; label <b>{escape(shown_label(r['label'], data.harm_judged))}</b></div>"
            f'<pre class="resp">{escape(text)}</pre></div>'
        )
    return "".join(parts)


def _rejections(data: "ReportData", locale: str) -> str:
    """The locale's rejected translations per quality gate, as a table ("" when none)."""
    rows = rejection_rows(data, locale)
    if not rows:
        return ""
    return table_html(
        rows,
        [("gate", "gate", None, "t"), ("rejected", "n_rejected", None, ""), ("of translations", "_share", pct, "")],
    )


def render_index(data: "ReportData", images: dict[str, Path], variants: str | None = None,
                 explorer: str | None = None) -> str:
    """The whole ``index.html`` as a string (``variants``: the variant-effects page to link, if any;
    ``explorer``: its item explorer section when already rendered, ``render_explorer(data)``)."""
    t = data.tables
    run = data.run
    csp = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src {script_hash()} {explorer_script_hash()}; base-uri 'none'; form-action 'none'"
    )
    srows = summary_rows(t["summary"], harm=data.harm_judged, failure=data.failure_judged)
    for r in srows:
        r["_sort__unsafe_gap"] = r.get("unsafe_gap_pp")
        r["_sort__unsafe_p"] = r.get("unsafe_p")
        r["_sort__refusal_gap"] = r.get("refusal_gap_pp")
    locales = [r["locale"] for r in srows]
    nav = " ".join(f'<a href="#loc-{escape(safe_name(loc))}">{escape(loc)}</a>' for loc in locales)
    nav += ' &middot; <a href="#items">Items</a>'
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>xsafety report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>xsafety report</h1>",
        '<p class="meta">'
        f"run <code>{escape(str(run.run_dir))}</code> &middot; {run.n_responses} responses "
        f"({run.n_response_errors} failed"
        + (f"; {run.n_stale_responses} from earlier configs left out" if run.n_stale_responses else "")
        + f") &middot; primary judge <code>{escape(run.primary_judge or 'none')}</code> "
        f"(native) &middot; policy <b>{escape(data.policy.name)}</b>: {escape(data.policy.description)}</p>",
        (f'<p class="weak"><b>{escape(NO_HARM_NOTE)}</b></p>' if not data.harm_judged else ""),
        '<p class="meta">Gaps are locale minus English in percentage points over paired prompts, with 95% '
        "paired-bootstrap CIs over prompts and exact McNemar p-values. Cells with fewer than "
        f"{data.thresholds.min_pairs} pairs are marked small. Click a column header to sort.</p>",
        html_summary(data),
        '<p class="meta">Files: <a href="summary.md">summary.md</a> '
        + (f'<a href="{escape(variants)}">{escape(variants)}</a> ' if variants else "")
        + " ".join(f'<a href="{escape(safe_name(loc))}.md">{escape(loc)}.md</a>' for loc in locales)
        + " &middot; tables: "
        + " ".join(f'<a href="tables/{escape(name)}.csv">{escape(name)}.csv</a>' for name in sorted(t))
        + "</p>",
        f"<nav>Locales: {nav}</nav>",
        "<h2>Per locale</h2>",
        _image(images.get("forest"), HEATMAPS["forest"][1]),
        table_html(srows, SUMMARY),
        "<h2>Gaps by resource level</h2>",
        table_html(
            _gap_rows(t["gaps_resource"].filter(pl.col("metric").is_in(shown_metrics(data)))),
            gap_columns([("resource", "resource", None, "t")]),
        )
        if "gaps_resource" in t
        else "",
        "<h2>Heatmaps</h2>",
        *(_image(images.get(name), alt) for name, (_, alt) in HEATMAPS.items() if name != "forest"),
    ]
    out.append(render_explorer(data) if explorer is None else explorer)
    trust_rows = {r["locale"]: r for r in t["trust"].to_dicts()}
    counts = {r["locale"]: r["n"] for r in srows}
    focus = focus_metric(data)
    for loc in locales:
        out.append(f'<h2 id="loc-{escape(safe_name(loc))}">{escape(loc)}</h2>')
        tr = trust_rows.get(loc)
        if tr:
            agree = (
                f"native vs back-translated verdicts agree {escape(pct(tr['agreement']))} "
                f"(kappa {escape(num(tr['kappa'], 2))}, n={tr['n_both_modes']}); "
                if tr["n_both_modes"]
                else ""
            )
            out.append(
                '<p class="meta">'
                f"translations accepted {escape(accepted_text(tr))}, mean round-trip chrF "
                f"{escape(num(tr['roundtrip_chrf']))}; {agree}"
                f"trust: {escape('baseline' if loc == ENGLISH else tr['trust'])}</p>"
            )
        rejected = _rejections(data, loc)
        if counts.get(loc):
            out.append(html_locale(data, loc))
        if not counts.get(loc):
            out.append(
                f'<p class="weak"><b>No numbers for {escape(loc)}</b> (n = 0): {escape(no_numbers_reason(data, loc))}</p>'
            )
            if rejected:
                out.append("<p class=\"meta\">Translations rejected, by quality gate (a translation can fail several):</p>")
                out.append(rejected)
            continue
        if loc != ENGLISH:
            mine = t["gaps_locale"].filter((pl.col("locale") == loc) & pl.col("metric").is_in(shown_metrics(data)))
            out.append(table_html(_gap_rows(mine), gap_columns()))
            for name, col in (("macro", "macro"), ("attack", "attack"), ("variant", "variant"), ("model", "model_name")):
                key = f"gaps_locale_{name}"
                if key not in t:
                    continue
                part = t[key].filter((pl.col("locale") == loc) & (pl.col("metric") == focus))
                if part.is_empty() or (name != "macro" and part.get_column(col).n_unique() < 2):
                    continue
                out.append(f"<details><summary>{escape(focus.capitalize())} gap by {escape(name)}</summary>")
                out.append(table_html(_gap_rows(part), gap_columns([(name, col, None, "t")])))
                out.append("</details>")
        micro = t.get("rates_locale_micro")
        if micro is not None:
            out.append("<details><summary>Rates by ALERT micro category</summary>")
            out.append(
                table_html(
                    # Weakest first: most unsafe, or least refused when harm is not judged.
                    micro.filter(pl.col("locale") == loc)
                    .sort(f"{focus}_rate", descending=focus == "unsafe")
                    .to_dicts(),
                    [
                        ("category", "category", None, "t"),
                        ("macro", "macro", None, "t"),
                        ("n", "n", None, ""),
                        ("unsafe", "unsafe_rate", measured(pct, data.harm_judged), ""),
                        ("refusal", "refusal_rate", pct, ""),
                        (*safe_column(data.harm_judged), pct, ""),
                        ("failure", "fail_rate", measured(pct, data.failure_judged), ""),
                    ],
                )
            )
            out.append("</details>")
        if rejected:
            out.append("<details><summary>Translations rejected, by quality gate</summary>")
            out.append(rejected)
            out.append("</details>")
        order = " (failures first)" if data.failure_judged else ""
        out.append(f"<details><summary>Example responses{order}</summary>")
        out.append(_examples(data, loc))
        out.append("</details>")
    out.append(f"<script>{SORT_SCRIPT}</script>")
    out.append(f"<script>{EXPLORER_SCRIPT}</script>")
    out.append("</body></html>")
    return "\n".join(out)


def write_index(data: "ReportData", out: Path, images: dict[str, Path], explorer: str | None = None) -> Path:
    """Write ``index.html`` into the report folder (``explorer``: see ``render_index``)."""
    path = out / "index.html"
    path.write_text(render_index(data, images, variants_file(data, out), explorer), encoding="utf-8")
    return path
