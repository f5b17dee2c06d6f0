"""Translation of instruction sets into locales, with quality gates (public API).

* ``translate_set(prompts, locales, ...)`` runs the stage: forward translation through the cache,
  back-translation, gates, candidate selection, and writes ``<out>/<set>/<locale>.jsonl``.
* ``load_translations(set_name, locale)`` reads committed or user translations by prompt id.
* ``available_locales(set_name)`` lists the locales that have a translation file.
* ``back_translate(texts, locale)`` translates texts (e.g. model responses) to English.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from xsafety.records import Translation
from xsafety.translate.back import back_translate, close_engines, pick_back_engine
from xsafety.translate.files import find_file, locales_with_files, read_file

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["translate_set", "load_translations", "available_locales", "back_translate", "close_engines",
           "pick_back_engine"]


def translate_set(
    prompts: Sequence[Any],
    locales: Sequence[str],
    *,
    engine: str | None = None,
    out_dir: Any = None,
    progress: "Progress | None" = None,
    **options: Any,
) -> dict[str, list[Translation]]:
    """Translate ``prompts`` into every locale; see ``xsafety.translate.stage.translate_set``."""
    from xsafety.translate.stage import translate_set as run

    return run(prompts, locales, engine=engine, out_dir=out_dir, progress=progress, **options)


def load_translations(set_name: str, locale: str) -> dict[str, Translation]:
    """Translations of ``set_name`` into ``locale`` by prompt id, accepted and rejected alike.

    Searches ``translation_dirs()`` (the user's folder first); empty when there is no file.
    """
    path = find_file(set_name, locale)
    return read_file(path) if path is not None else {}


def available_locales(set_name: str) -> list[str]:
    """Locales with a committed or user translation file for ``set_name``, sorted."""
    return locales_with_files(set_name)
