"""Implementation versions, not file times, say when a stored signature may be reused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from xsafety.config import ModelConfig
from xsafety.models.base import Decoding
from xsafety.plan import judge_fingerprint, model_fingerprint
from xsafety.versions import IMPLEMENTATION_VERSIONS


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))


def test_touching_the_judges_data_changes_no_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the judges folder, so the test touches nothing shared.
    judges = tmp_path / "judges"
    from xsafety.data import judges_dir

    shutil.copytree(judges_dir(), judges)
    monkeypatch.setattr("xsafety.data.judges_dir", lambda: judges)
    before = judge_fingerprint("default")
    for path in judges.rglob("*"):
        if path.is_file():
            _touch_later(path)
    assert judge_fingerprint("default") == before


def test_a_changed_judge_file_or_version_changes_the_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    judges = tmp_path / "judges"
    from xsafety.data import judges_dir

    shutil.copytree(judges_dir(), judges)
    monkeypatch.setattr("xsafety.data.judges_dir", lambda: judges)
    before = judge_fingerprint("default")
    lexicon = next((judges / "refusal").glob("*.txt"))
    lexicon.write_text(lexicon.read_text(encoding="utf-8") + "\nno way\n", encoding="utf-8")
    edited = judge_fingerprint("default")
    assert edited != before
    monkeypatch.setitem(IMPLEMENTATION_VERSIONS, "refusal-lexicon", IMPLEMENTATION_VERSIONS["refusal-lexicon"] + 1)
    assert judge_fingerprint("default") not in (before, edited)


def test_a_bumped_model_version_changes_the_model_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ModelConfig("smollm2", "smollm2")
    before = model_fingerprint(model, Decoding())
    assert model_fingerprint(model, Decoding(max_new_tokens=8)) != before
    monkeypatch.setitem(IMPLEMENTATION_VERSIONS, "hf", IMPLEMENTATION_VERSIONS["hf"] + 1)
    assert model_fingerprint(model, Decoding()) != before
