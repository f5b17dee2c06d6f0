"""Small, exact statistics for paired cross-lingual comparisons (numpy only, no scipy).

* ``wilson_interval``: a score interval for one rate; unlike the normal approximation it stays
  inside [0, 1] and behaves at 0% and 100%, which small safety cells often hit.
* ``paired_bootstrap``: the CI of a difference of (weighted) means over paired outcomes, resampling
  whole *clusters* (prompts). The same English prompt backs several locales, attacks and variants,
  so resampling prompts rather than rows keeps their correlation in the interval.
* ``mcnemar_exact``: the two-sided exact McNemar test on discordant pairs.
* ``cohen_kappa``: chance-corrected agreement between two labelings (judge modes).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

DEFAULT_B = 2000
DEFAULT_SEED = 20240601


def wilson_interval(successes: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for ``successes / n`` (``(nan, nan)`` when ``n == 0``)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; float rounding would leave 1e-17.
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``min(1, 2 * P(X <= min(b, c)))`` with X ~ Bin(b + c, 1/2).

    ``b`` and ``c`` are the discordant pair counts. Exact rational arithmetic keeps the tail right
    for thousands of pairs, where float binomial terms would underflow.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)
    return float(min(Fraction(1), 2 * tail))


@dataclass(frozen=True)
class PairedDiff:
    """A paired difference ``mean(b) - mean(a)`` with its bootstrap CI and McNemar test."""

    n_pairs: int
    n_clusters: int
    rate_a: float
    rate_b: float
    diff: float
    ci_low: float
    ci_high: float
    b: int  # pairs where only ``b`` is positive (e.g. unsafe only in the locale)
    c: int  # pairs where only ``a`` is positive (e.g. unsafe only in English)
    p_value: float


@dataclass(frozen=True, eq=False)
class Clusters:
    """Cluster names already indexed (``Clusters.of``), for several bootstraps over the same pairs
    (the metrics of one group): the names are sorted once instead of once per metric."""

    codes: np.ndarray  # each pair's index among the sorted distinct names

    @classmethod
    def of(cls, names: Sequence[object] | np.ndarray) -> "Clusters":
        """Index ``names`` (compared as text) as ``paired_bootstrap`` does."""
        _, codes = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
        return cls(codes)


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray | Clusters | None = None,
    weights: Sequence[float] | np.ndarray | None = None,
    *,
    n_boot: int = DEFAULT_B,
    seed: int = DEFAULT_SEED,
    level: float = 0.95,
) -> PairedDiff:
    """Paired difference of weighted means ``b - a`` with a percentile cluster-bootstrap CI.

    ``a`` and ``b`` are outcomes (0/1, or any number) of the same item under two conditions, e.g.
    unsafe in English and unsafe in Swahili for one prompt. Each bootstrap replicate draws clusters
    (default: each pair its own cluster) with replacement: one ``B x clusters`` index draw, then
    gathers of per-cluster weighted sums, so the whole computation is vectorised.
    McNemar uses the unweighted discordant counts of binary outcomes. ``clusters`` may come
    indexed already (``Clusters``), the same answer as from the names.
    """
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    if xa.shape != xb.shape or xa.ndim != 1:
        raise ValueError("a and b must be 1-D arrays of equal length")
    n = xa.size
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    if n == 0 or w.sum() <= 0:
        return PairedDiff(0, 0, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0, 1.0)
    if clusters is None:
        codes = np.arange(n)
    else:
        codes = (clusters if isinstance(clusters, Clusters) else Clusters.of(clusters)).codes
        if codes.shape != xa.shape:
            raise ValueError("clusters must name every pair")
    k = int(codes.max()) + 1
    # The same pairs are asked for more than once per report (several breakdowns of one model, the
    # terminal summary after the folder): the answer is a pure function of these bytes.
    memo = hashlib.blake2b(b"".join(x.tobytes() for x in (xa, xb, w, np.asarray(codes, dtype=np.int64))), digest_size=20)
    memo.update(repr((n_boot, seed, level)).encode())
    cache_key = memo.digest()
    if cache_key in _BOOT_CACHE:
        return _BOOT_CACHE[cache_key]
    result = _paired_bootstrap(xa, xb, w, codes, k, uniform=weights is None and clusters is None,
                               n_boot=n_boot, seed=seed, level=level)
    if len(_BOOT_CACHE) >= _BOOT_CACHE_SIZE:
        _BOOT_CACHE.pop(next(iter(_BOOT_CACHE)))
    _BOOT_CACHE[cache_key] = result
    return result


_BOOT_CACHE: dict[bytes, PairedDiff] = {}
_BOOT_CACHE_SIZE = 4096


def _paired_bootstrap(xa: np.ndarray, xb: np.ndarray, w: np.ndarray, codes: np.ndarray, k: int, *,
                      uniform: bool, n_boot: int, seed: int, level: float) -> PairedDiff:
    n = xa.size
    wsum = np.bincount(codes, weights=w, minlength=k)
    dsum = np.bincount(codes, weights=w * (xb - xa), minlength=k)
    rate_a = float((w * xa).sum() / w.sum())
    rate_b = float((w * xb).sum() / w.sum())
    diff = rate_b - rate_a
    draws = _draws(seed, n_boot, k)
    # Unit weights, one pair per cluster: every replicate's weight is exactly k (a sum of k ones),
    # so the B x k gather of weights is skipped (same figures, a third less work).
    denom = np.full(n_boot, float(k)) if uniform else _replicate_sums(wsum, draws)
    # A replicate that drew only zero-weight clusters has no defined mean; drop it.
    ok = denom > 0
    reps = _replicate_sums(dsum, draws)[ok] / denom[ok]
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha]) if reps.size else (math.nan, math.nan)
    pos_a = xa > 0.5
    pos_b = xb > 0.5
    only_b = int(np.sum(pos_b & ~pos_a))
    only_a = int(np.sum(pos_a & ~pos_b))
    return PairedDiff(
        n_pairs=n,
        n_clusters=k,
        rate_a=rate_a,
        rate_b=rate_b,
        diff=diff,
        ci_low=float(lo),
        ci_high=float(hi),
        b=only_b,
        c=only_a,
        p_value=mcnemar_exact(only_b, only_a),
    )


def _replicate_sums(values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Per replicate (row of ``draws``), the sum of ``values`` over the clusters it drew, as floats.

    The float sum ``values[draws].sum(axis=1)`` is the definition. Binary outcomes under integer
    weights make every per-cluster value a small integer, and a float sum of integers below 2**53
    is exact in any order, so there the same sums come from a gather of one-byte (or two-, four-byte)
    integers summed as int64: several times less memory traffic than a gather of float64. A
    constant value (one pair per cluster: every weight sum is 1) needs no gather at all.
    ``values`` are ``np.bincount`` sums, so never -0.0 (whose float sum a constant would not keep).
    """
    n_boot, k = draws.shape
    ints = _as_small_ints(values, k)
    if ints is None:
        return values[draws].sum(axis=1)
    if ints.size and ints.min() == ints.max():
        return np.full(n_boot, float(k) * float(ints[0]))
    return ints[draws].sum(axis=1, dtype=np.int64).astype(float)


def _as_small_ints(values: np.ndarray, k: int) -> np.ndarray | None:
    """``values`` as the narrowest integer array that holds them, when every one is an integer and
    any sum of ``k`` of them stays exact in float64 (below 2**53); else None."""
    if values.size == 0 or not np.all(values == np.rint(values)):
        return None  # a fraction, a NaN
    top = float(np.abs(values).max())
    if top * max(k, 1) >= 2.0**53:
        return None  # also an infinity
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        if top <= np.iinfo(dtype).max:
            return values.astype(dtype)
    return None


# The last index draw, kept: the metrics of one group (unsafe, refusal, failure) are bootstrapped
# back to back over the same clusters with the same seed, so they share one draw, the very one
# ``default_rng(seed).integers(0, k, size=(n_boot, k))`` gives each of them.
_last_draws: tuple[tuple[int, int, int], np.ndarray] | None = None


def _draws(seed: int, n_boot: int, k: int) -> np.ndarray:
    """The ``n_boot x k`` cluster indices replicate draws for ``seed`` (read-only; see ``_last_draws``)."""
    global _last_draws
    key = (seed, n_boot, k)
    cacheable = isinstance(seed, (int, np.integer))
    last = _last_draws
    if cacheable and last is not None and last[0] == key:
        return last[1]
    draws = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
    draws.flags.writeable = False
    if cacheable:
        _last_draws = (key, draws)
    return draws


def cohen_kappa(x: Sequence[str], y: Sequence[str]) -> float:
    """Cohen's kappa of two labelings of the same items (``nan`` when undefined)."""
    if len(x) != len(y):
        raise ValueError("labelings differ in length")
    n = len(x)
    if n == 0:
        return math.nan
    cats = sorted(set(x) | set(y))
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for u, v in zip(x, y):
        table[index[u], index[v]] += 1
    po = np.trace(table) / n
    pe = float((table.sum(0) / n) @ (table.sum(1) / n))
    if pe >= 1.0:
        # Both labelings are constant: agreement is total if they match, kappa is conventionally 1.
        return 1.0 if po >= 1.0 else math.nan
    return float((po - pe) / (1.0 - pe))
