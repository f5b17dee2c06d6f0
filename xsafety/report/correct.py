"""Rates and gaps corrected for the judge's error in each locale (Rogan-Gladen), with honest intervals.

A judge with sensitivity ``se`` and specificity ``sp`` in a locale reports, for a true rate ``p``,
``q = se * p + (1 - sp) * (1 - p)``. Solving for ``p`` gives the Rogan-Gladen estimator

    p = (q + sp - 1) / (se + sp - 1),

clipped to [0, 1] (a noisy ``q`` can fall outside what the judge could produce). It needs
``se + sp > 1``: a judge no better than chance carries no information to correct.

The corrected gap is ``p_locale - p_en``, each corrected with its own locale's figures: a judge
that misses a third of unsafe answers in Swahili but few in English shrinks the raw gap, and the
correction puts that back. Its interval carries both sources of uncertainty in one bootstrap:
each replicate resamples prompts (clusters, the same paired bootstrap as the raw gap) *and* the
calibration labels (the judge's sensitivity and specificity redrawn from the labels they rest on:
resampling ``n_pos`` positive labels with replacement is a Binomial(``n_pos``, ``se``) draw of
the hits). So a correction resting on 40 labels is wide, and one resting on 4,000 is not.

A second, judge-only interval keeps the observed rates fixed and redraws only the calibration: a
gap whose judge-only interval holds both signs "can flip sign within the judge's uncertainty".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xsafety.report.stats import DEFAULT_B, DEFAULT_SEED
from xsafety.report.validity import Confusion


def rogan_gladen(q: float | np.ndarray, se: float | np.ndarray, sp: float | np.ndarray) -> np.ndarray:
    """True rate from observed rate ``q``, clipped to [0, 1]; nan where ``se + sp <= 1``."""
    q, se, sp = np.asarray(q, dtype=float), np.asarray(se, dtype=float), np.asarray(sp, dtype=float)
    j = se + sp - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(j > 0, (q + sp - 1.0) / np.where(j > 0, j, 1.0), np.nan)
    return np.clip(p, 0.0, 1.0)


def draw_calibration(c: Confusion, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n_boot`` redraws of (sensitivity, specificity) from resampled calibration labels."""
    se = rng.binomial(c.n_pos, min(max(c.sensitivity, 0.0), 1.0), size=n_boot) / c.n_pos
    sp = rng.binomial(c.n_neg, min(max(c.specificity, 0.0), 1.0), size=n_boot) / c.n_neg
    return se, sp


@dataclass(frozen=True)
class CorrectedGap:
    """A gap (locale - English) corrected for each side's judge error, with two intervals.

    ``ci_*``: prompts and calibration labels resampled together; ``judge_*``: calibration only.
    ``undefined_share``: replicates where a redrawn judge was no better than chance (dropped; when
    more than the interval's tail they make the interval unbounded: [-1, 1]).
    """

    en_rate: float
    locale_rate: float
    gap: float
    ci_low: float
    ci_high: float
    judge_low: float
    judge_high: float
    undefined_share: float

    @property
    def sign_can_flip(self) -> bool:
        """Whether the judge's uncertainty alone admits a gap of either sign."""
        return self.judge_low < 0.0 < self.judge_high


@dataclass(frozen=True)
class CorrectedRate:
    """One locale's rate corrected for its judge error, with a bootstrap interval (both sources)."""

    observed: float
    rate: float
    ci_low: float
    ci_high: float


def _percentile(reps: np.ndarray, level: float, bound: tuple[float, float]) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    ok = reps[~np.isnan(reps)]
    # Replicates with an undefined correction are dropped; when they exceed a tail, the honest
    # interval is everything.
    if ok.size == 0 or (reps.size - ok.size) / reps.size > alpha:
        return bound
    lo, hi = np.quantile(ok, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _cluster_sums(values: np.ndarray, codes: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(codes, weights=weights * values, minlength=k)


def _codes(clusters: Sequence[object] | np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    _, codes = np.unique(np.asarray(clusters, dtype=object).astype(str), return_inverse=True)
    return codes, int(codes.max()) + 1 if n else 0


def corrected_gap(
    en: Sequence[float] | np.ndarray,
    locale: Sequence[float] | np.ndarray,
    cal_en: Confusion,
    cal_locale: Confusion,
    clusters: Sequence[object] | np.ndarray | None = None,
    weights: Sequence[float] | np.ndarray | None = None,
    *,
    n_boot: int = DEFAULT_B,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> CorrectedGap:
    """Corrected paired gap ``p_locale - p_en`` of 0/1 judge outcomes on the same prompts.

    ``en``/``locale`` are the judge's outcomes (e.g. refusal) of each pair; ``cal_en``/``cal_locale``
    the judge's confusion counts in each language. Prompts are resampled by ``clusters`` (default:
    each pair its own) with policy ``weights``.
    """
    xa, xb = np.asarray(en, dtype=float), np.asarray(locale, dtype=float)
    if xa.shape != xb.shape or xa.ndim != 1:
        raise ValueError("en and locale must be 1-D arrays of equal length")
    n = xa.size
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    nan = math.nan
    if n == 0 or w.sum() <= 0 or not (cal_en.usable and cal_locale.usable):
        return CorrectedGap(nan, nan, nan, nan, nan, nan, nan, 1.0)
    codes, k = _codes(clusters, n)
    wsum = np.bincount(codes, weights=w, minlength=k)
    sa, sb = _cluster_sums(xa, codes, w, k), _cluster_sums(xb, codes, w, k)
    qa, qb = float(sa.sum() / wsum.sum()), float(sb.sum() / wsum.sum())
    pa = float(rogan_gladen(qa, cal_en.sensitivity, cal_en.specificity))
    pb = float(rogan_gladen(qb, cal_locale.sensitivity, cal_locale.specificity))

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_boot, k))
    denom = wsum[draws].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        qa_b = np.where(denom > 0, sa[draws].sum(axis=1) / denom, np.nan)
        qb_b = np.where(denom > 0, sb[draws].sum(axis=1) / denom, np.nan)
    se_a, sp_a = draw_calibration(cal_en, n_boot, rng)
    se_b, sp_b = draw_calibration(cal_locale, n_boot, rng)
    reps = rogan_gladen(qb_b, se_b, sp_b) - rogan_gladen(qa_b, se_a, sp_a)
    judge_only = rogan_gladen(qb, se_b, sp_b) - rogan_gladen(qa, se_a, sp_a)
    lo, hi = _percentile(reps, level, (-1.0, 1.0))
    jlo, jhi = _percentile(judge_only, level, (-1.0, 1.0))
    undefined = float(np.mean(np.isnan(reps)))
    return CorrectedGap(pa, pb, pb - pa, lo, hi, jlo, jhi, undefined)


def corrected_rate(
    outcomes: Sequence[float] | np.ndarray,
    cal: Confusion,
    clusters: Sequence[object] | np.ndarray | None = None,
    weights: Sequence[float] | np.ndarray | None = None,
    *,
    n_boot: int = DEFAULT_B,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> CorrectedRate:
    """One locale's corrected rate with an interval resampling prompts and calibration labels."""
    x = np.asarray(outcomes, dtype=float)
    n = x.size
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    nan = math.nan
    if n == 0 or w.sum() <= 0:
        return CorrectedRate(nan, nan, nan, nan)
    q = float((w * x).sum() / w.sum())
    if not cal.usable:
        return CorrectedRate(q, nan, nan, nan)
    codes, k = _codes(clusters, n)
    wsum = np.bincount(codes, weights=w, minlength=k)
    s = _cluster_sums(x, codes, w, k)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_boot, k))
    denom = wsum[draws].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q_b = np.where(denom > 0, s[draws].sum(axis=1) / denom, np.nan)
    se, sp = draw_calibration(cal, n_boot, rng)
    lo, hi = _percentile(rogan_gladen(q_b, se, sp), level, (0.0, 1.0))
    return CorrectedRate(q, float(rogan_gladen(q, cal.sensitivity, cal.specificity)), lo, hi)
