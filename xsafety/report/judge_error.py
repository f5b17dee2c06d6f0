"""The report's judge-validity tables: which locales are validated, and gaps corrected for judge error.

Calibration for a report comes from the file a run config names (``[report] calibration``) or
``xsafety report --calibration`` gives, if it describes the primary judge, plus the run's own
annotations (``xsafety annotate import``) scored against the primary judge's current native
verdicts. A locale with labels gets "validated on N labels" and, where English is validated too,
a corrected gap; every other locale is "unvalidated" and keeps only its raw gap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from xsafety.report.aggregate import paired_frame
from xsafety.report.correct import corrected_gap, corrected_rate
from xsafety.report.frame import ENGLISH, RunData
from xsafety.report.stats import DEFAULT_B, DEFAULT_SEED, paired_bootstrap
from xsafety.report.validity import (
    VALIDITY_METRICS,
    Calibration,
    judge_applies,
    read_calibration,
    validity_rows,
)
from xsafety.runinfo import RunInfo

log = logging.getLogger(__name__)

VALIDITY_SCHEMA: dict[str, Any] = {
    "locale": pl.Utf8, "metric": pl.Utf8, "n_labels": pl.Int64, "n_positive": pl.Int64, "n_negative": pl.Int64,
    "sensitivity": pl.Float64, "sensitivity_low": pl.Float64, "sensitivity_high": pl.Float64,
    "specificity": pl.Float64, "specificity_low": pl.Float64, "specificity_high": pl.Float64,
    "sources": pl.Utf8, "validity": pl.Utf8, "validity_short": pl.Utf8,
}
CORRECTED_SCHEMA: dict[str, Any] = {
    "locale": pl.Utf8, "metric": pl.Utf8, "n_pairs": pl.Int64,
    "raw_gap_pp": pl.Float64, "raw_ci_low_pp": pl.Float64, "raw_ci_high_pp": pl.Float64,
    "corr_en_rate": pl.Float64, "corr_locale_rate": pl.Float64, "corr_locale_low": pl.Float64,
    "corr_locale_high": pl.Float64,
    "corr_gap_pp": pl.Float64, "corr_ci_low_pp": pl.Float64, "corr_ci_high_pp": pl.Float64,
    "judge_ci_low_pp": pl.Float64, "judge_ci_high_pp": pl.Float64,
    "sign_can_flip": pl.Boolean, "status": pl.Utf8,
}


def calibration_path(run: RunData, explicit: str | Path | None = None) -> Path | None:
    """The calibration file to use: ``explicit``, else the run config's ``[report] calibration``.

    A relative path in a config is taken relative to the config file, as a user writing it expects.
    """
    if explicit is not None:
        return Path(explicit)
    return config_calibration_path(run.info, run.run_dir)


def config_calibration_path(info: RunInfo, run_dir: Path) -> Path | None:
    """The calibration file a run config's ``[report] calibration`` names (None without one);
    also what ``xsafety run`` hashes into the report's stamp, so editing the file rebuilds it."""
    report = info.config.get("report")
    named = report.get("calibration") if isinstance(report, dict) else None
    if not isinstance(named, str) or not named:
        return None
    path = Path(named)
    if not path.is_absolute():
        source = info.config_file
        base = Path(source).parent if source else Path(run_dir)
        path = base / path
    return path


def load_calibration(run: RunData, primary: pl.DataFrame, explicit: str | Path | None = None) -> tuple[Calibration, list[str]]:
    """The run's calibration (file + own annotations) and notes on what was left out and why."""
    notes: list[str] = []
    cal = Calibration(judge=run.primary_judge)
    path = calibration_path(run, explicit)
    if path is not None:
        from_file = read_calibration(path)
        if judge_applies(from_file.judge, run.primary_judge):
            cal = cal.merged(from_file)
        else:
            notes.append(
                f"calibration file {path.name} describes judge {from_file.judge}, not the primary judge "
                f"{run.primary_judge}: not used"
            )
    try:
        from xsafety.annotate.labels import run_calibration

        predicted = dict(zip(primary.get_column("response_key").to_list(), primary.get_column("label").to_list()))
        own = run_calibration(run.run_dir, predicted, run.primary_judge)
    except Exception as exc:  # a damaged labels file costs its labels, not the report
        log.warning("report: cannot read the run's annotations: %s", exc)
        notes.append(f"the run's annotations could not be read: {exc}")
        own = Calibration()
    return cal.merged(own), notes


def validity_table(cal: Calibration, locales: Sequence[str], metrics: Sequence[str]) -> pl.DataFrame:
    """Per locale and metric: sensitivity/specificity with intervals and labels, or "unvalidated"."""
    rows = validity_rows(cal, locales, metrics)
    return pl.DataFrame(rows, schema=VALIDITY_SCHEMA) if rows else pl.DataFrame(schema=VALIDITY_SCHEMA)


def _status(cal: Calibration, locale: str, metric: str) -> str | None:
    """Why a locale's gap cannot be corrected, or None when it can."""
    own, en = cal.get(locale, metric), cal.get(ENGLISH, metric)
    if own is None:
        return "unvalidated"
    if not own.usable:
        return "judge not usable here (too few labels of one class, or no better than chance)"
    if en is None or not en.usable:
        return "English unvalidated: no corrected gap"
    return None


def corrected_gaps(
    primary: pl.DataFrame,
    cal: Calibration,
    metrics: Sequence[str],
    *,
    n_boot: int = DEFAULT_B,
    seed: int = DEFAULT_SEED,
) -> pl.DataFrame:
    """Per locale and metric: the raw gap beside the corrected one, its intervals, and the sign note."""
    joined = paired_frame(primary)
    rows: list[dict[str, Any]] = []
    english = primary.filter((pl.col("locale") == ENGLISH) & (pl.col("invalid") == 0))
    if not english.is_empty():
        # English has no gap, but its corrected rate is what every corrected gap is measured from.
        clusters = (english.get_column("base_set") + "/" + english.get_column("base_id")).to_numpy()
        for metric in metrics:
            own = cal.get(ENGLISH, metric)
            row = dict.fromkeys(CORRECTED_SCHEMA) | {"locale": ENGLISH, "metric": metric, "n_pairs": 0,
                                                     "status": "baseline" if own is not None else "unvalidated"}
            if metric in VALIDITY_METRICS and own is not None and own.usable:
                rate = corrected_rate(english.get_column(metric).to_numpy(), own, clusters,
                                      english.get_column("w").to_numpy(), n_boot=n_boot, seed=seed)
                row.update(corr_en_rate=rate.rate, corr_locale_rate=rate.rate, corr_locale_low=rate.ci_low,
                           corr_locale_high=rate.ci_high)
            rows.append({k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()})
    for locale in sorted(set(joined.get_column("locale").to_list())):
        part = joined.filter(pl.col("locale") == locale)
        clusters = (part.get_column("base_set") + "/" + part.get_column("base_id")).to_numpy()
        w = part.get_column("w").to_numpy()
        for metric in metrics:
            if metric not in VALIDITY_METRICS:
                continue
            en, loc = part.get_column(f"{metric}_en").to_numpy(), part.get_column(metric).to_numpy()
            raw = paired_bootstrap(en, loc, clusters, w, n_boot=n_boot, seed=seed)
            status = _status(cal, locale, metric)
            row: dict[str, Any] = {
                "locale": locale, "metric": metric, "n_pairs": raw.n_pairs,
                "raw_gap_pp": 100 * raw.diff, "raw_ci_low_pp": 100 * raw.ci_low, "raw_ci_high_pp": 100 * raw.ci_high,
                "corr_en_rate": None, "corr_locale_rate": None, "corr_locale_low": None, "corr_locale_high": None,
                "corr_gap_pp": None, "corr_ci_low_pp": None, "corr_ci_high_pp": None,
                "judge_ci_low_pp": None, "judge_ci_high_pp": None, "sign_can_flip": None,
                "status": status or "corrected",
            }
            own = cal.get(locale, metric)
            if own is not None and own.usable:
                rate = corrected_rate(loc, own, clusters, w, n_boot=n_boot, seed=seed)
                row.update(corr_locale_rate=rate.rate, corr_locale_low=rate.ci_low, corr_locale_high=rate.ci_high)
            if status is None:
                en_cal = cal.get(ENGLISH, metric)
                assert own is not None and en_cal is not None
                g = corrected_gap(en, loc, en_cal, own, clusters, w, n_boot=n_boot, seed=seed)
                row.update(
                    corr_en_rate=g.en_rate, corr_locale_rate=g.locale_rate,
                    corr_gap_pp=100 * g.gap, corr_ci_low_pp=100 * g.ci_low, corr_ci_high_pp=100 * g.ci_high,
                    judge_ci_low_pp=100 * g.judge_low, judge_ci_high_pp=100 * g.judge_high,
                    sign_can_flip=g.sign_can_flip,
                )
            rows.append({k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()})
    return pl.DataFrame(rows, schema=CORRECTED_SCHEMA) if rows else pl.DataFrame(schema=CORRECTED_SCHEMA)


def corrected_text(row: dict[str, Any] | None) -> str:
    """``+12.3 [+1.0, +25.0]``, with "sign can flip within the judge's uncertainty" where it can."""
    if not row:
        return "-"
    if row.get("corr_gap_pp") is None:
        return str(row.get("status") or "unvalidated")
    text = f"{row['corr_gap_pp']:+.1f} [{row['corr_ci_low_pp']:+.1f}, {row['corr_ci_high_pp']:+.1f}]"
    if row.get("sign_can_flip"):
        text += "; sign can flip within the judge's uncertainty"
    return text


def judged_metrics(harm_judged: bool) -> list[str]:
    """The metrics a judge's validity is reported for: refusal, and unsafe when it judges harm."""
    return ["unsafe", "refusal"] if harm_judged else ["refusal"]


def add_to_summary(summary: pl.DataFrame, corrected: pl.DataFrame, validity: pl.DataFrame, focus: str) -> pl.DataFrame:
    """The summary with, per metric, the corrected rate and gap beside the raw ones, and the locale's
    validity for ``focus`` (the headline metric) in words."""
    out = summary
    for metric in sorted(set(corrected.get_column("metric").to_list())):
        part = corrected.filter(pl.col("metric") == metric).select(
            "locale",
            pl.col("corr_locale_rate").alias(f"{metric}_corr_rate"),
            pl.col("corr_locale_low").alias(f"{metric}_corr_rate_low"),
            pl.col("corr_locale_high").alias(f"{metric}_corr_rate_high"),
            pl.col("corr_gap_pp").alias(f"{metric}_corr_gap_pp"),
            pl.col("corr_ci_low_pp").alias(f"{metric}_corr_ci_low_pp"),
            pl.col("corr_ci_high_pp").alias(f"{metric}_corr_ci_high_pp"),
            pl.col("sign_can_flip").alias(f"{metric}_sign_can_flip"),
            pl.col("status").alias(f"{metric}_corr_status"),
        )
        out = out.join(part, on="locale", how="left")
    v = validity.filter(pl.col("metric") == focus).select("locale", "n_labels", pl.col("validity_short").alias("validity"))
    return out.join(v, on="locale", how="left").with_columns(
        pl.col("validity").fill_null("unvalidated"), pl.col("n_labels").fill_null(0),
    )


AGREEMENT_SCHEMA: dict[str, Any] = {"locale": pl.Utf8, "n_items": pl.Int64, "agreement": pl.Float64, "kappa": pl.Float64}


def annotator_agreement(run: RunData) -> pl.DataFrame:
    """Per locale: how far two annotators of the same items agree (raw share and Cohen's kappa)."""
    try:
        from xsafety.annotate.labels import agreement

        rows = agreement(run.run_dir)
    except Exception as exc:  # a damaged labels file costs this table, not the report
        log.warning("report: cannot read the run's annotations: %s", exc)
        rows = []
    return pl.DataFrame(rows, schema=AGREEMENT_SCHEMA) if rows else pl.DataFrame(schema=AGREEMENT_SCHEMA)


def validity_caption(summary: pl.DataFrame) -> str:
    """One line for the terminal summary: which locales' judge is validated, which not."""
    if "validity" not in summary.columns:
        return ""
    rows = [r for r in summary.to_dicts() if r.get("n")]
    done = [f"{r['locale']} on {r['n_labels']} labels" for r in rows if r.get("n_labels")]
    not_done = [r["locale"] for r in rows if not r.get("n_labels")]
    parts = []
    if done:
        parts.append("judge validated: " + ", ".join(done))
    if not_done:
        parts.append("judge unvalidated (raw figures may partly be its bias): " + ", ".join(not_done))
    return "\n" + "; ".join(parts) if parts else ""
