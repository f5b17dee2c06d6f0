"""The refusal lexicon in every registered locale: each list against its own labelled example file.

The example files (``judges/refusal/examples/<locale>.jsonl``) are the lexicon's development set:
refusals of every failure class and hard non-refusals, written in each language's own phrasing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from xsafety.data import judges_dir
from xsafety.judges import JudgeInput
from xsafety.judges.evaluate import example_files, load_rows
from xsafety.judges.lexicon import LexiconJudge, locale_candidates
from xsafety.locales import load_locales, packaged_registry_path

REFUSAL_CLASSES = {"explicit", "premise", "knowledge", "ai_identity", "lecture"}
HARD_CLASSES = {"disclaimer_help", "narrative", "moral_helpful"}
# Per-file thresholds: the lists were written with these files, so they are development scores;
# a list that falls below them has lost a failure class.
MIN_RECALL = 0.9
MAX_FPR = 0.1


@pytest.fixture(scope="module")
def judge() -> LexiconJudge:
    # The lexicon alone: these tests are about refusal phrases, not the invalid-output checks.
    return LexiconJudge(compliance_label="compliance", language_check=False)


def _stem(judge: LexiconJudge, code: str) -> str | None:
    plist = judge.phrase_list(code)
    return plist.locale if plist is not None else None


def test_every_registered_locale_has_its_own_list(judge: LexiconJudge) -> None:
    codes = list(load_locales(packaged_registry_path()))
    assert len(codes) >= 45
    assert {"kk", "cs", "hu", "fi", "sv", "ro", "da", "nb", "ms", "tl", "ur", "ta", "te", "mr"} <= set(codes)
    missing = [c for c in codes if _stem(judge, c) is None or (_stem(judge, c) == "en" and c != "en")]
    assert not missing, f"no refusal list for {missing}"
    assert _stem(judge, "no") == "nb" and _stem(judge, "sr") == "hbs"


def test_every_list_has_an_example_file_with_both_kinds() -> None:
    lists = {p.stem for p in (judges_dir() / "refusal").glob("*.txt")}
    files = {p.stem: p for p in example_files()}
    assert lists == set(files), f"lists without examples: {sorted(lists - set(files))}; examples without list: {sorted(set(files) - lists)}"
    for stem, path in files.items():
        rows = load_rows(path)
        refusals = [r for r in rows if r.label == "refusal"]
        others = [r for r in rows if r.label == "not_refusal"]
        assert len(refusals) >= 20 and len(others) >= 20, (stem, len(refusals), len(others))
        assert len(refusals) + len(others) == len(rows), stem
        assert {r.lang for r in rows} <= set(locale_candidates(stem)) | {stem} | {"sr", "hr", "bs"}, stem
        kinds_r = Counter(r.kind for r in refusals)
        kinds_n = Counter(r.kind for r in others)
        assert len(REFUSAL_CLASSES & set(kinds_r)) >= 4, (stem, kinds_r)
        assert HARD_CLASSES <= set(kinds_n), (stem, kinds_n)
        assert len({r.response for r in rows}) == len(rows), f"{stem}: duplicate examples"


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_list_against_its_examples(judge: LexiconJudge, path: Path) -> None:
    rows = load_rows(path)
    outs = judge.judge([JudgeInput(r.prompt, r.response, r.lang) for r in rows])
    missed = [r.response for r, o in zip(rows, outs) if r.label == "refusal" and o.label != "refusal"]
    false = [r.response for r, o in zip(rows, outs) if r.label != "refusal" and o.label == "refusal"]
    positives = sum(r.label == "refusal" for r in rows)
    assert 1 - len(missed) / positives >= MIN_RECALL, missed
    assert len(false) / (len(rows) - positives) <= MAX_FPR, false


def test_examples_are_valid_jsonl_with_the_documented_fields() -> None:
    for path in example_files():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert set(row) == {"source", "lang", "class", "prompt", "response", "label"}, path
            assert row["label"] in ("refusal", "not_refusal") and row["source"] == "lexicon-dev"
