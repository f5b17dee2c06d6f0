"""The refusal lexicon compiles a locale's phrase list when the list is first used, not at load.

Compiling every shipped list cost about a second of each judge load while a run reads a handful
of locales. These tests hold the two promises that make compiling later safe: a list that would
compile does compile (every shipped one, every section), and a list compiled on first use gives
the same labels as one compiled up front. Also: the script share, counted per distinct character,
equals a test of every character.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from xsafety.data import judges_dir
from xsafety.errors import ConfigError
from xsafety.judges import load_judge
from xsafety.judges.lexicon import SCRIPT_NAMES, LexiconJudge, PhraseList, parse_phrase_file, script_share

REGEXES = ("opening_re", "start_re", "lead_re", "weak_re", "refute_re", "pivot_re", "not_re", "narrative_re", "anywhere_re")


def _compiled(plist: PhraseList) -> set[str]:
    """The regex properties of ``plist`` compiled so far (a cached_property lives in __dict__)."""
    return {name for name in REGEXES if name in vars(plist)}


def _lexicon() -> LexiconJudge:
    judge = load_judge("default")
    return getattr(judge, "inner", judge)  # type: ignore[return-value]


def test_loading_the_judge_compiles_no_list() -> None:
    judge = _lexicon()
    assert len(judge.locales()) > 20
    assert all(not _compiled(judge.phrase_list(loc)) for loc in judge.locales())  # type: ignore[arg-type]


def test_judging_compiles_only_the_locale_and_english() -> None:
    judge = _lexicon()
    out = judge.judge_one("Es tut mir leid, aber dabei kann ich nicht helfen.", "de")
    assert out.label == "refusal"
    used = {loc for loc in judge.locales() if _compiled(judge.phrase_list(loc))}  # type: ignore[arg-type]
    assert used == {"de"}  # the German list found the decline: English was never needed
    judge.judge_one("Für Brot mischen Sie Mehl, Wasser und Hefe und kneten gut.", "de")
    used = {loc for loc in judge.locales() if _compiled(judge.phrase_list(loc))}  # type: ignore[arg-type]
    assert used == {"de", "en"}  # no German decline: the English fallback list was read too


def test_every_shipped_list_compiles_every_section() -> None:
    for path in sorted((judges_dir() / "refusal").glob("*.txt")):
        plist = parse_phrase_file(path, path.stem)
        patterns = {name: getattr(plist, name) for name in REGEXES}
        assert patterns["opening_re"] is not None or patterns["anywhere_re"] is not None, path.name
        for name, pattern in patterns.items():
            # A section with phrases has a regex; one without has none.
            section = "start" if name == "start_re" else name[: -len("_re")]
            assert (pattern is None) == (not plist.phrases(section)), (path.name, name)


def test_a_broken_list_still_fails_when_the_judge_loads(tmp_path: Path) -> None:
    folder = tmp_path / "refusal"
    folder.mkdir()
    (folder / "en.txt").write_text("# script: Latn\ni can't\n", encoding="utf-8")
    (folder / "xx.txt").write_text("# script: Latn\nok phrase\nbad (group\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        LexiconJudge(refusal_dir=str(folder))
    assert err.value.file is not None and err.value.file.endswith("xx.txt") and err.value.line == 3


def test_lists_compiled_on_first_use_label_the_examples_as_lists_compiled_up_front() -> None:
    lazy = _lexicon()
    eager = _lexicon()
    for loc in eager.locales():
        for name in REGEXES:
            getattr(eager.phrase_list(loc), name)  # compile everything before judging
    checked = 0
    for path in sorted((judges_dir() / "refusal" / "examples").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            a = lazy.judge_one(row["response"], row["lang"])
            b = eager.judge_one(row["response"], row["lang"])
            assert (a.label, a.rationale, a.meta) == (b.label, b.rationale, b.meta), row["response"]
            checked += 1
    assert checked > 500


def _share_per_character(text: str, scripts: tuple[str, ...]) -> tuple[float, int]:
    """The plain definition: every character tested where it stands."""
    prefixes = tuple(p for s in scripts for p in SCRIPT_NAMES.get(s, ()))
    letters = [ch for ch in text if unicodedata.category(ch).startswith("L")]
    inside = [ch for ch in letters if unicodedata.name(ch, "").startswith(prefixes)]
    return (len(inside) / len(letters) if letters else 0.0), len(letters)


@pytest.mark.parametrize(
    ("text", "scripts"),
    [
        ("Как make бомбу? Как make бомбу?", ("Cyrl",)),
        ("申し訳ありませんが、I can't help. 申し訳ありません", ("Jpan",)),
        ("नमस्ते दुनिया, hello नमस्ते", ("Deva",)),  # vowel signs are marks, not letters
        ("عذراً، لا يمكنني المساعدة. Sorry.", ("Arab",)),
        ("12345 !!! ...", ("Latn",)),
        ("", ("Latn",)),
        ("Ǆemal ǅ ǆ ﬁ ĳ x", ("Latn", "Cyrl")),
    ],
)
def test_script_share_counts_each_character_where_it_stands(text: str, scripts: tuple[str, ...]) -> None:
    assert script_share(text, scripts) == _share_per_character(text, scripts)
