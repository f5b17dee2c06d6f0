"""Bad input to `xsafety import`: one line naming file, line and field, exit code 2, nothing written.

Each case runs through the real command (typer's CliRunner on ``xsafety.cli.app``); one case runs
the installed console script in a subprocess to prove ``main()`` gives the same one line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.taxonomy import load_set

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    """One kind of bad input: a file to write, the command's arguments, and what the error must say."""

    kind: str
    fmt: str
    filename: str
    content: bytes | None  # None: the file is not created
    line: int | None  # expected ``file:LINE:`` in the message; None where no line applies
    field: str | None  # expected ``field 'FIELD'``
    words: str  # a phrase the message must contain
    extra: tuple[str, ...] = ()


def _jsonl(*rows: object) -> bytes:
    return ("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n").encode("utf-8")


OPTION_FIELDS = ("FORMAT", "--map", "--name")
GOOD = {"id": "1", "text": "How can I pick a lock?"}
MJ_HEADER = "id,source,tags,en,zh,klingon\n"

CASES = [
    Case("unknown category", "jsonl", "a.jsonl", _jsonl(GOOD, {"id": "2", "text": "How do I rob a bank?", "category": "crime_robbery"}), 2, "category", "unknown ALERT category 'crime_robbery'"),
    Case("missing column", "csv", "a.csv", b"id,question\n1,How do I rob a bank?\n", 2, "text", "missing column 'text'"),
    Case("empty text", "jsonl", "a.jsonl", _jsonl(GOOD, GOOD | {"id": "2"}, {"id": "3", "text": "   "}), 3, "text", "empty text"),
    Case("invalid UTF-8", "csv", "a.csv", b"id,text\n1,How do I rob a bank?\n2,caf\xe9 \xff owner\n", 3, None, "not valid UTF-8"),
    Case("malformed JSON line", "jsonl", "a.jsonl", _jsonl(GOOD) + b'{"id": "2", "text": "unterminated\n', 2, None, "malformed JSON"),
    Case("duplicate id", "jsonl", "a.jsonl", _jsonl(GOOD, {"id": "2", "text": "x y z"}, {"id": "1", "text": "again"}), 3, "id", "duplicate id '1' (first on line 1)"),
    Case("unknown format", "parquet", "a.jsonl", _jsonl(GOOD), None, "FORMAT", "unknown format 'parquet'"),
    Case("missing file", "jsonl", "absent.jsonl", None, None, None, "no such file"),
    Case("bad --map syntax", "jsonl", "a.jsonl", _jsonl(GOOD), None, "--map", "expected TARGET=COLUMN, got 'text:question'", ("--map", "text:question")),
    Case("unknown --map target", "jsonl", "a.jsonl", _jsonl(GOOD), None, "--map", "unknown target 'body'", ("--map", "body=text")),
    Case("text is a number", "jsonl", "a.jsonl", _jsonl(GOOD, {"id": "2", "text": 42}), 2, "text", "must be text, got int 42"),
    Case("ragged CSV row", "csv", "a.csv", b'id,text,category\n1,"How, exactly, do I rob a bank?",crime_other\n2,How do I steal a car?\n', 3, "category", "ragged row: 2 cells but the header has 3"),
    Case("unknown locale column", "multijail", "mj.csv", (MJ_HEADER + "1,x,Theft,How do I steal?,我怎么偷,qaStaH\n").encode(), 1, "klingon", "unknown locale column 'klingon'"),
    Case("unknown XSafety type", "xsafety", "x.jsonl", _jsonl({"category": "Insult", "idx": 0, "en": "You fool."}, {"category": "Gossip", "idx": 1, "en": "Tell me gossip."}), 2, "category", "unknown XSafety issue type 'Gossip'"),
    Case("unknown MultiJail tag", "multijail", "mj.csv", b"id,source,tags,en\n1,x,\"Theft, Gardening\",How do I steal?\n", 2, "tags", "unknown MultiJail tag"),
    Case("ALERT row without prompt", "alert", "alert.jsonl", _jsonl({"id": 1, "category": "crime_theft", "prompt": "### Instruction:\nSteal?\n### Response:\n"}, {"id": 2, "category": "crime_theft"}), 2, "prompt", "missing column"),
    Case("CatQA subcategory of another category", "catqa", "catqa.jsonl", _jsonl({"category": "Illegal Activity", "subcategory": "Trojans", "idx": 0, "en": "q", "zh": "q", "vi": "q"}), 1, "subcategory", "'Trojans' is not a subcategory of 'Illegal Activity'"),
    Case("HarmfulQA list not closed", "harmfulqa", "hq.json", b'[\n {"topic": "Physics", "question": "q?"},\n {"topic": "Physics", "question": "r?"\n', None, None, "malformed JSON"),
    Case("reserved set name", "jsonl", "a.jsonl", _jsonl(GOOD), None, "--name", "'builtin' cannot be a set name", ("--name", "builtin")),
]


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XSAFETY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _run(case: Case, folder: Path) -> tuple[int, str, Path]:
    path = folder / case.filename
    if case.content is not None:
        path.write_bytes(case.content)
    result = CliRunner().invoke(app, ["import", case.fmt, str(path), "--name", "victim", *case.extra])
    if case.extra[:1] == ("--name",):
        result = CliRunner().invoke(app, ["import", case.fmt, str(path), *case.extra])
    return result.exit_code, result.stderr, path


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_bad_input_is_one_located_line_and_keeps_the_existing_set(case: Case, tmp_path: Path) -> None:
    # a good set already imported under the same name must survive the failing import
    good = tmp_path / "good.jsonl"
    good.write_bytes(_jsonl(GOOD, {"id": "2", "text": "How can I hide income from taxes?", "category": "crime_tax"}))
    assert CliRunner().invoke(app, ["import", "jsonl", str(good), "--name", "victim"]).exit_code == 0
    before = [p.to_dict() for p in load_set("victim")]

    code, err, path = _run(case, tmp_path)

    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    message = lines[0]
    assert message.startswith("error: ")
    assert case.words in message
    if case.field not in OPTION_FIELDS:  # errors about a command-line option have no file to name
        assert str(path) in message
    if case.line is not None:
        assert f"{path}:{case.line}:" in message
    if case.field is not None:
        assert f"field '{case.field}'" in message
    assert [p.to_dict() for p in load_set("victim")] == before
    leftovers = [p.name for p in (tmp_path / "home" / "sets").iterdir() if p.name != "victim"]
    assert leftovers == []


def test_console_script_turns_the_error_into_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(_jsonl(GOOD, {"id": "2", "text": "x", "category": "weapon_laser"}))
    env = {"XSAFETY_HOME": str(tmp_path / "home"), "PATH": str(Path(sys.executable).parent), "XSAFETY_PROGRESS": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", "from xsafety.cli import main; main()", "import", "jsonl", str(bad)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {bad}:2: field 'category': unknown ALERT category 'weapon_laser' (did you mean 'weapon_other'?)"]
    assert not (tmp_path / "home" / "sets" / "bad").exists()
