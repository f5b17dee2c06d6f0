"""Stratified, seeded samples of an instruction set: N prompts per category.

``limit`` takes the first N prompts of a set, and for a set sorted by category (XSafety) that is N
prompts of one category. A sample takes ``per_category`` prompts from every category instead,
by ALERT's category (``by = "alert"``) or by the source set's own (``by = "source"``: XSafety
issue type, MultiJail tag, CatQA category ...).

Each prompt's place in its category is a hash of (seed, prompt id, text), so the sample does not
depend on the order of the file, and samples are nested: with the same seed, the sample of N per
category is contained in the sample of N + 1. A small pilot run's records are therefore reused by
a larger one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

from xsafety.errors import ConfigError
from xsafety.records import Prompt, stable_hash
from xsafety.taxonomy import source_category

SampleBy = Literal["alert", "source"]
BY_CHOICES: tuple[str, ...] = ("alert", "source")
UNCATEGORISED = "(none)"


@dataclass(frozen=True)
class Sample:
    """A stratified sample request: ``per_category`` prompts from each category of ``by``."""

    per_category: int
    by: SampleBy = "alert"
    seed: int = 0

    def describe(self) -> str:
        """A short label for run summaries and reports."""
        return f"{self.per_category} per {self.by} category (seed {self.seed})"


def parse_sample(value: Any, *, file: str | None = None, line: int | None = None, field: str = "sample") -> Sample:
    """A ``Sample`` from a config table (``{per_category = 3, by = "source", seed = 1}``) or the
    CLI form ``N[:alert|source[:SEED]]``; ``ConfigError`` naming the field when it does not fit."""
    if isinstance(value, str):
        parts = value.split(":")
        try:
            table: dict[str, Any] = {"per_category": int(parts[0])}
            if len(parts) > 1:
                table["by"] = parts[1]
            if len(parts) > 2:
                table["seed"] = int(parts[2])
            if len(parts) > 3:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"{value!r} is not N[:alert|source[:SEED]] (e.g. 3:source:1)", file=file, line=line, field=field
            ) from None
        value = table
    if not isinstance(value, dict):
        raise ConfigError("must be a table like {per_category = 3, by = \"alert\", seed = 0}", file=file, line=line, field=field)
    unknown = sorted(set(value) - {"per_category", "by", "seed"})
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} (per_category, by, seed)", file=file, line=line, field=f"{field}.{unknown[0]}")
    n = value.get("per_category")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("must be a whole number of at least 1", file=file, line=line, field=f"{field}.per_category")
    by = value.get("by", "alert")
    if by not in BY_CHOICES:
        raise ConfigError(f"must be one of {', '.join(BY_CHOICES)}, not {by!r}", file=file, line=line, field=f"{field}.by")
    seed = value.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("must be a whole number", file=file, line=line, field=f"{field}.seed")
    return Sample(per_category=n, by=by, seed=seed)


def category_of(prompt: Prompt, by: str) -> str:
    """The stratum of a prompt: its ALERT category or its source set's own category."""
    value = prompt.category if by == "alert" else source_category(prompt)
    return value or UNCATEGORISED


def stratified_sample(prompts: list[Prompt], sample: Sample) -> list[Prompt]:
    """``sample.per_category`` prompts of each category (all of a smaller one), in the set's order."""
    strata: dict[str, list[Prompt]] = defaultdict(list)
    for prompt in prompts:
        strata[category_of(prompt, sample.by)].append(prompt)
    chosen: set[int] = set()
    for members in strata.values():
        ranked = sorted(members, key=lambda p: stable_hash("sample", sample.seed, p.id, p.text))
        chosen.update(id(p) for p in ranked[: sample.per_category])
    return [p for p in prompts if id(p) in chosen]
