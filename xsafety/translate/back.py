"""Back-translation into English (of model responses, and of translations for the gates).

Engines are built once per process and kept until ``close_engines``: a seq2seq model or an
Apertium pipe is costly to start. Without a named engine, the locale's default engine is tried,
then ``BACK_ENGINE_ORDER``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xsafety.translate.engines.base import Engine

log = logging.getLogger(__name__)

ENGLISH = "en"
# Engines tried, in order, to back-translate when the caller names none (after the locale's own
# default engine). "reference" cannot translate new text and "chat" needs a model, so neither is
# tried unasked.
BACK_ENGINE_ORDER: tuple[str, ...] = ("apertium", "seq2seq")

_ENGINES: dict[str, "Engine"] = {}


def _engine(name: str, **options: Any) -> "Engine":
    """Engines are built once per process: a seq2seq model or an Apertium pipe is costly to start."""
    if name not in _ENGINES:
        from xsafety.translate.engines import make_engine

        _ENGINES[name] = make_engine(name, **options)
    return _ENGINES[name]


def close_engines() -> None:
    """Close the engines ``back_translate`` built (their processes and models)."""
    while _ENGINES:
        _, engine = _ENGINES.popitem()
        engine.close()


def pick_back_engine(locale: str, engine: str | None = None) -> "Engine | None":
    """The engine that translates ``locale`` to English: ``engine`` if named, else the first that can."""
    if engine is not None:
        candidates = [engine]
    else:
        from xsafety.locales import get_locale

        default = get_locale(locale).engine
        candidates = [n for n in (default, *BACK_ENGINE_ORDER) if n not in ("reference", "chat")]
        candidates = list(dict.fromkeys(candidates))
    for name in candidates:
        try:
            built = _engine(name)
        except Exception as exc:  # an engine that cannot start here (no apertium, no model)
            log.info("back-translation engine %s unavailable: %s", name, exc)
            if engine is not None:
                raise
            continue
        if built.supports(locale, ENGLISH):
            return built
    return None


def back_translate(texts: Sequence[str], locale: str, engine: str | None = None, *,
                   quiet: bool = False) -> list[str | None]:
    """Translate ``texts`` from ``locale`` to English, through the translation cache.

    Returns one English text per input, or ``None`` for every text when no engine can translate
    ``locale`` to English (and for a text the engine returned no candidate for); that is a warning
    unless ``quiet`` (a locale the caller's config no longer asks for).
    """
    if not texts:
        return []
    if locale == ENGLISH:
        return list(texts)
    chosen = pick_back_engine(locale, engine)
    if chosen is None:
        log.log(logging.DEBUG if quiet else logging.WARNING,
                "no engine translates %s to English; back-translations are empty", locale)
        return [None] * len(texts)
    from xsafety.translate.cache import TranslationCache

    candidates = TranslationCache().translate(chosen, list(texts), locale, ENGLISH)
    return [c[0].text if c else None for c in candidates]
