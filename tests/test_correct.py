"""Rogan-Gladen corrected rates and gaps: exact values on a hand-computed case, clipping, intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xsafety.report.correct import corrected_gap, corrected_rate, rogan_gladen
from xsafety.report.stats import paired_bootstrap
from xsafety.report.validity import Confusion


def test_rogan_gladen_by_hand() -> None:
    # q = se p + (1 - sp)(1 - p): 0.7 * 0.4 + 0.1 * 0.6 = 0.34 -> p = (0.34 + 0.9 - 1) / 0.6 = 0.4
    assert float(rogan_gladen(0.34, 0.7, 0.9)) == pytest.approx(0.4)
    assert float(rogan_gladen(0.32, 0.95, 0.95)) == pytest.approx(0.3)
    # An observed rate below what the judge's false positives alone give clips to 0, above to 1.
    assert float(rogan_gladen(0.05, 0.9, 0.9)) == 0.0
    assert float(rogan_gladen(0.99, 0.8, 0.9)) == 1.0
    assert math.isnan(float(rogan_gladen(0.5, 0.5, 0.5)))  # a judge at chance carries nothing


def test_corrected_gap_exact_point_values() -> None:
    # Ten pairs: the judge says positive on 4 English answers and 5 in the locale.
    en = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=float)
    loc = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], dtype=float)
    cal_en = Confusion(tp=9, fn=1, tn=9, fp=1, n_pos=10, n_neg=10)  # se 0.9, sp 0.9
    cal_loc = Confusion(tp=6, fn=4, tn=8, fp=2, n_pos=10, n_neg=10)  # se 0.6, sp 0.8
    g = corrected_gap(en, loc, cal_en, cal_loc, n_boot=400, seed=1)
    assert g.en_rate == pytest.approx((0.4 - 0.1) / 0.8)  # 0.375
    assert g.locale_rate == pytest.approx((0.5 - 0.2) / 0.4)  # 0.75
    assert g.gap == pytest.approx(0.375)
    raw = paired_bootstrap(en, loc, n_boot=400, seed=1)
    assert raw.diff == pytest.approx(0.1)
    # The corrected interval holds the point and is wider than the raw one (judge error added).
    assert g.ci_low <= g.gap <= g.ci_high
    assert g.ci_high - g.ci_low > raw.ci_high - raw.ci_low
    r = corrected_rate(loc, cal_loc, n_boot=400, seed=1)
    assert r.observed == 0.5 and r.rate == pytest.approx(0.75) and r.ci_low <= 0.75 <= r.ci_high


def test_gap_that_judge_uncertainty_can_flip_is_flagged() -> None:
    rng = np.random.default_rng(3)
    en = (rng.random(400) < 0.30).astype(float)
    loc = (rng.random(400) < 0.33).astype(float)
    tiny = Confusion(tp=7, fn=3, tn=8, fp=2, n_pos=10, n_neg=10)
    big = Confusion(tp=1900, fn=100, tn=1900, fp=100, n_pos=2000, n_neg=2000)
    assert corrected_gap(en, loc, tiny, tiny, n_boot=500).sign_can_flip
    # Same data, a well-validated judge that errs the same way in both: the sign holds.
    en2 = np.r_[np.zeros(300), np.ones(100)]
    loc2 = np.r_[np.zeros(200), np.ones(200)]
    assert not corrected_gap(en2, loc2, big, big, n_boot=500).sign_can_flip


def test_unusable_calibration_gives_no_correction() -> None:
    chance = Confusion(tp=5, fn=5, tn=5, fp=5, n_pos=10, n_neg=10)
    good = Confusion(tp=9, fn=1, tn=9, fp=1, n_pos=10, n_neg=10)
    g = corrected_gap([1, 0, 1], [0, 0, 1], good, chance)
    assert math.isnan(g.gap) and math.isnan(g.ci_low)
    assert math.isnan(corrected_rate([1, 0], chance).rate)
