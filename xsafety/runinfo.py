"""A run directory's metadata, typed: ``run.json``, ``cells.json`` and ``signatures.json``.

This module sits at the bottom of the package beside ``records`` and ``store``: the orchestrator
(``xsafety.run``) writes these files, ``xsafety.status`` and the report (``xsafety.report``) read
them, and each of them goes through the frozen records below, read and written here only.

* ``run.json`` (``RunInfo``): the config as resolved for the last run (locales with their
  resource level, attacks with their signatures, models with the signature each had, the judge
  signatures), and a summary of the last run. Fields of an unexpected type read as their default,
  so a hand-edited file degrades a report instead of stopping it; unknown fields are kept.
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


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list | tuple) else ()


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


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
    def from_dict(cls, data: Mapping[str, Any]) -> RunInfo:
        """Read the JSON form; a field of the wrong type reads as its default."""
        known = {
            "config_file", "config_digest", "config", "sets", "limit", "locales", "resource", "judges",
            "primary_judge", "judge_modes", "attacks", "variants", "base_variant", "models", "decoding",
            "policy", "judge_signatures", "last_run",
            "report_stamp",  # older runs kept the report's stamp here; it lives in the folder now
        }
        resource = {str(k): str(v) for k, v in _dict(data.get("resource")).items()}
        locales: list[LocaleEntry] = []
        for entry in data.get("locales") or [] if isinstance(data.get("locales"), list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("code"), str):
                locales.append(LocaleEntry(
                    entry["code"], str(entry.get("name") or ""),
                    str(entry.get("resource") or resource.get(entry["code"], "")),
                    _str_or_none(entry.get("engine")),
                ))
            elif isinstance(entry, str):
                locales.append(LocaleEntry(entry, resource=resource.get(entry, "")))
        attacks = tuple(
            AttackEntry(str(a.get("label", a.get("name"))), str(a.get("name")), str(a.get("stage", "")),
                        str(a.get("signature") or ""))
            for a in data.get("attacks") or [] if isinstance(a, dict) and isinstance(a.get("name"), str)
        ) if isinstance(data.get("attacks"), list) else ()
        variants = tuple(
            VariantEntry(v["name"], _str_or_none(v.get("system")), bool(v.get("base", False)))
            for v in data.get("variants") or [] if isinstance(v, dict) and isinstance(v.get("name"), str)
        ) if isinstance(data.get("variants"), list) else ()
        models = tuple(
            ModelEntry(m["name"], str(m.get("spec", m["name"])), _dict(m.get("options")),
                       _str_or_none(m.get("signature")))
            for m in data.get("models") or [] if isinstance(m, dict) and isinstance(m.get("name"), str)
        ) if isinstance(data.get("models"), list) else ()
        sigs = data.get("judge_signatures")
        limit = data.get("limit")
        return cls(
            config_file=str(data.get("config_file") or ""),
            config_digest=str(data.get("config_digest") or ""),
            config=_dict(data.get("config")),
            sets=_strs(data.get("sets")),
            limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else 0,
            locales=tuple(locales),
            resource_map=resource,
            judges=_strs(data.get("judges")),
            primary_judge=_str_or_none(data.get("primary_judge")),
            judge_modes=_strs(data.get("judge_modes")),
            attacks=attacks,
            variants=variants,
            base_variant=_str_or_none(data.get("base_variant")),
            models=models,
            judge_signatures=(
                {str(k): _str_or_none(v) for k, v in sigs.items()} if isinstance(sigs, dict) else None
            ),
            decoding=_dict(data.get("decoding")),
            policy=_str_or_none(data.get("policy")),
            last_run=_dict(data.get("last_run")),
            extra={k: v for k, v in data.items() if k not in known},
        )


def read_info(run_dir: str | Path) -> RunInfo:
    """The ``run.json`` of a run directory (an empty ``RunInfo`` when there is none)."""
    data = _read_json(Path(run_dir) / RUN_INFO)
    return RunInfo.from_dict(data) if isinstance(data, dict) else RunInfo()


def write_info(run_dir: str | Path, info: RunInfo) -> None:
    """Write ``run.json`` atomically."""
    text = json.dumps(info.to_dict(), indent=1, ensure_ascii=False, default=str) + "\n"
    _write_atomic(Path(run_dir) / RUN_INFO, text)


# --- cells.json ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cells:
    """The response keys the run's current config asks for."""

    responses: frozenset[str]


def read_cells(run_dir: str | Path) -> Cells | None:
    """``cells.json`` of a run directory, or None without one."""
    path = Path(run_dir) / CELLS_FILE
    data = _read_json(path)
    if data is None:
        return None
    keys = data.get("responses") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise InputError("expected a list of response keys", file=path, field="responses")
    return Cells(frozenset(keys))


def write_cells(run_dir: str | Path, cells: Cells) -> Path:
    """Write ``cells.json`` atomically (keys sorted: the file is diff-friendly)."""
    path = Path(run_dir) / CELLS_FILE
    _write_atomic(path, json.dumps({"responses": sorted(cells.responses)}) + "\n")
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
