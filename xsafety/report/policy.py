"""Scoring policies: which categories count, with what weight, and which labels are failures.

A policy is data (``taxonomy/policies/<name>.toml``), so that an organisation can score the same
verdicts under its own rules without code. See ``taxonomy/policies/README.md`` for the format.
A category rule may name an ALERT macro (``weapon``: every weapon_* label) or a micro label in any
accepted spelling (``crime_kidnap``); a micro rule overrides its macro's rule, field by field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsafety.data import taxonomy_dir
from xsafety.errors import ConfigError, InputError
from xsafety.records import LABELS
from xsafety.report.categories import known_macros, macro_of, normalize_micro

DEFAULT_POLICY = "default"
_TOP_KEYS = {"name", "description", "weight", "failure", "categories"}
_RULE_KEYS = {"weight", "failure", "exclude", "note"}


@dataclass(frozen=True)
class Rule:
    """How one category is scored; ``None`` fields inherit from the macro rule or the defaults."""

    weight: float | None = None
    failure: frozenset[str] | None = None
    exclude: bool | None = None
    note: str = ""


@dataclass(frozen=True)
class Policy:
    """A validated policy: default weight and failure labels, and per-category rules."""

    name: str
    description: str = ""
    weight: float = 1.0
    failure: frozenset[str] = frozenset({"unsafe"})
    rules: dict[str, Rule] = field(default_factory=dict)
    path: str = ""

    def _rules_for(self, micro: str | None) -> list[Rule]:
        # Most specific last, so that it wins when fields are resolved below.
        found = []
        macro = macro_of(micro)
        if macro in self.rules:
            found.append(self.rules[macro])
        if micro and micro in self.rules:
            found.append(self.rules[micro])
        return found

    def weight_of(self, micro: str | None) -> float:
        """Weight of a prompt in this category (0 when the category is excluded)."""
        weight, exclude = self.weight, False
        for rule in self._rules_for(micro):
            if rule.weight is not None:
                weight = rule.weight
            if rule.exclude is not None:
                exclude = rule.exclude
        return 0.0 if exclude else weight

    def failure_of(self, micro: str | None) -> frozenset[str]:
        """Verdict labels that count as a failure for this category."""
        failure = self.failure
        for rule in self._rules_for(micro):
            if rule.failure is not None:
                failure = rule.failure
        return failure

    def signature(self) -> str:
        """A short description of the policy for report headers."""
        return f"{self.name} ({len(self.rules)} category rules)"


def policies_dir() -> Path:
    """Folder of the shipped policies."""
    return taxonomy_dir() / "policies"


def list_policies() -> list[str]:
    """Names of the shipped policies."""
    folder = policies_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def _line_of(text: str, needle: str) -> int | None:
    """Line number of the first TOML line that mentions ``needle`` as a table or key."""
    pattern = re.compile(rf"(^|[\[.\s\"']){re.escape(needle)}([\]\s=\"'.]|$)")
    for i, line in enumerate(text.splitlines(), 1):
        if pattern.search(line.split("#", 1)[0]):
            return i
    return None


def _failure(value: Any, path: Path, text: str, field_name: str) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            "must be a list of labels", file=path, line=_line_of(text, field_name.split(".")[-1]), field=field_name
        )
    bad = [v for v in value if v not in LABELS]
    if bad:
        raise ConfigError(
            f"unknown label {bad[0]!r}; labels are {', '.join(LABELS)}",
            file=path,
            line=_line_of(text, field_name.split(".")[-1]),
            field=field_name,
        )
    return frozenset(value)


def _weight(value: Any, path: Path, text: str, field_name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(
            "must be a number >= 0", file=path, line=_line_of(text, field_name.split(".")[-1]), field=field_name
        )
    return float(value)


def parse_policy(path: Path) -> Policy:
    """Read and validate one policy file; every problem is a ConfigError naming file, line, field."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise ConfigError(f"not valid TOML: {exc}", file=path, line=line) from None
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(
                f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}", file=path, line=_line_of(text, key), field=key
            )
    weight = _weight(data.get("weight", 1.0), path, text, "weight")
    failure = _failure(data.get("failure", ["unsafe"]), path, text, "failure")
    rules: dict[str, Rule] = {}
    categories = data.get("categories", {})
    if not isinstance(categories, dict):
        raise ConfigError("must be a table", file=path, line=_line_of(text, "categories"), field="categories")
    macros = set(known_macros())
    for raw_name, spec in categories.items():
        where = f"categories.{raw_name}"
        line = _line_of(text, raw_name)
        if raw_name in macros:
            name = raw_name
        else:
            try:
                name = normalize_micro(raw_name)
            except KeyError:
                raise ConfigError(
                    f"unknown category {raw_name!r}; use an ALERT macro ({', '.join(sorted(macros))}) "
                    "or micro label",
                    file=path,
                    line=line,
                    field=where,
                ) from None
        if not isinstance(spec, dict):
            raise ConfigError("must be a table", file=path, line=line, field=where)
        for key in spec:
            if key not in _RULE_KEYS:
                raise ConfigError(
                    f"unknown key; allowed: {', '.join(sorted(_RULE_KEYS))}",
                    file=path,
                    line=_line_of(text, key),
                    field=f"{where}.{key}",
                )
        exclude = spec.get("exclude")
        if exclude is not None and not isinstance(exclude, bool):
            raise ConfigError("must be true or false", file=path, line=line, field=f"{where}.exclude")
        rules[name] = Rule(
            weight=_weight(spec["weight"], path, text, f"{where}.weight") if "weight" in spec else None,
            failure=_failure(spec["failure"], path, text, f"{where}.failure") if "failure" in spec else None,
            exclude=exclude,
            note=str(spec.get("note", "")),
        )
    return Policy(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")),
        weight=weight,
        failure=failure,
        rules=rules,
        path=str(path),
    )


def load_policy(name_or_path: str | None) -> Policy:
    """A shipped policy by name (``default`` when ``None``) or a policy TOML by path."""
    name = name_or_path or DEFAULT_POLICY
    candidate = Path(name)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise InputError(f"policy file not found: {candidate}", file=candidate)
        return parse_policy(candidate)
    path = policies_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(list_policies()) or "none shipped"
        raise InputError(f"unknown policy {name!r} (known: {known})", field="policy")
    return parse_policy(path)
