"""A run directory's metadata, typed: ``run.json``, ``cells.json`` and ``signatures.json``.

This module sits at the bottom of the package beside ``records`` and ``store``: the orchestrator
(``xsafety.run``) writes these files, ``xsafety.status`` and the report (``xsafety.report``) read
them, and each of them goes through the frozen records below, read and written here only.

* ``run.json`` (``RunInfo``): the config as resolved for the last run (locales with their
  resource level, attacks with their signatures, models with the signature each had, the judge
  signatures), and a summary of the last run. A field of the wrong shape (``"models": 3``) is an
  ``InputError`` naming the file, the field's line and the field: read as a default it would
  silently change which records a report reads. Absent fields read as their default; unknown
  fields are kept.
* ``cells.json`` (``Cells``): the response keys the current config asks for. A store keeps every
  record it ever got; this says which of them the current config means.
* ``signatures.json`` (``SignatureBook``): signatures seen in the run directory, keyed by a
  fingerprint of everything that can change them, so a plan knows a model's or judge's signature
  without loading it.

Every write goes to a temporary file renamed over the old one: a reader never sees half a file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsafety.errors import InputError
from xsafety.records import stable_hash

log = logging.getLogger(__name__)

RUN_INFO = "run.json"
CELLS_FILE = "cells.json"
SIGNATURES_FILE = "signatures.json"
REPORT_DIR = "report"
RUN_TRANSLATIONS = "translated"  # where translations made during a run go, inside the run dir
# The run.json fields a report depends on (not where the config file or run directory lives).
REPORT_SETTINGS = (
    "sets", "limit", "locales", "judges", "primary_judge", "judge_modes", "attacks", "variants",
    "base_variant", "models", "judge_signatures", "decoding", "policy",
)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    """The JSON in ``path`` (None when absent); invalid JSON is an ``InputError`` naming the line."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno) from None


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def top_level_lines(text: str) -> dict[str, int]:
    """Line number of each top-level key of the JSON object in ``text`` (empty when it is not one).

    A key's name can also appear nested (``config.run.locales`` comes before ``locales`` in
    ``run.json``), so the object is walked value by value instead of searched.
    """
    decoder = json.JSONDecoder()
    lines: dict[str, int] = {}
    pos = len(text) - len(text.lstrip())
    if not text[pos:pos + 1] == "{":
        return lines
    pos += 1
    try:
        while True:
            pos += len(text[pos:]) - len(text[pos:].lstrip())
            if text[pos:pos + 1] in ("}", ""):
                return lines
            key, end = decoder.raw_decode(text, pos)
            lines.setdefault(str(key), text.count("\n", 0, pos) + 1)
            pos = end + len(text[end:]) - len(text[end:].lstrip())
            if text[pos:pos + 1] != ":":
                return lines
            pos += 1
            pos += len(text[pos:]) - len(text[pos:].lstrip())
            _, pos = decoder.raw_decode(text, pos)
            pos += len(text[pos:]) - len(text[pos:].lstrip())
            if text[pos:pos + 1] == ",":
                pos += 1
    except json.JSONDecodeError:
        return lines


class _Fields:
    """Typed reads of a JSON object's fields: a value of the wrong shape is an ``InputError``
    naming the file, the field's line and the field (a dotted path for nested fields)."""

    def __init__(self, data: Mapping[str, Any], file: Path | None, lines: Mapping[str, int]) -> None:
        self.data, self.file, self.lines = data, file, lines

    def bad(self, name: str, expected: str, path: str | None = None, value: Any = None) -> InputError:
        """The error for top-level field ``name`` (or the part of it at ``path``, whose value is
        ``value``) not being ``expected``."""
        got = self.data.get(name) if path is None else value
        return InputError(f"malformed: expected {expected}, got {json.dumps(got, default=str)[:60]}",
                          file=self.file, line=self.lines.get(name), field=path or name)

    def text(self, name: str, *, optional: bool = False) -> str | None:
        """A string field (None when absent; ``optional`` also allows null)."""
        value = self.data.get(name)
        if value is None and (optional or name not in self.data):
            return None
        if not isinstance(value, str):
            raise self.bad(name, "a string" + (" or null" if optional else ""))
        return value

    def texts(self, name: str) -> tuple[str, ...]:
        """A list of strings (empty when absent)."""
        value = self.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.bad(name, "a list of strings")
        return tuple(value)

    def mapping(self, name: str) -> dict[str, Any] | None:
        """A JSON object field (None when absent or null)."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.bad(name, "a JSON object")
        return dict(value)

    def records(self, name: str, required: str, texts: tuple[str, ...] = (), *, allow_str: bool = False) -> list[Any]:
        """A list of objects, each with a string ``required`` field and string-or-null ``texts``
        fields (``allow_str``: a bare string stands for an object with only ``required``)."""
        value = self.data.get(name, [])
        if not isinstance(value, list):
            raise self.bad(name, "a list of objects")
        for i, entry in enumerate(value):
            if allow_str and isinstance(entry, str):
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get(required), str):
                got = entry.get(required) if isinstance(entry, dict) else entry
                raise self.bad(name, "a string" if isinstance(entry, dict) else "an object",
                               f"{name}[{i}]" + (f".{required}" if isinstance(entry, dict) else ""), got)
            for sub in texts:
                if entry.get(sub) is not None and not isinstance(entry[sub], str):
                    raise self.bad(name, "a string or null", f"{name}[{i}].{sub}", entry[sub])
        return value


# --- run.json -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocaleEntry:
    """A locale the run asked for, as resolved: its name, resource level and translation engine."""

    code: str
    name: str = ""
    resource: str = ""  # empty: not recorded (a reader asks the locale registry)
    engine: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"code": self.code, "name": self.name, "resource": self.resource, "engine": self.engine}


@dataclass(frozen=True)
class AttackEntry:
    """An attack the run applied: the label responses carry, its name, stage and signature."""

    label: str
    name: str
    stage: str
    signature: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"label": self.label, "name": self.name, "stage": self.stage, "signature": self.signature}


@dataclass(frozen=True)
class VariantEntry:
    """A system-prompt variant (``system`` as written in the config)."""

    name: str
    system: str | None = None
    base: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"name": self.name, "system": self.system, "base": self.base}


@dataclass(frozen=True)
class ModelEntry:
    """A target model: display name, spec, backend options and the signature it had (None before
    it was first loaded in this run directory)."""

    name: str
    spec: str
    options: Mapping[str, Any] = field(default_factory=dict)
    signature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"name": self.name, "spec": self.spec, "options": dict(self.options), "signature": self.signature}


@dataclass(frozen=True)
class RunInfo:
    """``run.json``: the resolved config of the last run and what it recorded.

    ``judge_signatures`` maps each configured judge name to the signature it had in this run
    directory (None: never loaded). ``last_run`` is the last run's summary (finish time, plan,
    failures), kept as plain data. ``extra`` holds fields this version does not know.
    """

    config_file: str = ""
    config_digest: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    sets: tuple[str, ...] = ()
    limit: int = 0
    locales: tuple[LocaleEntry, ...] = ()
    # Resource levels written beside (or instead of) the locale entries (``resource`` in run.json).
    resource_map: Mapping[str, str] = field(default_factory=dict)
    judges: tuple[str, ...] = ()
    primary_judge: str | None = None
    judge_modes: tuple[str, ...] = ()
    attacks: tuple[AttackEntry, ...] = ()
    variants: tuple[VariantEntry, ...] = ()
    base_variant: str | None = None
    models: tuple[ModelEntry, ...] = ()
    judge_signatures: Mapping[str, str | None] | None = None
    decoding: Mapping[str, Any] = field(default_factory=dict)
    policy: str | None = None
    last_run: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        """True when read from a ``run.json`` that holds a config (a directory ``xsafety run`` made)."""
        return bool(self.config)

    @property
    def resource(self) -> dict[str, str]:
        """Locale code -> resource level, for the locales the run asked for."""
        return {**{e.code: e.resource for e in self.locales if e.resource}, **self.resource_map}

    @property
    def locale_codes(self) -> list[str]:
        """Locale codes the config asked for (``locales``, else the last plan's)."""
        found = [e.code for e in self.locales]
        plan = self.last_run.get("plan")
        for code in plan.get("locales", []) if isinstance(plan, dict) else []:
            if isinstance(code, str) and code and code not in found:
                found.append(code)
        return found

    @property
    def current_judge_signatures(self) -> frozenset[str] | None:
        """The judge signatures recorded for the current config, or None when none were recorded.

        A judge that never loaded has no signature: it contributes nothing, which is right, as
        verdicts under an older signature of it are not what the current config asks for.
        """
        if self.judge_signatures is None:
            return None
        return frozenset(v for v in self.judge_signatures.values() if v)

    def model_names(self) -> dict[str, str]:
        """Model signature -> the display name the config gives it."""
        return {m.signature: m.name for m in self.models if m.signature}

    def report_settings(self) -> dict[str, Any]:
        """The fields a report depends on, as plain data (what the report stamp hashes)."""
        full = self.to_dict()
        return {k: full.get(k) for k in REPORT_SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, in the field order ``run.json`` has always had."""
        out: dict[str, Any] = dict(self.extra)
        out.update({
            "config_file": self.config_file,
            "config_digest": self.config_digest,
            "config": dict(self.config),
            "sets": list(self.sets),
            "limit": self.limit,
            "locales": [e.to_dict() for e in self.locales],
            "resource": self.resource,
            "judges": list(self.judges),
            "primary_judge": self.primary_judge,
            "judge_modes": list(self.judge_modes),
            "attacks": [a.to_dict() for a in self.attacks],
            "variants": [v.to_dict() for v in self.variants],
            "base_variant": self.base_variant,
            "models": [m.to_dict() for m in self.models],
            "decoding": dict(self.decoding),
            "policy": self.policy,
        })
        if self.judge_signatures is not None:
            out["judge_signatures"] = dict(self.judge_signatures)
        if self.last_run:
            out["last_run"] = dict(self.last_run)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: Path | None = None,
                  lines: Mapping[str, int] | None = None) -> RunInfo:
        """Read the JSON form; a field of the wrong shape is an ``InputError`` naming ``file``,
        the field's line (from ``lines``, see ``top_level_lines``) and the field."""
        known = {
            "config_file", "config_digest", "config", "sets", "limit", "locales", "resource", "judges",
            "primary_judge", "judge_modes", "attacks", "variants", "base_variant", "models", "decoding",
            "policy", "judge_signatures", "last_run",
            "report_stamp",  # older runs kept the report's stamp here; it lives in the folder now
        }
        f = _Fields(data, file, lines or {})
        resource_raw = f.mapping("resource") or {}
        if not all(isinstance(v, str) for v in resource_raw.values()):
            raise f.bad("resource", "an object of locale -> resource level strings")
        resource = {str(k): v for k, v in resource_raw.items()}
        locales: list[LocaleEntry] = []
        for entry in f.records("locales", "code", ("name", "resource", "engine"), allow_str=True):
            if isinstance(entry, str):
                locales.append(LocaleEntry(entry, resource=resource.get(entry, "")))
            else:
                locales.append(LocaleEntry(
                    entry["code"], entry.get("name") or "", entry.get("resource") or resource.get(entry["code"], ""),
                    entry.get("engine"),
                ))
        attacks = tuple(
            AttackEntry(a.get("label") or a["name"], a["name"], a.get("stage") or "", a.get("signature") or "")
            for a in f.records("attacks", "name", ("label", "stage", "signature"))
        )
        variants = tuple(
            VariantEntry(v["name"], v.get("system"), bool(v.get("base", False)))
            for v in f.records("variants", "name", ("system",))
        )
        raw_models = f.records("models", "name", ("spec", "signature"))
        for i, m in enumerate(raw_models):
            if m.get("options") is not None and not isinstance(m["options"], dict):
                raise f.bad("models", "a JSON object", f"models[{i}].options", m["options"])
        models = tuple(
            ModelEntry(m["name"], m.get("spec") or m["name"], _dict(m.get("options")), m.get("signature"))
            for m in raw_models
        )
        sigs = f.mapping("judge_signatures")
        if sigs is not None and not all(v is None or isinstance(v, str) for v in sigs.values()):
            raise f.bad("judge_signatures", "an object of judge name -> signature string or null")
        limit = data.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise f.bad("limit", "a whole number or null")
        return cls(
            config_file=f.text("config_file", optional=True) or "",
            config_digest=f.text("config_digest", optional=True) or "",
            config=f.mapping("config") or {},
            sets=f.texts("sets"),
            limit=limit or 0,
            locales=tuple(locales),
            resource_map=resource,
            judges=f.texts("judges"),
            primary_judge=f.text("primary_judge", optional=True),
            judge_modes=f.texts("judge_modes"),
            attacks=attacks,
            variants=variants,
            base_variant=f.text("base_variant", optional=True),
            models=models,
            judge_signatures=sigs,
            decoding=f.mapping("decoding") or {},
            policy=f.text("policy", optional=True),
            last_run=f.mapping("last_run") or {},
            extra={k: v for k, v in data.items() if k not in known},
        )


def read_info(run_dir: str | Path) -> RunInfo:
    """The ``run.json`` of a run directory (an empty ``RunInfo`` when there is none).

    A ``run.json`` that is JSON but not an object, or whose fields have the wrong shape, is an
    ``InputError`` naming the file, line and field.
    """
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return RunInfo()
    data = _read_json(path)
    if not isinstance(data, dict):
        kind = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(data), "null")
        raise InputError(f"malformed: expected a JSON object, got a JSON {kind}", file=path, line=1)
    return RunInfo.from_dict(data, file=path, lines=top_level_lines(path.read_text(encoding="utf-8")))


def write_info(run_dir: str | Path, info: RunInfo) -> None:
    """Write ``run.json`` atomically."""
    text = json.dumps(info.to_dict(), indent=1, ensure_ascii=False, default=str) + "\n"
    _write_atomic(Path(run_dir) / RUN_INFO, text)


# --- cells.json ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cells:
    """The response keys the run's current config asks for, and the set each belongs to in it.

    A response is shared by every set that has its prompt (same id and text), and its record
    names the set it was first asked for: ``sets`` says which set the current run asks it for.
    """

    responses: frozenset[str]
    sets: Mapping[str, str] = field(default_factory=dict)  # response key -> set name in this run


def read_cells(run_dir: str | Path) -> Cells | None:
    """``cells.json`` of a run directory, or None without one."""
    path = Path(run_dir) / CELLS_FILE
    data = _read_json(path)
    if data is None:
        return None
    keys = data.get("responses") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise InputError("expected a list of response keys", file=path, field="responses")
    sets = data.get("sets", {})
    if not isinstance(sets, dict) or not all(isinstance(v, str) for v in sets.values()):
        raise InputError("expected an object of response key -> set name", file=path, field="sets")
    return Cells(frozenset(keys), sets)


def write_cells(run_dir: str | Path, cells: Cells) -> Path:
    """Write ``cells.json`` atomically (keys sorted: the file is diff-friendly)."""
    path = Path(run_dir) / CELLS_FILE
    data: dict[str, Any] = {"responses": sorted(cells.responses)}
    if cells.sets:
        data["sets"] = dict(sorted(cells.sets.items()))
    _write_atomic(path, json.dumps(data) + "\n")
    return path


# --- signatures.json ----------------------------------------------------------------------------


class SignatureBook:
    """Signatures seen in a run directory by fingerprint (``signatures.json``).

    Besides model and judge signatures, the book records facts learnt by running that a plan needs
    without loading anything (``no_back_key``: a locale no engine back-translates).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / SIGNATURES_FILE
        self.data: dict[str, str] = {}
        try:
            loaded = _read_json(self.path)
        except (InputError, UnicodeDecodeError):
            log.warning("%s is unreadable; signatures will be recomputed", self.path)
            loaded = None
        if isinstance(loaded, dict):
            self.data = {str(k): str(v) for k, v in loaded.items()}

    def get(self, fingerprint: str) -> str | None:
        """The signature recorded for ``fingerprint``, if any."""
        return self.data.get(fingerprint)

    def put(self, fingerprint: str, sig: str) -> None:
        """Record a signature (written at once, atomically)."""
        if self.data.get(fingerprint) == sig:
            return
        self.data[fingerprint] = sig
        _write_atomic(self.path, json.dumps(self.data, indent=1, sort_keys=True))

    def assume(self, known: Mapping[str, str]) -> None:
        """Use ``known`` signatures where the book has none (in memory only: never written)."""
        for fp, sig in known.items():
            self.data.setdefault(fp, sig)

    def no_back_locales(self, judge_fp: str, locales: Iterable[str]) -> frozenset[str]:
        """Locales a previous judging run found no back-translation engine for."""
        return frozenset(loc for loc in locales if self.get(no_back_key(judge_fp, loc)))


def no_back_key(judge_fp: str, locale: str) -> str:
    """The book entry that says ``locale`` had no back-translation engine for a judge."""
    return f"no-back|{judge_fp}|{locale}"


# --- the report stamp ---------------------------------------------------------------------------


def store_stamp(run_dir: str | Path, extra: Any) -> str:
    """A hash of every shard's name and size (it changes whenever a record is added) and ``extra``."""
    root = Path(run_dir)
    parts = []
    for sub in sorted(root.iterdir()) if root.is_dir() else []:
        if sub.is_dir() and sub.name not in (REPORT_DIR, RUN_TRANSLATIONS) and not sub.name.startswith("."):
            parts += [(f.name, f.stat().st_size) for f in sorted(sub.glob("*.jsonl"))]
    return stable_hash("store", parts, extra)


# --- the store's key format ---------------------------------------------------------------------

# The format of the keys a run directory's records are stored under. 1: prompt and response keys
# held the set's name; 2: they do not (a prompt is its id and text), so a subset imported under
# another name shares the full set's records. A directory is re-keyed once by ``xsafety migrate``.
STORE_FORMAT = 2
STORE_FORMAT_FILE = "store-format.json"
# The tables whose rows mean a directory holds records (of whatever format).
_KEYED_TABLES = ("prompts", "responses", "verdicts")


def read_store_format(run_dir: str | Path) -> int | None:
    """The key format recorded in ``run_dir``; None when none is (a new or a format-1 directory)."""
    data = _read_json(Path(run_dir) / STORE_FORMAT_FILE)
    value = data.get("store_format") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def write_store_format(run_dir: str | Path, version: int = STORE_FORMAT) -> None:
    """Record that ``run_dir``'s records are keyed in format ``version``."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    _write_atomic(Path(run_dir) / STORE_FORMAT_FILE, json.dumps({"store_format": version}) + "\n")


def holds_records(run_dir: str | Path) -> bool:
    """True when ``run_dir`` has any stored prompt, response or verdict shard with content."""
    root = Path(run_dir)
    return any(
        shard.stat().st_size > 0
        for name in _KEYED_TABLES if (root / name).is_dir()
        for shard in (root / name).glob("*.jsonl")
    )


def store_format(run_dir: str | Path) -> int:
    """The key format of ``run_dir``'s records: the recorded one, else 1 when it holds records
    (made before the format was recorded), else the current one (nothing stored yet)."""
    recorded = read_store_format(run_dir)
    if recorded is not None:
        return recorded
    return 1 if holds_records(run_dir) else STORE_FORMAT


def check_store_format(run_dir: str | Path, *, stamp: bool = True) -> None:
    """Refuse a run directory keyed in another format (its records would be silently recomputed
    under new keys), naming the command that migrates it; with ``stamp``, record the current
    format in a directory that holds nothing yet."""
    found = store_format(run_dir)
    if found < STORE_FORMAT:
        raise InputError(
            f"records keyed in store format {found} (keys held the set's name; now {STORE_FORMAT}): "
            f"run `xsafety migrate --run-dir {run_dir}` once to re-key them, nothing is recomputed",
            file=Path(run_dir),
        )
    if found > STORE_FORMAT:
        raise InputError(
            f"records keyed in store format {found}, newer than this xsafety reads ({STORE_FORMAT}): upgrade xsafety",
            file=Path(run_dir),
        )
    root = Path(run_dir)
    if stamp and read_store_format(root) is None and (root.is_dir() or not root.exists()):
        # (A path that is a file is left for the run's own one-line error.)
        write_store_format(root)
