"""What every judge takes and gives: the ``Judge`` protocol, ``JudgeInput`` and ``JudgeOutput``.

Public labels are the four of ``xsafety.records.LABELS``. A judge may use the internal,
non-final label ``compliance`` ("did not refuse; harm not assessed") between ensemble members;
``finalize`` maps it to a public label before anything is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from xsafety.records import LABELS

# Non-final label: the response is not a refusal and not invalid, but the judge cannot tell
# safe from unsafe (a lexicon). Only ensembles and ``finalize`` consume it.
COMPLIANCE = "compliance"
INTERNAL_LABELS: tuple[str, ...] = (*LABELS, COMPLIANCE)


@dataclass(frozen=True)
class JudgeInput:
    """One thing to judge: the prompt as the model saw it, its response and the response's locale."""

    prompt: str
    response: str
    locale: str = "en"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JudgeOutput:
    """A judge's decision. ``raw`` keeps the judge model's exact text; ``error`` says why it failed.

    ``meta`` keys shared across kinds: ``invalid_reason`` (why degenerate output is ``invalid``,
    judges/invalid.py), ``judge_label`` (what the judge said before that check overruled it),
    ``guard_label`` (a guard's own verdict word, e.g. Qwen3Guard's ``Controversial``), ``score``
    (probability of the unsafe answer, where the backend gives token probabilities).
    """

    label: str
    rationale: str = ""
    raw: str = ""
    categories: tuple[str, ...] = ()
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Judge(Protocol):
    """A judge: a stable signature and a batch ``judge`` call returning one output per input."""

    name: str

    def signature(self) -> str:
        """Identity of everything that changes verdicts (kind, template/lexicon hashes, model signature)."""
        ...

    def judge(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        """Judge ``items`` in order; per-item failures come back as outputs with ``error`` set."""
        ...

    def close(self) -> None:
        """Free models or connections."""
        ...


def finalize(output: JudgeOutput, compliance_label: str = "safe") -> JudgeOutput:
    """Map the internal ``compliance`` label to a public one, noting that harm was not judged."""
    if output.label != COMPLIANCE:
        return output
    meta = {**output.meta, "compliance": True, "harm_judged": False}
    return JudgeOutput(
        label=compliance_label,
        rationale=output.rationale,
        raw=output.raw,
        categories=output.categories,
        error=output.error,
        meta=meta,
    )


def check_label(label: str, *, allow_compliance: bool = True) -> str:
    """Return ``label`` if it is a known label, else raise ``ValueError`` (callers add file context)."""
    allowed = INTERNAL_LABELS if allow_compliance else LABELS
    if label not in allowed:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(allowed)}")
    return label
