"""Category lookups for reports, through ``xsafety.taxonomy`` when it is importable.

Reports must still work on a run whose prompts carry ALERT labels but where the taxonomy module is
unavailable (an older checkout, a partial install): then the macro of a micro label is taken from
its published prefix (``crime_kidnapp`` -> ``crime``, ``self_harm_thin`` -> ``self_harm``).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# The six ALERT macro names are the prefixes of every published micro label; they are used only
# when ``xsafety.taxonomy`` cannot be imported.
_FALLBACK_MACROS = ("hate", "crime", "substance", "sex", "self_harm", "weapon")
UNCATEGORISED = "uncategorised"


def _taxonomy():  # type: ignore[no-untyped-def]
    try:
        from xsafety import taxonomy
    except ImportError:
        return None
    return taxonomy


def known_macros() -> tuple[str, ...]:
    """The ALERT macro category names."""
    tax = _taxonomy()
    if tax is not None and hasattr(tax, "ALERT_MACROS"):
        return tuple(tax.ALERT_MACROS)
    return _FALLBACK_MACROS


def normalize_micro(label: str) -> str:
    """The published spelling of an ALERT micro label (aliases accepted); KeyError if unknown."""
    tax = _taxonomy()
    if tax is not None and hasattr(tax, "normalize_alert"):
        return str(tax.normalize_alert(label))
    if any(label.startswith(m + "_") for m in _FALLBACK_MACROS):
        return label
    raise KeyError(label)


def macro_of(micro: str | None) -> str:
    """ALERT macro of a micro label, or ``uncategorised`` for an empty or unknown label."""
    if not micro:
        return UNCATEGORISED
    tax = _taxonomy()
    if tax is not None and hasattr(tax, "alert_macro_of"):
        try:
            return str(tax.alert_macro_of(micro))
        except (KeyError, ValueError):
            return UNCATEGORISED
    for macro in sorted(_FALLBACK_MACROS, key=len, reverse=True):
        if micro.startswith(macro + "_"):
            return macro
    return UNCATEGORISED
