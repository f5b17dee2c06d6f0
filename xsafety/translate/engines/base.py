"""What every translation engine returns and the interface the translation stage codes against.

An engine turns a batch of texts in one locale into candidate translations in another. Locale
codes are the project's (``"en"``, ``"es"``, ``"hbs"``); each engine maps them to its own codes
(Apertium modes, FLORES codes, opus-mt model ids) through ``xsafety.locales``. An engine's
``signature`` names everything that can change its output (model and revision, pair, package
version, decoding settings) and nothing that cannot (batch size, device), so the translation
cache and the stage's keys change exactly when the output could.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Candidate:
    """One candidate translation of one text.

    ``score`` is the model's sequence log-probability when the engine has one; ``unknown_marks``
    counts words the engine could not translate (Apertium's ``*``/``@``/``#`` marks); ``raw`` is
    the engine output before clean-up; ``meta`` holds engine-specific flags (a chat model that
    refused or answered instead of translating says so here).
    """

    text: str
    score: float | None = None
    unknown_marks: int = 0
    raw: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (for caches and a translation's ``attempts``)."""
        return {
            "text": self.text,
            "score": self.score,
            "unknown_marks": self.unknown_marks,
            "raw": self.raw,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Candidate":
        """Inverse of ``to_dict``; unknown keys are ignored."""
        return cls(
            text=str(data.get("text", "")),
            score=data.get("score"),
            unknown_marks=int(data.get("unknown_marks", 0) or 0),
            raw=str(data.get("raw", "")),
            meta=dict(data.get("meta") or {}),
        )


@runtime_checkable
class Engine(Protocol):
    """A translation engine (Apertium, a seq2seq model, a chat model, human references)."""

    name: str

    def signature(self, src: str, tgt: str) -> str:
        """Identity of everything that changes this engine's output for the pair ``src -> tgt``."""
        ...

    def supports(self, src: str, tgt: str) -> bool:
        """Whether this engine, as configured, can translate ``src -> tgt``."""
        ...

    def translate(
        self,
        texts: Sequence[str],
        src: str,
        tgt: str,
        *,
        n_best: int = 1,
        sample: bool = False,
        seed: int = 0,
    ) -> list[list[Candidate]]:
        """Candidates for every text, in input order (an empty list where the engine has none)."""
        ...

    def close(self) -> None:
        """Free models, processes or connections."""
        ...
