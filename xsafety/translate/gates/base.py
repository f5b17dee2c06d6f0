"""What every gate sees and returns: one item to check, and small cached text measurements.

A gate is a pure function ``(item, threshold) -> GateResult``. The measurements that several
gates and the combined quality score share (sentence chrF, identifier probabilities, word
tokens) are memoised here so one item is never scored twice for the same number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from xsafety.records import GateResult

# Word tokens for counting: letters (any script) and digits, joined by inner apostrophes/hyphens.
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*", re.UNICODE)


@dataclass(frozen=True)
class GateInput:
    """One forward translation to check, with what the gates need to know about its locale.

    ``unknown_marks`` and ``flags`` come from the engine's ``Candidate`` (``flags`` is its ``meta``:
    a chat translator that refused or answered says so there).
    """

    source: str
    text: str
    locale: str
    script: str = "Latn"
    back: str | None = None
    langdetect: str | None = None
    fasttext: str | None = None
    unknown_marks: int = 0
    flags: Mapping[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:  # flags is a dict; the texts identify the item well enough
        return hash((self.source, self.text, self.locale, self.back, self.unknown_marks))


@dataclass(frozen=True)
class Gate:
    """A named check: its function, default threshold, which side of it passes, and the extra
    numeric parameters it takes (settable per locale like thresholds, e.g. ``length_ratio_min``)."""

    name: str
    check: Callable[..., GateResult]
    threshold: float
    higher_is_better: bool
    description: str
    params: tuple[str, ...] = ()


def result(name: str, score: float | None, threshold: float, passed: bool, detail: str = "") -> GateResult:
    """A ``GateResult`` with the score rounded for stable, diff-friendly files."""
    return GateResult(
        name=name,
        score=None if score is None else round(float(score), 4),
        threshold=threshold,
        passed=bool(passed),
        detail=detail,
    )


def words(text: str) -> list[str]:
    """Word tokens of ``text`` (any script), in order."""
    return list(_word_tuple(text))


@lru_cache(maxsize=8192)
def _word_tuple(text: str) -> tuple[str, ...]:
    # Several gates and signals tokenise the same text (and every locale the same source).
    return tuple(_WORD.findall(text))


@lru_cache(maxsize=8192)
def sentence_chrf(hypothesis: str, reference: str) -> float:
    """sacrebleu sentence chrF (chrF2, 0-100) of one hypothesis against one reference.

    The same arithmetic as ``CHRF.sentence_score`` (its own segment statistics and F-score, so the
    number is identical), without re-extracting the reference's n-grams each time: the English
    source is the reference of every locale's copy gate and round trip.
    """
    if not hypothesis.strip():
        return 0.0
    if hypothesis == reference:
        # Every order's precision and recall are 1 (orders longer than the text are left out of
        # the effective order), so sacrebleu's F-score is exactly 100.0: a human reference's
        # back-translation is its English source.
        return 100.0
    metric = _chrf()
    stats = metric._compute_segment_statistics(metric._preprocess_segment(hypothesis), _chrf_reference(reference))
    return float(metric._compute_f_score(stats))


@lru_cache(maxsize=4096)
def _chrf_reference(reference: str) -> dict[str, Any]:
    """sacrebleu's n-gram counts of one chrF reference (as ``CHRF._cache_references`` makes them)."""
    metric = _chrf()
    return metric._extract_reference_info([metric._preprocess_segment(reference)])


@lru_cache(maxsize=8192)
def sentence_bleu(hypothesis: str, reference: str) -> float:
    """sacrebleu sentence BLEU (effective order, so short sentences are not all zero), 0-100."""
    return float(_bleu().sentence_score(hypothesis, [reference]).score) if hypothesis.strip() else 0.0


@lru_cache(maxsize=1)
def _chrf() -> Any:
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    metric.sentence_score("x", ["x"])  # sacrebleu knows its signature (nrefs) only after one score
    return metric


@lru_cache(maxsize=1)
def _bleu() -> Any:
    from sacrebleu.metrics import BLEU

    metric = BLEU(effective_order=True)
    metric.sentence_score("x", ["x"])  # as above: the signature needs one score first
    return metric


def chrf_signature() -> str:
    """The sacrebleu signature of the chrF the gates compute (recorded in each translation's meta)."""
    return "chrF2|" + str(_chrf().get_signature())


def bleu_signature() -> str:
    """The sacrebleu signature of the sentence BLEU the gates compute."""
    return "BLEU|" + str(_bleu().get_signature())
