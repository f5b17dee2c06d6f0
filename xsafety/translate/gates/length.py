"""The `length_ratio` gate: forward length / source length in characters, within a range per script.

A translation that is far shorter than its source dropped content (or is a refusal stub); one
far longer rambles or answered the prompt. Dense scripts (Han, kana, Hangul) write English in a
fraction of the characters, so they get their own range. A locale sets its own range with the
parameters ``length_ratio_min`` / ``length_ratio_max``; the gate's threshold then scales the range:
the pass band is ``[low / t, high * t]`` (``t`` = 1 by default).
"""

from __future__ import annotations

from xsafety.records import GateResult
from xsafety.translate.gates.base import GateInput, result
from xsafety.translate.gates.scripts import DENSE_SCRIPTS

# Expected character ratios target/English. Alphabets and abugidas run about as long as English
# or longer; dense scripts far shorter. Generous, because short prompts vary a lot.
DEFAULT_RANGE = (0.6, 2.0)
SCRIPT_LENGTH_RANGES: dict[str, tuple[float, float]] = {s: (0.15, 0.9) for s in DENSE_SCRIPTS}

# Below this many source characters a ratio says little ("Hi!" -> "¡Hola!" is 2.0).
MIN_SOURCE_CHARS = 12


def length_ratio(source: str, text: str) -> float | None:
    """Characters of ``text`` over characters of ``source`` (spaces collapsed); None for an empty source."""
    src = len(" ".join(source.split()))
    if src == 0:
        return None
    return len(" ".join(text.split())) / src


def expected_range(script: str) -> tuple[float, float]:
    """The (low, high) ratio expected for text in ``script``."""
    return SCRIPT_LENGTH_RANGES.get(script, DEFAULT_RANGE)


def check_length_ratio(
    item: GateInput,
    threshold: float,
    length_ratio_min: float | None = None,
    length_ratio_max: float | None = None,
) -> GateResult:
    """Pass when the length ratio lies in the (script's or locale's) range widened by factor ``threshold``."""
    ratio = length_ratio(item.source, item.text)
    if ratio is None:
        return result("length_ratio", None, threshold, True, "empty source; not checked")
    low, high = expected_range(item.script)
    low = length_ratio_min if length_ratio_min is not None else low
    high = length_ratio_max if length_ratio_max is not None else high
    low, high = low / threshold, high * threshold
    if len(" ".join(item.source.split())) < MIN_SOURCE_CHARS:
        return result("length_ratio", ratio, threshold, ratio > 0, f"source too short to judge; range {low:.2f}-{high:.2f}")
    return result("length_ratio", ratio, threshold, low <= ratio <= high, f"expected {low:.2f}-{high:.2f}")
