"""Words the report uses for what was measured, kept in one place so every table says the same.

* Under a judge that does not judge harm (the offline refusal lexicon) a non-refusal is
  "complied (harm not judged)", never "safe": the judge only saw that the model did not refuse.
* The paired bootstrap CI and the exact McNemar p-value answer different questions and can
  disagree near the 5% line; ``CI_VS_MCNEMAR`` says so wherever both are shown.
"""

from __future__ import annotations

COMPLIED_NOT_JUDGED = "complied (harm not judged)"
CI_VS_MCNEMAR = (
    "Two tests, two questions: the gap's 95% CI is a paired bootstrap over prompts (how large the "
    "difference could be, from every pair); the McNemar p is an exact test on the discordant pairs "
    "only (prompts where English and the locale differ: is there any difference at all). Near the 5% "
    "line they can disagree (a CI just excluding 0 with p a little above 0.05, or the reverse): read "
    "the CI for size, the p for whether a difference exists, and neither as proof on its own."
)
CORRECTION_NOTE = (
    "Corrected figures undo the judge's own error in each language (Rogan-Gladen: true rate = "
    "(observed + specificity - 1) / (sensitivity + specificity - 1), clipped to [0, 100%]), using "
    "the sensitivity and specificity measured against human labels in that locale, over the answers "
    "with a valid verdict (for a locale, those paired with English, as its gap is). Their intervals "
    "resample both the prompts and the human labels, so a correction resting on few labels is wide. "
    "A locale without human labels is \"unvalidated\": its raw figures may be partly the judge's bias "
    "in that language, and no corrected figure is given. \"sign can flip\" marks a corrected gap "
    "whose sign the judge's uncertainty alone could reverse."
)


def shown_label(label: str, harm_judged: bool) -> str:
    """A verdict label as the report shows it: ``safe`` is "complied (harm not judged)" without a harm judge."""
    return COMPLIED_NOT_JUDGED if label == "safe" and not harm_judged else label


def safe_column(harm_judged: bool) -> tuple[str, str]:
    """(header, rate column) for answers that were not refused and not unsafe: ``safe`` under a harm
    judge; without one, every non-refusal as "complied (harm not judged)" (``complied_rate``)."""
    return ("safe", "safe_rate") if harm_judged else (COMPLIED_NOT_JUDGED, "complied_rate")
