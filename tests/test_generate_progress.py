"""The generation stage reports its tokens to the progress bar, so the bar's estimate is per token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import start_server

import xsafety.generate as generate_module
from xsafety.generate import GenItem, generate
from xsafety.models import Decoding, load_model
from xsafety.progress import Bar, progress_bar
from xsafety.store import Store


def test_generate_advances_the_bar_by_each_answers_prompt_and_completion_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars: list[Bar] = []

    @contextmanager
    def recording_bar(*args: Any, **kwargs: Any) -> Iterator[Bar]:
        with progress_bar(*args, **kwargs) as bar:
            bars.append(bar)
            yield bar

    monkeypatch.setattr(generate_module, "progress_bar", recording_bar)
    items = [GenItem(f"p{i}", "t", "en", "none", "default", ({"role": "user", "content": f"prompt number {i}"},))
             for i in range(4)]
    with start_server() as server:
        model = load_model(f"openai:fake@{server.url}", Decoding(max_new_tokens=16))
        summary = generate(Store(tmp_path), model, items)
    assert summary.new == 4 and summary.prompt_tokens > 0 and summary.completion_tokens > 0
    (bar,) = bars
    assert bar.done == 4
    assert bar.tokens == summary.prompt_tokens + summary.completion_tokens
    assert "tokens" in bar.status_line()
