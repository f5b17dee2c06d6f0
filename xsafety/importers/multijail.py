"""MultiJail (Deng et al. 2024): a wide CSV ``id, source, tags, en, zh, it, vi, ar, ko, th, bn, sw, jv``.

``tags`` holds one or two of the 18 published tags, either as a Python list literal (the
published file) or comma-joined; a tag may itself contain commas ("... (e.g. lying, cheating,
etc.)"), so comma-joined tags are matched greedily against the known tags, never split blindly.
"""

from __future__ import annotations

import ast
from pathlib import Path

from xsafety.errors import InputError
from xsafety.importers.base import ENGLISH, IdRegistry, ImportedSet, check_locale, read_csv_rows, require_columns, text_field
from xsafety.records import Prompt
from xsafety.taxonomy import alert_of_multijail, normalize_multijail_tag

#: The 9 languages MultiJail was published in besides English.
LANGUAGES: tuple[str, ...] = ("zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv")
_NOT_LOCALES = {"id", "source", "tags", ENGLISH}


def parse_tags(cell: str) -> list[str]:
    """The published tags in a ``tags`` cell; KeyError naming a piece that is no known tag."""
    cell = cell.strip()
    if cell.startswith("["):
        try:
            items = ast.literal_eval(cell)
        except (ValueError, SyntaxError):
            raise KeyError(f"unreadable tag list {cell!r}") from None
        return [normalize_multijail_tag(str(t)) for t in items]
    tags: list[str] = []
    pending: list[str] = []
    for piece in cell.split(","):
        pending.append(piece)
        try:
            tags.append(normalize_multijail_tag(",".join(pending)))
            pending = []
        except KeyError:
            continue
    if pending and ",".join(pending).strip():
        normalize_multijail_tag(",".join(pending))  # raises with a did-you-mean hint
    return tags


def parse(path: Path, name: str) -> ImportedSet:
    """Read the MultiJail CSV: English prompts plus 9 reference languages."""
    out = ImportedSet(name=name, source="multijail")
    ids = IdRegistry(path)
    for line, row in read_csv_rows(path):
        require_columns(path, line, row, ["id", "tags", ENGLISH])
        pid = ids.claim(f"multijail-{text_field(path, line, row, 'id')}", line)
        try:
            tags = parse_tags(row["tags"])
        except KeyError as exc:
            raise InputError(exc.args[0], file=path, line=line, field="tags") from None
        prompt = Prompt(
            id=pid,
            text=text_field(path, line, row, ENGLISH),
            category=alert_of_multijail(tags[0]) if tags else "",
            source="multijail",
            set=name,
            tags=tuple(tags),
            meta={"multijail_source": row.get("source", "")},
        )
        out.prompts.append(prompt)
        for column, value in row.items():
            if column in _NOT_LOCALES:
                continue
            locale = check_locale(column, file=path, line=1, field=column, published=LANGUAGES)
            out.add_reference(locale, pid, text_field(path, line, row, column, allow_empty=True))
    return out
