"""A translation file this process wrote or read is not parsed again while it is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from xsafety.records import GateResult, Translation
from xsafety.translate import files


def _tr(pid: str, text: str) -> Translation:
    return Translation(key=f"k-{pid}-{len(text)}", prompt_id=pid, set="mini", locale="es", source="How?", text=text,
                       engine="reference|set:mini", gates=(GateResult("copy", 0.1, 0.6, True, "ok"),),
                       attempts=({"step": "first", "gates": {"copy": 0.1}, "failed": []},), meta={"signals": {"x": 1.0}})


def _parsed(path: Path) -> dict[str, Translation]:
    files._KNOWN.clear()
    return files.read_file(path)


def test_a_remembered_write_reads_back_what_parsing_gives(tmp_path: Path) -> None:
    path = files.translation_path(tmp_path, "mini", "es")
    files.write_file(path, [_tr("p2", "¿Cómo?"), _tr("p1", "Hola")], remember=True)
    served = files.read_file(path)
    assert served == _parsed(path)
    assert list(served) == ["p1", "p2"]
    served.pop("p1")  # the caller's dict is its own
    assert set(files.read_file(path)) == {"p1", "p2"}


def test_a_file_changed_behind_the_cache_is_parsed_again(tmp_path: Path) -> None:
    path = files.translation_path(tmp_path, "mini", "es")
    files.write_file(path, [_tr("p1", "Hola")], remember=True)
    files.read_file(path)
    row = _tr("p3", "Adiós").to_dict()
    with open(path, "a", encoding="utf-8") as fh:  # another process appends a line
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    assert set(files.read_file(path)) == {"p1", "p3"}
