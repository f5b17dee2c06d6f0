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


def _reference_ci(a, b, clusters, weights, n_boot: int, seed: int) -> tuple[float, float]:
    """The bootstrap CI computed the plain float way (one fresh draw, float gathers and sums)."""
    import numpy as np

    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    w = np.ones(xa.size) if weights is None else np.asarray(weights, dtype=float)
    codes = np.arange(xa.size) if clusters is None else np.unique(np.asarray(clusters).astype(str), return_inverse=True)[1]
    k = int(codes.max()) + 1
    wsum = np.bincount(codes, weights=w, minlength=k)
    dsum = np.bincount(codes, weights=w * (xb - xa), minlength=k)
    draws = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
    denom = wsum[draws].sum(axis=1)
    ok = denom > 0
    reps = dsum[draws].sum(axis=1)[ok] / denom[ok]
    alpha = (1.0 - 0.95) / 2.0  # as stats computes it (not exactly 0.025)
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def test_paired_bootstrap_integer_sums_and_shared_draws_give_the_float_figures() -> None:
    """Integer outcomes and weights are summed as integers, and back-to-back questions over the
    same clusters share one index draw: the CIs are exactly the plain float computation's, for
    one-pair clusters, uneven clusters, integer weights, fractional weights and non-binary values."""
    import numpy as np

    from xsafety.report import stats

    rng = np.random.default_rng(11)
    n = 600
    a, b = (rng.random(n) < 0.3).astype(float), (rng.random(n) < 0.45).astype(float)
    uneven = [f"p{int(x)}" for x in rng.integers(0, 150, size=n)]
    cases = [
        (a, b, None, None),
        (a, b, uneven, None),
        (b, a, uneven, None),  # same clusters, other sign: the shared draw
        (a, b, uneven, rng.integers(0, 4, size=n)),  # integer weights, some zero
        (a, b, uneven, rng.random(n) * 3),  # fractional weights: the float path
        (a * 200, b * 300, uneven, None),  # per-cluster sums past one byte
        (a, b, [f"q{i}" for i in range(n)], np.full(n, 2.0)),  # constant cluster weight
    ]
    for xa, xb, clusters, weights in cases:
        stats._BOOT_CACHE.clear()
        got = stats.paired_bootstrap(xa, xb, clusters, weights, n_boot=300, seed=5)
        assert (got.ci_low, got.ci_high) == _reference_ci(xa, xb, clusters, weights, 300, 5)
    stats._BOOT_CACHE.clear()
    other_seed = stats.paired_bootstrap(a, b, uneven, n_boot=300, seed=6)
    assert (other_seed.ci_low, other_seed.ci_high) == _reference_ci(a, b, uneven, None, 300, 6)


def test_replicate_sums_match_float_sums() -> None:
    """The integer gather is used only where it is exact, and then equals the float sum bit for bit."""
    import numpy as np

    from xsafety.report.stats import _replicate_sums

    rng = np.random.default_rng(2)
    draws = rng.integers(0, 50, size=(40, 50))
    for values in (rng.integers(-1, 2, size=50).astype(float), rng.integers(-40000, 40000, size=50).astype(float),
                   np.ones(50), np.zeros(50), rng.random(50), np.array([np.nan] + [1.0] * 49)):
        want = values[draws].sum(axis=1)
        np.testing.assert_array_equal(_replicate_sums(values, draws), want)



def test_indexed_clusters_give_the_answer_of_the_names() -> None:
    """Clusters indexed once (shared by a group's metrics) are the names' own indexing."""
    import numpy as np
    import pytest

    from xsafety.report import stats

    rng = np.random.default_rng(8)
    a, b = (rng.random(300) < 0.3).astype(float), (rng.random(300) < 0.4).astype(float)
    names = [f"set/p{int(x)}" for x in rng.integers(0, 90, size=300)]
    stats._BOOT_CACHE.clear()
    by_name = stats.paired_bootstrap(a, b, names, n_boot=300, seed=3)
    stats._BOOT_CACHE.clear()
    assert stats.paired_bootstrap(a, b, stats.Clusters.of(names), n_boot=300, seed=3) == by_name
    with pytest.raises(ValueError):
        stats.paired_bootstrap(a, b, stats.Clusters.of(names[:-1]), n_boot=300, seed=3)
