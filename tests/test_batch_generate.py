"""`xsafety generate --emit-batch / --import-batch`: a batch job's results land under the keys a
live run would use, so the rest of the run carries on as if xsafety had asked (issue 15 item 7)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fake_openai_server import start_server
from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.generate import ResponseError
from xsafety.records import Response
from xsafety.store import Store

UNUSED_URL = "http://127.0.0.1:9/v1"  # never contacted by batch commands


def _generate(run: Path, *extra: str, url: str = UNUSED_URL) -> object:
    args = ["generate", "--model", f"openai:served-model@{url}", "--set", "builtin", "--limit", "3",
            "--locales", "en", "--run-dir", str(run), "--max-new-tokens", "32", *extra]
    return CliRunner().invoke(app, args)


def _ok(custom_id: str, text: str, *, vllm: bool = False) -> dict[str, object]:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "served-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}
    rid = "vllm-batch-1" if vllm else "req_1"
    return {"id": f"batch_req_{custom_id[:6]}", "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": rid, "body": body}, "error": None}


def _tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_emit_then_import_then_a_live_run_asks_only_what_failed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    emitted = _generate(run, "--emit-batch", str(tmp_path / "batch.jsonl"))
    assert emitted.exit_code == 0, emitted.output
    assert "3 requests written" in emitted.output
    lines = [json.loads(x) for x in (tmp_path / "batch.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["method"] for x in lines] == ["POST"] * 3 and {x["url"] for x in lines} == {"/v1/chat/completions"}
    assert all(x["body"]["model"] == "served-model" and x["body"]["max_tokens"] == 32 for x in lines)
    assert all(x["body"]["messages"][-1]["role"] == "user" for x in lines)
    ids = [x["custom_id"] for x in lines]

    # Results as a hosted API (first) and vLLM (second) write them, and one failed line.
    failed = {"id": "batch_req_x", "custom_id": ids[2], "response": None,
              "error": {"code": "batch_expired", "message": "not executed in time"}}
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in (_ok(ids[0], "No puedo."), _ok(ids[1], "Sure.", vllm=True), failed)) + "\n",
                       encoding="utf-8")
    imported = _generate(run, "--import-batch", str(results))
    assert imported.exit_code == 1, imported.output  # a failed line is a failure to retry
    assert "2 responses stored, 1 failed" in imported.output
    store = Store(run)
    responses = store.table(Response).load()
    assert set(responses) == set(ids[:2]) and responses[ids[0]].text == "No puedo."
    assert responses[ids[0]].completion_tokens == 4 and responses[ids[1]].finish_reason == "stop"
    assert [e.response_key for e in store.table(ResponseError).load().values()] == [ids[2]]

    # Importing the same file again adds nothing; a live run with the same options asks only the failed one.
    again = _generate(run, "--import-batch", str(results))
    assert "0 responses stored" in again.output
    with start_server() as server:
        live = _generate(run, url=server.url)
        assert live.exit_code == 0, live.output
        assert server.requests == 1
    assert "1 new, 2 cached" in live.output
    assert len(Store(run).table(Response).keys()) == 3


def test_a_result_for_another_request_stops_the_import_and_stores_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _generate(run, "--emit-batch", str(tmp_path / "batch.jsonl")).exit_code == 0
    ids = [json.loads(x)["custom_id"] for x in (tmp_path / "batch.jsonl").read_text(encoding="utf-8").splitlines()]
    before = _tree_hash(run)
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(_ok(ids[0], "ok")) + "\n" + json.dumps(_ok("0" * 20, "stray")) + "\n", encoding="utf-8")
    out = _generate(run, "--import-batch", str(results))
    assert out.exit_code == 2
    error = [x for x in out.output.splitlines() if x.strip()]
    assert len(error) == 1 and f"{results}:2: field 'custom_id'" in error[0]
    # Other decoding options give other keys: the same file is refused, not stored under wrong keys.
    other = _generate(run, "--import-batch", str(tmp_path / "results.jsonl"), "--temperature", "0.5")
    assert other.exit_code == 2 and "custom_id" in other.output
    assert _tree_hash(run) == before


def test_batch_files_need_an_openai_spec(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["generate", "--model", "smollm2", "--set", "builtin", "--limit", "1", "--locales", "en",
                                   "--run-dir", str(tmp_path / "run"), "--emit-batch", str(tmp_path / "b.jsonl")])
    assert out.exit_code == 2 and "openai:" in out.output
    assert not (tmp_path / "b.jsonl").exists()


def test_bad_batch_paths_leave_no_run_directory_behind(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for extra, field in ((["--import-batch", str(tmp_path / "missing.jsonl")], "--import-batch"),
                         (["--emit-batch", str(tmp_path)], "--emit-batch"),
                         (["--emit-batch", str(tmp_path / "a.jsonl"), "--import-batch", str(tmp_path / "b.jsonl")], "--import-batch")):
        out = _generate(run, *extra)
        lines = [x for x in out.output.splitlines() if x.strip()]
        assert out.exit_code == 2 and len(lines) == 1 and f"field '{field}'" in lines[0], out.output
        assert not run.exists()
