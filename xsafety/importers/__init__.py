"""Importers: published red-teaming sets -> ``Prompt`` records (+ human reference translations).

One explicit table maps a format name to its parser. :func:`import_set` parses the whole file
first (any bad row raises :class:`~xsafety.errors.InputError` naming file, line and field) and
only then writes the set, atomically, to ``sets_dir()/<name>/``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xsafety.errors import InputError
from xsafety.importers import alert, catqa, harmfulqa, multijail, plain, xsafety_set
from xsafety.importers.base import ImportedSet, check_file
from xsafety.importers.plain import parse_map
from xsafety.importers.storage import reference_engine, reference_record, write_set
from xsafety.taxonomy import BUILTIN, valid_set_name

log = logging.getLogger(__name__)

Parser = Callable[[Path, str, dict[str, str]], ImportedSet]


def _fixed(parse: Callable[[Path, str], ImportedSet], fmt: str) -> Parser:
    """A parser for a published layout: a column mapping would only hide a wrong format."""

    def run(path: Path, name: str, mapping: dict[str, str]) -> ImportedSet:
        if mapping:
            raise InputError(f"--map applies to jsonl and csv imports, not {fmt}", field="--map")
        return parse(path, name)

    return run


# The one table of formats. Adding a format is a module and a line here.
FORMATS: dict[str, Parser] = {
    "alert": _fixed(alert.parse, "alert"),
    "xsafety": _fixed(xsafety_set.parse, "xsafety"),
    "multijail": _fixed(multijail.parse, "multijail"),
    "harmfulqa": _fixed(harmfulqa.parse, "harmfulqa"),
    "catqa": _fixed(catqa.parse, "catqa"),
    "jsonl": lambda path, name, mapping: plain.parse(path, name, mapping, csv_format=False),
    "csv": lambda path, name, mapping: plain.parse(path, name, mapping, csv_format=True),
}


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote: counts per category and per reference locale, and what it skipped."""

    name: str
    path: Path
    format: str
    prompts: int
    categories: Counter[str]
    references: dict[str, int]
    skipped: Counter[str] = field(default_factory=Counter)
    warnings: tuple[str, ...] = ()


def default_name(fmt: str, path: Path) -> str:
    """The set name when ``--name`` is not given: the format for published sets, else the file stem."""
    return path.stem if fmt in ("jsonl", "csv") else fmt


def parse_source(fmt: str, path: Path, name: str, mapping: dict[str, str] | None = None) -> ImportedSet:
    """Parse ``path`` as ``fmt`` into memory without writing anything."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}", field="FORMAT")
    if not path.exists():
        raise InputError("no such file or folder", file=path)
    if not (fmt == "xsafety" and path.is_dir()):
        check_file(path)
    imported = FORMATS[fmt](path, name, mapping or {})
    if not imported.prompts:
        raise InputError("no prompts found", file=path)
    return imported


def import_set(fmt: str, path: str | Path, name: str | None = None, mapping: str | dict[str, str] | None = None) -> ImportSummary:
    """Import ``path`` in format ``fmt`` as set ``name``; an existing set is replaced only on success."""
    path = Path(path).expanduser()
    mapping = parse_map(mapping) if isinstance(mapping, str) or mapping is None else mapping
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}", field="FORMAT")
    name = name or default_name(fmt, path)
    if name == BUILTIN or not valid_set_name(name):
        raise InputError(f"{name!r} cannot be a set name (use letters, digits, _ . - and not 'builtin')", field="--name")
    imported = parse_source(fmt, path, name, mapping)
    for warning in imported.warnings[:20]:
        log.warning("%s", warning)
    if len(imported.warnings) > 20:
        log.warning("... and %d more warnings", len(imported.warnings) - 20)
    target = write_set(imported, {"format": fmt, "file": str(path.resolve()), "map": mapping})
    return ImportSummary(
        name=name,
        path=target,
        format=fmt,
        prompts=len(imported.prompts),
        categories=Counter(p.category or "(none)" for p in imported.prompts),
        references={loc: len(t) for loc, t in sorted(imported.references.items())},
        skipped=imported.skipped,
        warnings=tuple(imported.warnings),
    )


__all__ = [
    "FORMATS",
    "ImportSummary",
    "ImportedSet",
    "default_name",
    "import_set",
    "parse_map",
    "parse_source",
    "reference_engine",
    "reference_record",
]
