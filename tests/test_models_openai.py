"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import Reply, last_user_text, start_server

from xsafety.errors import ConfigError
from xsafety.generate import GenItem, generate
from xsafety.models import Decoding, load_model
from xsafety.models.base import ChatRequest
from xsafety.models.openai import OpenAIChatModel, parse_retry_after
from xsafety.store import Store

FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 2.0}


def reqs(n: int, prefix: str = "question") -> list[ChatRequest]:
    return [ChatRequest(id=f"r{i}", messages=({"role": "user", "content": f"{prefix} {i}"},)) for i in range(n)]


def test_every_answer_arrives_through_429_500_timeouts_and_broken_json() -> None:
    faults = [
        Reply(status=429, retry_after="0"),
        Reply(status=500),
        Reply(delay_s=1.0),  # past the client's 0.3 s timeout
        Reply(malformed=True),
        Reply(no_choices=True),
        Reply(status=503),
    ]
    with start_server(faults=faults) as server:
        model = load_model(f"openai:fake@{server.url}", Decoding(max_new_tokens=8), timeout_s=0.3, concurrency=4, **FAST)
        assert isinstance(model, OpenAIChatModel)
        arrived: list[str] = []
        results = model.chat(reqs(6), on_result=lambda r: arrived.append(r.id))
    assert [r.text for r in results] == [f"echo: question {i}" for i in range(6)]
    assert all(r.error is None and r.finish_reason == "stop" for r in results)
    assert sorted(arrived) == [f"r{i}" for i in range(6)]
    # Every conversation failed six times before its answer: 7 attempts each, 6 retries each.
    assert server.requests == 6 * 7
    assert server.status_counts[429] == 6 and server.status_counts[500] == 6 and server.status_counts[503] == 6
    assert model.stats == {"requests": 42, "retries": 36, "failed": 0}
    body = server.bodies[-1]
    assert body["model"] == "fake" and body["max_tokens"] == 8 and body["temperature"] == 0


def test_retry_after_is_honoured() -> None:
    assert parse_retry_after("2") == 2.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after(later) or 0) <= 31
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    with start_server(faults=[Reply(status=429, retry_after="0.4")]) as server:
        model = load_model(f"openai:fake@{server.url}", **FAST)
        started = time.perf_counter()
        result = model.chat(reqs(1))[0]
        waited = time.perf_counter() - started
    assert result.text == "echo: question 0"
    # The jittered backoff alone would be at most 10 ms; the server asked for 400 ms.
    assert waited >= 0.4


def test_retries_are_capped_and_the_error_is_kept() -> None:
    with start_server(faults=[Reply(status=500)] * 10) as server:
        model = load_model(f"openai:fake@{server.url}", max_retries=2, **FAST)
        result = model.chat(reqs(1))[0]
    assert result.text == "" and result.error is not None
    assert "HTTP 500" in result.error and "after 3 attempts" in result.error
    assert server.requests == 3
    assert model.stats["failed"] == 1


def test_client_errors_are_not_retried() -> None:
    with start_server(model="served-name") as server:
        model = load_model(f"openai:wrong-name@{server.url}", **FAST)
        result = model.chat(reqs(1))[0]
    assert result.error is not None and "HTTP 404" in result.error
    assert server.requests == 1


def test_answers_can_be_scripted_per_request_content() -> None:
    def script(body: dict[str, Any]) -> str:
        return last_user_text(body).upper()

    with start_server(script={"capital": "Paris."}) as server:
        model = load_model(f"openai:fake@{server.url}")
        out = model.chat([ChatRequest("a", ({"role": "user", "content": "capital of France?"},)), *reqs(1)])
    assert [r.text for r in out] == ["Paris.", "echo: question 0"]
    with start_server(script=script) as server:
        assert load_model(f"openai:fake@{server.url}").chat(reqs(1))[0].text == "QUESTION 0"


def test_several_servers_share_the_load() -> None:
    with start_server(latency_s=0.05) as a, start_server(latency_s=0.05) as b:
        model = load_model(f"openai:fake@{a.url},{b.url}", concurrency=8)
        results = model.chat(reqs(40))
    assert all(r.error is None for r in results)
    assert a.requests + b.requests == 40
    assert a.requests >= 10 and b.requests >= 10
    assert "127.0.0.1" not in model.signature()


def test_chat_works_inside_a_running_event_loop() -> None:
    with start_server() as server:
        model = load_model(f"openai:fake@{server.url}")

        async def caller() -> list[str]:
            return [r.text for r in model.chat(reqs(3))]

        assert asyncio.run(caller()) == [f"echo: question {i}" for i in range(3)]


def test_concurrency_bounds_requests_in_flight() -> None:
    with start_server(latency_s=0.05) as server:
        load_model(f"openai:fake@{server.url}", concurrency=3).chat(reqs(12))
    assert server.max_in_flight == 3


def test_missing_key_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XSAFETY_TEST_NO_KEY", raising=False)
    with pytest.raises(ConfigError, match="XSAFETY_TEST_NO_KEY"):
        load_model("openai:m@http://127.0.0.1:9/v1", api_key_env="XSAFETY_TEST_NO_KEY")


def test_api_key_never_reaches_logs_records_or_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-5f1e2d3c4b5a69788796a5b4c3d2e1f0"
    monkeypatch.setenv("XSAFETY_TEST_KEY", secret)

    def script(body: dict[str, Any]) -> Reply:
        # A careless server that echoes the caller's key into its error body.
        if "fail" in last_user_text(body):
            return Reply(status=401, body=f'{{"error": "bad key {secret}"}}')
        return Reply(text="fine")

    items = [
        GenItem(f"p{i}", "t", "en", "none", "default", ({"role": "user", "content": text},))
        for i, text in enumerate(["hello", "please fail", "again"])
    ]
    with caplog.at_level(logging.DEBUG), start_server(script=script, faults=[Reply(status=500)]) as server:
        model = load_model(f"openai:fake@{server.url}", api_key_env="XSAFETY_TEST_KEY", **FAST)
        summary = generate(Store(tmp_path), model, items)
        logging.getLogger("probe").error("model is %r", model)
    assert (summary.new, summary.failed) == (2, 1)
    assert all(h.get("Authorization") == f"Bearer {secret}" or h.get("authorization") == f"Bearer {secret}" for h in server.headers)
    on_disk = "".join(p.read_text() for p in tmp_path.rglob("*.jsonl"))
    assert "HTTP 401" in on_disk and "***" in on_disk
    assert secret not in on_disk
    assert secret not in caplog.text
    assert secret not in model.signature() and secret not in repr(model)
    assert "XSAFETY_TEST_KEY" not in model.signature()
