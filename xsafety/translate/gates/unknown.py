"""The `unknown_words` gate: the share of words the engine itself marked as not translated.

Apertium marks unknown words (``*``), words with no bilingual entry (``@``) and words it could
not generate (``#``); the engine counts them into ``Candidate.unknown_marks``. eng-hbs leaves
about half its words untranslated or in base form, and round-trip chrF does not see it (the
copied English comes straight back); this gate does.
"""

from __future__ import annotations

from xsafety.records import GateResult
from xsafety.translate.gates.base import GateInput, result, words


def mark_rate(item: GateInput) -> float:
    """Engine-marked words per word of the forward text (0 for engines that mark nothing)."""
    n = len(words(item.text))
    if n == 0:
        return 1.0 if item.unknown_marks else 0.0
    return min(1.0, item.unknown_marks / n)


def check_unknown_words(item: GateInput, threshold: float) -> GateResult:
    """Pass when at most ``threshold`` of the words carry an engine's unknown-word mark."""
    rate = mark_rate(item)
    return result("unknown_words", rate, threshold, rate <= threshold, f"{item.unknown_marks} marked words")
