"""The one place that finds xsafety's versioned data folders and its user folders.

The data folders (``taxonomy/``, ``translations/``, ``judges/``) sit at the top of a source
checkout and are mapped into the wheel as ``xsafety/_data/<name>``. ``XSAFETY_DATA`` overrides
both (a folder holding the three).

User state lives outside the package: ``XSAFETY_HOME`` (default ``~/.xsafety``) holds imported
instruction sets and translations a user makes when the package folder is not writable;
``XSAFETY_CACHE`` (default ``~/.cache/xsafety``) holds caches that are safe to delete
(translations by text and engine, converted model weights).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
DATA_FOLDERS = ("taxonomy", "translations", "judges")


@cache
def data_root() -> Path:
    """Return the folder that holds ``taxonomy/``, ``translations/`` and ``judges/``."""
    override = os.environ.get("XSAFETY_DATA")
    if override:
        return Path(override).resolve()
    installed = _PACKAGE_DIR / "_data"
    if (installed / "taxonomy").is_dir():
        return installed
    return _PACKAGE_DIR.parent


def taxonomy_dir() -> Path:
    """Categories, the built-in instruction set, attacks and policies."""
    return data_root() / "taxonomy"


def translations_dir() -> Path:
    """Committed translations (``<set>/<locale>.jsonl``) and ``locales.toml``."""
    return data_root() / "translations"


def judges_dir() -> Path:
    """Judge definitions, templates and refusal lexicons."""
    return data_root() / "judges"


def is_source_checkout() -> bool:
    """True when running from a repository checkout (data folders are editable there)."""
    return data_root() == _PACKAGE_DIR.parent and (data_root() / "pyproject.toml").exists()


def home_dir() -> Path:
    """User state: imported sets and user-made translations."""
    return Path(os.environ.get("XSAFETY_HOME", Path.home() / ".xsafety")).expanduser()


def cache_dir() -> Path:
    """Deletable caches: translation cache, converted model weights."""
    return Path(os.environ.get("XSAFETY_CACHE", Path.home() / ".cache" / "xsafety")).expanduser()


def sets_dir() -> Path:
    """Where ``xsafety import`` writes instruction sets (``<name>/prompts.jsonl``)."""
    return home_dir() / "sets"


def translation_dirs() -> list[Path]:
    """Folders searched for ``<set>/<locale>.jsonl``, user folder first."""
    dirs = [home_dir() / "translations", translations_dir()]
    return [d for i, d in enumerate(dirs) if d not in dirs[:i]]


def writable_translations_dir() -> Path:
    """Where new translations go: the repository's folder in a checkout, else the user's."""
    if is_source_checkout():
        return translations_dir()
    return home_dir() / "translations"
