"""The report's judge-validity, corrected-gap, translation-sensitivity and warnings sections.

Rendered for Markdown and HTML from the tables ``build.compute`` adds (``validity``,
``gaps_corrected``, ``translation_sensitivity``) so that ``markdown.py`` and ``html.py`` only call
in. Warnings name only the locales of the current report (the current config's), never ones an
earlier config left in the run directory.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import polars as pl

from xsafety.report.aggregate import NOT_MEASURED
from xsafety.report.frame import ENGLISH
from xsafety.report.judge_error import corrected_text
from xsafety.report.translation_error import POOR_ONLY
from xsafety.report.wording import CI_VS_MCNEMAR, CORRECTION_NOTE

if TYPE_CHECKING:
    from xsafety.report.build import ReportData


def _pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and x != x) else f"{100 * x:.1f}%"


def _rate_ci(rate: Any, lo: Any, hi: Any) -> str:
    if rate is None or (isinstance(rate, float) and rate != rate):
        return "-"
    return f"{_pct(rate)} [{_pct(lo)}, {_pct(hi)}]"


def summary_cells(row: dict[str, Any], harm: bool) -> dict[str, str]:
    """Pre-formatted corrected-rate and corrected-gap cells of one summary row."""
    out: dict[str, str] = {}
    nothing = not row.get("n")
    for metric in ("unsafe", "refusal"):
        measured = harm or metric != "unsafe"
        if not measured and not nothing:
            out[f"_{metric}_corr_rate"] = out[f"_{metric}_corr_gap"] = NOT_MEASURED
            continue
        rate = row.get(f"{metric}_corr_rate")
        out[f"_{metric}_corr_rate"] = (
            _rate_ci(rate, row.get(f"{metric}_corr_rate_low"), row.get(f"{metric}_corr_rate_high"))
            if rate is not None else "unvalidated" if not nothing else "-"
        )
        if row.get("locale") == ENGLISH or nothing:
            out[f"_{metric}_corr_gap"] = "-"
        else:
            out[f"_{metric}_corr_gap"] = corrected_text({
                "corr_gap_pp": row.get(f"{metric}_corr_gap_pp"),
                "corr_ci_low_pp": row.get(f"{metric}_corr_ci_low_pp"),
                "corr_ci_high_pp": row.get(f"{metric}_corr_ci_high_pp"),
                "sign_can_flip": row.get(f"{metric}_sign_can_flip"),
                "status": row.get(f"{metric}_corr_status") or "unvalidated",
            })
    return out


def warnings(data: "ReportData") -> list[str]:
    """Plain-language warnings about the current report's locales, one line each."""
    t = data.tables
    locales = t["summary"].get_column("locale").to_list()
    out = list(data.calibration_notes)
    for r in t["trust"].to_dicts():
        if r["locale"] in locales and r["locale"] != ENGLISH and str(r["trust"]).startswith("unchecked"):
            out.append(f"{r['locale']}: trust {r['trust']}.")
    validity = t.get("validity")
    focus = "unsafe" if data.harm_judged else "refusal"
    if validity is not None:
        # Only locales with numbers: one with nothing scored has its own, plainer reason.
        scored = {r["locale"] for r in t["summary"].to_dicts() if r.get("n")}
        unvalidated = [r["locale"] for r in validity.filter(pl.col("metric") == focus).to_dicts()
                       if r["locale"] in scored and not r["n_labels"]]
        if unvalidated:
            out.append(
                f"judge unvalidated in {', '.join(unvalidated)}: no human labels say how well the judge "
                f"finds {focus} answers there, so their raw figures may partly be the judge's bias "
                "(label a sample with `xsafety annotate export`)."
            )
    for r in t.get("gaps_corrected", pl.DataFrame()).to_dicts():
        if r.get("sign_can_flip") and r["locale"] in locales:
            out.append(f"{r['locale']}: the corrected {r['metric']} gap can flip sign within the judge's uncertainty.")
    sens = t.get("translation_sensitivity")
    if sens is not None and not sens.is_empty():
        for r in sens.filter(pl.col("flag") == POOR_ONLY).to_dicts():
            if r["locale"] in locales:
                out.append(f"{r['locale']}: the {r['metric']} gap is clear on all items but not on the better-"
                           "translated half, where it is at most half as large: it may be the translation's doing.")
    return out


def _validity_rows(data: "ReportData", locale: str) -> list[dict[str, Any]]:
    v = data.tables.get("validity")
    return [] if v is None else v.filter(pl.col("locale") == locale).to_dicts()


def _corrected_rows(data: "ReportData", locale: str) -> list[dict[str, Any]]:
    g = data.tables.get("gaps_corrected")
    rows = [] if g is None else g.filter(pl.col("locale") == locale).to_dicts()
    for r in rows:
        r["_raw_gap"] = ("-" if r["raw_gap_pp"] is None else
                         f"{r['raw_gap_pp']:+.1f} [{r['raw_ci_low_pp']:+.1f}, {r['raw_ci_high_pp']:+.1f}]")
        r["_corr_rate"] = _rate_ci(r["corr_locale_rate"], r["corr_locale_low"], r["corr_locale_high"])
        r["_corr_gap"] = "-" if locale == ENGLISH else corrected_text(r)
        r["_judge_ci"] = ("-" if r["judge_ci_low_pp"] is None else
                          f"[{r['judge_ci_low_pp']:+.1f}, {r['judge_ci_high_pp']:+.1f}]")
    return rows


def _sensitivity_rows(data: "ReportData", locale: str) -> list[dict[str, Any]]:
    s = data.tables.get("translation_sensitivity")
    rows = [] if s is None else s.filter(pl.col("locale") == locale).to_dicts()
    for r in rows:
        r["_gap"] = ("-" if r["gap_pp"] is None else
                     f"{r['gap_pp']:+.1f} [{r['ci_low_pp']:+.1f}, {r['ci_high_pp']:+.1f}]")
    return rows


EXEMPT_TITLE = "Human reference translations kept although a gate failed them (exempt; gate scores recorded)"


def _exempt_rows(data: "ReportData", locale: str) -> list[dict[str, Any]]:
    e = data.tables.get("gate_exemptions")
    return [] if e is None else e.filter(pl.col("locale") == locale).to_dicts()


VALIDITY_COLUMNS = [("metric", "metric"), ("labels", "n_labels"), ("judge validity", "validity"), ("label sources", "sources")]
CORRECTED_COLUMNS = [
    ("metric", "metric"), ("pairs", "n_pairs"), ("raw gap (pp) [95% CI]", "_raw_gap"),
    ("corrected rate [95% CI]", "_corr_rate"), ("corrected gap (pp) [95% CI]", "_corr_gap"),
    ("judge-only interval (pp)", "_judge_ci"),
]
SENSITIVITY_COLUMNS = [("metric", "metric"), ("items", "subset"), ("pairs", "n_pairs"), ("gap (pp) [95% CI]", "_gap"),
                       ("flag", "flag")]


# Our own formatted cells (figures, brackets, the validity sentence) pass through ``str`` so that
# md_table keeps their brackets; data (label sources are file names) is escaped.
_OWN = {"_raw_gap", "_corr_rate", "_corr_gap", "_judge_ci", "_gap", "validity", "subset", "flag", "metric",
        "n_labels", "n_pairs"}


def _md_columns(columns: list[tuple[str, str]]) -> list[tuple[str, str, Any]]:
    return [(h, k, str if k in _OWN else None) for h, k in columns]


def agreement_text(data: "ReportData", locale: str) -> str:
    """"Two annotators agree on 85% of 40 items (kappa 0.71)", or "" without doubly labelled items."""
    table = data.tables.get("annotator_agreement")
    rows = [] if table is None else table.filter(pl.col("locale") == locale).to_dicts()
    if not rows:
        return ""
    r = rows[0]
    kappa = "-" if r["kappa"] is None else f"{r['kappa']:.2f}"
    return f"Two annotators agree on {100 * r['agreement']:.0f}% of {r['n_items']} items they both labelled (Cohen's kappa {kappa})."


def markdown_locale(data: "ReportData", locale: str) -> str:
    """The locale page's judge-validity, corrected-gap and translation-sensitivity sections."""
    from xsafety.report.markdown import md_table

    parts = ["\n## Judge validity in this locale\n"]
    parts.append(md_table(_validity_rows(data, locale), _md_columns(VALIDITY_COLUMNS)))
    if agreement_text(data, locale):
        parts.append("\n" + agreement_text(data, locale) + "\n")
    corrected = _corrected_rows(data, locale)
    if corrected:
        parts.append("\n### Raw and corrected\n")
        parts.append(md_table(corrected, _md_columns(CORRECTED_COLUMNS)))
        parts.append("\n" + CORRECTION_NOTE + "\n")
    exempt = _exempt_rows(data, locale)
    if exempt:
        parts.append(f"\n### {EXEMPT_TITLE}\n")
        parts.append(md_table(exempt, [("gate", "gate", None), ("kept", "n_exempt", None), ("of translations", "n_translations", None)]))
    sens = _sensitivity_rows(data, locale)
    if sens:
        parts.append("\n## Translation sensitivity (gap on all items vs better-translated items, per engine)\n")
        parts.append(md_table(sens, _md_columns(SENSITIVITY_COLUMNS)))
    if locale != ENGLISH:
        parts.append("\n" + CI_VS_MCNEMAR + "\n")  # this page shows both, in its gap tables
    return "\n".join(parts)


def markdown_summary(data: "ReportData") -> str:
    """The summary's notes: bootstrap CI vs McNemar, the correction, and the warnings."""
    parts = ["\n" + CI_VS_MCNEMAR + "\n", "\n" + CORRECTION_NOTE + "\n"]
    found = warnings(data)
    if found:
        parts.append("\n## Warnings\n")
        parts.append("".join(f"- {w}\n" for w in found))
    return "\n".join(parts)


def _html_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    from xsafety.report.html import table_html

    return table_html(rows, [(h, k, None, "t" if k in ("validity", "sources", "subset", "flag", "metric") else "")
                             for h, k in columns])


def html_locale(data: "ReportData", locale: str) -> str:
    """The locale section's judge-validity, corrected-gap and translation-sensitivity parts."""
    v = _validity_rows(data, locale)
    focus = "unsafe" if data.harm_judged else "refusal"
    headline = next((r["validity"] for r in v if r["metric"] == focus), "unvalidated")
    css = "ok" if headline.startswith("validated") else "weak"
    out = [f'<p class="meta {css}">judge ({escape(focus)}): {escape(headline)}</p>']
    out.append("<details><summary>Judge validity, raw and corrected</summary>")
    out.append(_html_table(v, VALIDITY_COLUMNS))
    if agreement_text(data, locale):
        out.append(f'<p class="meta">{escape(agreement_text(data, locale))}</p>')
    corrected = _corrected_rows(data, locale)
    if corrected:
        out.append(_html_table(corrected, CORRECTED_COLUMNS))
        out.append(f'<p class="meta">{escape(CORRECTION_NOTE)}</p>')
    out.append("</details>")
    exempt = _exempt_rows(data, locale)
    if exempt:
        out.append(f"<details><summary>{escape(EXEMPT_TITLE)}</summary>")
        out.append(_html_table(exempt, [("gate", "gate"), ("kept", "n_exempt"), ("of translations", "n_translations")]))
        out.append("</details>")
    sens = _sensitivity_rows(data, locale)
    if sens:
        out.append("<details><summary>Translation sensitivity</summary>")
        out.append(_html_table(sens, SENSITIVITY_COLUMNS))
        out.append("</details>")
    return "\n".join(out)


def html_summary(data: "ReportData") -> str:
    """The index page's notes and warnings."""
    out = [f'<p class="meta">{escape(CI_VS_MCNEMAR)}</p>', f'<p class="meta">{escape(CORRECTION_NOTE)}</p>']
    found = warnings(data)
    if found:
        out.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{escape(w)}</li>" for w in found) + "</ul>")
    return "\n".join(out)
