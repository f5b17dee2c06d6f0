"""Translation error in the report: does a locale's gap survive on its well-translated items?

A mistranslated prompt can change what the model is asked, so part of a gap may be the
translation's doing. Per locale this puts the gap on all items beside the gap on the items whose
translation quality score is above the locale's median, and, where a locale used several
translation engines, the gap per engine. A gap that is clear on all items (its CI excludes 0) but
not on the better-translated half, where it is also at most half as large, is flagged "only on
poorly translated items".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from xsafety.records import Translation
from xsafety.report.aggregate import paired_diff, paired_frame
from xsafety.report.frame import ENGLISH, RunData
from xsafety.report.stats import DEFAULT_B, DEFAULT_SEED
from xsafety.store import Store

INFO_SCHEMA: dict[str, Any] = {
    "set": pl.Utf8, "prompt_id": pl.Utf8, "locale": pl.Utf8, "tr_quality": pl.Float64, "tr_engine": pl.Utf8,
    "tr_back": pl.Boolean,
    # Gates a human reference failed but was kept under the exemption (xsafety.translate.stage).
    "tr_exempt": pl.List(pl.Utf8),
}
SENSITIVITY_SCHEMA: dict[str, Any] = {
    "locale": pl.Utf8, "metric": pl.Utf8, "subset": pl.Utf8, "n_pairs": pl.Int64, "gap_pp": pl.Float64,
    "ci_low_pp": pl.Float64, "ci_high_pp": pl.Float64, "flag": pl.Utf8,
}
POOR_ONLY = "gap only on poorly translated items"


def engine_name(signature: str) -> str:
    """An engine signature (``apertium|version:3.8|pair:en-es``) as a reader knows it (``apertium``)."""
    return signature.split("|", 1)[0] or "unknown"


def translation_info(run: RunData) -> pl.DataFrame:
    """Per (set, prompt, locale) the run answered: the translation's quality score and engine."""
    from xsafety.report.frame import _translations_for

    pairs = {(r["set"], r["locale"]) for r in run.verdicts.select("set", "locale").unique().to_dicts()
             if r["locale"] != ENGLISH}
    if not pairs:
        return pl.DataFrame(schema=INFO_SCHEMA)
    found: dict[tuple[str, str, str], Translation] = _translations_for(Store(run.run_dir))
    rows = [
        {"set": k[0], "prompt_id": k[2], "locale": k[1], "tr_quality": t.quality, "tr_engine": engine_name(t.engine),
         "tr_back": bool(t.back), "tr_exempt": _exempt_gates(t)}
        for k, t in found.items()
        if (k[0], k[1]) in pairs
    ]
    return pl.DataFrame(rows, schema=INFO_SCHEMA) if rows else pl.DataFrame(schema=INFO_SCHEMA)


def _exempt_gates(t: Translation) -> list[str]:
    """The gates a kept human reference failed (empty for any other translation)."""
    if not t.accepted or engine_name(t.engine) != "reference":
        return []
    return [g.name for g in t.gates if not g.passed]


def locale_engines(info: pl.DataFrame) -> dict[str, list[str]]:
    """Locale -> the translation engines its answered prompts came from."""
    out: dict[str, list[str]] = {}
    for r in info.select("locale", "tr_engine").unique().sort("locale", "tr_engine").to_dicts():
        out.setdefault(r["locale"], []).append(r["tr_engine"])
    return out


def _row(locale: str, metric: str, subset: str, part: pl.DataFrame, n_boot: int, seed: int) -> dict[str, Any]:
    if part.is_empty():
        return {"locale": locale, "metric": metric, "subset": subset, "n_pairs": 0, "gap_pp": None,
                "ci_low_pp": None, "ci_high_pp": None, "flag": ""}
    res = paired_diff(part, metric, "_en", n_boot=n_boot, seed=seed)
    return {"locale": locale, "metric": metric, "subset": subset, "n_pairs": res.n_pairs, "gap_pp": 100 * res.diff,
            "ci_low_pp": 100 * res.ci_low, "ci_high_pp": 100 * res.ci_high, "flag": ""}


def _clear(row: dict[str, Any]) -> bool:
    lo, hi = row.get("ci_low_pp"), row.get("ci_high_pp")
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


def _poor_only(everything: dict[str, Any], good: dict[str, Any]) -> bool:
    """A clear gap on all items that the better-translated half does not carry: not clear there
    and at most half as large (or of the other sign). Half the items alone widen the CI, so a
    CI that merely reaches 0 on the half is not evidence that the translation made the gap."""
    if not _clear(everything) or _clear(good) or good.get("gap_pp") is None:
        return False
    whole, half = everything["gap_pp"], good["gap_pp"]
    return half * whole <= 0 or abs(half) <= abs(whole) / 2


def sensitivity(
    primary: pl.DataFrame,
    info: pl.DataFrame,
    metrics: Sequence[str],
    *,
    n_boot: int = DEFAULT_B,
    seed: int = DEFAULT_SEED,
) -> pl.DataFrame:
    """Per locale and metric: gap on all items, above the locale's median quality, and per engine."""
    joined = paired_frame(primary)
    if joined.is_empty() or info.is_empty():
        return pl.DataFrame(schema=SENSITIVITY_SCHEMA)
    joined = joined.join(info, on=["set", "prompt_id", "locale"], how="left")
    rows: list[dict[str, Any]] = []
    for locale in sorted(set(joined.get_column("locale").to_list())):
        part = joined.filter(pl.col("locale") == locale)
        scored = part.filter(pl.col("tr_quality").is_not_null())
        median = scored.get_column("tr_quality").median() if not scored.is_empty() else None
        engines = sorted(set(part.get_column("tr_engine").drop_nulls().to_list()))
        for metric in metrics:
            everything = _row(locale, metric, "all items", part, n_boot, seed)
            subsets = [everything]
            if median is not None:
                good = _row(locale, metric, f"quality above median ({median:.2f})",
                            scored.filter(pl.col("tr_quality") > median), n_boot, seed)
                subsets.append(good)
                if _poor_only(everything, good):
                    everything["flag"] = POOR_ONLY
            if len(engines) > 1:
                subsets += [_row(locale, metric, f"engine {e}", part.filter(pl.col("tr_engine") == e), n_boot, seed)
                            for e in engines]
            rows += subsets
    return pl.DataFrame(rows, schema=SENSITIVITY_SCHEMA) if rows else pl.DataFrame(schema=SENSITIVITY_SCHEMA)


EXEMPT_SCHEMA: dict[str, Any] = {"locale": pl.Utf8, "gate": pl.Utf8, "n_exempt": pl.Int64, "n_translations": pl.Int64}


def exemptions(run: RunData, info: pl.DataFrame) -> pl.DataFrame:
    """Per locale and gate: human reference translations kept although that gate failed them."""
    tr = run.translations
    if tr.is_empty() or info.is_empty():
        return pl.DataFrame(schema=EXEMPT_SCHEMA)
    totals = tr.group_by("locale").agg(pl.len().alias("n_translations"))
    kept = (
        info.filter(pl.col("tr_exempt").list.len() > 0)
        .select("locale", pl.col("tr_exempt").alias("gate"))
        .explode("gate")
        .group_by("locale", "gate")
        .agg(pl.len().alias("n_exempt"))
    )
    return kept.join(totals, on="locale", how="left").sort("locale", "gate").select(list(EXEMPT_SCHEMA)).cast(EXEMPT_SCHEMA)
