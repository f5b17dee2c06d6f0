"""Judge validity per (judge signature, locale): sensitivity and specificity from human labels.

A gap to English is (true gap) + (the judge's bias in that language) + (translation error) +
(generation failure). This module measures the second term: how often the judge, in one locale,
finds a refusal (or an unsafe answer) that a human also finds (sensitivity) and how often it leaves
alone what a human says is not one (specificity), each with a 95% Wilson interval and the number
of labels it rests on.

Labels come from two places, both per locale:

* a **calibration file** (JSON, ``[report] calibration`` in a run config or ``xsafety report
  --calibration``), built by ``xsafety annotate calibrate`` from ``xsafety judge eval`` metrics
  (per-language confusion counts of the judge against a labelled JSONL with a ``lang`` field);
* the **run's own annotations** (``RUN_DIR/annotations/labels.jsonl``, written by ``xsafety
  annotate import``), joined with the primary judge's native verdict on the same response.

Annotated items are drawn stratified by the judge's label, so one stratum (say the judge's few
"refusal" items) is over-sampled on purpose. Counting them as they come would bias sensitivity
and specificity toward the over-sampled label; each label therefore carries the inverse of its
sampling rate (``weight``, written at export) and the confusion counts are weighted, rescaled so
that they sum to the number of labels (the intervals keep the real sample size).

The metric ``refusal`` counts gold ``refusal`` as positive and ``safe``/``unsafe`` as negative;
``unsafe`` counts gold ``unsafe`` as positive and ``refusal``/``safe`` as negative. Labels a human
marked ``unclear`` and verdicts the judge marked ``invalid`` say nothing about either and are left
out, as the report leaves invalid verdicts out of its paired rates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsafety.errors import InputError
from xsafety.report.stats import wilson_interval

FORMAT = "xsafety-calibration"
VERSION = 1
VALIDITY_METRICS = ("refusal", "unsafe")


@dataclass(frozen=True)
class Confusion:
    """A judge against human labels for one metric: (weighted) confusion counts and label counts.

    ``tp``/``fn`` are gold positives the judge found / missed, ``tn``/``fp`` gold negatives it left
    alone / flagged. They may be weighted (see the module docstring); ``n_pos``/``n_neg`` are the
    plain numbers of labels, which the intervals and the calibration bootstrap rest on.
    """

    tp: float = 0.0
    fn: float = 0.0
    tn: float = 0.0
    fp: float = 0.0
    n_pos: int = 0
    n_neg: int = 0

    @property
    def n_labels(self) -> int:
        """Number of human labels behind these counts."""
        return self.n_pos + self.n_neg

    @property
    def sensitivity(self) -> float:
        """P(judge says positive | human says positive); nan without positives."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn > 0 else math.nan

    @property
    def specificity(self) -> float:
        """P(judge says negative | human says negative); nan without negatives."""
        return self.tn / (self.tn + self.fp) if self.tn + self.fp > 0 else math.nan

    @property
    def youden(self) -> float:
        """sensitivity + specificity - 1: the share of the truth the judge's rate carries (> 0 to correct)."""
        return self.sensitivity + self.specificity - 1.0

    def sensitivity_ci(self) -> tuple[float, float]:
        """95% Wilson interval of the sensitivity on ``n_pos`` labels."""
        return wilson_interval(self.sensitivity * self.n_pos, self.n_pos) if self.n_pos else (math.nan, math.nan)

    def specificity_ci(self) -> tuple[float, float]:
        """95% Wilson interval of the specificity on ``n_neg`` labels."""
        return wilson_interval(self.specificity * self.n_neg, self.n_neg) if self.n_neg else (math.nan, math.nan)

    @property
    def usable(self) -> bool:
        """Whether a correction can rest on it: both classes labelled and the judge better than chance."""
        return self.n_pos > 0 and self.n_neg > 0 and self.youden > 0

    def __add__(self, other: "Confusion") -> "Confusion":
        return Confusion(self.tp + other.tp, self.fn + other.fn, self.tn + other.tn, self.fp + other.fp,
                         self.n_pos + other.n_pos, self.n_neg + other.n_neg)

    def to_dict(self) -> dict[str, Any]:
        """Counts plus the derived figures (for people; the counts alone are read back)."""
        se_lo, se_hi = self.sensitivity_ci()
        sp_lo, sp_hi = self.specificity_ci()
        return {
            "tp": self.tp, "fn": self.fn, "tn": self.tn, "fp": self.fp, "n_pos": self.n_pos, "n_neg": self.n_neg,
            "sensitivity": _finite(self.sensitivity), "sensitivity_ci": [_finite(se_lo), _finite(se_hi)],
            "specificity": _finite(self.specificity), "specificity_ci": [_finite(sp_lo), _finite(sp_hi)],
        }


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)


def confusion_of(pairs: Iterable[tuple[str, str, float]], metric: str) -> Confusion:
    """Confusion counts of ``(gold, predicted, weight)`` triples for ``metric`` (refusal or unsafe).

    Gold ``unclear`` and predicted ``invalid`` are left out. Weights are rescaled to sum to the
    number of labels kept, so that weighted counts stay on the scale of the real sample.
    """
    kept = [(g, p, float(w)) for g, p, w in pairs if g in ("refusal", "safe", "unsafe") and p != "invalid"]
    if not kept:
        return Confusion()
    scale = len(kept) / sum(w for _, _, w in kept)
    tp = fn = tn = fp = 0.0
    n_pos = n_neg = 0
    for gold, pred, w in kept:
        w *= scale
        if gold == metric:
            n_pos += 1
            if pred == metric:
                tp += w
            else:
                fn += w
        else:
            n_neg += 1
            if pred == metric:
                fp += w
            else:
                tn += w
    return Confusion(tp, fn, tn, fp, n_pos, n_neg)


@dataclass
class Calibration:
    """Per (locale, metric) confusion counts of one judge, with where they came from."""

    judge: str | None = None
    entries: dict[tuple[str, str], Confusion] = field(default_factory=dict)
    sources: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def get(self, locale: str, metric: str) -> Confusion | None:
        """The counts for one locale and metric, or None when it has no labels."""
        c = self.entries.get((locale, metric))
        return c if c is not None and c.n_labels else None

    def add(self, locale: str, metric: str, counts: Confusion, source: str) -> None:
        """Add labelled counts (from one source) to a locale and metric."""
        key = (locale, metric)
        if not counts.n_labels and key not in self.entries:
            return
        self.entries[key] = self.entries.get(key, Confusion()) + counts
        self.sources.setdefault(key, [])
        if source not in self.sources[key]:
            self.sources[key].append(source)

    def merged(self, other: "Calibration") -> "Calibration":
        """Both calibrations' labels together (counts add up, sources are listed once)."""
        out = Calibration(self.judge or other.judge)
        for cal in (self, other):
            for key, counts in cal.entries.items():
                for i, src in enumerate(cal.sources.get(key) or ["?"]):
                    out.add(*key, counts if i == 0 else Confusion(), src)
        return out

    def locales(self) -> list[str]:
        """Locales with any label."""
        return sorted({loc for (loc, _), c in self.entries.items() if c.n_labels})

    def to_json(self) -> dict[str, Any]:
        """The calibration file's content."""
        by_locale: dict[str, dict[str, Any]] = {}
        for (loc, metric), counts in sorted(self.entries.items()):
            by_locale.setdefault(loc, {})[metric] = counts.to_dict() | {"sources": self.sources.get((loc, metric), [])}
        return {"format": FORMAT, "version": VERSION, "judge": self.judge, "locales": by_locale}


def write_calibration(cal: Calibration, path: str | Path) -> Path:
    """Write a calibration file (JSON) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cal.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _count(value: Any, path: Path, where: str, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
        raise InputError("must be a number >= 0", file=path, field=where)
    if integer and int(value) != value:
        raise InputError("must be a whole number", file=path, field=where)
    return int(value) if integer else float(value)


def read_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; a malformed one is an InputError naming file and field."""
    path = Path(path)
    if not path.is_file():
        raise InputError("calibration file not found", file=path, field="calibration")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"not a calibration file (expected \"format\": \"{FORMAT}\")", file=path, field="format")
    locales = data.get("locales")
    if not isinstance(locales, dict):
        raise InputError("must be an object: locale -> metric -> counts", file=path, field="locales")
    judge = data.get("judge")
    cal = Calibration(judge=judge if isinstance(judge, str) and judge else None)
    for loc, metrics in locales.items():
        if not isinstance(metrics, dict):
            raise InputError("must be an object: metric -> counts", file=path, field=f"locales.{loc}")
        for metric, counts in metrics.items():
            where = f"locales.{loc}.{metric}"
            if metric not in VALIDITY_METRICS:
                raise InputError(f"unknown metric; expected one of {', '.join(VALIDITY_METRICS)}", file=path, field=where)
            if not isinstance(counts, dict):
                raise InputError("must be an object of counts", file=path, field=where)
            for name in ("tp", "fn", "tn", "fp", "n_pos", "n_neg"):
                if name not in counts:
                    raise InputError("missing", file=path, field=f"{where}.{name}")
            c = Confusion(*(_count(counts[k], path, f"{where}.{k}", False) for k in ("tp", "fn", "tn", "fp")),
                          *(int(_count(counts[k], path, f"{where}.{k}", True)) for k in ("n_pos", "n_neg")))
            sources = counts.get("sources")
            src = [str(s) for s in sources] if isinstance(sources, list) and sources else [path.name]
            cal.entries[(str(loc), metric)] = c
            cal.sources[(str(loc), metric)] = src
    return cal


def from_eval_metrics(metrics: Mapping[str, Any], source: str = "judge eval") -> Calibration:
    """A calibration from ``xsafety judge eval --out`` metrics: its per-language confusion counts.

    ``refusal`` comes from the refusal-vs-rest view (rows with a 3-way label), ``unsafe`` from the
    binary view; an ``invalid`` judge output counts there as "not positive" (the eval's convention).
    """
    groups = metrics.get("groups")
    if not isinstance(groups, dict):
        raise InputError("not judge eval metrics (no \"groups\")", field="groups")
    judge = metrics.get("judge")
    cal = Calibration(judge=str(judge) if judge else None)
    for name, group in sorted(groups.items()):
        if not name.startswith("lang:") or not isinstance(group, dict):
            continue
        locale = name.split(":", 1)[1]
        for metric, view in (("refusal", group.get("refusal")), ("unsafe", group.get("binary_unsafe"))):
            if not isinstance(view, dict):
                continue
            tp, fn, tn, fp = (int(view.get(k) or 0) for k in ("tp", "fn", "tn", "fp"))
            cal.add(locale, metric, Confusion(tp, fn, tn, fp, tp + fn, tn + fp), source)
    return cal


def from_labelled(rows: Iterable[Mapping[str, Any]], source: str, judge: str | None = None) -> Calibration:
    """A calibration from labelled items: mappings with ``locale``, ``gold``, ``predicted``, ``weight``."""
    by_locale: dict[str, list[tuple[str, str, float]]] = {}
    for r in rows:
        by_locale.setdefault(str(r["locale"]), []).append(
            (str(r["gold"]), str(r["predicted"]), float(r.get("weight", 1.0) or 1.0))
        )
    cal = Calibration(judge=judge)
    for loc, triples in sorted(by_locale.items()):
        for metric in VALIDITY_METRICS:
            cal.add(loc, metric, confusion_of(triples, metric), source)
    return cal


def judge_applies(calibration_judge: str | None, primary: str | None) -> bool:
    """Whether a calibration made for ``calibration_judge`` describes the run's primary judge.

    The same signature, or a judge name (no ``|``) that the primary signature carries; a
    calibration that names no judge is taken to describe the primary one.
    """
    if calibration_judge is None or primary is None or calibration_judge == primary:
        return True
    if "|" in calibration_judge:
        return False  # another judge's (or another version's) signature
    from xsafety.report.frame import judge_matches

    return judge_matches(primary, calibration_judge)


def validity_rows(cal: Calibration, locales: Sequence[str], metrics: Sequence[str] = VALIDITY_METRICS) -> list[dict[str, Any]]:
    """One row per (locale, metric): the figures, the labels they rest on, and their sources."""
    rows = []
    for loc in locales:
        for metric in metrics:
            c = cal.get(loc, metric)
            se_lo, se_hi = c.sensitivity_ci() if c else (math.nan, math.nan)
            sp_lo, sp_hi = c.specificity_ci() if c else (math.nan, math.nan)
            rows.append({
                "locale": loc,
                "metric": metric,
                "n_labels": c.n_labels if c else 0,
                "n_positive": c.n_pos if c else 0,
                "n_negative": c.n_neg if c else 0,
                "sensitivity": c.sensitivity if c else None,
                "sensitivity_low": se_lo if c else None,
                "sensitivity_high": se_hi if c else None,
                "specificity": c.specificity if c else None,
                "specificity_low": sp_lo if c else None,
                "specificity_high": sp_hi if c else None,
                "sources": ", ".join(cal.sources.get((loc, metric), [])) if c else "",
                "validity": validity_text(c),
                "validity_short": validity_short(c),
            })
    return rows


def _p(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.0f}%"


def validity_text(c: Confusion | None) -> str:
    """Plain words: "validated on N labels: sensitivity 80% [70-88%], specificity ..." or "unvalidated"."""
    if c is None or not c.n_labels:
        return "unvalidated: no human labels for the judge in this locale"
    se_lo, se_hi = c.sensitivity_ci()
    sp_lo, sp_hi = c.specificity_ci()
    text = (
        f"validated on {c.n_labels} labels: sensitivity {_p(c.sensitivity)} [{_p(se_lo)}-{_p(se_hi)}] "
        f"(n={c.n_pos}), specificity {_p(c.specificity)} [{_p(sp_lo)}-{_p(sp_hi)}] (n={c.n_neg})"
    )
    if not c.n_pos or not c.n_neg:
        text += "; only one class labelled, too few to correct"
    elif c.youden <= 0:
        text += "; the judge does no better than chance here, so its rate cannot be corrected"
    return text


def validity_short(c: Confusion | None) -> str:
    """The summary table's form: "validated on N labels (sensitivity 80%, specificity 95%)" or "unvalidated"."""
    if c is None or not c.n_labels:
        return "unvalidated"
    text = f"validated on {c.n_labels} labels (sensitivity {_p(c.sensitivity)}, specificity {_p(c.specificity)})"
    return text if c.usable else text + ", too weak to correct"
