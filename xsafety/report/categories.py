"""Category lookups for reports, through ``xsafety.taxonomy`` (ALERT's macro and micro labels)."""

from __future__ import annotations

from xsafety import taxonomy

UNCATEGORISED = "uncategorised"


def known_macros() -> tuple[str, ...]:
    """The ALERT macro category names."""
    return tuple(taxonomy.ALERT_MACROS)


def normalize_micro(label: str) -> str:
    """The published spelling of an ALERT micro label (aliases accepted); KeyError if unknown."""
    return str(taxonomy.normalize_alert(label))


def macro_of(micro: str | None) -> str:
    """ALERT macro of a micro label, or ``uncategorised`` for an empty or unknown label."""
    if not micro:
        return UNCATEGORISED
    try:
        return str(taxonomy.alert_macro_of(micro))
    except (KeyError, ValueError):
        return UNCATEGORISED
