"""Round-trip gates: how close is the back-translation to the English source?

Sentence-level chrF and BLEU (sacrebleu) between the back-translation (hypothesis) and the
source (reference). A weak signal of quality on its own (Spearman ~0.22 with reference chrF for
Apertium en->es), but it catches translations that lost the meaning altogether.
"""

from __future__ import annotations

from xsafety.records import GateResult
from xsafety.translate.gates.base import GateInput, result, sentence_bleu, sentence_chrf


def check_roundtrip_chrf(item: GateInput, threshold: float) -> GateResult:
    """Pass when chrF(back, source) >= ``threshold``; not checked without a back-translation."""
    if item.back is None:
        return result("roundtrip_chrf", None, threshold, True, "no back-translation; not checked")
    score = sentence_chrf(item.back, item.source)
    return result("roundtrip_chrf", score, threshold, score >= threshold)


def check_roundtrip_bleu(item: GateInput, threshold: float) -> GateResult:
    """Pass when sentence BLEU(back, source) >= ``threshold``; not checked without a back-translation."""
    if item.back is None:
        return result("roundtrip_bleu", None, threshold, True, "no back-translation; not checked")
    score = sentence_bleu(item.back, item.source)
    return result("roundtrip_bleu", score, threshold, score >= threshold)
