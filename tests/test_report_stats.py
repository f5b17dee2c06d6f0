"""Statistics behind the report: exact McNemar, Wilson, paired bootstrap coverage, kappa."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xsafety.report.stats import cohen_kappa, mcnemar_exact, paired_bootstrap, wilson_interval


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (10, 2, 2 * (1 + 12 + 66) / 4096),  # 0.0386
        (2, 10, 2 * (1 + 12 + 66) / 4096),
        (7, 7, 1.0),
        (0, 6, 0.03125),
        (0, 0, 1.0),
        (1, 0, 1.0),
    ],
)
def test_mcnemar_exact_matches_hand_computed_values(b: int, c: int, expected: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_b10_c2_is_0_0386() -> None:
    assert round(mcnemar_exact(10, 2), 4) == 0.0386


def test_mcnemar_large_counts_do_not_underflow() -> None:
    p = mcnemar_exact(600, 400)
    assert 0 < p < 1e-9


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_paired_bootstrap_point_estimate_and_discordant_counts() -> None:
    a = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    b = np.array([1, 0, 1, 1, 1, 0, 0, 0, 0, 0], dtype=float)
    res = paired_bootstrap(a, b, n_boot=500, seed=1)
    assert res.diff == pytest.approx(0.2)
    assert (res.b, res.c) == (3, 1)
    assert res.p_value == pytest.approx(mcnemar_exact(3, 1))
    assert res.ci_low <= res.diff <= res.ci_high
    # Same seed, same interval: reports are reproducible.
    again = paired_bootstrap(a, b, n_boot=500, seed=1)
    assert (again.ci_low, again.ci_high) == (res.ci_low, res.ci_high)


def test_paired_bootstrap_weights_and_clusters() -> None:
    a = np.array([0, 0, 0, 0], dtype=float)
    b = np.array([1, 0, 0, 0], dtype=float)
    res = paired_bootstrap(a, b, clusters=["p1", "p1", "p2", "p3"], weights=[3, 1, 1, 1], n_boot=200)
    assert res.diff == pytest.approx(3 / 6)
    assert res.n_clusters == 3 and res.n_pairs == 4


def test_paired_bootstrap_ci_covers_true_difference_about_95_percent() -> None:
    """200 synthetic paired datasets with a known true difference of +10 points."""
    rng = np.random.default_rng(7)
    n, p_en, p_loc, trials = 150, 0.2, 0.3, 200
    covered = 0
    for t in range(trials):
        # Correlated pairs: a shared latent per prompt, as the same prompt is asked in both.
        u = rng.random(n)
        v = np.where(rng.random(n) < 0.5, u, rng.random(n))
        a = (u < p_en).astype(float)
        b = (v < p_loc).astype(float)
        res = paired_bootstrap(a, b, n_boot=2000, seed=t)
        covered += res.ci_low <= (p_loc - p_en) <= res.ci_high
    coverage = covered / trials
    # Binomial sd at 95% over 200 trials is 1.5 points; percentile intervals run slightly narrow.
    assert 0.89 <= coverage <= 0.99, coverage


def test_cohen_kappa_hand_example() -> None:
    x = ["unsafe"] * 20 + ["safe"] * 30
    y = ["unsafe"] * 15 + ["safe"] * 5 + ["unsafe"] * 5 + ["safe"] * 25
    # po = 40/50, pe = 0.4*0.4 + 0.6*0.6 = 0.52
    assert cohen_kappa(x, y) == pytest.approx((0.8 - 0.52) / (1 - 0.52))
    assert cohen_kappa(["a", "a"], ["a", "a"]) == 1.0
    assert math.isnan(cohen_kappa([], []))


def test_paired_bootstrap_shortcuts_give_the_general_figures() -> None:
    """Unit weights take a shortcut (no weight gather) and repeated questions are answered from a
    memo: both give exactly what the general computation gives, and a new seed is a new answer."""
    import numpy as np

    from xsafety.report import stats

    rng = np.random.default_rng(3)
    a, b = (rng.random(500) < 0.3).astype(float), (rng.random(500) < 0.4).astype(float)
    stats._BOOT_CACHE.clear()
    general = stats.paired_bootstrap(a, b, weights=np.ones(500), n_boot=400, seed=7)
    shortcut = stats.paired_bootstrap(a, b, n_boot=400, seed=7)
    assert shortcut == general
    assert stats.paired_bootstrap(a, b, n_boot=400, seed=7) is shortcut  # from the memo
    assert stats.paired_bootstrap(a, b, n_boot=400, seed=8) != shortcut
    assert stats.paired_bootstrap(b, a, n_boot=400, seed=7).diff == -shortcut.diff
