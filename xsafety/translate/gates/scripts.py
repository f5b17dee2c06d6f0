"""Unicode ranges of ISO 15924 scripts, and the `script` gate: is the text written in the right one?

Only letters count (digits, punctuation and spaces belong to no script). A composite script
(``Jpan`` = Han + Hiragana + Katakana, ``Kore`` = Hangul + Han) accepts any of its parts, since
Japanese and Korean text mixes them.
"""

from __future__ import annotations

import re
from functools import lru_cache

from xsafety.records import GateResult
from xsafety.translate.gates.base import GateInput, result

Ranges = tuple[tuple[int, int], ...]

_HAN: Ranges = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))
_HIRA: Ranges = ((0x3040, 0x309F),)
_KANA: Ranges = ((0x30A0, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
_HANGUL: Ranges = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7AF), (0xD7B0, 0xD7FF))

SCRIPT_RANGES: dict[str, Ranges] = {
    "Latn": ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF), (0x2C60, 0x2C7F), (0xA720, 0xA7FF)),
    "Cyrl": ((0x400, 0x52F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F)),
    "Grek": ((0x370, 0x3FF), (0x1F00, 0x1FFF)),
    "Armn": ((0x530, 0x58F),),
    "Hebr": ((0x590, 0x5FF), (0xFB1D, 0xFB4F)),
    "Arab": ((0x600, 0x6FF), (0x750, 0x77F), (0x8A0, 0x8FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "Thaa": ((0x780, 0x7BF),),
    "Deva": ((0x900, 0x97F), (0xA8E0, 0xA8FF)),
    "Beng": ((0x980, 0x9FF),),
    "Guru": ((0xA00, 0xA7F),),
    "Gujr": ((0xA80, 0xAFF),),
    "Orya": ((0xB00, 0xB7F),),
    "Taml": ((0xB80, 0xBFF),),
    "Telu": ((0xC00, 0xC7F),),
    "Knda": ((0xC80, 0xCFF),),
    "Mlym": ((0xD00, 0xD7F),),
    "Sinh": ((0xD80, 0xDFF),),
    "Thai": ((0xE00, 0xE7F),),
    "Laoo": ((0xE80, 0xEFF),),
    "Tibt": ((0xF00, 0xFFF),),
    "Mymr": ((0x1000, 0x109F), (0xAA60, 0xAA7F)),
    "Geor": ((0x10A0, 0x10FF), (0x2D00, 0x2D2F)),
    "Ethi": ((0x1200, 0x139F), (0x2D80, 0x2DDF)),
    "Khmr": ((0x1780, 0x17FF), (0x19E0, 0x19FF)),
    "Mong": ((0x1800, 0x18AF),),
    "Hira": _HIRA,
    "Kana": _KANA,
    "Hani": _HAN,
    "Hans": _HAN,
    "Hant": _HAN,
    "Hang": _HANGUL,
    "Jpan": _HAN + _HIRA + _KANA,
    "Kore": _HANGUL + _HAN,
}

# Scripts whose text is dense (one character per syllable or morpheme): shorter than English.
DENSE_SCRIPTS = frozenset({"Hans", "Hant", "Hani", "Jpan", "Kore", "Hang", "Hira", "Kana"})


def in_script(char: str, script: str) -> bool:
    """Whether ``char`` lies in one of the Unicode ranges of ``script``."""
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in SCRIPT_RANGES[script])


@lru_cache(maxsize=None)
def _script_class(script: str) -> re.Pattern[str]:
    """A character class of the script's ranges (the same test as ``in_script``, run in C)."""
    return re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in SCRIPT_RANGES[script]) + "]")


def script_share(text: str, script: str) -> float | None:
    """Share of the letters of ``text`` that are in ``script`` (None when it has no letters)."""
    if script not in SCRIPT_RANGES:
        raise KeyError(f"unknown script {script!r}; known: {', '.join(sorted(SCRIPT_RANGES))}")
    letters = "".join(filter(str.isalpha, text))
    if not letters:
        return None
    return _script_class(script).subn("", letters)[1] / len(letters)


def check_script(item: GateInput, threshold: float) -> GateResult:
    """Pass when at least ``threshold`` of the letters are in the locale's script."""
    if item.script not in SCRIPT_RANGES:
        return result("script", None, threshold, True, f"no Unicode ranges for script {item.script}; not checked")
    share = script_share(item.text, item.script)
    if share is None:
        return result("script", None, threshold, False, "no letters in the translation")
    return result("script", share, threshold, share >= threshold, f"{share:.0%} of letters in {item.script}")
