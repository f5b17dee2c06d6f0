"""The `repetition` gate: degenerate loops ("the bomb the bomb the bomb ...") from neural engines.

Two measures, the larger is the score: the share of words inside an n-gram repeated back to back
(n <= 6, at least 3 times; a single word 4 times), and the share of characters covered by the
longest substring that occurs twice. zlib's compression ratio is reported in the detail. A
source that repeats itself is allowed the same amount in its translation.
"""

from __future__ import annotations

import operator
import zlib
from functools import lru_cache

from xsafety.records import GateResult
from xsafety.translate.gates.base import GateInput, result, words

MAX_N = 6
MAX_CHARS = 2000  # the suffix sort below is quadratic in the worst case


def loop_share(tokens: list[str]) -> float:
    """Share of tokens inside an n-gram repeated consecutively (3+ times; unigrams 4+ times)."""
    if not tokens:
        return 0.0
    covered = [False] * len(tokens)
    for n in range(1, MAX_N + 1):
        need = 4 if n == 1 else 3
        # An n-gram said ``need`` times back to back makes (need - 1) * n positions in a row whose
        # token equals the one n later. Without such a stretch (the longest run of equal pairs,
        # found by C-level bytes operations) nothing is covered at this n: skip the scan.
        same = bytes(map(operator.eq, tokens, tokens[n:]))
        if not same or max(map(len, same.split(b"\x00"))) < (need - 1) * n:
            continue
        i = 0
        while i + n <= len(tokens):
            gram = tokens[i : i + n]
            reps = 1
            while tokens[i + reps * n : i + (reps + 1) * n] == gram:
                reps += 1
            if reps >= need:
                for j in range(i, i + reps * n):
                    covered[j] = True
                i += reps * n
            else:
                i += 1
    return sum(covered) / len(tokens)


def longest_repeat_share(text: str) -> float:
    """Length of the longest substring occurring at least twice, over the text's length.

    The longest repeat is the longest common prefix of two suffixes adjacent in sorted order. A
    pair is only looked at character by character when its first ``best + 1`` characters agree
    (one C-level slice comparison), so the Python-level work is one comparison per pair plus the
    length of the answer, instead of a character scan of every pair.
    """
    text = text[:MAX_CHARS]
    if len(text) < 2:
        return 0.0
    suffixes = sorted([text[i:] for i in range(len(text))])
    best = 0
    for a, b in zip(suffixes, suffixes[1:]):
        # Distinct suffixes differ in length, so equal (best + 1)-prefixes mean both are longer.
        if a[: best + 1] == b[: best + 1]:
            k = best + 1
            while k < len(a) and k < len(b) and a[k] == b[k]:
                k += 1
            best = k
    return best / len(text)


@lru_cache(maxsize=8192)
def repetition_score(text: str) -> float:
    """The larger of the loop share and the longest-repeat share, 0-1 (memoised: the English
    source is scored once for all its locales)."""
    tokens = [w.casefold() for w in words(text)]
    return max(loop_share(tokens), longest_repeat_share(text))


def compression_ratio(text: str) -> float | None:
    """zlib-compressed size over raw size (low for loops; unreliable below ~100 bytes)."""
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 9)) / len(raw) if raw else None


def check_repetition(item: GateInput, threshold: float) -> GateResult:
    """Pass when the repetition score is at most ``threshold`` or no worse than the source's."""
    score = repetition_score(item.text)
    own = repetition_score(item.source)
    ratio = compression_ratio(item.text)
    detail = f"source {own:.2f}" + (f", zlib ratio {ratio:.2f}" if ratio is not None else "")
    return result("repetition", score, threshold, score <= max(threshold, own + 0.1), detail)
