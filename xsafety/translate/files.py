"""Reading and writing ``translations/<set>/<locale>.jsonl``: one Translation per line.

Files are diff-friendly and deterministic: sorted by prompt id, one record per prompt id, fields
in the record's own order, ``ensure_ascii=False``. A rewrite goes to a temporary file that is
renamed over the old one, so an interrupt leaves either the old file or the new one, never half
of each. While a long job runs, finished items are appended to a hidden sidecar
(``.<locale>.partial.jsonl``) that the next run merges, so a killed job resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

from xsafety.data import translation_dirs
from xsafety.errors import InputError
from xsafety.records import Translation
from xsafety.store import encode_parsed

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"


def translation_path(root: Path, set_name: str, locale: str) -> Path:
    """Where the translations of ``set_name`` into ``locale`` live under ``root``."""
    return Path(root) / set_name / f"{locale}{SUFFIX}"


def partial_path(root: Path, set_name: str, locale: str) -> Path:
    """The sidecar that holds items finished since the last full write."""
    return Path(root) / set_name / f".{locale}.partial{SUFFIX}"


def to_line(record: Translation) -> str:
    """One record as one JSON line (no trailing newline): the run store's own line for it
    (``store.encode_parsed``: compact, ``ensure_ascii=False``, fields in record order), so a run
    copies translations into its store without serialising them again (``line_of``).

    The same text as dumping ``record.to_dict()`` with those settings, without building that dict
    first: the encoder walks the record's own values (tuples are arrays to it, as to ``to_dict``)
    and turns the one nested record type, gate results, into objects as it meets them. Exact
    wherever dict keys are strings, as every key of a translation record is.
    """
    return encode_parsed(record)


# Files this process wrote with ``remember=True`` (or read), by path: the file's identity (inode,
# size, mtime_ns) when it held these records. A run writes each locale's file and reads it back at
# once (the plan's translation index); 25,000 reference records take seconds to parse.
_KNOWN: dict[str, tuple[tuple[int, int, int], dict[str, Translation]]] = {}
_KNOWN_FILES = 64
# The lines of records this process wrote (``to_line``), by ``id`` of the record object, for as
# long as its file is in ``_KNOWN`` (which keeps the record alive, so an id is never reused
# meanwhile): copying 25,000 translations into a run's store took 2 CPU-s of serialising again.
_LINES: dict[int, str] = {}
_LINES_OF: dict[str, list[int]] = {}


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _forget(path: str) -> None:
    _KNOWN.pop(path, None)
    for ident in _LINES_OF.pop(path, ()):
        _LINES.pop(ident, None)


def _remember(path: Path, records: dict[str, Translation], lines: Mapping[str, str] | None = None) -> None:
    ident = _identity(path)
    _forget(str(path))
    if ident is None:
        return
    _KNOWN[str(path)] = (ident, records)
    if lines:
        ids = _LINES_OF[str(path)] = []
        for pid, rec in records.items():
            if pid in lines:
                _LINES[id(rec)] = lines[pid]
                ids.append(id(rec))
    while len(_KNOWN) > _KNOWN_FILES:
        _forget(next(iter(_KNOWN)))


def line_of(record: Translation) -> str | None:
    """The line this process wrote for this very record object (``to_line``), if it still knows
    it; ``None`` otherwise (the caller serialises it)."""
    return _LINES.get(id(record))


def read_file(path: Path, *, tolerate_torn_tail: bool = False) -> dict[str, Translation]:
    """Records of one file by prompt id (a later line for the same prompt id wins).

    A line that is not a Translation raises ``InputError`` naming the file, line and field,
    except a torn last line of a sidecar (``tolerate_torn_tail``), which an interrupt can leave.
    A file this process already read or wrote, unchanged since, is not parsed again.
    """
    out: dict[str, Translation] = {}
    if not path.exists():
        return out
    known = _KNOWN.get(str(path))
    if known is not None and known[0] == _identity(path):
        return dict(known[1])
    before = _identity(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    last = len(lines)
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            if tolerate_torn_tail and lineno >= last - 1:
                log.warning("%s:%d: dropping a torn last line (an interrupted write)", path, lineno)
                continue
            raise InputError(f"not valid JSON ({exc.msg})", file=path, line=lineno) from None
        if not isinstance(data, dict):
            raise InputError("expected a JSON object", file=path, line=lineno)
        for name in ("key", "prompt_id", "set", "locale", "source", "text", "engine"):
            if not isinstance(data.get(name), str):
                raise InputError("missing or not a string", file=path, line=lineno, field=name)
        try:
            rec = Translation.from_dict(data)
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"not a translation record ({exc})", file=path, line=lineno, field="gates") from None
        out[rec.prompt_id] = rec
    if before is not None and before == _identity(path):
        _remember(path, dict(out))
    return out


def write_file(path: Path, records: Iterable[Translation], *, lines: Mapping[str, str] | None = None,
               remember: bool = False) -> None:
    """Atomically replace ``path`` with ``records`` sorted by prompt id.

    ``lines`` (prompt id -> ``to_line`` of that very record) spares serialising a record twice.
    ``remember`` says the records are what reading the file back gives (JSON-native values: no
    tuple where the file will hold a list), so a later ``read_file`` in this process returns them
    without parsing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(records, key=lambda r: r.prompt_id)
    known = lines or {}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("".join((known.get(rec.prompt_id) or to_line(rec)) + "\n" for rec in ordered))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if remember:
        _remember(path, {rec.prompt_id: rec for rec in ordered}, lines)
    else:
        _forget(str(path))


class PartialWriter:
    """Appends finished records to the sidecar, flushing each write (a killed process loses
    nothing flushed) and fsyncing once ``sync_every`` records and ``sync_s`` seconds have gone by
    since the last sync (a power cut loses at most that; the run store syncs on the same clock)."""

    def __init__(self, path: Path, sync_every: int = 20, sync_s: float = 2.0) -> None:
        self.path = path
        self.sync_every = max(1, sync_every)
        self.sync_s = sync_s
        self._fh: IO[str] | None = None
        self._since_sync = 0
        self._last_sync = time.monotonic()

    def write(self, record: Translation) -> None:
        """Append one record durably enough to survive the process being killed."""
        self.write_lines([to_line(record)])

    def write_lines(self, lines: Sequence[str]) -> None:
        """Append records already serialised by ``to_line`` in one write, then flush (and fsync
        once ``sync_every`` records have gone by since the last one)."""
        if not lines:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", newline="\n")
        self._fh.write("".join(line + "\n" for line in lines))
        self._fh.flush()
        self._since_sync += len(lines)
        now = time.monotonic()
        if self._since_sync >= self.sync_every and now - self._last_sync >= self.sync_s:
            os.fsync(self._fh.fileno())
            self._since_sync = 0
            self._last_sync = now

    def close(self) -> None:
        """Flush and close the sidecar."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


def find_file(set_name: str, locale: str) -> Path | None:
    """The first ``<set>/<locale>.jsonl`` in ``translation_dirs()`` (user folder first)."""
    for root in translation_dirs():
        path = translation_path(root, set_name, locale)
        if path.exists():
            return path
    return None


def locales_with_files(set_name: str) -> list[str]:
    """Locales that have a translation file for ``set_name`` in any translation folder."""
    found: set[str] = set()
    for root in translation_dirs():
        folder = Path(root) / set_name
        if folder.is_dir():
            found.update(p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}") if not p.name.startswith("."))
    return sorted(found)
