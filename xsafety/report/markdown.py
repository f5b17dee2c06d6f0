"""Markdown reports: ``summary.md`` and one ``<locale>.md`` per locale."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from xsafety.report.aggregate import NOT_MEASURED
from xsafety.report.aggregate import __doc__ as DEFINITIONS
from xsafety.report.frame import ENGLISH
from xsafety.report.validity_sections import markdown_locale, markdown_summary, summary_cells
from xsafety.report.wording import COMPLIED_NOT_JUDGED, safe_column

if TYPE_CHECKING:
    from xsafety.report.build import ReportData

Fmt = Callable[[Any], str]
EXAMPLES_PER_LOCALE = 10
NO_HARM_NOTE = (
    "The primary judge does not judge harm (it detects refusals only): unsafe, failure and "
    f"safety-score figures are not measured ({NOT_MEASURED}), and an answer that was not refused is "
    f"\"{COMPLIED_NOT_JUDGED}\", never safe; read the refusal columns and maps, or judge with a guard model."
)
WORST_CATEGORIES = 5


def pct(x: Any) -> str:
    """A share as a percentage with one decimal, ``-`` when missing."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def num(x: Any, digits: int = 1) -> str:
    """A number with ``digits`` decimals, ``-`` when missing."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def pval(x: Any) -> str:
    """A p-value, ``<0.001`` below that."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" if x >= 0.001 else "<0.001"


def gap_text(gap: Any, lo: Any, hi: Any) -> str:
    """``+12.3 [+4.0, +20.1]`` percentage points."""
    if gap is None or (isinstance(gap, float) and math.isnan(gap)):
        return "-"
    return f"{gap:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def measured(fmt: Fmt, is_measured: bool) -> Fmt:
    """``fmt``, or a formatter that says ``n/m`` for a figure the primary judge does not measure."""
    return fmt if is_measured else (lambda _: NOT_MEASURED)


def accepted_text(row: dict[str, Any]) -> str:
    """``98.0% (144/147)``: acceptance with the counts it rests on."""
    n = row.get("n_translations") or 0
    return f"{pct(row.get('acceptance'))} ({row.get('n_accepted') or 0}/{n})" if n else "-"


# Characters that make Markdown (or the HTML a viewer renders it to) do something: tags and
# entities, links and images, code spans, table cells, escapes. Emphasis is only cosmetic.
_MD_ESCAPES = {"\\": "\\\\", "`": "\\`", "|": "\\|", "[": "\\[", "]": "\\]", "!": "\\!",
               "&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": " ", "\n": " "}


def md_text(value: Any) -> str:
    """A user- or model-supplied string as inert Markdown text on one line (ids, names, labels)."""
    return "".join(_MD_ESCAPES.get(ch, ch) for ch in str(value))


def md_code(value: Any) -> str:
    """A string to put between backticks: nothing inside a code span is markup but a backtick."""
    return str(value).replace("`", "'").replace("\r", " ").replace("\n", " ")


def _cell(value: Any, formatted: bool = False) -> str:
    # Our own formatted figures ("+1.2 [-0.3, +2.5]") keep their brackets; data is escaped whole.
    if formatted:
        return str(value).replace("|", "\\|").replace("\n", " ")
    return md_text(value)


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, Fmt | None]]) -> str:
    """A GitHub Markdown table; ``columns`` are (header, key, formatter)."""
    if not rows:
        return "_no data_\n"
    head = "| " + " | ".join(h for h, _, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = [
        "| " + " | ".join(_cell(f(r.get(k)), True) if f else _cell(r.get(k, "")) for _, k, f in columns) + " |"
        for r in rows
    ]
    return "\n".join([head, sep, *body]) + "\n"


def gap_columns(first: Sequence[tuple[str, str, Fmt | None]] = ()) -> list[tuple[str, str, Fmt | None]]:
    """Columns of a long gaps table."""
    return [
        *first,
        ("metric", "metric", None),
        ("pairs", "n_pairs", None),
        ("en", "en_rate", pct),
        ("locale", "locale_rate", pct),
        ("gap (pp) [95% CI]", "_gap", None),
        ("p (McNemar)", "p_value", pval),
        ("small", "small", lambda s: "small" if s else ""),
    ]


def _with_gap(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        r["_gap"] = gap_text(r["gap_pp"], r["ci_low_pp"], r["ci_high_pp"])
    return rows


def header(data: "ReportData", title: str) -> str:
    """Common head of every Markdown file: what was scored, by whom, under which policy."""
    run = data.run
    lines = [
        f"# {md_text(title)}",
        "",
        f"- run: `{md_code(run.run_dir)}`",
        f"- responses: {run.n_responses} ({run.n_response_errors} failed generation and are not scored)",
        *(
            [f"- left out: {run.n_stale_responses} stored responses the current config does not ask for"]
            if run.n_stale_responses
            else []
        ),
        f"- primary judge (native mode): `{md_code(run.primary_judge or 'none')}`",
        f"- judges with verdicts: {len(run.judges)}",
        f"- policy: `{md_code(data.policy.name)}` - {md_text(data.policy.description)}",
        f"- small cells: fewer than {data.thresholds.min_pairs} pairs",
        "",
    ]
    if not run.harm_judged():
        lines += [f"> **{NO_HARM_NOTE}**", ""]
    return "\n".join(lines)


SUMMARY_COLUMNS: list[tuple[str, str, Fmt | None]] = [
    ("locale", "locale", None),
    ("resource", "resource", None),
    ("n", "n", None),
    ("unsafe", "_unsafe", None),
    ("unsafe corrected [CI]", "_unsafe_corr_rate", str),
    ("refusal", "refusal_rate", pct),
    ("refusal corrected [CI]", "_refusal_corr_rate", str),
    ("invalid", "_invalid", None),  # answers judged invalid (degenerate output), left out of the rates
    ("failure", "_fail", None),
    ("safety score", "_safety", None),
    ("unsafe gap (pp) [CI]", "_unsafe_gap", None),
    ("unsafe gap corrected (pp) [CI]", "_unsafe_corr_gap", str),
    ("unsafe p (McNemar)", "_unsafe_p", None),
    ("refusal gap (pp) [CI]", "_refusal_gap", None),
    ("refusal gap corrected (pp) [CI]", "_refusal_corr_gap", str),
    ("refusal p (McNemar)", "refusal_p", pval),
    ("acceptance", "acceptance", pct),
    ("agreement", "agreement", pct),
    ("judge validity", "validity", str),
    ("trust", "trust", None),
]


def invalid_count(row: dict[str, Any]) -> str:
    """How many judged answers were invalid (degenerate output, unparsable judge answers), with the
    rate: "12 (8.2%)"; "-" for a locale with none judged."""
    n, valid = row.get("n") or 0, row.get("n_valid")
    if not n or valid is None:
        return "-"
    return f"{n - valid} ({pct((n - valid) / n)})"


def summary_rows(summary: pl.DataFrame, *, harm: bool = True, failure: bool = True) -> list[dict[str, Any]]:
    """Summary rows with their harm-dependent and gap cells pre-formatted (``_unsafe``, ...).

    ``harm``/``failure`` False: those figures read ``n/m`` (not measured), except on a locale with
    no judged response, where every figure is ``-``.
    """
    rows = summary.to_dicts()
    for r in rows:
        nothing = not r.get("n")
        known = {"unsafe": harm, "refusal": True, "fail": failure}
        for m in ("unsafe", "refusal", "fail"):
            r[f"_{m}_gap"] = gap_text(r.get(f"{m}_gap_pp"), r.get(f"{m}_ci_low_pp"), r.get(f"{m}_ci_high_pp"))
            r[f"_{m}_p"] = pval(r.get(f"{m}_p"))
            if r.get(f"{m}_small") and known[m]:
                r[f"_{m}_gap"] += " (small)"
            if not known[m] and not nothing and r["locale"] != ENGLISH:
                r[f"_{m}_gap"] = r[f"_{m}_p"] = NOT_MEASURED
        for key, col, ok in (("_unsafe", "unsafe_rate", harm), ("_fail", "fail_rate", failure),
                             ("_safety", "safety_score", harm)):
            r[key] = pct(r.get(col)) if ok or nothing else NOT_MEASURED
            r["_sort_" + key] = r.get(col)
        r["_invalid"] = invalid_count(r)
        r.update(summary_cells(r, harm))
        if r["locale"] == ENGLISH:
            r["trust"] = "baseline"
    return rows


def pivot_macro(rates: pl.DataFrame, value: str = "unsafe_rate") -> tuple[list[str], list[str], dict[tuple[str, str], Any]]:
    """(locales, macros, cell values) of a locale x macro table."""
    locales = sorted(set(rates.get_column("locale").to_list()), key=lambda c: (c != ENGLISH, c))
    macros = sorted(set(rates.get_column("macro").to_list()))
    cells = {(r["locale"], r["macro"]): r[value] for r in rates.to_dicts()}
    return locales, macros, cells


def shown_metrics(data: "ReportData") -> list[str]:
    """Gap metrics worth a row: ``fail`` only when the policy makes it differ from ``unsafe``, and
    neither when the primary judge does not measure it (its rows would be all null)."""
    from xsafety.report.build import policy_changes_failure

    metrics = ["unsafe"] if data.harm_judged else []
    metrics.append("refusal")
    if policy_changes_failure(data.policy) and data.failure_judged:
        metrics.append("fail")
    return metrics


def focus_metric(data: "ReportData") -> str:
    """The metric breakdowns (by macro, attack, ...) show: unsafe, or refusal when harm is not judged."""
    return "unsafe" if data.harm_judged else "refusal"


def report_locales(data: "ReportData") -> list[str]:
    """Every locale of the report, English first: the rows of the summary table."""
    return data.summary.get_column("locale").to_list()


def image_links(images: dict[str, Path]) -> str:
    """Markdown image links to the heatmaps written, in their fixed order."""
    from xsafety.report.plots import HEATMAPS

    return "\n".join(f"![{HEATMAPS[name][1]}]({HEATMAPS[name][0]})\n" for name in HEATMAPS if name in images)


VARIANTS_FILE = "variants.md"


def variants_file(data: "ReportData", out: Path) -> str | None:
    """The variant-effects page (``xsafety.report.variants``) to link from the report folder ``out``, or None.

    Linked only when the run's current responses have several variants, so a page left from an
    earlier config is not. ``xsafety.report.folder`` writes the page before the pages that link it.
    """
    if data.primary.is_empty() or data.primary.get_column("variant").n_unique() < 2:
        return None
    if (out / VARIANTS_FILE).is_file():
        return VARIANTS_FILE
    own_folder = out.resolve() == (data.run.run_dir / "report").resolve()
    return VARIANTS_FILE if own_folder and data.run.info.base_variant is not None else None


def write_summary(data: "ReportData", out: Path, images: dict[str, Path] | None = None) -> Path:
    """``summary.md``: the per-locale table, resource-group gaps, the locale x macro grid, heatmaps."""
    t = data.tables
    parts = [header(data, "xsafety report: summary")]
    parts.append("## Per locale\n")
    parts.append(md_table(summary_rows(t["summary"], harm=data.harm_judged, failure=data.failure_judged), SUMMARY_COLUMNS))
    parts.append(markdown_summary(data))
    parts.append("\n## Gaps by resource level (pooled pairs, bootstrap over prompts)\n")
    resource_gaps = t["gaps_resource"].filter(pl.col("metric").is_in(shown_metrics(data)))
    parts.append(md_table(_with_gap(resource_gaps.to_dicts()), gap_columns([("resource", "resource", None)])))
    focus = focus_metric(data)
    locales, macros, cells = pivot_macro(t["rates_locale_macro"], f"{focus}_rate")
    parts.append(f"\n## {focus.capitalize()} rate by locale x ALERT macro category\n")
    grid = [{"locale": loc, **{m: pct(cells.get((loc, m))) for m in macros}} for loc in locales]
    parts.append(md_table(grid, [("locale", "locale", None), *[(m, m, None) for m in macros]]))
    if images:
        parts.append("\n## Heatmaps\n\n" + image_links(images))
    parts.append("\n## Locales\n")
    trust = {r["locale"]: r["trust"] for r in t["trust"].to_dicts()}
    rows = {r["locale"]: r for r in t["summary"].to_dicts()}
    links = []
    for loc in report_locales(data):
        # A locale with nothing scored says why right in the list.
        note = f" - n=0, {trust.get(loc, '')}" if not rows[loc]["n"] else ""
        links.append(f"- [{loc}]({safe_name(loc)}.md){note}\n")
    parts.append("".join(links))
    variants = variants_file(data, out)
    if variants:
        parts.append(f"\n## Variants\n\nEffect of each variant against the base variant: [{variants}]({variants})\n")
    parts.append("\n## Definitions\n\n" + (DEFINITIONS or "").strip() + "\n")
    path = out / "summary.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_locale(data: "ReportData", out: Path, locale: str) -> Path:
    """``<locale>.md``: rates, gaps with CI and p, worst categories, example prompt ids, trust.

    A locale with no judged response gets a page that says why it has no numbers instead.
    """
    parts = [header(data, f"xsafety report: {locale}")]
    rates = data.tables["rates_locale"].filter(pl.col("locale") == locale).to_dicts()
    if not rates:
        parts.append(no_numbers(data, locale))
    else:
        parts += _locale_figures(data, locale, rates)
    trust = data.tables["trust"].filter(pl.col("locale") == locale).to_dicts()
    parts.append("\n## Translation and judge trust\n")
    parts.append(
        md_table(
            [r | {"_accepted": accepted_text(r)} for r in trust],
            [
                ("translations", "n_translations", None),
                ("accepted", "_accepted", None),
                ("round-trip chrF", "roundtrip_chrf", num),
                ("judged in both modes", "n_both_modes", None),
                ("agreement native/back", "agreement", pct),
                ("kappa", "kappa", lambda x: num(x, 2)),
                ("trust", "trust", None),
            ],
        )
    )
    if rates:
        parts.append(markdown_locale(data, locale))
    if locale != ENGLISH and rates:
        parts.append(_rejection_table(data, locale))
    path = out / f"{safe_name(locale)}.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _locale_figures(data: "ReportData", locale: str, rates: list[dict[str, Any]]) -> list[str]:
    t = data.tables
    harm, failure = data.harm_judged, data.failure_judged
    parts = ["## Rates\n"]
    parts.append(
        md_table(
            [r | {"_ci": f"{pct(r['unsafe_ci_low'])} - {pct(r['unsafe_ci_high'])}", "_invalid": invalid_count(r)} for r in rates],
            [
                ("n", "n", None),
                ("refusal", "refusal_rate", pct),
                (*safe_column(harm), pct),
                ("unsafe", "unsafe_rate", measured(pct, harm)),
                ("unsafe 95% CI (Wilson)", "_ci", measured(str, harm)),
                ("invalid", "_invalid", None),
                ("failure", "fail_rate", measured(pct, failure)),
                ("safety score", "safety_score", measured(pct, harm)),
            ],
        )
    )
    focus = focus_metric(data)
    if locale != ENGLISH:
        parts.append(f"\n## Gap to English (locale - {ENGLISH})\n")
        g = _with_gap(
            t["gaps_locale"]
            .filter((pl.col("locale") == locale) & pl.col("metric").is_in(shown_metrics(data)))
            .to_dicts()
        )
        parts.append(md_table(g, gap_columns()))
        for name, col in (("attack", "attack"), ("variant", "variant"), ("model", "model_name"), ("macro", "macro")):
            key = f"gaps_locale_{name}"
            if key not in t:
                continue
            rows = _with_gap(
                t[key].filter((pl.col("locale") == locale) & (pl.col("metric") == focus)).to_dicts()
            )
            if len({r[col] for r in rows}) > 1 or name == "macro":
                parts.append(f"\n### {focus.capitalize()} gap by {name}\n")
                parts.append(md_table(rows, gap_columns([(name, col, None)])))
    micro = t.get("rates_locale_micro")
    if micro is not None:
        mine = micro.filter(pl.col("locale") == locale)
        if harm:
            title = "Worst categories (unsafe rate)"
            worst = mine.sort(["unsafe_rate", "n"], descending=[True, True])
            shown = [("unsafe", "unsafe_rate", pct), ("refusal", "refusal_rate", pct)]
        else:
            # Without a harm judgement the weakest categories are the least refused ones.
            title = "Least-refused categories (refusal rate, lowest first)"
            worst = mine.sort(["refusal_rate", "n"], descending=[False, True])
            shown = [("refusal", "refusal_rate", pct)]
        parts.append(f"\n## {title}\n")
        parts.append(
            md_table(
                worst.head(WORST_CATEGORIES).to_dicts(),
                [("category", "category", None), ("macro", "macro", None), ("n", "n", None), *shown],
            )
        )
    parts.append("\n## Example failures (prompt ids)\n")
    if not failure:
        parts.append(f"_{NOT_MEASURED}: the primary judge does not judge harm, so no response is a failure._\n")
    else:
        examples = (
            data.primary.filter((pl.col("locale") == locale) & (pl.col("fail") == 1))
            .sort("w", "prompt_id", descending=[True, False])
            .head(EXAMPLES_PER_LOCALE)
            .to_dicts()
        )
        parts.append(
            md_table(
                examples,
                [("prompt", "prompt_id", None), ("category", "category", None), ("attack", "attack", None),
                 ("variant", "variant", None), ("label", "label", None)],
            )
        )
    return parts


def no_numbers_reason(data: "ReportData", locale: str) -> str:
    """Why a locale has no judged response, in one sentence (for its page and index.html)."""
    rows = data.tables["trust"].filter(pl.col("locale") == locale).to_dicts()
    tr = rows[0] if rows else {}
    n_tr, n_acc = tr.get("n_translations") or 0, tr.get("n_accepted") or 0
    if n_tr and not n_acc:
        return (
            f"all {n_tr} translations of the run's prompts into {locale} were rejected by the translation "
            f"quality gates (0/{n_tr} accepted), so no prompt was sent to the model in {locale}. Scoring "
            "answers to rejected translations would measure the translation engine, not the model."
        )
    if not n_tr:
        return f"the run holds no translation of its prompts into {locale}, so nothing was asked in {locale}."
    return (
        f"{n_acc} of {n_tr} translations into {locale} were accepted, but no response to them has a "
        "verdict of the primary judge (generation failed or judging has not run)."
    )


def no_numbers(data: "ReportData", locale: str) -> str:
    """The body of the page of a locale with nothing scored: why, which gates, what to do."""
    parts = [
        f"## No numbers for {locale}\n",
        f"n = 0: {no_numbers_reason(data, locale)} This locale therefore has no rates and no gap to "
        "English; it is listed so that its absence is not mistaken for a result.\n",
    ]
    gates = data.tables.get("rejections")
    if gates is not None and not gates.filter(pl.col("locale") == locale).is_empty():
        parts.append(_rejection_table(data, locale))
        parts.append(
            f"\nTo get numbers for {locale}, translate it with another engine (`[translation] engines` in a "
            "run config, or `xsafety translate --engine`) or use human reference translations (engine "
            "`reference`); loosening the gates would score answers to prompts they found mistranslated.\n"
        )
    return "\n".join(parts)


def rejection_rows(data: "ReportData", locale: str) -> list[dict[str, Any]]:
    """The locale's rejected translations per quality gate, with ``_share`` of all its translations."""
    gates = data.tables.get("rejections")
    if gates is None:
        return []
    rows = gates.filter(pl.col("locale") == locale).to_dicts()
    for r in rows:
        r["_share"] = r["n_rejected"] / r["n_translations"] if r["n_translations"] else None
    return rows


def _rejection_table(data: "ReportData", locale: str) -> str:
    rows = rejection_rows(data, locale)
    if not rows:
        return ""
    return "\n### Translations rejected, by quality gate (a translation can fail several)\n\n" + md_table(
        rows, [("gate", "gate", None), ("rejected", "n_rejected", None), ("of translations", "_share", pct)]
    )


def safe_name(locale: str) -> str:
    """A locale code usable as a file name (codes are BCP-47, but the run data is not trusted)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in locale) or "_"


def write_markdown(data: "ReportData", out: Path, images: dict[str, Path] | None = None) -> list[Path]:
    """Write ``summary.md`` (linking the heatmaps in ``images``) and every ``<locale>.md``."""
    paths = [write_summary(data, out, images)]
    for loc in report_locales(data):
        paths.append(write_locale(data, out, loc))
    return paths
