"""Translation quality gates: the ONE table of gates, threshold resolution, and running them.

Every gate is a pure function ``(GateInput, threshold) -> GateResult`` in a module of its own.
Thresholds come from the table's defaults, overridden per locale (``Locale.gates`` in
``translations/locales.toml``) and then per run. A translation is accepted when every gate
passes; the combined ``quality`` score (``xsafety.translate.gates.quality``) ranks candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from xsafety.errors import InputError
from xsafety.records import GateResult, signature
from xsafety.translate.gates.base import Gate, GateInput, bleu_signature, chrf_signature
from xsafety.translate.gates.copy import check_copy
from xsafety.translate.gates.langid import check_langid
from xsafety.translate.gates.length import check_length_ratio
from xsafety.translate.gates.refusal import check_refusal
from xsafety.translate.gates.repetition import check_repetition
from xsafety.translate.gates.roundtrip import check_roundtrip_bleu, check_roundtrip_chrf
from xsafety.translate.gates.scripts import check_script
from xsafety.translate.gates.unknown import check_unknown_words

__all__ = [
    "GATES",
    "Gate",
    "GateInput",
    "GateSettings",
    "NOT_FOR_REFERENCES",
    "PARAMETERS",
    "run_gates",
    "failed",
    "chrf_signature",
    "bleu_signature",
]

# The one table of gates. Thresholds were set on Apertium output of the XSafety English prompts
# (see translations/QUALITY.md): loose enough that a usable translation passes, tight enough that
# a copy, a refusal, a loop or the wrong language does not.
GATES: dict[str, Gate] = {
    g.name: g
    for g in (
        Gate("roundtrip_chrf", check_roundtrip_chrf, 25.0, True, "chrF(back-translation, source) >= t"),
        Gate("roundtrip_bleu", check_roundtrip_bleu, 0.0, True, "sentence BLEU(back-translation, source) >= t (informational at 0)"),
        Gate("langid", check_langid, 0.5, True, "P(target language) >= t by langdetect or fastText lid.176"),
        Gate("script", check_script, 0.6, True, "share of letters in the locale's script >= t"),
        Gate(
            "length_ratio", check_length_ratio, 1.0, True, "length ratio inside the script's range widened by factor t",
            params=("length_ratio_min", "length_ratio_max"),
        ),
        Gate("copy", check_copy, 0.6, False, "untranslated copy of the source <= t"),
        Gate("unknown_words", check_unknown_words, 0.15, False, "engine-marked unknown words per word <= t"),
        Gate("refusal", check_refusal, 0.5, False, "translator refused or answered (0/1) < t"),
        Gate("repetition", check_repetition, 0.5, False, "degenerate repetition share <= t"),
    )
}


# Gates a human reference translation is not put through: name -> why (recorded with the
# translation). They look for the failures of machine translation, and they were most of the cost
# of gating references: at 25,200 XSafety references, copy took 4.5, repetition 3.9, unknown words
# 0.5 and refusal 0.3 of the gates' 13.4 CPU seconds, and of the stored references they failed one
# (copy, on an empty row that langid, script and length fail too). A reference is still scored by
# the others: language, script, length, and the round trip (which shows a reference row shared by
# two different English prompts).
NOT_FOR_REFERENCES: dict[str, str] = {
    "copy": "an untranslated (English) reference row fails the langid gate; chrF against the source costs most",
    "unknown_words": "counts the words an engine marked as unknown; a human translation has no marks",
    "refusal": "looks for a chat translator that refused or answered instead of translating",
    "repetition": "looks for decoding loops of neural engines, which a human translator does not make",
}


# Extra numeric parameters a locale or run may set beside thresholds: name -> the gate that takes it.
PARAMETERS: dict[str, str] = {p: g.name for g in GATES.values() for p in g.params}


class GateSettings:
    """Which gates run and at which thresholds, for one locale in one run."""

    def __init__(self, thresholds: Mapping[str, float], enabled: Iterable[str]) -> None:
        self.thresholds = dict(thresholds)  # gate thresholds and gate parameters, by name
        self.enabled = tuple(enabled)
        self._signature: str | None = None
        self._for_references: GateSettings | None = None

    @classmethod
    def resolve(
        cls,
        locale_overrides: Mapping[str, float] | None = None,
        run_overrides: Mapping[str, float] | None = None,
        disabled: Iterable[str] = (),
        *,
        source: str = "run options",
    ) -> "GateSettings":
        """Defaults, then the locale's overrides, then the run's; unknown names are errors.

        Overrides name a gate (its threshold) or a gate parameter (``PARAMETERS``).
        """
        thresholds = {name: g.threshold for name, g in GATES.items()}
        for where, overrides in (("locale gates", locale_overrides), (source, run_overrides)):
            for name, value in (overrides or {}).items():
                if name not in GATES and name not in PARAMETERS:
                    known = ", ".join([*GATES, *PARAMETERS])
                    raise InputError(f"unknown gate {name!r} in {where}; known: {known}", field=name)
                try:
                    thresholds[name] = float(value)
                except (TypeError, ValueError):
                    raise InputError(f"gate threshold must be a number, not {value!r}", field=name) from None
        off = set(disabled)
        for name in off:
            if name not in GATES:
                raise InputError(f"unknown gate {name!r}; known gates: {', '.join(GATES)}", field="gates")
        return cls(thresholds, [n for n in GATES if n not in off])

    def for_references(self) -> "GateSettings":
        """The same thresholds with the gates in ``NOT_FOR_REFERENCES`` left out (made once)."""
        if self._for_references is None:
            kept = [n for n in self.enabled if n not in NOT_FOR_REFERENCES]
            self._for_references = GateSettings(self.thresholds, kept)
        return self._for_references

    def signature(self) -> str:
        """Identity of the settings (part of a translation's key: new thresholds re-gate).

        Recorded in every translation's meta: worked out once per settings object (thresholds and
        enabled gates are not changed after construction)."""
        if self._signature is None:
            self._signature = self._compute_signature()
        return self._signature

    def _compute_signature(self) -> str:
        return signature(
            "gates",
            enabled=list(self.enabled),
            thresholds={n: v for n, v in self.thresholds.items() if n in self.enabled or PARAMETERS.get(n) in self.enabled},
            chrf=chrf_signature(),
        )


def run_gates(item: GateInput, settings: GateSettings | None = None) -> tuple[GateResult, ...]:
    """Every enabled gate's result for ``item``, in table order."""
    settings = settings or GateSettings.resolve()
    out = []
    for name in settings.enabled:
        gate = GATES[name]
        params = {p: settings.thresholds[p] for p in gate.params if p in settings.thresholds}
        out.append(gate.check(item, settings.thresholds[name], **params))
    return tuple(out)


def failed(results: Iterable[GateResult]) -> list[str]:
    """Names of the gates that did not pass."""
    return [r.name for r in results if not r.passed]
