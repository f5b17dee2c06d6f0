"""OpenAI batch JSONL files: requests written in the published input format, results read from
hand-written output files in the formats OpenAI's batch API and `vllm run-batch` produce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xsafety.batchfile import read_results, write_requests
from xsafety.errors import InputError

# An output line as OpenAI's batch API writes it (documented example shape).
OPENAI_OK = {
    "id": "batch_req_123",
    "custom_id": "k1",
    "response": {
        "status_code": 200,
        "request_id": "req_123",
        "body": {
            "id": "chatcmpl-123",
            "object": "chat.completion",
            "created": 1711652795,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": " Hola, no puedo ayudar. "},
                 "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 22, "completion_tokens": 2, "total_tokens": 24},
            "system_fingerprint": "fp_3ba",
        },
    },
    "error": None,
}
# A request that failed before reaching the model (OpenAI's error file uses the same shape).
OPENAI_FAILED = {"id": "batch_req_456", "custom_id": "k2", "response": None,
                 "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}
# A request the server answered with an error status.
OPENAI_400 = {"id": "batch_req_789", "custom_id": "k3",
              "response": {"status_code": 400, "request_id": "req_789",
                           "body": {"error": {"message": "Invalid 'messages'", "type": "invalid_request_error", "code": None}}},
              "error": None}
# vLLM's run-batch writes the same envelope, with its own ids and usage.
VLLM_OK = {"id": "vllm-8f1c", "custom_id": "k4",
           "response": {"status_code": 200, "request_id": "vllm-batch-9a1",
                        "body": {"id": "chatcmpl-9a1", "object": "chat.completion", "created": 1, "model": "m",
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure.",
                                                                      "tool_calls": []},
                                              "logprobs": None, "finish_reason": "length", "stop_reason": None}],
                                 "usage": {"prompt_tokens": 5, "total_tokens": 9, "completion_tokens": 4,
                                           "prompt_tokens_details": None}}},
           "error": None}


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_request_lines_follow_the_published_input_format(tmp_path: Path) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "¿Hola?"}], "max_tokens": 8}
    n = write_requests(tmp_path / "in.jsonl", [("k1", body), ("k2", body), ("k1", body)])
    lines = [json.loads(x) for x in (tmp_path / "in.jsonl").read_text(encoding="utf-8").splitlines()]
    assert n == 2  # duplicate custom ids are not allowed in a batch
    assert lines[0] == {"custom_id": "k1", "method": "POST", "url": "/v1/chat/completions", "body": body}
    assert [x["custom_id"] for x in lines] == ["k1", "k2"]


def test_results_in_openai_and_vllm_formats(tmp_path: Path) -> None:
    path = _write(tmp_path / "out.jsonl", [OPENAI_OK, OPENAI_FAILED, OPENAI_400, VLLM_OK])
    got = {r.custom_id: r for r in read_results(path)}
    assert got["k1"].text == "Hola, no puedo ayudar." and got["k1"].error is None
    assert (got["k1"].prompt_tokens, got["k1"].completion_tokens, got["k1"].finish_reason) == (22, 2, "stop")
    assert got["k2"].error is not None and "batch_expired" in got["k2"].error and got["k2"].text == ""
    assert got["k3"].error is not None and "HTTP 400" in got["k3"].error and "Invalid 'messages'" in got["k3"].error
    assert got["k4"].text == "Sure." and got["k4"].finish_reason == "length" and got["k4"].completion_tokens == 4


def test_a_later_success_replaces_an_earlier_failure_of_the_same_request(tmp_path: Path) -> None:
    ok = json.loads(json.dumps(OPENAI_OK))
    ok["custom_id"] = "k2"
    path = _write(tmp_path / "out.jsonl", [OPENAI_FAILED, ok])
    (result,) = read_results(path)
    assert result.error is None and result.text == "Hola, no puedo ayudar."


def test_loose_usage_is_dropped_not_trusted(tmp_path: Path) -> None:
    row = json.loads(json.dumps(OPENAI_OK))
    row["response"]["body"]["usage"] = {"prompt_tokens": "lots", "completion_tokens": -3}
    (result,) = read_results(_write(tmp_path / "out.jsonl", [row]))
    assert result.prompt_tokens is None and result.completion_tokens is None and result.text


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ("[1, 2, 3]", "JSON object"),
        ('{"response": null, "error": null}', "custom_id"),
        ('{"custom_id": "k", "response": null, "error": null}', "response"),
        ('{"custom_id": "k", "response": {"status_code": 200, "body": {"choices": []}}}', "choices"),
        ('{"custom_id": "k", "response": {"status_code": "200", "body": {}}}', "status_code"),
        ('{"custom_id": "k", "response": {"status_code": 200, "body": {"choices": [{"message": {}}]}}}', "content"),
        ("{not json", "not valid JSON"),
    ],
)
def test_malformed_lines_name_file_line_and_field(tmp_path: Path, line: str, where: str) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps(OPENAI_OK) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_results(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ") and where in message
