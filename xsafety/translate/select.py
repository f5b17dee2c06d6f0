"""Candidate selection: when a translation fails a gate, try harder, keep the best, record all.

Steps, each only for the items that have no passing candidate yet:

1. ``first``: the engine's single best output;
2. ``n-best``: beam n-best (n=4);
3. ``sample:1``, ``sample:2``: sampling with two seeds;
4. ``fallback``: the fallback engine, if the run or locale configures one.

A candidate whose text was already tried for that item is not tried again, so a deterministic
engine such as Apertium (one output whatever it is asked) adds no attempts at steps 2-3. The
chosen candidate is the passing one with the highest quality; when none passes, the best failing
one (fewest failed gates, then quality) is kept with ``accepted=False`` and the failed gates in
``reason``. Every attempt (engine signature, text, back-translation, gate scores) is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xsafety.records import GateResult
from xsafety.translate.engines.base import Candidate, Engine
from xsafety.translate.gates import GateSettings, failed, run_gates
from xsafety.translate.gates.base import GateInput
from xsafety.translate.gates.langid import HUMAN_REFERENCE
from xsafety.translate.gates.quality import QualityModel

log = logging.getLogger(__name__)

ENGLISH = "en"
N_BEST = 4
SAMPLE_SEEDS = (1, 2)

# (engine, texts, src, tgt, options) -> candidates per text; the stage passes the cached call.
TranslateFn = Callable[..., list[list[Candidate]]]


@dataclass(frozen=True)
class LocaleInfo:
    """What selection and the gates need to know about the target locale."""

    code: str
    script: str = "Latn"
    langdetect: str | None = None
    fasttext: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One candidate tried for one item, gated."""

    step: str
    engine: str
    candidate: Candidate
    back: str | None
    back_engine: str | None
    gates: tuple[GateResult, ...]
    quality: float
    signals: dict[str, float | None] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        """Names of the gates this candidate failed."""
        return failed(self.gates)

    @property
    def passed(self) -> bool:
        """Whether every gate passed."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """The compact, JSON-safe form kept in ``Translation.attempts``."""
        return {
            "step": self.step,
            "engine": self.engine,
            "text": self.candidate.text,
            "unknown_marks": self.candidate.unknown_marks,
            "engine_score": self.candidate.score,
            "flags": {k: v for k, v in self.candidate.meta.items() if k in ("refused", "answered", "reason")},
            "back": self.back,
            "back_engine": self.back_engine,
            "gates": {g.name: g.score for g in self.gates},
            "failed": self.failed,
            "quality": self.quality,
        }


def best(attempts: Sequence[Attempt]) -> Attempt:
    """The passing attempt with the highest quality, else the failing one closest to passing."""
    if not attempts:
        raise ValueError("no attempts to choose from")
    return max(attempts, key=lambda a: (a.passed, -len(a.failed), a.quality, -attempts.index(a)))


def reason(attempt: Attempt) -> str:
    """Why an attempt was rejected: each failed gate with its score and threshold."""
    parts = []
    for g in attempt.gates:
        if g.passed:
            continue
        score = "n/a" if g.score is None else f"{g.score:g}"
        parts.append(f"{g.name} ({score} vs {g.threshold:g})")
    return "failed " + ", ".join(parts) if parts else ""


class Selector:
    """Runs the selection steps over a batch of English texts for one locale."""

    def __init__(
        self,
        engine: Engine,
        locale: LocaleInfo,
        settings: GateSettings,
        model: QualityModel,
        translate: TranslateFn,
        *,
        back_engine: Engine | None = None,
        fallback: Engine | None = None,
    ) -> None:
        self.engine = engine
        self.locale = locale
        self.settings = settings
        self.model = model
        self.translate = translate
        self.back_engine = back_engine
        self.fallback = fallback
        self.back_sig = back_engine.signature(locale.code, ENGLISH) if back_engine else None

    def steps(self) -> list[tuple[str, Engine, dict[str, Any]]]:
        """The selection steps, in order, with the engine and options each uses."""
        steps: list[tuple[str, Engine, dict[str, Any]]] = [
            ("first", self.engine, {}),
            ("n-best", self.engine, {"n_best": N_BEST}),
        ]
        steps += [(f"sample:{s}", self.engine, {"sample": True, "seed": s}) for s in SAMPLE_SEEDS]
        if self.fallback is not None:
            steps.append(("fallback", self.fallback, {}))
        return steps

    def run(self, sources: Sequence[str]) -> list[list[Attempt]]:
        """Every attempt per source text, in the order tried."""
        attempts: list[list[Attempt]] = [[] for _ in sources]
        for step, engine, options in self.steps():
            todo = [i for i, tried in enumerate(attempts) if not any(a.passed for a in tried)]
            if not todo:
                break
            try:
                outputs = self.translate(engine, [sources[i] for i in todo], ENGLISH, self.locale.code, **options)
            except Exception as exc:  # one failed step must not lose the attempts already made
                log.warning("%s step %s failed for %d items: %s", self.locale.code, step, len(todo), exc)
                continue
            sig = engine.signature(ENGLISH, self.locale.code)
            fresh: list[tuple[int, Candidate]] = []
            for i, cands in zip(todo, outputs):
                seen = {a.candidate.text for a in attempts[i]}
                if not cands and not attempts[i]:
                    cands = [Candidate(text="", meta={"reason": "engine returned no candidate"})]
                for cand in cands:
                    if cand.text not in seen:
                        seen.add(cand.text)
                        fresh.append((i, cand))
            backs = self._back([c.text for _, c in fresh])
            for (i, cand), back in zip(fresh, backs):
                attempts[i].append(self._gate(step, sig, sources[i], cand, back))
        return attempts

    def _back(self, texts: list[str]) -> list[str | None]:
        if self.back_engine is None or not texts:
            return [None] * len(texts)
        nonempty = [t for t in texts if t.strip()]
        outs = self.translate(self.back_engine, nonempty, self.locale.code, ENGLISH) if nonempty else []
        by_text = {t: (o[0].text if o else None) for t, o in zip(nonempty, outs)}
        return [by_text.get(t, "") if t.strip() else "" for t in texts]

    def _gate(self, step: str, sig: str, source: str, cand: Candidate, back: str | None) -> Attempt:
        item = GateInput(
            source=source,
            text=cand.text,
            locale=self.locale.code,
            script=self.locale.script,
            back=back,
            langdetect=self.locale.langdetect,
            fasttext=self.locale.fasttext,
            unknown_marks=cand.unknown_marks,
            flags=cand.meta,
        )
        # A human reference is scored by the gates that can tell a bad reference row, not by those
        # that look for machine translation's failures (gates.NOT_FOR_REFERENCES).
        human = bool(cand.meta.get(HUMAN_REFERENCE))
        gates = run_gates(item, self.settings.for_references() if human else self.settings)
        quality, values = self.model.score(item)
        return Attempt(step, sig, cand, back, self.back_sig, gates, quality, values)
