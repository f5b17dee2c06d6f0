"""The `copy` gate: did the engine copy the English source through instead of translating it?

Score = the larger of (a) the share of the source's words (3+ letters, case-folded) found verbatim
in the translation and (b) chrF(translation, source) / 100; 1.0 when the two are identical after
normalising case and spaces. Cognates and names make (a) non-zero for good translations too, so the
threshold is generous; a wholesale copy scores near 1.
"""

from __future__ import annotations

from functools import lru_cache

from xsafety.records import GateResult
from xsafety.translate.gates.base import GateInput, result, sentence_chrf, words

MIN_WORD_LETTERS = 3


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())


@lru_cache(maxsize=4096)
def _source_words(source: str) -> tuple[str, ...]:
    """The source's words that count (3+ letters, not numbers), case-folded: the same English
    source is compared with each locale's text."""
    return tuple(w.casefold() for w in words(source) if len(w) >= MIN_WORD_LETTERS and not w.isdigit())


@lru_cache(maxsize=4096)
def copied_word_share(source: str, text: str) -> float | None:
    """Share of the source's words (3+ letters, not numbers) that appear verbatim in ``text``.

    Memoised: the copy gate and the quality model's ``copy_rate`` signal ask it of the same pair."""
    src = _source_words(source)
    if not src:
        return None
    target = {w.casefold() for w in words(text)}
    return sum(w in target for w in src) / len(src)


def copy_score(source: str, text: str) -> float:
    """How much of ``text`` is an untranslated copy of ``source``, 0-1."""
    if _normal(source) == _normal(text):
        return 1.0
    share = copied_word_share(source, text) or 0.0
    return max(share, sentence_chrf(text, source) / 100.0)


def check_copy(item: GateInput, threshold: float) -> GateResult:
    """Pass when the copy score is at most ``threshold``."""
    if not item.text.strip():
        return result("copy", None, threshold, False, "empty translation")
    if _normal(item.source) == _normal(item.text):
        return result("copy", 1.0, threshold, False, "identical to the source")
    share = copied_word_share(item.source, item.text)
    chrf = sentence_chrf(item.text, item.source)
    score = max(share or 0.0, chrf / 100.0)
    detail = f"copied words {share:.0%}, chrF vs source {chrf:.1f}" if share is not None else f"chrF vs source {chrf:.1f}"
    return result("copy", score, threshold, score <= threshold, detail)
