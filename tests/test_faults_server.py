"""The OpenAI-compatible backend against a misbehaving server (``fault_server``): wrong-shaped JSON
and usage, resets, a slow drip, Retry-After beyond the backoff cap, and a key echoed back at
every offset of an error body."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fault_runs import cli
from fault_server import Fault, fault_server

from xsafety.generate import GenItem, generate
from xsafety.models import Decoding, load_model
from xsafety.models.base import ChatRequest
from xsafety.models.openai import OpenAIChatModel
from xsafety.records import Response
from xsafety.store import Store

FAST = {"backoff_base_s": 0.0, "backoff_cap_s": 0.0}
BODY_CHARS = 200  # what the backend keeps of an error body
KEY = "sk-TESTSECRET-0123456789abcdefXYZ"


def _items(n: int) -> list[GenItem]:
    return [GenItem(f"p{i}", "t", "en", "none", "default", ({"role": "user", "content": f"q {i}"},)) for i in range(n)]


def _key_fragments(key: str = KEY, size: int = 8) -> list[str]:
    """Every run of ``size`` characters of the key: what a partial leak would show."""
    return [key[i : i + size] for i in range(len(key) - size + 1)]


BAD_USAGE: list[Any] = ["lots", {"prompt_tokens": "12", "completion_tokens": "3"}, [1, 2], 7,
                        {"prompt_tokens": -1, "completion_tokens": True}, {"completion_tokens": 1.5}, None]


@pytest.mark.parametrize("usage", BAD_USAGE, ids=[json.dumps(u) for u in BAD_USAGE])
def test_a_malformed_usage_block_keeps_the_answer(usage: Any, tmp_path: Path) -> None:
    with fault_server(lambda body, attempt: Fault(text="I will not.", usage=usage)) as server:
        model = load_model(f"openai:fake@{server.url}", Decoding(max_new_tokens=8), max_retries=0)
        summary = generate(Store(tmp_path), model, _items(3))
    assert (summary.new, summary.failed) == (3, 0)
    stored = Store(tmp_path).table(Response).load()
    assert sorted(r.text for r in stored.values()) == ["I will not."] * 3
    assert all(r.completion_tokens is None or isinstance(r.completion_tokens, int) for r in stored.values())


WRONG_SHAPES: list[bytes] = [b"[]", b'"monkey"', b'{"choices": "none"}', b'{"choices": [null]}',
                             b'{"choices": [{"message": {"content": 5}}]}', b'{"choices": [{"message": ["x"]}]}',
                             b"null", b"\xff\xfe"]


@pytest.mark.parametrize("raw", WRONG_SHAPES, ids=[r.decode("latin-1") for r in WRONG_SHAPES])
def test_wrong_shaped_json_is_retried_per_item(raw: bytes) -> None:
    with fault_server(lambda body, attempt: Fault(raw=raw) if attempt == 0 else Fault(text="fine")) as server:
        model = load_model(f"openai:fake@{server.url}", max_retries=1, **FAST)
        results = model.chat([ChatRequest(id=f"r{i}", messages=({"role": "user", "content": f"q{i}"},)) for i in range(2)])
    assert [r.text for r in results] == ["fine", "fine"] and server.requests == 4


def test_a_connection_reset_is_retried() -> None:
    with fault_server(lambda body, attempt: Fault(reset=True) if attempt < 2 else Fault(text="ok")) as server:
        model = load_model(f"openai:fake@{server.url}", max_retries=2, **FAST)
        [result] = model.chat([ChatRequest(id="r", messages=({"role": "user", "content": "q"},))])
    assert result.text == "ok" and server.statuses["reset"] == 2


def test_a_slow_drip_cannot_outlive_the_request_deadline() -> None:
    # Each byte comes well inside timeout_s, so only an overall deadline ends the request.
    with fault_server(lambda body, attempt: Fault(text="a long answer " * 20, drip_s=0.05)) as server:
        model = load_model(f"openai:fake@{server.url}", timeout_s=1.0, max_retries=0)
        [result] = model.chat([ChatRequest(id="r", messages=({"role": "user", "content": "q"},))])
    assert result.text == "" and result.error is not None and "timeout after 1 s" in result.error


def test_retry_after_longer_than_the_backoff_cap_is_honoured() -> None:
    model = OpenAIChatModel("m", ["http://127.0.0.1:9/v1"], backoff_base_s=0.01, backoff_cap_s=0.5)
    assert model._backoff(0, 7.0) == 7.0  # the server's wish, not the cap
    assert model._backoff(3, None) <= 0.5  # our own backoff stays under the cap


def test_retry_after_beyond_any_reasonable_wait_fails_the_item_at_once() -> None:
    with fault_server(lambda body, attempt: Fault(status=503, retry_after="86400")) as server:
        model = load_model(f"openai:fake@{server.url}", max_retries=5, **FAST)
        [result] = model.chat([ChatRequest(id="r", messages=({"role": "user", "content": "q"},))])
    assert server.requests == 1 and result.error is not None and "asks to wait 86400 s" in result.error


def test_a_key_echoed_at_any_offset_never_reaches_a_result(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FAULT_KEY", KEY)
    offsets = list(range(0, BODY_CHARS + 40))  # every offset, up to past where bodies are cut
    with fault_server(lambda body, attempt: Fault(status=401, echo_auth_at=int(body["messages"][0]["content"]))) as server:
        model = load_model(f"openai:fake@{server.url}", api_key_env="FAULT_KEY", max_retries=0, concurrency=8)
        with caplog.at_level(logging.DEBUG):
            results = model.chat([ChatRequest(id=str(o), messages=({"role": "user", "content": str(o)},)) for o in offsets])
    assert all(r.error and "HTTP 401" in r.error for r in results)
    seen = "\n".join(r.error or "" for r in results) + caplog.text
    leaks = sorted({frag for frag in _key_fragments() if frag in seen})
    assert leaks == []
    assert "***" in results[0].error  # the echo was there and was masked


def test_a_non_ascii_api_key_is_one_line_without_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-ünïcode-Sëcret-42"
    monkeypatch.setenv("FAULT_KEY", secret)
    code, out, err = cli("generate", "--model", "openai:fake@http://127.0.0.1:9/v1", "--api-key-env", "FAULT_KEY",
                         "--run", str(tmp_path / "run"))
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "field 'api_key_env'" in err
    assert "Sëcret" not in out + err and "Traceback" not in err


def test_a_lone_surrogate_in_an_answer_is_stored_as_a_replacement_character(tmp_path: Path) -> None:
    raw = b'{"choices": [{"message": {"content": "broken \\ud800 answer"}, "finish_reason": "stop"}]}'
    with fault_server(lambda body, attempt: Fault(raw=raw)) as server:
        model = load_model(f"openai:fake@{server.url}", max_retries=0)
        summary = generate(Store(tmp_path), model, _items(2))
    assert (summary.new, summary.failed) == (2, 0)
    texts = {r.text for r in Store(tmp_path).table(Response).load().values()}
    assert texts == {"broken \ufffd answer"}


def test_the_store_keeps_a_lone_surrogate_it_is_handed(tmp_path: Path) -> None:
    table = Store(tmp_path).table(Response)
    table.append([Response(key="k", prompt_id="p", set="s", locale="en", model="m", text="a \ud800 b")])
    assert table.load()["k"].text == "a \ud800 b"
