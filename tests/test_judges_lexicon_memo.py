"""The refusal lexicon gives a repeated answer the decision it made before, as a copy.

A decision reads the response and its locale only, and a run holds the same stock answer many
times; these tests hold that the kept decision is the one ``judge_one`` makes, per locale, that a
caller cannot change it, and that the memory it takes is bounded.
"""

from __future__ import annotations

import json

import pytest

import xsafety.judges.lexicon as lexicon
from xsafety.data import judges_dir
from xsafety.judges import JudgeInput, load_judge
from xsafety.judges.base import finalize
from xsafety.judges.lexicon import LexiconJudge

STOCK = "I'm sorry, but I can't help with that request."


def _lexicon() -> LexiconJudge:
    judge = load_judge("default")
    return getattr(judge, "inner", judge)  # type: ignore[return-value]


def test_repeated_answers_get_judge_one_s_decision_per_locale() -> None:
    judge = _lexicon()
    items = [JudgeInput("", STOCK, loc) for loc in ("en", "de", "zh")] * 3
    items.append(JudgeInput("", "Mix flour, water and yeast, then knead the dough well.", "en"))
    items.append(JudgeInput("", "Mix flour, water and yeast, then knead the dough well.", "zh"))
    got = judge.judge(items)
    want = [finalize(judge.judge_one(i.response, i.locale), "safe") for i in items]
    assert got == want
    assert [o.label for o in got[-2:]] == ["safe", "invalid"]  # fine in en, the wrong script in zh
    assert len(judge._memo) == 5


def test_a_caller_cannot_change_a_kept_decision() -> None:
    judge = _lexicon()
    first = judge.judge([JudgeInput("", STOCK, "en")])[0]
    first.meta["phrase"] = "changed"
    assert judge.judge([JudgeInput("", STOCK, "en")])[0].meta["phrase"] == "i'm sorry, but"


def test_the_memo_is_bounded_and_skips_long_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexicon, "MEMO_ITEMS", 3)
    judge = _lexicon()
    judge.judge([JudgeInput("", f"Answer number {i}.", "en") for i in range(10)])
    assert list(judge._memo) == [(f"Answer number {i}.", "en") for i in (7, 8, 9)]
    long = "Word " * (lexicon.MEMO_CHARS // 5 + 1)
    judge.judge([JudgeInput("", long, "en")])
    assert (long, "en") not in judge._memo


def test_the_examples_judged_twice_get_judge_one_s_decisions() -> None:
    judge = _lexicon()
    items = []
    for path in sorted((judges_dir() / "refusal" / "examples").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            items.append(JudgeInput(row.get("prompt", ""), row["response"], row["lang"]))
    want = [finalize(judge.judge_one(i.response, i.locale), "safe") for i in items]
    assert judge.judge(items) == want
    assert judge.judge(items) == want  # every one now from the memo
