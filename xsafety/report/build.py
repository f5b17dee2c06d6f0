"""Compute every report table for a run (``xsafety.report.folder`` writes them), and the terminal summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich import box
from rich.table import Table

from xsafety.report import aggregate as agg
from xsafety.report import judge_error, translation_error
from xsafety.report.aggregate import NOT_MEASURED
from xsafety.report.csvsafe import write_csv
from xsafety.report.frame import ENGLISH, RunData, load_run
from xsafety.report.policy import Policy, load_policy
from xsafety.report.stats import DEFAULT_B, DEFAULT_SEED
from xsafety.torch_runtime import CpuSample, cpu_sample

# Breakdowns written as tables: name -> extra grouping columns beside the locale.
BREAKDOWNS: dict[str, list[str]] = {
    "macro": ["macro"],
    "micro": ["macro", "category"],
    "type": ["xsafety_type"],
    "model": ["model_name"],
    "attack": ["attack"],
    "variant": ["variant"],
}
GAP_BREAKDOWNS = ("macro", "model", "attack", "variant")


@dataclass
class ReportData:
    """Every table of one run's report, plus what produced them."""

    run: RunData
    policy: Policy
    thresholds: agg.Thresholds
    primary: pl.DataFrame
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    # False under a refusal-only judge: unsafe (and a failure built on it) is then "not measured".
    harm_judged: bool = True
    failure_judged: bool = True
    # Judge validity (xsafety.report.judge_error): the calibration used and notes on what was not.
    calibration: Any = None
    calibration_notes: list[str] = field(default_factory=list)
    # The machine's CPU time when the computation began: how busy other processes kept the cores
    # meanwhile decides whether the charts get a worker process (``folder.charts_in_worker``).
    started: CpuSample | None = None

    @property
    def summary(self) -> pl.DataFrame:
        """Per-locale headline table."""
        return self.tables["summary"]


def compute(
    run_dir: str | Path,
    policy: str | Policy | None = None,
    *,
    thresholds: agg.Thresholds | None = None,
    primary_judge: str | None = None,
    n_boot: int = DEFAULT_B,
    seed: int = DEFAULT_SEED,
    breakdowns: bool = True,
    calibration: str | Path | None = None,
) -> ReportData:
    """Load a run and compute its tables (``breakdowns=False``: only what the summary needs).

    ``calibration``: a judge calibration file (default: the run config's ``[report] calibration``);
    the run's own annotations are always used.
    """
    started = cpu_sample()
    run = load_run(run_dir, primary_judge=primary_judge)
    if policy is None:
        # The run's own policy (run.json), so that `xsafety report RUN` matches what `run` wrote.
        policy = run.info.policy
    pol = policy if isinstance(policy, Policy) else load_policy(policy)
    th = thresholds or agg.Thresholds()
    primary = agg.primary_frame(run, pol)
    harm = run.harm_judged()
    data = ReportData(
        run=run, policy=pol, thresholds=th, primary=primary, harm_judged=harm,
        failure_judged=agg.failure_measured(pol, primary, harm), started=started,
    )
    t = data.tables
    t["rates_locale"] = agg.rates(primary, ["locale", "resource"])
    t["gaps_locale"] = agg.gaps(primary, ["locale", "resource"], th, n_boot=n_boot, seed=seed)
    info = translation_error.translation_info(run)
    t["trust"] = agg.trust(run, primary, th, translation_error.locale_engines(info))
    t["summary"] = agg.summary(t["rates_locale"], t["gaps_locale"], t["trust"])
    judged_metrics = judge_error.judged_metrics(harm)
    data.calibration, data.calibration_notes = judge_error.load_calibration(run, primary, calibration)
    t["validity"] = judge_error.validity_table(data.calibration, t["summary"].get_column("locale").to_list(), judged_metrics)
    t["annotator_agreement"] = judge_error.annotator_agreement(run)
    t["gaps_corrected"] = judge_error.corrected_gaps(primary, data.calibration, judged_metrics, n_boot=n_boot, seed=seed)
    t["summary"] = judge_error.add_to_summary(t["summary"], t["gaps_corrected"], t["validity"], "unsafe" if harm else "refusal")
    if breakdowns:
        t["rejections"] = agg.rejections(run)
        t["gaps_resource"] = agg.gaps(primary, ["resource"], th, n_boot=n_boot, seed=seed)
        for name, cols in BREAKDOWNS.items():
            t[f"rates_locale_{name}"] = agg.rates(primary, ["locale", *cols])
        for name in GAP_BREAKDOWNS:
            t[f"gaps_locale_{name}"] = agg.gaps(primary, ["locale", *BREAKDOWNS[name]], th, n_boot=n_boot, seed=seed)
        t["translation_sensitivity"] = translation_error.sensitivity(primary, info, judged_metrics, n_boot=n_boot, seed=seed)
        t["gate_exemptions"] = translation_error.exemptions(run, info)
    data.tables = agg.blank_unmeasured(t, harm=data.harm_judged, failure=data.failure_judged)
    return data


def write_tables(data: ReportData, out: Path) -> list[Path]:
    """Every table as Parquet and CSV under ``out/tables``."""
    folder = out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in data.tables.items():
        df.write_parquet(folder / f"{name}.parquet")
        write_csv(df, folder / f"{name}.csv")  # formula cells neutralised (csvsafe)
        written += [folder / f"{name}.parquet", folder / f"{name}.csv"]
    return written


def _pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _gap(row: dict[str, Any], metric: str) -> str:
    gap = row.get(f"{metric}_gap_pp")
    if gap is None or (isinstance(gap, float) and math.isnan(gap)):
        return "-"
    lo, hi = row[f"{metric}_ci_low_pp"], row[f"{metric}_ci_high_pp"]
    # Two lines (gap, then CI) keep the table inside an 80-column terminal.
    return f"{gap:+.1f}\n[{lo:+.0f},{hi:+.0f}]"


def judge_label(data: ReportData) -> str:
    """The primary judge as a reader knows it: its config name and signature kind."""
    sig = data.run.primary_judge
    if sig is None:
        return "no verdicts"
    name = data.run.info.primary_judge
    kind = sig.split("|", 1)[0]
    return f"{name} ({kind})" if name is not None and name != kind else kind


def _p(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}".lstrip("0") if x >= 0.001 else "<.001"


def policy_changes_failure(policy: Policy) -> bool:
    """Whether a policy's failure rate can differ from the unsafe rate (worth its own column)."""
    return policy.failure != frozenset({"unsafe"}) or any(r.failure is not None for r in policy.rules.values())


def summary_table(run_dir: str | Path, policy: str | None = None) -> Table:
    """The terminal summary: per locale n, unsafe %, refusal %, gaps vs English with CI and p, trust."""
    data = compute(run_dir, policy, breakdowns=False)
    return summary_rich(data)


# Resource levels fit the narrow terminal column as words: cutting to four letters gave "medi".
RESOURCE_SHORT = {"high": "high", "medium": "med", "low": "low", "unknown": "?"}


def resource_short(level: Any) -> str:
    """A resource level in at most four letters: ``high``, ``med``, ``low``."""
    text = str(level or "")
    return RESOURCE_SHORT.get(text, text[:4])


def _unmeasured(row: dict[str, Any], measured: bool, text: str) -> str:
    # A locale with no responses has nothing to measure either way: "-" there, not "n/m".
    return text if measured or not row.get("n") else NOT_MEASURED


def summary_rich(data: ReportData) -> Table:
    """Render a computed report's summary as a rich table.

    Every locale of the run has a row, n = 0 included; figures the primary judge does not measure
    (unsafe under a refusal-only judge) read ``n/m``.
    """
    judge = judge_label(data)
    harm = data.harm_judged
    table = Table(
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
        title=f"xsafety: {data.run.run_dir}",
        caption=(
            f"primary judge {judge} (native); policy {data.policy.name}; gaps = locale - {ENGLISH} in "
            "points with a 95% paired-bootstrap CI below; p = exact McNemar on discordant pairs (the two can "
            "disagree near 5%); judge validity and corrected gaps: see the report"
            + ("" if harm else f"\nNOTE: the primary judge detects refusals only; unsafe is not measured ({NOT_MEASURED})")
            + judge_error.validity_caption(data.summary)
        ),
    )
    for name, justify, wrap in [
        ("locale", "left", False),
        ("res.", "left", False),
        ("n", "right", False),
        ("uns%", "right", False),
        ("ref%", "right", False),
        ("unsafe\ngap pp", "right", False),
        ("uns.\np", "right", False),
        ("refusal\ngap pp", "right", False),
        ("ref.\np", "right", False),
        ("trust", "left", True),
    ]:
        # trust wraps (it can list several flags) but must never shrink to an ellipsis.
        table.add_column(name, justify=justify, no_wrap=not wrap, min_width=8 if wrap else None)  # type: ignore[arg-type]
    show_failure = policy_changes_failure(data.policy)
    if show_failure:
        table.add_column("fail%", justify="right", no_wrap=True)
    for row in data.summary.to_dicts():
        english = row["locale"] == ENGLISH
        cells = [
            row["locale"],
            resource_short(row.get("resource")),
            str(row["n"]),
            _unmeasured(row, harm, _pct(row["unsafe_rate"])),
            _pct(row["refusal_rate"]),
            _gap(row, "unsafe") + ("\nsmall" if row.get("unsafe_small") else "")
            if harm or english else _unmeasured(row, harm, "-"),
            _p(row.get("unsafe_p")) if harm or english else _unmeasured(row, harm, "-"),
            _gap(row, "refusal"),
            _p(row.get("refusal_p")),
            "baseline" if english else str(row.get("trust") or ""),
        ]
        if show_failure:
            cells.append(_unmeasured(row, data.failure_judged, _pct(row["fail_rate"])))
        table.add_row(*cells)
    return table
