"""The small frozen records that flow between stages, and how their keys are derived.

Data flows one way: ``Prompt`` -> ``Translation`` -> ``Response`` -> ``Verdict``. Every record
carries a ``key`` that is a hash of its upstream key(s) and of the *signature* of the component
that made it (model, revision, decoding settings, template hash ...), in the way sacrebleu signs
its scores. A stage computes ``wanted keys - stored keys`` and does only that work, so a changed
setting recomputes exactly what it touches. Settings that cannot change an output (timeouts,
concurrency, batch size) must stay out of signatures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Literal, TypeVar

from xsafety.versions import IMPLEMENTATION_VERSIONS

KEY_LENGTH = 20

LABELS: tuple[str, ...] = ("refusal", "safe", "unsafe", "invalid")
Label = Literal["refusal", "safe", "unsafe", "invalid"]
JudgeMode = Literal["native", "back-translated"]


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the byte-stable form that keys are hashed from."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def stable_hash(*parts: Any, length: int = KEY_LENGTH) -> str:
    """A short hex digest of ``parts`` that is identical across processes and machines."""
    digest = hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).hexdigest()
    return digest[:length]


def text_hash(text: str, length: int = 12) -> str:
    """Hash of a long text (a template, a system prompt) for use inside a signature."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def signature(kind: str, **settings: Any) -> str:
    """A sacrebleu-style signature: ``kind|name:value|...`` with keys sorted and ``None`` dropped.

    A kind with an implementation version (``xsafety.versions``) carries it as ``impl``, so a
    changed implementation changes every key made with it:

    >>> signature("apertium", pair="eng-spa", version="3.8.3")
    'apertium|impl:1|pair:eng-spa|version:3.8.3'
    """
    version = IMPLEMENTATION_VERSIONS.get(kind)
    if version is not None:
        settings = {**settings, "impl": version}
    parts = [kind]
    for name in sorted(settings):
        value = settings[name]
        if value is None:
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, float):
            value = f"{value:g}"
        elif isinstance(value, (dict, list, tuple)):
            value = canonical_json(value)
        parts.append(f"{name}:{value}")
    return "|".join(parts)


R = TypeVar("R", bound="Record")


class Record:
    """Mixin for frozen dataclasses: JSON-safe dicts in and out, tolerant of added fields."""

    table: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of all fields."""
        # The same dict as _to_jsonable(dataclasses.asdict(self)), built in one pass: asdict deep-copies
        # every value first, which made writing records a visible cost at 28,000 answers.
        return _jsonable_fields(self)

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Build a record from a dict, ignoring unknown keys and restoring tuples."""
        kwargs: dict[str, Any] = {}
        for name, hint, plain in _field_plan(cls):
            if name not in data:
                continue
            value = data[name]
            kwargs[name] = value if plain else _restore(value, hint)
        return cls(**kwargs)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    return value


def _jsonable_fields(obj: Any) -> dict[str, Any]:
    return {f.name: _jsonable_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _jsonable_value(value: Any) -> Any:
    if value is None or type(value) in (str, int, float, bool):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable_fields(value)
    if isinstance(value, dict):
        return {str(k): _jsonable_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable_value(v) for v in value]
    return value


_PLAN_CACHE: dict[type, tuple[tuple[str, Any, bool], ...]] = {}


def _field_plan(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type hint, whether the JSON value is used as is) per field, worked out once per class:
    only tuple-typed fields (bare or in a union) need ``_restore``."""
    plan = _PLAN_CACHE.get(cls)
    if plan is None:
        hints = _hints(cls)
        plan = tuple(
            (f.name, hints.get(f.name), not _needs_restore(hints.get(f.name)))
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        )
        _PLAN_CACHE[cls] = plan
    return plan


def _needs_restore(hint: Any) -> bool:
    if hint is None:
        return False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return bool(args) and _needs_restore(args[0])
    return origin is tuple


_HINT_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINT_CACHE:
        _HINT_CACHE[cls] = typing.get_type_hints(cls)
    return _HINT_CACHE[cls]


def _restore(value: Any, hint: Any) -> Any:
    """Turn JSON lists back into tuples where the field is typed as a tuple."""
    if value is None or hint is None:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            return _restore(value, arg)
        return value
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else None
        return tuple(_restore(v, inner) for v in value)
    return value


@dataclass(frozen=True)
class Prompt(Record):
    """One English instruction of an instruction set, tagged with its risk categories.

    ``category`` is an ALERT micro label in its published spelling (``crime_kidnapp``), or ``""``
    when the source has none that maps; ``xsafety_type`` is one of XSafety's 14 issue types.
    """

    table: ClassVar[str] = "prompts"

    id: str
    text: str
    category: str
    source: str
    set: str = "builtin"
    xsafety_type: str | None = None
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    # Worked out once per record (the record is frozen, so they cannot go stale): a run asks
    # every prompt's keys once per locale and stage, each a hash of canonical JSON.
    @cached_property
    def key(self) -> str:
        """Identity of the prompt: its id and text (a changed text is a new prompt). The set's
        name is left out, so a subset imported under another name shares its records."""
        return stable_hash("prompt", self.id, self.text)

    @cached_property
    def set_key(self) -> str:
        """The prompt within its set: the row key of a run's prompts table (one row per set name,
        so a report finds a subset's own categories), and the prompt key of store format 1."""
        return stable_hash("prompt", self.set, self.id, self.text)


@dataclass(frozen=True)
class GateResult(Record):
    """One quality gate's verdict on one translation: a named score against a threshold."""

    name: str
    score: float | None
    threshold: float | None
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Translation(Record):
    """A forward translation of a prompt into a locale, its back-translation and its gates.

    Rejected translations are kept (``accepted=False`` with ``reason``), never dropped.
    ``engine`` and ``back_engine`` are signatures. ``attempts`` holds every candidate tried.
    """

    table: ClassVar[str] = "translations"

    key: str
    prompt_id: str
    set: str
    locale: str
    source: str
    text: str
    engine: str
    back: str | None = None
    back_engine: str | None = None
    gates: tuple[GateResult, ...] = ()
    quality: float | None = None
    accepted: bool = True
    reason: str = ""
    attempts: tuple[dict[str, Any], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Translation":
        """Restore nested gate results as ``GateResult`` records."""
        data = dict(data)
        data["gates"] = tuple(
            g if isinstance(g, GateResult) else GateResult.from_dict(g) for g in data.get("gates", ())
        )
        return super().from_dict(data)

    def gate(self, name: str) -> GateResult | None:
        """The gate result called ``name``, if that gate ran."""
        for g in self.gates:
            if g.name == name:
                return g
        return None


@dataclass(frozen=True)
class Response(Record):
    """One target model's answer to one (possibly translated, possibly attacked) prompt.

    ``key`` = hash(model signature, the exact messages sent). ``error`` is set, and ``text`` empty,
    when every retry failed: the stage records the failure per item and a rerun retries it.
    """

    table: ClassVar[str] = "responses"

    key: str
    prompt_id: str
    set: str
    locale: str
    model: str
    text: str
    attack: str = "none"
    variant: str = "default"
    input_key: str = ""
    messages: tuple[dict[str, str], ...] = ()
    finish_reason: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict(Record):
    """One judge's label for one response, judged natively or on its back-translation."""

    table: ClassVar[str] = "verdicts"

    key: str
    response_key: str
    judge: str
    mode: str  # JudgeMode
    label: str  # Label
    rationale: str = ""
    raw: str = ""
    categories: tuple[str, ...] = ()
    judged_text: str = ""
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
