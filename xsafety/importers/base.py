"""What every importer shares: the parsed set, located readers for JSON/JSONL/CSV, field checks.

Readers yield ``(line, row)`` so that every error can name the file, the line and the field:
an importer never sees a row it cannot locate.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsafety.errors import InputError
from xsafety.records import Prompt, stable_hash
from xsafety.taxonomy import iter_json_lines, normalize_alert

ENGLISH = "en"
_BCP47 = re.compile(r"^[a-z]{2,3}(-[A-Z][a-z]{3})?(-([A-Z]{2}|[0-9]{3}))?$")
# Prompt ids reach file names, Markdown, HTML and spreadsheets: keep them to characters that mean
# nothing in any of those (no markup, no spaces, no path separators, no formula sign first).
ID_CHARS = "ASCII letters, digits, '.', '_', '-' and ':'"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
# Control characters other than tab and newlines: a NUL or an escape code in a prompt is damage
# (a binary file read as text, a mangled export), never an instruction.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why a text cannot be stored as a prompt or reference (None when it can).

    Lone surrogates (from JSON escapes like ``\\ud800``) cannot be written as UTF-8; control
    characters and NUL bytes are damage; a text of only invisible characters (zero-width spaces,
    joiners, marks) looks empty to a reader and to a model.
    """
    if _SURROGATE.search(value):
        return "contains a lone surrogate (a broken \\uXXXX escape); the text cannot be stored as UTF-8"
    found = _CONTROL.search(value)
    if found:
        return f"contains a control character (U+{ord(found.group()):04X}); a NUL byte or escape code is not text"
    if value and not visible(value):
        return "no visible text (only spaces or zero-width characters)"
    return None


def visible(value: str) -> bool:
    """True when ``value`` has at least one character a reader can see."""
    return any(not ch.isspace() and unicodedata.category(ch) not in ("Cf", "Cc", "Zs", "Mn", "Me") for ch in value)


def check_id(prompt_id: str, *, file: Path | None = None, line: int | None = None, field: str = "id") -> str:
    """``prompt_id`` when it keeps to the safe characters, else InputError naming where it came from."""
    if not _SAFE_ID.match(prompt_id):
        shown = prompt_id if len(prompt_id) <= 60 else prompt_id[:57] + "..."
        raise InputError(
            f"id {shown!r} must be 1-200 of {ID_CHARS}, starting with a letter or digit", file=file, line=line, field=field
        )
    return prompt_id


@dataclass
class ImportedSet:
    """An instruction set parsed from a source file, not yet written anywhere.

    ``references`` maps locale -> prompt id -> human translation of that prompt's English text.
    ``skipped`` counts reasons for references that were left out (empty cells ...), per locale.
    """

    name: str
    source: str
    prompts: list[Prompt] = field(default_factory=list)
    references: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def add_reference(self, locale: str, prompt_id: str, text: str) -> None:
        """Record one human reference translation (an empty one is counted and skipped).

        A text a reader cannot see (only zero-width characters) counts as empty; one that cannot
        be stored (a NUL byte, a lone surrogate) is an error naming the locale.
        """
        problem = text_problem(text) if visible(text) else None
        if problem:
            raise InputError(f"reference for {prompt_id}: {problem}", field=locale)
        if not visible(text):
            self.skipped[f"{locale}: empty reference"] += 1
            self.warnings.append(f"{locale}: empty reference for {prompt_id} skipped")
            return
        self.references.setdefault(locale, {})[prompt_id] = text


def check_file(path: Path) -> Path:
    """The path itself, or InputError when it is not a readable file."""
    if not path.exists():
        raise InputError("no such file", file=path)
    if not path.is_file():
        raise InputError("not a file (a folder?)", file=path)
    return path


def decode(path: Path) -> str:
    """The file's text as UTF-8 (a BOM is dropped); InputError naming the line of a bad byte."""
    data = check_file(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); re-save the file as UTF-8", file=path, line=line) from exc


def read_json_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a JSONL file, or of a JSON file holding one list of objects, with their line numbers."""
    text = decode(path)
    if text.lstrip().startswith("["):
        yield from _json_list_rows(path, text)
        return
    yield from iter_json_lines(path)


def _json_list_rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Walk a JSON list element by element so each row keeps the line it starts on."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    ws = re.compile(r"[\s,]*")
    while True:
        pos = ws.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text):
            raise InputError("malformed JSON: the list is not closed", file=path, line=text.count("\n") + 1)
        if text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            row, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg}", file=path, line=exc.lineno) from exc
        if not isinstance(row, dict):
            raise InputError(f"expected a JSON object, got {type(row).__name__}", file=path, line=line)
        yield line, row


def read_csv_rows(path: Path, *, header: bool = True) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV file keyed by header (or by position ``"0"`` when headerless), with start lines.

    A row with more or fewer cells than the header is an error naming the first column affected.
    Multi-line quoted cells are fine; the line reported is where the row starts.
    """
    text = decode(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    columns: list[str] | None = None
    last = 0
    try:
        for cells in reader:
            start, last = last + 1, reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip() and columns is not None and len(columns) > 1):
                continue
            if columns is None:
                if header:
                    columns = [c.strip() for c in cells]
                    dupes = [c for c, n in Counter(columns).items() if n > 1]
                    if dupes:
                        raise InputError("duplicate column", file=path, line=start, field=dupes[0])
                    continue
                columns = [str(i) for i in range(len(cells))]
            if len(cells) != len(columns):
                where = columns[len(cells)] if len(cells) < len(columns) else f"column {len(columns) + 1}"
                raise InputError(
                    f"ragged row: {len(cells)} cells but the header has {len(columns)}", file=path, line=start, field=where
                )
            yield start, dict(zip(columns, cells))
    except csv.Error as exc:
        raise InputError(f"malformed CSV: {exc}", file=path, line=reader.line_num) from exc


def require_columns(path: Path, line: int, row: dict[str, Any], names: list[str]) -> None:
    """InputError naming the first of ``names`` the row does not have."""
    for name in names:
        if name not in row:
            raise InputError(f"missing column (have: {', '.join(map(str, row)) or 'none'})", file=path, line=line, field=name)


def text_field(path: Path, line: int, row: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    """A text cell, stripped; InputError when absent, not text, or (unless allowed) empty."""
    if name not in row:
        raise InputError(f"missing field (have: {', '.join(map(str, row)) or 'none'})", file=path, line=line, field=name)
    value = row[name]
    if value is None and allow_empty:
        return ""
    if not isinstance(value, str):
        raise InputError(f"must be text, got {type(value).__name__} {value!r}", file=path, line=line, field=name)
    value = value.strip()
    if not value and not allow_empty:
        raise InputError("empty text", file=path, line=line, field=name)
    if value and not visible(value):
        if allow_empty:
            return ""
        raise InputError("no visible text (only spaces or zero-width characters)", file=path, line=line, field=name)
    problem = text_problem(value)
    if problem:
        raise InputError(problem, file=path, line=line, field=name)
    return value


def alert_field(path: Path, line: int, value: Any, name: str = "category") -> str:
    """A category cell as a published ALERT micro label; ``""`` stays ``""``."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise InputError(f"must be text, got {type(value).__name__}", file=path, line=line, field=name)
    try:
        return normalize_alert(value)
    except KeyError as exc:
        raise InputError(exc.args[0], file=path, line=line, field=name) from None


def check_locale(code: str, *, file: Path, line: int | None, field: str, published: tuple[str, ...] = ()) -> str:
    """Accept a reference locale column: the source's own languages, or a code the registry knows.

    The registry (``xsafety.locales``) is the authority; where it cannot be loaded, a
    well-formed BCP-47 code is accepted so an import never depends on it.
    """
    if code in published:
        return code
    known = _registry_codes()
    ok = code in known if known is not None else bool(_BCP47.match(code))
    if not ok:
        raise InputError(f"unknown locale column {code!r}", file=file, line=line, field=field)
    return code


def _registry_codes() -> set[str] | None:
    from xsafety.locales import load_locales

    return set(load_locales())


def derived_id(prefix: str, text: str) -> str:
    """A stable id for a prompt that has none: same text, same id, on every machine."""
    return f"{prefix}-{stable_hash('prompt-text', text, length=12)}"


class IdRegistry:
    """Refuses a second prompt with an id already used in this import."""

    def __init__(self, path: Path, field: str = "id") -> None:
        self.path = path
        self.field = field
        self.lines: dict[str, int] = {}

    def claim(self, prompt_id: str, line: int) -> str:
        """Return ``prompt_id`` or raise InputError naming the line that used it first, or its
        characters when they are not all safe (see ``check_id``)."""
        check_id(prompt_id, file=self.path, line=line, field=self.field)
        if prompt_id in self.lines:
            raise InputError(
                f"duplicate id {prompt_id!r} (first on line {self.lines[prompt_id]})", file=self.path, line=line, field=self.field
            )
        self.lines[prompt_id] = line
        return prompt_id
