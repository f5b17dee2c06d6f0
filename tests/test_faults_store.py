"""A corrupted run directory never takes `run`, `status` or `report` down: every kind of damage to
the store (garbage, wrong-shaped JSON, truncation, empty and duplicate shards, missing metadata
files) is skipped with a warning or repaired, and a rerun ends with byte-identical report tables.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fault_runs import LONG, cli, fast_config, pristine_run, report_tables
from fault_server import FaultServer, start_fault_server

from xsafety.records import Response
from xsafety.store import Store


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    s = start_fault_server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def pristine(server: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished fast run, left untouched: the reference every repaired copy is compared with."""
    return pristine_run(tmp_path_factory, server.url)


def _shard(run: Path, table: str = "responses") -> Path:
    return sorted((run / table).glob("*.jsonl"))[0]


def _insert_middle(line: bytes, table: str = "responses") -> Callable[[Path], None]:
    def corrupt(run: Path) -> None:
        shard = _shard(run, table)
        lines = shard.read_bytes().split(b"\n")
        lines.insert(len(lines) // 2, line)
        shard.write_bytes(b"\n".join(lines))
    return corrupt


def _replace_middle(line: bytes, table: str = "responses") -> Callable[[Path], None]:
    def corrupt(run: Path) -> None:
        shard = _shard(run, table)
        lines = shard.read_bytes().split(b"\n")
        lines[len(lines) // 2 - 1] = line
        shard.write_bytes(b"\n".join(lines))
    return corrupt


def _torn_tail(run: Path) -> None:
    shard = _shard(run)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 25])  # the last record cut mid-line


def _truncated_to_zero(run: Path) -> None:
    _shard(run, "verdicts").write_bytes(b"")


def _empty_shard(run: Path) -> None:
    (run / "responses" / "00000000T000000-000000000-1.jsonl").write_bytes(b"")
    (run / "verdicts" / "00000000T000000-000000000-2.jsonl").write_bytes(b"\n\n   \n")


def _duplicate_shard(run: Path) -> None:
    for table in ("responses", "verdicts", "prompts"):
        shard = _shard(run, table)
        shutil.copy(shard, shard.with_name("99999999T999999-000000000-9.jsonl"))


def _shard_is_a_folder(run: Path) -> None:
    (run / "responses" / "50000000T000000-000000000-3.jsonl").mkdir()


def _wrong_typed_record(run: Path) -> None:
    shard = _shard(run)
    row = json.loads(shard.read_bytes().split(b"\n")[0])
    _insert_middle(json.dumps({**row, "text": 42, "key": "bogus-but-a-string"}).encode())(run)


def _removed(*names: str) -> Callable[[Path], None]:
    def corrupt(run: Path) -> None:
        for name in names:
            path = run / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    return corrupt


def _report_gone(run: Path) -> None:
    shutil.rmtree(run / "report")


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "garbage bytes": _insert_middle(b"\x00\xff\xfe garbage \x80"),
    "a JSON list": _insert_middle(b"[1, 2, 3]"),
    "a JSON string": _insert_middle(b'"monkey"'),
    "a JSON number": _insert_middle(b"42"),
    "null": _insert_middle(b"null"),
    "an object that is not a record": _insert_middle(b'{"key": "abc"}'),
    "a record key that is a number": _insert_middle(b'{"key": 5, "prompt_id": "p", "set": "s", "locale": "en", "model": "m", "text": "t"}'),
    "a field of the wrong type": _wrong_typed_record,
    "a record replaced by garbage": _replace_middle(b"{not json"),
    "a verdict replaced by a list": _replace_middle(b"[]", "verdicts"),
    "a prompt row that is a string": _insert_middle(b'"prompt"', "prompts"),
    "a translation row without fields": _insert_middle(b'{"key": "t"}', "translations"),
    "torn last line": _torn_tail,
    "a shard truncated to zero": _truncated_to_zero,
    "empty shards": _empty_shard,
    "duplicate shards": _duplicate_shard,
    "a shard that is a folder": _shard_is_a_folder,
    "run.json missing": _removed("run.json"),
    "signatures.json missing": _removed("signatures.json"),
    "run.json and cells.json missing": _removed("run.json", "cells.json"),
    "report folder missing": _report_gone,
}


ALL_AT_ONCE = "every kind at once"
# The default run applies every corruption to one copy (one rerun, a few seconds); the long fault
# suite (scripts/faults.py) also tries each kind on its own.
KINDS = [ALL_AT_ONCE, *(list(CORRUPTIONS) if LONG else [])]


@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupted_store_is_read_and_repaired_to_the_same_report(
    kind: str, pristine: Path, server: FaultServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    for name, corrupt in CORRUPTIONS.items():
        if kind in (ALL_AT_ONCE, name):
            corrupt(run)

    code, out, err = cli("status", str(run))
    # Without run.json, status cannot know the config: one line saying so is the right answer.
    assert (code == 0 or (code == 2 and "run.json" in err and err.count("\n") == 1)) and "Traceback" not in err, err

    cfg = fast_config(tmp_path / "run.toml", run, server.url)
    with caplog.at_level(logging.WARNING):
        code, out, err = cli("run", str(cfg))
    assert code == 0 and "Traceback" not in err, err
    assert report_tables(run / "report") == report_tables(pristine / "report")
    # what the store holds is what it held before, whatever was skipped on the way
    assert Store(run).table(Response).keys() == Store(pristine).table(Response).keys()


@pytest.mark.parametrize("kind", [ALL_AT_ONCE, *(["a JSON list", "an object that is not a record", "a verdict replaced by a list"] if LONG else [])])
def test_report_reads_a_corrupted_store(kind: str, pristine: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    for name, corrupt in CORRUPTIONS.items():
        if kind in (ALL_AT_ONCE, name) and "missing" not in name:  # the report needs run.json
            corrupt(run)
    code, out, err = cli("report", str(run), "--out", str(tmp_path / "report"))
    assert code == 0 and "Traceback" not in err, err


def test_lines_that_are_not_records_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = Store(tmp_path).table(Response)
    good = Response(key="k1", prompt_id="p", set="s", locale="en", model="m", text="t")
    table.append([good])
    shard = table.shards()[0]
    with open(shard, "ab") as fh:
        fh.write(b'[1, 2, 3]\n"monkey"\n{"key": "abc"}\n{"key": "k2", "prompt_id": "p", "set": "s", "locale": "en", "model": "m", "text": 7}\n')
    with caplog.at_level(logging.WARNING):
        assert list(table.load()) == ["k1"]
        assert table.keys() == {"k1"}
    assert table.last_load.corrupt == 4
    assert caplog.text.count("not a responses record") >= 4


def test_a_run_directory_that_is_a_file_is_one_line(tmp_path: Path, server: FaultServer) -> None:
    target = tmp_path / "run"
    target.write_text("not a folder")
    cfg = fast_config(tmp_path / "run.toml", tmp_path / "elsewhere", server.url)
    code, _, err = cli("run", str(cfg), "--run-dir", str(target))
    assert code == 2 and err.count("\n") == 1 and str(target) in err and "Traceback" not in err, err
    code, _, err = cli("judge", "--run", str(target))
    assert code == 2 and err.count("\n") == 1, err
    assert target.read_text() == "not a folder"


def test_a_lock_that_is_a_folder_is_one_line(tmp_path: Path, pristine: Path, server: FaultServer) -> None:
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    (run / ".lock").unlink()
    (run / ".lock").mkdir()
    cfg = fast_config(tmp_path / "run.toml", run, server.url)
    code, _, err = cli("run", str(cfg))
    assert code == 2 and err.count("\n") == 1 and ".lock" in err and "is a folder" in err, err
