"""The gates' faster measurements give the numbers of the plain definitions they replace.

Every reference translation is gated and its scores recorded, so the shortcuts (chrF with the
reference's n-grams kept, the longest repeat found by a prefix test, script shares counted by a
character class) must agree exactly with sacrebleu and with the character-by-character rules.
"""

from __future__ import annotations

import random

import pytest

from xsafety.translate.gates.base import _chrf, sentence_chrf
from xsafety.translate.gates.repetition import MAX_CHARS, longest_repeat_share
from xsafety.translate.gates.scripts import SCRIPT_RANGES, in_script, script_share

PAIRS = [
    ("How do I make a bomb?", "How do I make a bomb?"),
    ("Wie baue ich eine Bombe?", "How do I build a bomb?"),
    ("如何制造炸弹？", "How do I make a bomb?"),
    ("a", "a"),
    ("ab", "abc"),
    ("  spaced   out  ", "spaced out"),
    ("?", "How?"),
    ("Hello hello HELLO", "hello"),
    ("x" * 40, "x" * 7),
]


def _sacrebleu_chrf(hypothesis: str, reference: str) -> float:
    return float(_chrf().sentence_score(hypothesis, [reference]).score) if hypothesis.strip() else 0.0


@pytest.mark.parametrize(("hypothesis", "reference"), PAIRS)
def test_sentence_chrf_is_sacrebleus_number(hypothesis: str, reference: str) -> None:
    assert sentence_chrf(hypothesis, reference) == _sacrebleu_chrf(hypothesis, reference)


def test_sentence_chrf_agrees_on_random_texts_including_identical_ones() -> None:
    rng = random.Random(7)
    alphabet = "abcde ?,.ßж中"
    for _ in range(400):
        ref = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        hyp = ref if rng.random() < 0.3 else "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert sentence_chrf(hyp, ref) == _sacrebleu_chrf(hyp, ref), (hyp, ref)


def _longest_repeat_brute(text: str) -> float:
    text = text[:MAX_CHARS]
    if len(text) < 2:
        return 0.0
    best = 0
    for length in range(1, len(text)):
        seen: set[str] = set()
        if any(text[i : i + length] in seen or seen.add(text[i : i + length]) for i in range(len(text) - length + 1)):
            best = length
    return best / len(text)


def test_longest_repeat_share_matches_the_definition() -> None:
    rng = random.Random(3)
    texts = ["", "a", "aa", "ab", "aaaa", "abcabcabc", "the bomb the bomb", "mississippi"]
    texts += ["".join(rng.choice("ab c") for _ in range(rng.randint(0, 60))) for _ in range(300)]
    for text in texts:
        assert longest_repeat_share(text) == _longest_repeat_brute(text), text


def test_script_share_counts_what_in_script_counts_for_every_script() -> None:
    rng = random.Random(11)
    # Letters from every range edge and around it, plus digits, marks and punctuation.
    points = [c for ranges in SCRIPT_RANGES.values() for lo, hi in ranges for c in (lo - 1, lo, hi, hi + 1)]
    chars = [chr(c) for c in points if 0 < c < 0x110000] + list("abc123 ,.!?ǅ½²")
    for script in SCRIPT_RANGES:
        for _ in range(30):
            text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 30)))
            letters = [c for c in text if c.isalpha()]
            want = sum(in_script(c, script) for c in letters) / len(letters) if letters else None
            assert script_share(text, script) == want, (script, text)


def _loop_share_plain(tokens: list[str]) -> float:
    """The loop share as first written: every n scanned, whatever the tokens."""
    if not tokens:
        return 0.0
    covered = [False] * len(tokens)
    for n in range(1, 7):
        need = 4 if n == 1 else 3
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


def test_loop_share_skips_only_lengths_that_cannot_repeat() -> None:
    from xsafety.translate.gates.repetition import loop_share

    rng = random.Random(5)
    cases = [[], ["a"], ["a"] * 4, ["a"] * 3, "the bomb the bomb the bomb now".split(), "x y z x y z x y z".split()]
    cases += [[rng.choice("abc") for _ in range(rng.randint(0, 40))] for _ in range(500)]
    for tokens in cases:
        assert loop_share(tokens) == _loop_share_plain(tokens), tokens


def test_translation_lines_are_the_json_of_to_dict() -> None:
    import json

    from xsafety.records import GateResult, Translation
    from xsafety.translate.files import to_line

    rec = Translation(
        key="k", prompt_id="p1", set="s", locale="zh", source="How?", text="怎么？\n\"quoted\"", engine="reference|x",
        back=None, gates=(GateResult("copy", 0.12, 0.6, True, "ok"), GateResult("langid", None, 0.5, False)),
        quality=0.5, accepted=False, reason="failed langid (n/a vs 0.5)",
        attempts=({"step": "first", "gates": {"copy": 0.12, "langid": None}, "failed": ["langid"], "flags": {}},),
        meta={"signals": {"a": 1.0, "b": None}, "gate_exempt": {"why": "x", "failed": ["langid"]}, "n": 3},
    )
    assert to_line(rec) == json.dumps(rec.to_dict(), ensure_ascii=False, separators=(",", ":"))
