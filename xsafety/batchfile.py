"""Offline batch files in the OpenAI batch JSONL format, for generation outside xsafety.

A large job can be handed to ``vllm run-batch`` (which scales out on its own cluster) or to a
hosted batch API, and its results brought back as if xsafety had asked each request itself:

* ``write_requests`` writes one line per pending request::

    {"custom_id": KEY, "method": "POST", "url": "/v1/chat/completions", "body": {...}}

  ``custom_id`` is the response key xsafety would store the answer under, so importing needs no
  side file: the key says which item the line answers, and a line for anything else is refused.
* ``read_results`` reads the output file the published way (one line per request)::

    {"id": ..., "custom_id": KEY, "response": {"status_code": 200, "request_id": ...,
     "body": {chat completion}}, "error": null}

  A failed request has ``response: null`` and an ``error`` object, or a non-200 ``status_code``
  whose body holds ``{"error": {...}}`` (OpenAI writes those to a separate error file of the same
  format; both files can be imported). A failure becomes a failed attempt, retried on the next run
  or batch, never a response.

The whole file is validated before anything is stored, so a malformed line stops the import with
its file, line and field and leaves the store as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsafety.errors import InputError

CHAT_URL = "/v1/chat/completions"


@dataclass(frozen=True)
class BatchResult:
    """One line of a batch output file: an answer, or the error the request ended in."""

    custom_id: str
    text: str = ""
    finish_reason: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    line: int = 0


def request_line(custom_id: str, body: dict[str, Any]) -> str:
    """One request line of an OpenAI batch input file."""
    entry = {"custom_id": custom_id, "method": "POST", "url": CHAT_URL, "body": body}
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def write_requests(path: str | Path, requests: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Write ``(custom_id, body)`` pairs as a batch input file, atomically; returns the line count.

    Custom ids must be unique within a batch (vLLM and hosted APIs reject duplicates).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError("is a directory, not a file", file=path, field="emit-batch")
    seen: set[str] = set()
    lines: list[str] = []
    for custom_id, body in requests:
        if custom_id in seen:
            continue
        seen.add(custom_id)
        lines.append(request_line(custom_id, body))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return len(lines)


def _int_or_none(value: Any) -> int | None:
    # Servers are loose with usage (strings, floats, nulls); a count that is not a whole number is
    # dropped rather than trusted.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or ""
        message = error.get("message") or ""
        text = f"{code}: {message}" if code and message else str(code or message or json.dumps(error))
        return text
    return str(error)


def parse_result(entry: Any, *, file: str | Path, line: int) -> BatchResult:
    """Validate and read one parsed output line (see the module docstring for the format)."""
    if not isinstance(entry, dict):
        raise InputError("a batch output line must be a JSON object", file=file, line=line)
    custom_id = entry.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise InputError("missing or not a string", file=file, line=line, field="custom_id")
    response = entry.get("response")
    error = entry.get("error")
    if response is None:
        if error is None:
            raise InputError("neither a response nor an error", file=file, line=line, field="response")
        return BatchResult(custom_id, error=f"batch: {_error_text(error)}", line=line)
    if not isinstance(response, dict):
        raise InputError("must be an object or null", file=file, line=line, field="response")
    status = response.get("status_code", 200)
    body = response.get("body")
    if not isinstance(status, int) or isinstance(status, bool):
        raise InputError("must be an integer", file=file, line=line, field="response.status_code")
    if status != 200:
        detail = body.get("error") if isinstance(body, dict) and body.get("error") is not None else body
        return BatchResult(custom_id, error=f"batch: HTTP {status}: {_error_text(detail)}", line=line)
    if not isinstance(body, dict):
        raise InputError("must be a chat completion object", file=file, line=line, field="response.body")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise InputError("must be a non-empty list", file=file, line=line, field="response.body.choices")
    choice = choices[0]
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else None
    if text is None:
        text = choice.get("text")
    if not isinstance(text, str):
        raise InputError("no text content", file=file, line=line, field="response.body.choices[0].message.content")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return BatchResult(
        custom_id,
        text=text.strip(),
        finish_reason=str(choice.get("finish_reason") or ""),
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
        line=line,
    )


def read_results(path: str | Path) -> list[BatchResult]:
    """Every result line of a batch output (or error) file, validated; blank lines are skipped.

    A custom id answered twice keeps its first success (a retried batch may repeat lines).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", file=path, field="import-batch")
    results: dict[str, BatchResult] = {}
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError("not valid UTF-8", file=path, line=number) from None
            if not text.strip():
                continue
            try:
                entry = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"not valid JSON ({exc.msg})", file=path, line=number) from None
            result = parse_result(entry, file=path, line=number)
            previous = results.get(result.custom_id)
            if previous is None or (previous.error and not result.error):
                results[result.custom_id] = result
    return list(results.values())
