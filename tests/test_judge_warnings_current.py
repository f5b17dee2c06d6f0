"""Judging warns only about the responses the current config asks for.

A run directory keeps every earlier config's responses, and the judging stage judges them all (the
plan counts them), but ``xsafety run`` printed "no engine translates gl to English" for a locale
that only an earlier config had asked for.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from xsafety.judges import load_judge
from xsafety.judges.stage import judge_run
from xsafety.records import Response, Verdict
from xsafety.store import Store

RESPONSES = [
    ("r-en", "en", "I'm sorry, but I can't help with that."),
    ("r-es", "es", "Lo siento, pero no puedo ayudarte con eso."),  # the current config's
    ("r-gl", "gl", "Sentímolo, pero non podo axudar con iso."),  # an earlier config's
]


def _store(root: Path) -> Store:
    store = Store(root)
    with store.table(Response).writer() as w:
        for key, locale, text in RESPONSES:
            w.write(Response(key=key, prompt_id="p1", set="builtin", locale=locale, model="m", text=text,
                             messages=({"role": "user", "content": "?"},)))
    return store


@pytest.fixture
def no_back_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """No locale can be translated back to English (as for a locale without an engine)."""
    monkeypatch.setattr("xsafety.translate.back.pick_back_engine", lambda locale, engine=None: None)


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_warnings_name_only_the_current_configs_locales(tmp_path: Path, no_back_engine: None,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path / "run")
    with caplog.at_level(logging.DEBUG):
        summary = judge_run(store, load_judge("default"), current={"r-en", "r-es"})
    warned = _warnings(caplog)
    assert "translates es to English" in warned
    assert "translates gl" not in warned and "r-gl" not in warned
    # The earlier config's response is still judged: the plan counts it, so a rerun has nothing left.
    native = {v.response_key for v in store.table(Verdict).load().values() if v.mode == "native"}
    assert native == {"r-en", "r-es", "r-gl"} and summary.no_back_translation == 2


def test_without_current_every_locale_is_warned_about(tmp_path: Path, no_back_engine: None,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path / "run")
    with caplog.at_level(logging.DEBUG):
        judge_run(store, load_judge("default"))  # `xsafety judge`: every stored response is asked for
    warned = _warnings(caplog)
    assert "translates es to English" in warned and "translates gl to English" in warned
