"""An append-only, crash-safe record store: one folder per table, JSONL shards inside.

Layout of a store root (a run directory, or a cache folder)::

    <root>/.lock                      held (flock) by the one process writing this run
    <root>/<table>/<time>-<pid>.jsonl one shard per writing process, one record per line

Why this shape:

* Each writer appends to a shard of its own, one ``write`` per record followed by ``flush``, so a
  ``kill -9`` loses at most the record being written (the OS keeps what was flushed).
* The loader detects a torn last line (no newline, or unparsable JSON at the end of a shard),
  drops it with a warning and keeps every earlier record. A writer that takes the lock first cuts
  torn tails off so the warning is given once.
* A line that parses but is not a record of the table (``[1, 2]``, ``"monkey"``, an object
  without the record's required fields, or a field of the wrong JSON type) is skipped with a
  warning like garbage bytes: every reader (``load``, ``keys``, ``iter_dicts``) sees the same rows,
  so a plan never counts as done a record the report cannot read.
* Records are de-duplicated by key on load (the first one stored wins), so a rerun that appends a
  record already present cannot duplicate it.
* Shards are plain JSONL that polars reads directly (``pl.read_ndjson``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import json
import types
import typing
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from xsafety.errors import InputError, RunLockedError
from xsafety.records import Record

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Record)

LOCK_NAME = ".lock"
FSYNC_EVERY_S = 2.0


class RunLock:
    """An exclusive, non-blocking advisory lock on a store root (released on process death)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``RunLockedError`` naming the holder (``InputError`` when the
        run directory is a file, or its lock file a folder)."""
        if self.root.exists() and not self.root.is_dir():
            raise InputError("is a file, not a run directory", file=self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InputError("cannot be created: a file is in the way on its path", file=self.root) from None
        path = self.root / LOCK_NAME
        if path.is_dir():
            raise InputError("is a folder, not the run's lock file; remove it (the lock is made anew)", file=path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.root} is in use by pid {holder}; wait for it to finish or stop it"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError:
            # A full disk: let go of the lock rather than hold it through the error (in a
            # long-lived process, a leaked descriptor would lock the run until it exits).
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class LoadReport:
    """What a load found besides good records: torn tails and corrupt lines, for the status view."""

    torn: int = 0
    corrupt: int = 0
    duplicates: int = 0


# Parsed tables by (directory, record class, name), with the shard state they were read at, and
# the keys of every intact row (what ``keys`` counts, rows that ``load`` could not build included).
_LOAD_CACHE_TABLES = 16
_LOAD_CACHE: "OrderedDict[tuple[str, type, str], tuple[tuple[tuple[str, int, int], ...], dict[str, Any], LoadReport, frozenset[str]]]" = OrderedDict()


class Table(Generic[R]):
    """All shards of one record type under one store root."""

    def __init__(self, root: Path, cls: type[R], name: str | None = None) -> None:
        self.cls = cls
        self.name = name or cls.table
        if not self.name:
            raise ValueError(f"{cls.__name__} has no table name")
        self.dir = Path(root) / self.name
        self.last_load = LoadReport()

    def shards(self) -> list[Path]:
        """Shard files in creation order (their names start with a sortable time)."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("*.jsonl") if p.is_file())

    def iter_dicts(self) -> Iterator[dict[str, Any]]:
        """Every intact stored row as a dict, torn and corrupt lines skipped with a warning."""
        report = LoadReport()
        for shard in self.shards():
            with open(shard, "rb") as fh:
                data = fh.read()
            lines = data.split(b"\n")
            # A file that ends with "\n" splits into [..., b""]; anything else in the last slot is
            # a line whose write was cut short.
            tail = lines.pop()
            for lineno, raw in enumerate(lines, 1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    report.corrupt += 1
                    log.warning("%s:%d: skipping a corrupt line", shard, lineno)
                    continue
                problem = row_problem(self.cls, row)
                if problem is not None:
                    report.corrupt += 1
                    log.warning("%s:%d: skipping a line that is not a %s record (%s)", shard, lineno, self.name, problem)
                    continue
                yield row
            if tail.strip():
                report.torn += 1
                log.warning("%s: dropping a torn last line (an interrupted write)", shard)
        self.last_load = report

    def _state(self) -> tuple[tuple[str, int, int], ...]:
        """(name, size, mtime_ns) of every shard: any append, new shard, cut or removal changes it."""
        state = []
        for shard in self.shards():
            st = shard.stat()
            state.append((shard.name, st.st_size, st.st_mtime_ns))
        return tuple(state)

    def _cache_key(self) -> tuple[str, type, str]:
        return (str(self.dir.resolve()), self.cls, self.name)

    def _cached(self) -> tuple[Any, Any]:
        """(shard state now or None, the cache entry when it was read at that very state)."""
        try:
            state = self._state()
        except OSError:
            return None, None
        hit = _LOAD_CACHE.get(self._cache_key())
        return state, (hit if hit is not None and hit[0] == state else None)

    def _remember(self, state: tuple[tuple[str, int, int], ...], records: dict[str, Any], report: LoadReport,
                  row_keys: frozenset[str]) -> None:
        key = self._cache_key()
        _LOAD_CACHE[key] = (state, records, report, row_keys)
        _LOAD_CACHE.move_to_end(key)
        while len(_LOAD_CACHE) > _LOAD_CACHE_TABLES:
            _LOAD_CACHE.popitem(last=False)

    def load(self) -> dict[str, R]:
        """All records by key, in store order; the first copy of a key wins.

        A table whose shards have not changed since this process last read it is not parsed again
        (a run reads the same translations and responses in several stages and the report twice),
        nor are records this process appended to a table it had read (``append`` keeps the cache
        in step); the caller gets its own dict of the same frozen records."""
        state, hit = self._cached()
        if hit is not None:
            _LOAD_CACHE.move_to_end(self._cache_key())
            self.last_load = dataclasses.replace(hit[2])
            return dict(hit[1])
        row_keys: set[str] = set()
        out = self._parse(row_keys)
        if state is not None:
            self._remember(state, dict(out), dataclasses.replace(self.last_load), frozenset(row_keys))
        return out

    def _parse(self, row_keys: set[str] | None = None) -> dict[str, R]:
        out: dict[str, R] = {}
        dups = bad = 0
        for row in self.iter_dicts():
            if row_keys is not None and "key" in row:
                row_keys.add(row["key"])
            try:
                rec = self.cls.from_dict(row)
                key = _key_of(rec)
            except (TypeError, ValueError, AttributeError, KeyError) as exc:
                # row_problem catches the shapes we know of; a record class with stricter rules
                # of its own must not take the whole table down either.
                bad += 1
                log.warning("%s: skipping a row that is not a %s record (%s)", self.dir, self.name, exc)
                continue
            if key in out:
                dups += 1
                continue
            out[key] = rec
        self.last_load.duplicates = dups
        self.last_load.corrupt += bad
        return out

    def loaded(self) -> dict[str, R] | None:
        """The records ``load`` would return, when this process holds the table as it is on disk
        and every stored row became a record; else None (nothing is parsed here). For readers
        that would otherwise parse the rows again (``iter_dicts``)."""
        _, hit = self._cached()
        if hit is None or hit[2].corrupt:
            return None
        return dict(hit[1])

    def keys(self) -> set[str]:
        """Keys of all stored records (cheaper than ``load`` for big tables; free when this process
        has the table loaded as it is on disk)."""
        _, hit = self._cached()
        if hit is not None:
            self.last_load = dataclasses.replace(hit[2])
            return set(hit[3])
        return {row["key"] for row in self.iter_dicts() if "key" in row}

    def count(self) -> int:
        """Number of distinct stored records."""
        return len(self.keys())

    def frame(self) -> Any:
        """The table as a polars DataFrame (empty frame with no columns when nothing is stored)."""
        import polars as pl

        rows = list(self.load().values())
        if not rows:
            return pl.DataFrame()
        return pl.from_dicts([r.to_dict() for r in rows], infer_schema_length=None)

    def repair(self) -> int:
        """Cut torn tails off shards (call only while holding the run lock); returns lines cut."""
        cut = 0
        for shard in self.shards():
            with open(shard, "rb+") as fh:
                data = fh.read()
                if not data or data.endswith(b"\n"):
                    continue
                keep = data.rfind(b"\n") + 1
                fh.truncate(keep)
                cut += 1
                log.warning("%s: removed a torn last line left by an interrupted write", shard)
        return cut

    @contextmanager
    def writer(self) -> Iterator["ShardWriter[R]"]:
        """Open a fresh shard for this process and append to it."""
        w = ShardWriter(self)
        try:
            yield w
        finally:
            w.close()

    def append(self, records: Iterable[R], *, as_parsed: bool = False,
               line_of: Callable[[R], str | None] | None = None) -> int:
        """Append records in one new shard; returns how many were written.

        ``as_parsed`` says the records are what parsing their lines back gives (they were
        themselves read from JSON, so no tuple became a list on the way): when this process had
        the table loaded as it was on disk, they then go into that cache too, and a later ``load``
        or ``keys`` does not parse back what was just written. With it, ``line_of`` may give a
        record's line as already serialised by ``encode_parsed`` (``None`` where unknown), so a
        record is not serialised twice.
        """
        before, hit = self._cached() if as_parsed else (None, None)
        if before == () and hit is None:
            hit = ((), {}, LoadReport(), frozenset())  # no shard yet: the table is known to be empty
        written: list[R] = list(records)
        with self.writer() as w:
            if as_parsed:
                w.write_parsed(written, line_of=line_of)
            else:
                for r in written:
                    w.write(r)
            count = w.written
        if hit is not None and before is not None and all(type(r) is self.cls for r in written):
            try:
                after = self._state()
            except OSError:
                return count
            if len(after) == len(before) + (1 if count else 0):
                self._extend_cache(after, hit, written)
        return count

    def _extend_cache(self, state: tuple[tuple[str, int, int], ...], hit: Any, written: list[R]) -> None:
        """The cached table plus ``written`` (first copy of a key wins, as in ``load``), at ``state``."""
        records = dict(hit[1])
        report = dataclasses.replace(hit[2])
        row_keys = set(hit[3])
        for rec in written:
            key = getattr(rec, "key", None)
            if not isinstance(key, str):
                return  # a record load would skip: leave the cache to a real parse
            row_keys.add(key)
            if key in records:
                report.duplicates += 1
            else:
                records[key] = rec
        self._remember(state, records, report, frozenset(row_keys))


class ShardWriter(Generic[R]):
    """Appends records to one shard: a line per record, flushed at once, fsync'd now and then."""

    def __init__(self, table: Table[R]) -> None:
        self.table = table
        self.path: Path | None = None
        self._fh: Any = None
        self._last_sync = time.monotonic()
        self.written = 0

    def _open(self) -> None:
        self.table.dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        base = f"{stamp}-{time.time_ns() % 1_000_000_000:09d}-{os.getpid()}"
        self.path = self.table.dir / f"{base}.jsonl"
        self._fh = open(self.path, "ab")

    def write(self, record: R) -> None:
        """Append one record durably enough to survive the process being killed."""
        if self._fh is None:
            self._open()
        line = _COMPACT(record.to_dict())
        try:
            data = line.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate cannot be UTF-8; as a JSON escape it is stored and read back exactly.
            data = _COMPACT_ASCII(record.to_dict()).encode("ascii")
        self._fh.write(data + b"\n")
        self._fh.flush()
        self.written += 1
        now = time.monotonic()
        if now - self._last_sync > FSYNC_EVERY_S:
            os.fsync(self._fh.fileno())
            self._last_sync = now

    def write_parsed(self, records: Iterable[R], chunk: int = 1000,
                     line_of: Callable[[R], str | None] | None = None) -> None:
        """Append records that were themselves read from JSON, ``chunk`` lines per write.

        Such records have string keys in every dict (JSON has no other), so the encoder can walk
        the record's own values (nested records turned into objects as met) and give the very
        line ``write`` would, without building ``to_dict`` first. A copy, not new work: a kill
        between chunks leaves records the next run appends again. ``line_of`` gives a record's
        ``encode_parsed`` line where the caller already has it.
        """
        if self._fh is None:
            self._open()
        lines: list[bytes] = []
        for record in records:
            known = line_of(record) if line_of is not None else None
            try:
                line = (known if known is not None else encode_parsed(record)).encode("utf-8")
            except UnicodeEncodeError:
                # A lone surrogate cannot be UTF-8; as a JSON escape it is stored and read back exactly.
                line = _COMPACT_NESTED_ASCII(record_fields(record)).encode("ascii")
            lines.append(line)
            if len(lines) >= chunk:
                self._write_lines(lines)
                lines = []
        self._write_lines(lines)

    def _write_lines(self, lines: list[bytes]) -> None:
        if not lines:
            return
        self._fh.write(b"".join(line + b"\n" for line in lines))
        self._fh.flush()
        self.written += len(lines)

    def close(self) -> None:
        """Flush, fsync and close the shard (no file is left behind when nothing was written)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


# JSON types a field of each annotated Python type may hold (int is a valid JSON float). json.loads
# makes exactly these types, so an exact ``type(v) in ...`` test is enough, and keeps bools out
# of numbers (``type(True)`` is ``bool``, not ``int``).
_JSON_TYPES: dict[Any, frozenset[type]] = {
    str: frozenset({str}),
    int: frozenset({int}),
    float: frozenset({int, float}),
    bool: frozenset({bool}),
    dict: frozenset({dict}),
    tuple: frozenset({list}),
    list: frozenset({list}),
}
_Rule = tuple[str, bool, "frozenset[type] | None", bool]  # name, required, JSON types (None: any), nullable


def _json_types(hint: Any) -> tuple[frozenset[type] | None, bool]:
    """(accepted JSON types or None for anything, whether null is allowed) for a field type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        accepted: frozenset[type] = frozenset()
        nullable = False
        for arg in typing.get_args(hint):
            if arg is type(None):
                nullable = True
                continue
            inner, _ = _json_types(arg)
            if inner is None:
                return None, True
            accepted |= inner
        return accepted, nullable
    return _JSON_TYPES.get(origin or hint), False


_FIELD_RULES: dict[type, list[_Rule]] = {}


def _rules(cls: type) -> list[_Rule]:
    """Per field of a record class: name, whether it is required, its JSON types, nullable."""
    if cls not in _FIELD_RULES:
        hints = typing.get_type_hints(cls)
        rules: list[_Rule] = []
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            accepted, nullable = _json_types(hints.get(f.name))
            rules.append((f.name, required, accepted, nullable or accepted is None))
        _FIELD_RULES[cls] = rules
    return _FIELD_RULES[cls]


def row_problem(cls: type, row: Any) -> str | None:
    """Why a parsed JSON line cannot be a record of ``cls`` (None when it can).

    Checks the shape only: a JSON object, every required field present, every known field of
    the JSON type its annotation asks for, and a string ``key`` where the row has one.
    """
    if type(row) is not dict:
        return f"a JSON {type(row).__name__}, not an object"
    if "key" in row and type(row["key"]) is not str:
        return "field 'key' is not a string"
    if not dataclasses.is_dataclass(cls):
        return None
    for name, required, accepted, nullable in _rules(cls):
        if name not in row:
            if required:
                return f"no field '{name}'"
            continue
        value = row[name]
        if value is None:
            if not nullable:
                return f"field '{name}' is null"
        elif accepted is not None and type(value) not in accepted:
            return f"field '{name}' is a JSON {type(value).__name__}"
    return None


@functools.lru_cache(maxsize=None)
def field_names(cls: type) -> tuple[str, ...]:
    """The field names of a record class, in order (``dataclasses.fields`` walks the class each call)."""
    return tuple(f.name for f in dataclasses.fields(cls))


def record_fields(record: Any) -> dict[str, Any]:
    """A record's own field values by name, in field order (nested values as they are)."""
    return {name: getattr(record, name) for name in field_names(type(record))}


def encode_parsed(record: Any) -> str:
    """The store's JSON line of a record read from JSON (``ShardWriter.write_parsed``), as ``str``.

    Translation files use the same line, so a translation written to its file is copied into a
    run's store without being serialised again."""
    return _COMPACT_NESTED(record_fields(record))


def _nested_record(value: Any) -> Any:
    """A nested record as the dict ``Record.to_dict`` makes of it (for the JSON encoder)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return record_fields(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# Store lines, encoded by one encoder each rather than one built per line by ``json.dumps`` (the
# very encoder ``json.dumps`` builds for these arguments, so the same text).
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_COMPACT_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
_COMPACT_NESTED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_nested_record).encode
_COMPACT_NESTED_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=_nested_record).encode


def _key_of(rec: Record) -> str:
    key = getattr(rec, "key", None)
    if not isinstance(key, str):
        raise TypeError(f"{type(rec).__name__} has no string key")
    return key


class Store:
    """A store root (usually a run directory) and its tables."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock = RunLock(self.root)

    def table(self, cls: type[R], name: str | None = None) -> Table[R]:
        """The table that holds records of ``cls`` (its ``table`` name unless ``name`` is given)."""
        return Table(self.root, cls, name)

    @contextmanager
    def locked(self) -> Iterator["Store"]:
        """Hold the run lock for a writing session and repair torn tails first."""
        self._lock.acquire()
        try:
            for sub in sorted(self.root.iterdir()):
                if sub.is_dir():
                    Table(self.root, Record, sub.name).repair()
            yield self
        finally:
            self._lock.release()
