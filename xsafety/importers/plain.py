"""Plain JSONL or CSV with a column mapping: ``--map text=question,id=qid,category=cat,ref.de=german``.

Only ``text`` is required (default column ``text``). Without an id column each prompt gets a
stable id from a hash of its text; a category, when given, must be an ALERT label or alias;
``ref.<locale>`` columns become reference translations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xsafety.errors import InputError
from xsafety.importers.base import (
    IdRegistry,
    ImportedSet,
    alert_field,
    check_locale,
    derived_id,
    read_csv_rows,
    read_json_rows,
    text_field,
)
from xsafety.records import Prompt
from xsafety.taxonomy import normalize_xsafety_type

#: Mapping keys a user may give, besides ``ref.<locale>``.
TARGETS = ("text", "id", "category", "xsafety_type", "tags")


def parse_map(spec: str | None) -> dict[str, str]:
    """Parse ``text=question,id=qid`` into ``{"text": "question", "id": "qid"}``; InputError if malformed."""
    mapping: dict[str, str] = {}
    if not spec:
        return mapping
    for part in spec.split(","):
        if not part.strip():
            continue
        target, eq, column = part.partition("=")
        target, column = target.strip(), column.strip()
        if not eq or not target or not column:
            raise InputError(f"expected TARGET=COLUMN, got {part.strip()!r}", field="--map")
        if target not in TARGETS and not (target.startswith("ref.") and len(target) > 4):
            raise InputError(f"unknown target {target!r} (use {', '.join(TARGETS)} or ref.<locale>)", field="--map")
        if target in mapping:
            raise InputError(f"{target!r} mapped twice", field="--map")
        mapping[target] = column
    return mapping


def parse(path: Path, name: str, mapping: dict[str, str], *, csv_format: bool) -> ImportedSet:
    """Read a plain JSONL (``csv_format=False``) or CSV file through ``mapping``."""
    out = ImportedSet(name=name, source=name)
    ids = IdRegistry(path)
    rows: Iterator[tuple[int, dict[str, Any]]] = read_csv_rows(path) if csv_format else read_json_rows(path)
    explicit = set(mapping)
    refs = {t[4:]: c for t, c in mapping.items() if t.startswith("ref.")}
    for locale in refs:
        check_locale(locale, file=path, line=None, field=f"ref.{locale}")
    for line, row in rows:
        columns = {target: mapping.get(target, target) for target in TARGETS}
        for target, column in [*columns.items(), *((f"ref.{loc}", c) for loc, c in refs.items())]:
            if (target in explicit or target == "text") and column not in row:
                raise InputError(
                    f"missing column {column!r} (mapped to {target}; have: {', '.join(map(str, row))})",
                    file=path,
                    line=line,
                    field=column,
                )
        text = text_field(path, line, row, columns["text"])
        raw_id = row.get(columns["id"])
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            pid = derived_id(name, text)
        elif isinstance(raw_id, (int, str)) and not isinstance(raw_id, bool):
            pid = str(raw_id).strip()
        else:
            raise InputError(f"must be a number or text, got {type(raw_id).__name__}", file=path, line=line, field=columns["id"])
        ids.claim(pid, line)
        category = alert_field(path, line, row.get(columns["category"]), columns["category"])
        xtype = row.get(columns["xsafety_type"]) or None
        if xtype is not None:
            try:
                xtype = normalize_xsafety_type(str(xtype))
            except KeyError as exc:
                raise InputError(exc.args[0], file=path, line=line, field=columns["xsafety_type"]) from None
        tags = _tags(path, line, row.get(columns["tags"]), columns["tags"])
        out.prompts.append(Prompt(id=pid, text=text, category=category, source=name, set=name, xsafety_type=xtype, tags=tags))
        for locale, column in refs.items():
            out.add_reference(locale, pid, text_field(path, line, row, column, allow_empty=True))
    return out


def _tags(path: Path, line: int, value: Any, field: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(";") if t.strip())
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return tuple(value)
    raise InputError("must be a list of strings or ';'-separated text", file=path, line=line, field=field)
