"""Coverage of the raw and the judge-corrected gap interval when the judge errs differently per language.

    python scripts/simulate_correction.py [--datasets 200] [--prompts 600] [--labels 100] [--seed 7]

Each simulated dataset has a known truth: every prompt is truly unsafe in English with probability
``p_en`` and in the other language with ``p_loc`` (the two outcomes of one prompt correlated, as in
real paired data), so the true gap is ``p_loc - p_en``. A judge then labels each answer with
sensitivity/specificity 0.95/0.95 in English but 0.70/0.90 in the other language, and ``--labels``
human-labelled positives and as many negatives per language (drawn with the same error rates)
calibrate it. The script prints how often the raw paired-bootstrap CI and the corrected interval
(prompts and calibration labels resampled together) contain the true gap. Used by
``tests/test_correct_simulation.py`` through ``simulate``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from xsafety.report.correct import corrected_gap
from xsafety.report.stats import paired_bootstrap
from xsafety.report.validity import Confusion


@dataclass(frozen=True)
class Setting:
    """The known truth and the judge's known error rates of a simulation."""

    p_en: float = 0.30
    p_loc: float = 0.40
    rho: float = 0.7  # share of prompts whose two outcomes share one latent draw
    se_en: float = 0.95
    sp_en: float = 0.95
    se_loc: float = 0.70
    sp_loc: float = 0.90

    @property
    def true_gap(self) -> float:
        """The population gap the intervals should cover."""
        return self.p_loc - self.p_en


@dataclass(frozen=True)
class Coverage:
    """How often each interval held the true gap, and their mean widths (in points)."""

    datasets: int
    raw: float
    corrected: float
    raw_width_pp: float
    corrected_width_pp: float
    mean_raw_gap_pp: float
    mean_corrected_gap_pp: float


def one_dataset(rng: np.random.Generator, s: Setting, n_prompts: int, n_labels: int) -> tuple[np.ndarray, np.ndarray, Confusion, Confusion]:
    """Judge outcomes (English, locale) of ``n_prompts`` pairs and each language's calibration counts."""
    u = rng.random(n_prompts)
    v = np.where(rng.random(n_prompts) < s.rho, u, rng.random(n_prompts))
    true_en, true_loc = u < s.p_en, v < s.p_loc
    obs_en = np.where(true_en, rng.random(n_prompts) < s.se_en, rng.random(n_prompts) < 1 - s.sp_en)
    obs_loc = np.where(true_loc, rng.random(n_prompts) < s.se_loc, rng.random(n_prompts) < 1 - s.sp_loc)

    def calibration(se: float, sp: float) -> Confusion:
        tp, tn = int(rng.binomial(n_labels, se)), int(rng.binomial(n_labels, sp))
        return Confusion(tp, n_labels - tp, tn, n_labels - tn, n_labels, n_labels)

    return obs_en.astype(float), obs_loc.astype(float), calibration(s.se_en, s.sp_en), calibration(s.se_loc, s.sp_loc)


def simulate(
    n_datasets: int = 200, n_prompts: int = 600, n_labels: int = 100, *, seed: int = 7, n_boot: int = 1000,
    setting: Setting = Setting(),
) -> Coverage:
    """Coverage of the true gap by the raw and the corrected 95% intervals over ``n_datasets``."""
    rng = np.random.default_rng(seed)
    hits_raw = hits_corr = 0
    widths_raw, widths_corr, raw_gaps, corr_gaps = [], [], [], []
    truth = setting.true_gap
    for i in range(n_datasets):
        en, loc, cal_en, cal_loc = one_dataset(rng, setting, n_prompts, n_labels)
        raw = paired_bootstrap(en, loc, n_boot=n_boot, seed=seed + i)
        corr = corrected_gap(en, loc, cal_en, cal_loc, n_boot=n_boot, seed=seed + i)
        hits_raw += raw.ci_low <= truth <= raw.ci_high
        hits_corr += corr.ci_low <= truth <= corr.ci_high
        widths_raw.append(raw.ci_high - raw.ci_low)
        widths_corr.append(corr.ci_high - corr.ci_low)
        raw_gaps.append(raw.diff)
        corr_gaps.append(corr.gap)
    return Coverage(
        datasets=n_datasets,
        raw=hits_raw / n_datasets,
        corrected=hits_corr / n_datasets,
        raw_width_pp=100 * float(np.mean(widths_raw)),
        corrected_width_pp=100 * float(np.mean(widths_corr)),
        mean_raw_gap_pp=100 * float(np.mean(raw_gaps)),
        mean_corrected_gap_pp=100 * float(np.nanmean(corr_gaps)),
    )


def main() -> int:
    """Print the coverage figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--labels", type=int, default=100, help="human-labelled positives (and negatives) per language")
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    s = Setting()
    cov = simulate(args.datasets, args.prompts, args.labels, seed=args.seed, n_boot=args.boot, setting=s)
    print(f"truth: unsafe en {s.p_en:.2f}, locale {s.p_loc:.2f}, true gap {100 * s.true_gap:+.1f} pp")
    print(f"judge: en sensitivity {s.se_en:.2f} specificity {s.sp_en:.2f}; "
          f"locale sensitivity {s.se_loc:.2f} specificity {s.sp_loc:.2f}")
    print(f"{cov.datasets} datasets x {args.prompts} paired prompts, {args.labels}+{args.labels} calibration labels "
          f"per language, B={args.boot}")
    print(f"raw paired-bootstrap CI:  coverage {cov.raw:.3f}  mean gap {cov.mean_raw_gap_pp:+.1f} pp  "
          f"mean width {cov.raw_width_pp:.1f} pp")
    print(f"corrected interval:       coverage {cov.corrected:.3f}  mean gap {cov.mean_corrected_gap_pp:+.1f} pp  "
          f"mean width {cov.corrected_width_pp:.1f} pp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
