"""The combined quality score: a linear model over scale-free (empirical-CDF) signals.

Why this shape: no single signal predicts how good a translation is (for Apertium en->es against
the human XSafety Spanish, round-trip chrF reaches Spearman 0.22 with reference chrF). Each signal
is mapped through its empirical CDF *as measured at fit time* (quantiles stored in
``translations/quality_model.toml``), so a score is computable per item at translation time,
without references and without ranking inside a batch; the weights of a least-squares fit on those
ranks come from the same file. ``scripts/fit_quality.py`` refits it. The output estimates the
percentile of the translation's reference chrF among the fit set's translations, clipped to [0, 1].

A model fitted on one language and one engine must be validated before it is trusted elsewhere:
``xsafety translate eval`` reports the correlation of every part and of the whole wherever
references exist, and every part is kept in the record.
"""

from __future__ import annotations

import bisect
import logging
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from xsafety.data import translations_dir
from xsafety.errors import ConfigError
from xsafety.translate.gates.base import GateInput, sentence_bleu, sentence_chrf, words
from xsafety.translate.gates.copy import copied_word_share
from xsafety.translate.gates.langid import fasttext_p
from xsafety.translate.gates.length import length_ratio
from xsafety.translate.gates.unknown import mark_rate

log = logging.getLogger(__name__)

MODEL_FILE = "quality_model.toml"


def _roundtrip_chrf(item: GateInput) -> float | None:
    return None if item.back is None else sentence_chrf(item.back, item.source)


def _roundtrip_bleu(item: GateInput) -> float | None:
    return None if item.back is None else sentence_bleu(item.back, item.source)


def _source_chars(item: GateInput) -> float:
    return float(len(" ".join(item.source.split())))


def _source_words(item: GateInput) -> float:
    return float(len(words(item.source)))


def _capital_share(item: GateInput) -> float | None:
    """Share of source words after the first that start upper-case: names and acronyms copy through."""
    ws = words(item.source)[1:]
    return sum(w[:1].isupper() for w in ws) / len(ws) if ws else None


def _marks(item: GateInput) -> float:
    """Engine-marked words, counted (a long sentence with one gap differs from a short one with one)."""
    return float(item.unknown_marks)


def _clause_marks(item: GateInput) -> float | None:
    """Commas, semicolons and colons per source word: long compound sentences fare worse in rule-based MT."""
    n = len(words(item.source))
    return sum(item.source.count(c) for c in ",;:") / n if n else None


def _back_copy(item: GateInput) -> float | None:
    """Share of source words that survive the round trip verbatim (copied or translated back)."""
    return None if item.back is None else copied_word_share(item.source, item.back)


# The one table of signals the model may use: name -> measurement of one item (None = missing).
SIGNALS: dict[str, Callable[[GateInput], float | None]] = {
    "roundtrip_chrf": _roundtrip_chrf,
    "roundtrip_bleu": _roundtrip_bleu,
    "mark_rate": mark_rate,
    "source_chars": _source_chars,
    "source_words": _source_words,
    "length_ratio": lambda item: length_ratio(item.source, item.text),
    "fasttext_p": fasttext_p,
    "copy_rate": lambda item: copied_word_share(item.source, item.text),
    "capital_share": _capital_share,
    "back_copy": _back_copy,
    "marks": _marks,
    "clause_marks": _clause_marks,
}


# Signals that read only the English source and the back-translation. A source is scored for every
# locale, and a human reference's back-translation is that source, so these are worked out once per
# (source, back-translation) pair.
SOURCE_SIDE = frozenset({"roundtrip_chrf", "roundtrip_bleu", "source_chars", "source_words", "capital_share",
                         "back_copy", "clause_marks"})


@lru_cache(maxsize=8192)
def _source_side(source: str, back: str | None) -> dict[str, float | None]:
    item = GateInput(source=source, text="", locale="", back=back)
    return {name: _rounded(SIGNALS[name](item)) for name in SIGNALS if name in SOURCE_SIDE}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def signals(item: GateInput, names: tuple[str, ...] | None = None) -> dict[str, float | None]:
    """Every signal (or those named) for one item, rounded for stable files."""
    shared = _source_side(item.source, item.back)
    out: dict[str, float | None] = {}
    for name in names or tuple(SIGNALS):
        out[name] = shared[name] if name in shared else _rounded(SIGNALS[name](item))
    return out


def ecdf(quantiles: list[float], value: float) -> float:
    """Mid-rank empirical CDF of ``value`` against sorted fit-time ``quantiles`` (ties share a rank)."""
    if not quantiles:
        return 0.5
    lo = bisect.bisect_left(quantiles, value)
    hi = bisect.bisect_right(quantiles, value)
    return (lo + hi) / (2.0 * len(quantiles))


@dataclass(frozen=True)
class QualityModel:
    """Weights over CDF-transformed signals; ``quantiles`` per signal come from the fit set."""

    weights: Mapping[str, float]
    intercept: float
    quantiles: Mapping[str, list[float]]
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """The signals the model uses, in file order."""
        return tuple(self.weights)

    def transform(self, values: Mapping[str, float | None]) -> dict[str, float]:
        """Each signal's fit-time percentile (0.5 where the signal is missing)."""
        return {
            n: 0.5 if values.get(n) is None else ecdf(self.quantiles[n], float(values[n]))  # type: ignore[arg-type]
            for n in self.names
        }

    def predict(self, values: Mapping[str, float | None]) -> float:
        """The combined score in [0, 1] from raw signal values."""
        ranks = self.transform(values)
        raw = self.intercept + sum(self.weights[n] * ranks[n] for n in self.names)
        return round(min(1.0, max(0.0, raw)), 4)

    def score(self, item: GateInput) -> tuple[float, dict[str, float | None]]:
        """The combined score of one item and every signal it was computed from."""
        values = signals(item)
        return self.predict(values), values

    def signature(self) -> str:
        """Identity of the model (its file's fit id), for the stage's keys."""
        return str(self.info.get("fit_id", "unversioned"))


def load_quality_model(path: str | Path | None = None) -> QualityModel:
    """Read ``translations/quality_model.toml`` (or ``path``); ``ConfigError`` when it is malformed."""
    file = Path(path) if path is not None else translations_dir() / MODEL_FILE
    return _load(str(file))


@lru_cache(maxsize=4)
def _load(file: str) -> QualityModel:
    try:
        data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("quality model file is missing; run scripts/fit_quality.py", file=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=file) from None
    weights = data.get("weights")
    quantiles = data.get("quantiles")
    if not isinstance(weights, dict) or not weights:
        raise ConfigError("needs a [weights] table", file=file, field="weights")
    if not isinstance(quantiles, dict):
        raise ConfigError("needs a [quantiles] table", file=file, field="quantiles")
    for name in weights:
        if name not in SIGNALS:
            raise ConfigError(f"unknown signal {name!r}; known: {', '.join(SIGNALS)}", file=file, field=f"weights.{name}")
        q = quantiles.get(name)
        if not isinstance(q, list) or not q or q != sorted(q):
            raise ConfigError("needs a sorted, non-empty list", file=file, field=f"quantiles.{name}")
    return QualityModel(
        weights={k: float(v) for k, v in weights.items()},
        intercept=float(data.get("intercept", 0.0)),
        quantiles={k: [float(x) for x in quantiles[k]] for k in weights},
        info=dict(data.get("fit", {})),
    )
