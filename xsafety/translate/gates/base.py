"""What every gate sees and returns: one item to check, and small cached text measurements.

A gate is a pure function ``(item, threshold) -> GateResult``. The measurements that several
gates and the combined quality score share (sentence chrF, identifier probabilities, word
tokens) are memoised here so one item is never scored twice for the same number.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import groupby
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
    if metric.word_order or metric.whitespace or metric.lowercase:
        stats = metric._compute_segment_statistics(metric._preprocess_segment(hypothesis), _chrf_reference(reference))
    else:
        stats = _char_stats(hypothesis, reference, metric.char_order)
    return float(metric._compute_f_score(stats))


def _char_stats(hypothesis: str, reference: str, order: int) -> list[int]:
    """sacrebleu's [hypothesis n-grams, reference n-grams, matches] per character order (chrF
    without word n-grams, whitespace removed), counting only n-grams that can match.

    An n-gram can only be in the reference when each of its characters is, so only the runs of
    such characters are cut into n-grams; the hypothesis' n-gram count is arithmetic. For a
    Chinese or Arabic text against English that leaves a few digits and punctuation marks, instead
    of every n-gram of the text.
    """
    ref_ngrams = _chrf_reference(reference)["ref_ngrams"][0]
    chars, totals = _reference_chars(reference)
    line = "".join(hypothesis.split())
    runs = ["".join(group) for inside, group in groupby(line, chars.__contains__) if inside]
    stats: list[int] = []
    for n in range(1, order + 1):
        ref = ref_ngrams[n - 1]
        grams = Counter([run[i : i + n] for run in runs for i in range(len(run) - n + 1)])
        match = sum(min(count, ref[g]) for g, count in grams.items() if g in ref)
        stats += [max(0, len(line) - n + 1) if ref else 0, totals[n - 1], match]
    return stats


@lru_cache(maxsize=4096)
def _reference_chars(reference: str) -> tuple[frozenset[str], tuple[int, ...]]:
    """The characters of a chrF reference, and its n-gram total per order."""
    ref_ngrams = _chrf_reference(reference)["ref_ngrams"][0]
    return frozenset(ref_ngrams[0]), tuple(sum(c.values()) for c in ref_ngrams)


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


@lru_cache(maxsize=1)
def chrf_signature() -> str:
    """The sacrebleu signature of the chrF the gates compute (recorded in each translation's meta;
    the metric's settings are fixed, so it is worked out once)."""
    return "chrF2|" + str(_chrf().get_signature())


@lru_cache(maxsize=1)
def bleu_signature() -> str:
    """The sacrebleu signature of the sentence BLEU the gates compute."""
    return "BLEU|" + str(_bleu().get_signature())
