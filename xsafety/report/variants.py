"""The effect of a variant (a mitigation such as a safety system prompt) against the base variant.

XSafety's mitigation is a safety system prompt written in the target language. A run that has
several variants answers each prompt under each of them, so the effect of a variant is a paired
difference: the same prompt, model, attack and locale, under the variant and under the base.
Per locale (and pooled over locales), for the unsafe, refusal and failure rates:

    effect = rate(variant) - rate(base), in percentage points,

with a 95% CI from the report's paired cluster bootstrap over prompts and an exact McNemar p.
The pairs, weights and failure definitions are the report's own (``xsafety.report``), so these
numbers are consistent with the rest of the report. Output: ``variants.csv``, ``variants.parquet``
and ``variants.md`` in the report folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from xsafety.report.aggregate import METRICS, Thresholds, paired_diff, prompt_clusters
from xsafety.report.build import ReportData
from xsafety.report.csvsafe import write_csv
from xsafety.report.stats import DEFAULT_B, DEFAULT_SEED

VARIANT_PAIR_KEY = ["model", "base_set", "base_id", "attack", "locale"]
ALL_LOCALES = "all"

SCHEMA: dict[str, Any] = {
    "model": pl.Utf8,
    "attack": pl.Utf8,
    "locale": pl.Utf8,
    "variant": pl.Utf8,
    "base": pl.Utf8,
    "metric": pl.Utf8,
    "n_pairs": pl.Int64,
    "base_rate": pl.Float64,
    "variant_rate": pl.Float64,
    "effect_pp": pl.Float64,
    "ci_low_pp": pl.Float64,
    "ci_high_pp": pl.Float64,
    "b_variant_only": pl.Int64,
    "c_base_only": pl.Int64,
    "p_value": pl.Float64,
    "small": pl.Boolean,
}


def variant_effects(
    primary: pl.DataFrame,
    base: str,
    *,
    thresholds: Thresholds = Thresholds(),
    n_boot: int = DEFAULT_B,
    seed: int = DEFAULT_SEED,
) -> pl.DataFrame:
    """Paired effect of every variant vs ``base``, per (model, attack, locale) and pooled over locales.

    ``primary`` is the report's primary frame (one row per response, with ``w`` and 0/1 metric
    columns). Only valid verdicts pair; a prompt missing under either variant is left out.
    """
    valid = primary.filter(pl.col("invalid") == 0)
    base_rows = valid.filter(pl.col("variant") == base).select(
        *VARIANT_PAIR_KEY, *[pl.col(m).alias(f"{m}_base") for m in METRICS]
    )
    others = valid.filter(pl.col("variant") != base)
    rows: list[dict[str, Any]] = []
    if others.is_empty() or base_rows.is_empty():
        return pl.DataFrame(schema=SCHEMA)
    joined = others.join(base_rows, on=VARIANT_PAIR_KEY, how="inner")
    pooled = joined.with_columns(pl.lit(ALL_LOCALES).alias("locale"))
    groups = ["model_name", "attack", "locale", "variant"]
    for frame in (joined, pooled):
        for key, part in sorted(frame.partition_by(groups, as_dict=True).items(), key=lambda kv: str(kv[0])):
            model, attack, locale, variant = key
            # Clustered on the prompt: the pooled row does not count one prompt's locales as
            # independent evidence.
            clusters = prompt_clusters(part)
            for metric in METRICS:
                res = paired_diff(part, metric, "_base", n_boot=n_boot, seed=seed, clusters=clusters)
                rows.append(
                    {
                        "model": model,
                        "attack": attack,
                        "locale": locale,
                        "variant": variant,
                        "base": base,
                        "metric": metric,
                        "n_pairs": res.n_pairs,
                        "base_rate": res.rate_a,
                        "variant_rate": res.rate_b,
                        "effect_pp": 100 * res.diff,
                        "ci_low_pp": 100 * res.ci_low,
                        "ci_high_pp": 100 * res.ci_high,
                        "b_variant_only": res.b,
                        "c_base_only": res.c,
                        "p_value": res.p_value,
                        "small": res.n_pairs < thresholds.min_pairs,
                    }
                )
    return pl.DataFrame(rows, schema=SCHEMA) if rows else pl.DataFrame(schema=SCHEMA)


def _fmt(row: dict[str, Any]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None or x != x else f"{100 * x:.1f}%"

    ci = f"[{row['ci_low_pp']:+.1f}, {row['ci_high_pp']:+.1f}]"
    flag = " (small)" if row["small"] else ""
    return (
        f"| {row['model']} | {row['attack']} | {row['locale']} | {row['variant']} | {row['metric']} | "
        f"{row['n_pairs']}{flag} | {pct(row['base_rate'])} | {pct(row['variant_rate'])} | "
        f"{row['effect_pp']:+.1f} {ci} | {row['p_value']:.3g} |"
    )


def write_variant_effects(data: ReportData, report_dir: str | Path) -> Path | None:
    """Variant effects against the run's base variant (``run.json``), written into the report
    folder; None with one variant or no base variant recorded."""
    primary, base = data.primary, data.run.info.base_variant
    if base is None or primary.is_empty() or primary.get_column("variant").n_unique() < 2:
        return None
    effects = variant_effects(primary, base)
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(effects, out / "variants.csv")  # formula cells neutralised (csvsafe)
    effects.write_parquet(out / "variants.parquet")
    lines = [
        "# Variants vs the base variant",
        "",
        f"Effect of each variant against `{base}`: the same prompt, model, attack and locale under both; "
        "effect = variant rate - base rate in percentage points, 95% CI from a paired bootstrap over "
        "prompts, p from an exact McNemar test. Negative unsafe/fail effects and positive refusal "
        "effects mean the variant made the model safer. `all` pools the locales (clustered by prompt).",
        "",
        "| model | attack | locale | variant | metric | pairs | base | variant | effect pp [95% CI] | p |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[_fmt(r) for r in effects.iter_rows(named=True)],
        "",
        *(["No prompt has a valid verdict under both variants yet."] if effects.is_empty() else []),
    ]
    path = out / "variants.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
