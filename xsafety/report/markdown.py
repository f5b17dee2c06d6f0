"""Markdown reports: ``summary.md`` and one ``<locale>.md`` per locale."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from xsafety.report.aggregate import __doc__ as DEFINITIONS
from xsafety.report.frame import ENGLISH

if TYPE_CHECKING:
    from xsafety.report.build import ReportData

Fmt = Callable[[Any], str]
EXAMPLES_PER_LOCALE = 10
NO_HARM_NOTE = (
    "The primary judge does not judge harm (it detects refusals only): unsafe rates and gaps are "
    "not a harm measurement here; read the refusal columns, or judge with a guard model."
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


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, Fmt | None]]) -> str:
    """A GitHub Markdown table; ``columns`` are (header, key, formatter)."""
    if not rows:
        return "_no data_\n"
    head = "| " + " | ".join(h for h, _, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = [
        "| " + " | ".join(_cell(f(r.get(k)) if f else r.get(k, "")) for _, k, f in columns) + " |" for r in rows
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
        f"# {title}",
        "",
        f"- run: `{run.run_dir}`",
        f"- responses: {run.n_responses} ({run.n_response_errors} failed generation and are not scored)",
        *(
            [f"- left out: {run.n_stale_responses} stored responses the current config does not ask for"]
            if run.n_stale_responses
            else []
        ),
        f"- primary judge (native mode): `{run.primary_judge or 'none'}`",
        f"- judges with verdicts: {len(run.judges)}",
        f"- policy: `{data.policy.name}` - {data.policy.description}",
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
    ("unsafe", "unsafe_rate", pct),
    ("refusal", "refusal_rate", pct),
    ("failure", "fail_rate", pct),
    ("safety score", "safety_score", pct),
    ("unsafe gap (pp) [CI]", "_unsafe_gap", None),
    ("p", "unsafe_p", pval),
    ("refusal gap (pp) [CI]", "_refusal_gap", None),
    ("p ", "refusal_p", pval),
    ("acceptance", "acceptance", pct),
    ("agreement", "agreement", pct),
    ("trust", "trust", None),
]


def summary_rows(summary: pl.DataFrame) -> list[dict[str, Any]]:
    """Summary rows with their gap cells pre-formatted."""
    rows = summary.to_dicts()
    for r in rows:
        for m in ("unsafe", "refusal", "fail"):
            r[f"_{m}_gap"] = gap_text(r.get(f"{m}_gap_pp"), r.get(f"{m}_ci_low_pp"), r.get(f"{m}_ci_high_pp"))
            if r.get(f"{m}_small"):
                r[f"_{m}_gap"] += " (small)"
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
    """Gap metrics worth a row: ``fail`` only when the policy makes it differ from ``unsafe``."""
    from xsafety.report.build import policy_changes_failure

    return ["unsafe", "refusal", "fail"] if policy_changes_failure(data.policy) else ["unsafe", "refusal"]


VARIANTS_FILE = "variants.md"


def variants_file(data: "ReportData", out: Path) -> str | None:
    """The variant-effects page (``xsafety.variants``) to link from the report folder ``out``, or None.

    Linked only when the run's current responses have several variants, so a page left from an
    earlier config is not. The orchestrator writes the page right after the report, so on a run's
    first report it is not there yet: in the run's own report folder a base variant in ``run.json``
    says it is coming.
    """
    if data.primary.is_empty() or data.primary.get_column("variant").n_unique() < 2:
        return None
    if (out / VARIANTS_FILE).is_file():
        return VARIANTS_FILE
    own_folder = out.resolve() == (data.run.run_dir / "report").resolve()
    return VARIANTS_FILE if own_folder and isinstance(data.run.info.get("base_variant"), str) else None


def write_summary(data: "ReportData", out: Path) -> Path:
    """``summary.md``: the per-locale table, resource-group gaps and the locale x macro grid."""
    t = data.tables
    parts = [header(data, "xsafety report: summary")]
    parts.append("## Per locale\n")
    parts.append(md_table(summary_rows(t["summary"]), SUMMARY_COLUMNS))
    parts.append("\n## Gaps by resource level (pooled pairs, bootstrap over prompts)\n")
    resource_gaps = t["gaps_resource"].filter(pl.col("metric").is_in(shown_metrics(data)))
    parts.append(md_table(_with_gap(resource_gaps.to_dicts()), gap_columns([("resource", "resource", None)])))
    locales, macros, cells = pivot_macro(t["rates_locale_macro"])
    parts.append("\n## Unsafe rate by locale x ALERT macro category\n")
    grid = [{"locale": loc, **{m: pct(cells.get((loc, m))) for m in macros}} for loc in locales]
    parts.append(md_table(grid, [("locale", "locale", None), *[(m, m, None) for m in macros]]))
    parts.append("\n![unsafe rate heatmap](heatmap_unsafe.png)\n\n![gap heatmap](heatmap_gap.png)\n")
    parts.append("\n## Locales\n")
    parts.extend(f"- [{loc}]({loc}.md)\n" for loc in locales)
    variants = variants_file(data, out)
    if variants:
        parts.append(f"\n## Variants\n\nEffect of each variant against the base variant: [{variants}]({variants})\n")
    parts.append("\n## Definitions\n\n" + (DEFINITIONS or "").strip() + "\n")
    path = out / "summary.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def write_locale(data: "ReportData", out: Path, locale: str) -> Path:
    """``<locale>.md``: rates, gaps with CI and p, worst categories, example prompt ids, trust."""
    t = data.tables
    parts = [header(data, f"xsafety report: {locale}")]
    rates = t["rates_locale"].filter(pl.col("locale") == locale).to_dicts()
    parts.append("## Rates\n")
    parts.append(
        md_table(
            [r | {"_ci": f"{pct(r['unsafe_ci_low'])} - {pct(r['unsafe_ci_high'])}"} for r in rates],
            [
                ("n", "n", None),
                ("refusal", "refusal_rate", pct),
                ("safe", "safe_rate", pct),
                ("unsafe", "unsafe_rate", pct),
                ("unsafe 95% CI (Wilson)", "_ci", None),
                ("invalid", "invalid_rate", pct),
                ("failure", "fail_rate", pct),
                ("safety score", "safety_score", pct),
            ],
        )
    )
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
                t[key].filter((pl.col("locale") == locale) & (pl.col("metric") == "unsafe")).to_dicts()
            )
            if len({r[col] for r in rows}) > 1 or name == "macro":
                parts.append(f"\n### Unsafe gap by {name}\n")
                parts.append(md_table(rows, gap_columns([(name, col, None)])))
    micro = t.get("rates_locale_micro")
    if micro is not None:
        worst = (
            micro.filter(pl.col("locale") == locale)
            .sort(["unsafe_rate", "n"], descending=[True, True])
            .head(WORST_CATEGORIES)
            .to_dicts()
        )
        parts.append("\n## Worst categories (unsafe rate)\n")
        parts.append(
            md_table(
                worst,
                [
                    ("category", "category", None),
                    ("macro", "macro", None),
                    ("n", "n", None),
                    ("unsafe", "unsafe_rate", pct),
                    ("refusal", "refusal_rate", pct),
                ],
            )
        )
    examples = (
        data.primary.filter((pl.col("locale") == locale) & (pl.col("fail") == 1))
        .sort("w", "prompt_id", descending=[True, False])
        .head(EXAMPLES_PER_LOCALE)
        .to_dicts()
    )
    parts.append("\n## Example failures (prompt ids)\n")
    parts.append(
        md_table(
            examples,
            [("prompt", "prompt_id", None), ("category", "category", None), ("attack", "attack", None),
             ("variant", "variant", None), ("label", "label", None)],
        )
    )
    trust = data.tables["trust"].filter(pl.col("locale") == locale).to_dicts()
    parts.append("\n## Translation and judge trust\n")
    parts.append(
        md_table(
            trust,
            [
                ("translations", "n_translations", None),
                ("accepted", "acceptance", pct),
                ("round-trip chrF", "roundtrip_chrf", num),
                ("judged in both modes", "n_both_modes", None),
                ("agreement native/back", "agreement", pct),
                ("kappa", "kappa", lambda x: num(x, 2)),
                ("trust", "trust", None),
            ],
        )
    )
    path = out / f"{safe_name(locale)}.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def safe_name(locale: str) -> str:
    """A locale code usable as a file name (codes are BCP-47, but the run data is not trusted)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in locale) or "_"


def write_markdown(data: "ReportData", out: Path) -> list[Path]:
    """Write ``summary.md`` and every ``<locale>.md``."""
    paths = [write_summary(data, out)]
    for loc in data.tables["summary"].get_column("locale").to_list():
        paths.append(write_locale(data, out, loc))
    return paths
