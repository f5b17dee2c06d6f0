"""Fit the combined translation quality score (translations/quality_model.toml).

Procedure, rerunnable by anyone with Apertium and ../shared/data/xsafety_parallel.jsonl:

1. Translate the English column of the parallel file en->TARGET with Apertium (``--mode``), and
   back (``--back-mode``), exactly as the translation stage does (null-flushed batches, marks counted).
2. Compute every signal in ``xsafety.translate.gates.quality.SIGNALS`` per row, and the target:
   sentence chrF of the forward text against the human TARGET text (rows with an empty reference
   are dropped).
3. Map each signal through its empirical CDF and fit least squares of the target's rank
   (percentile) on those percentiles. K-fold cross-validation (quantiles and weights fitted on the
   training folds only) gives the out-of-fold Spearman that is reported; signals are chosen by
   forward selection on that cross-validated Spearman.
4. Refit on all rows and write the weights, the intercept, 201 quantiles per chosen signal and the
   fit report to the TOML.

    .venv/bin/python scripts/fit_quality.py ../shared/data/xsafety_parallel.jsonl \
        --locale es --mode eng-spa --back-mode spa-eng --out translations/quality_model.toml
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from xsafety.records import stable_hash
from xsafety.translate.engines.apertium import ApertiumEngine
from xsafety.translate.evaluate import spearman
from xsafety.translate.gates.base import GateInput, sentence_chrf
from xsafety.translate.gates.quality import SIGNALS, ecdf, signals

log = logging.getLogger("fit_quality")

N_QUANTILES = 201
FOLDS = 5
# langdetect/fastText labels for the locales this script is run on; the stage takes them from the registry.
FASTTEXT = {"es": "es", "ca": "ca", "gl": "gl", "eo": "eo", "de": "de", "fr": "fr"}


def quantiles(values: np.ndarray) -> list[float]:
    """``N_QUANTILES`` evenly spaced quantiles (inclusive) of the non-missing values."""
    vals = values[~np.isnan(values)]
    if vals.size == 0:
        return [0.0]
    return [round(float(q), 6) for q in np.quantile(vals, np.linspace(0, 1, N_QUANTILES))]


def to_ranks(column: np.ndarray, qs: list[float]) -> np.ndarray:
    """Percentiles of a column against fit quantiles; missing values sit at the median."""
    return np.array([0.5 if np.isnan(v) else ecdf(qs, float(v)) for v in column])


def fit(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, list[list[float]]]:
    """Quantiles per column, then least squares of y on the percentiles; returns weights, intercept, quantiles."""
    qs = [quantiles(X[:, j]) for j in range(X.shape[1])]
    R = np.column_stack([to_ranks(X[:, j], qs[j]) for j in range(X.shape[1])])
    A = np.column_stack([R, np.ones(len(R))])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return coef[:-1], float(coef[-1]), qs


def predict(X: np.ndarray, w: np.ndarray, b: float, qs: list[list[float]]) -> np.ndarray:
    """The combined score for rows of raw signal values."""
    R = np.column_stack([to_ranks(X[:, j], qs[j]) for j in range(X.shape[1])])
    return np.clip(R @ w + b, 0.0, 1.0)


def cv_spearman(X: np.ndarray, target: np.ndarray, folds: int = FOLDS, seed: int = 0) -> float:
    """Out-of-fold Spearman of the combined score with the target (everything refitted per fold)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(target))
    pred = np.zeros(len(target))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        y = percentile(target[train])
        w, b, qs = fit(X[train], y)
        pred[test] = predict(X[test], w, b, qs)
    return spearman(pred, target)


def percentile(values: np.ndarray) -> np.ndarray:
    """Mid-rank percentiles of values among themselves (the regression target)."""
    qs = sorted(values.tolist())
    return np.array([ecdf(qs, float(v)) for v in values])


def load_rows(path: Path, locale: str, limit: int | None) -> list[dict[str, str]]:
    """Rows of the parallel file with both English and a non-empty reference."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row.get("en", "").strip() and row.get(locale, "").strip():
                rows.append(row)
    return rows[:limit] if limit else rows


def measure(rows: list[dict[str, str]], locale: str, mode: str, back_mode: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Translate, back-translate and measure every signal; returns (signals matrix, target chrF, names)."""
    engine = ApertiumEngine(modes={("en", locale): mode, (locale, "en"): back_mode})
    sources = [r["en"] for r in rows]
    t0 = time.time()
    forward = [c[0] for c in engine.translate(sources, "en", locale)]
    back = [c[0].text for c in engine.translate([c.text for c in forward], locale, "en")]
    log.info("translated %d rows both ways in %.1fs", len(rows), time.time() - t0)
    names = list(SIGNALS)
    X = np.full((len(rows), len(names)), np.nan)
    target = np.zeros(len(rows))
    for i, (row, fwd, bk) in enumerate(zip(rows, forward, back)):
        item = GateInput(
            source=row["en"], text=fwd.text, locale=locale, back=bk,
            fasttext=FASTTEXT.get(locale), unknown_marks=fwd.unknown_marks,
        )
        values = signals(item)
        X[i] = [np.nan if values[n] is None else values[n] for n in names]
        target[i] = sentence_chrf(fwd.text, row[locale])
    return X, target, names


def forward_select(X: np.ndarray, target: np.ndarray, names: list[str]) -> tuple[list[str], float]:
    """Greedy forward selection of signals on cross-validated Spearman; stops when nothing adds 0.002."""
    chosen: list[int] = []
    best = -1.0
    while True:
        trials = {j: cv_spearman(X[:, chosen + [j]], target) for j in range(len(names)) if j not in chosen}
        if not trials:
            break
        j, rho = max(trials.items(), key=lambda kv: kv[1])
        if rho < best + 0.002:
            break
        chosen.append(j)
        best = rho
        log.info("  + %-16s cv Spearman %.3f", names[j], rho)
    return [names[j] for j in chosen], best


def toml_list(values: list[float]) -> str:
    """A TOML array of floats, wrapped for diffs."""
    items = [repr(v) for v in values]
    lines = [", ".join(items[i : i + 10]) for i in range(0, len(items), 10)]
    return "[\n  " + ",\n  ".join(lines) + ",\n]"


def main() -> None:
    """Measure, select, cross-validate, refit and write the model file."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parallel", type=Path)
    ap.add_argument("--locale", default="es")
    ap.add_argument("--mode", default="eng-spa")
    ap.add_argument("--back-mode", default="spa-eng")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("translations/quality_model.toml"))
    ap.add_argument("--signals", default=None, help="comma-separated signals to use instead of forward selection")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    rows = load_rows(args.parallel, args.locale, args.limit)
    X, target, names = measure(rows, args.locale, args.mode, args.back_mode)
    log.info("reference chrF: mean %.1f over %d rows", target.mean(), len(target))
    single = {n: spearman(np.nan_to_num(X[:, j], nan=np.nanmedian(X[:, j])), target) for j, n in enumerate(names)}
    for n, rho in single.items():
        log.info("signal %-16s Spearman %+.3f", n, rho)
    if args.signals:
        chosen = [s.strip() for s in args.signals.split(",")]
        cv = cv_spearman(X[:, [names.index(n) for n in chosen]], target)
    else:
        chosen, cv = forward_select(X, target, names)
    cols = [names.index(n) for n in chosen]
    w, b, qs = fit(X[:, cols], percentile(target))
    in_sample = spearman(predict(X[:, cols], w, b, qs), target)
    log.info("chosen %s: cv Spearman %.3f, in-sample %.3f", chosen, cv, in_sample)

    fit_id = stable_hash("quality", args.locale, args.mode, chosen, [round(float(x), 6) for x in w], round(b, 6), length=12)
    lines = [
        "# Combined translation quality score: see xsafety/translate/gates/quality.py.",
        "# Written by scripts/fit_quality.py; rerun it rather than editing by hand:",
        f"#   .venv/bin/python scripts/fit_quality.py ../shared/data/xsafety_parallel.jsonl --locale {args.locale} --mode {args.mode} --back-mode {args.back_mode}",
        "# score = clip(intercept + sum(weight * ECDF_signal(value)), 0, 1), ECDF from the quantiles below.",
        "",
        # a top-level key must come before the first table
        f"intercept = {b:.6f}",
        "",
        "[fit]",
        f'fit_id = "{fit_id}"',
        f'data = "{args.parallel.name} (XSafety, {len(rows)} rows with a reference)"',
        f'engine = "apertium {args.mode} / {args.back_mode}"',
        f'target = "percentile of sentence chrF of the forward text against the human {args.locale} reference"',
        f"folds = {FOLDS}",
        f"cv_spearman = {cv:.4f}",
        f"in_sample_spearman = {in_sample:.4f}",
        f"reference_chrf_mean = {target.mean():.2f}",
        "",
        "[fit.single_signal_spearman]",
        *[f"{n} = {rho:.4f}" for n, rho in single.items()],
        "",
        "[weights]",
        *[f"{n} = {float(x):.6f}" for n, x in zip(chosen, w)],
        "",
        "[quantiles]",
        *[f"{n} = {toml_list(q)}" for n, q in zip(chosen, qs)],
        "",
    ]
    text = "\n".join(lines)
    args.out.write_text(text, encoding="utf-8")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
