"""The locale registry: which languages xsafety knows, and how each is translated, identified and judged.

The registry is data, not code: ``translations/locales.toml`` ships with the package, and
``home_dir()/locales.toml`` (when present) adds locales or overrides shipped ones, so users extend
xsafety without touching Python. Both files hold one ``[[locale]]`` table per locale.

Every entry is validated when loaded and before ``xsafety locales add`` writes one; errors are
``ConfigError`` naming the file, the line of the offending table (or field) and the field.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from xsafety import data
from xsafety.errors import ConfigError, InputError

log = logging.getLogger(__name__)

ENGLISH = "en"
LOCALES_FILE = "locales.toml"

# Translation engines a locale may name as its default; "none" is English's (nothing to translate).
ENGINES: tuple[str, ...] = ("apertium", "seq2seq", "chat", "reference", "none")
RESOURCES: tuple[str, ...] = ("high", "medium", "low")

# ISO 15924 codes accepted in `script`: every script the registry uses plus neighbours users are
# likely to add. The gates map each of these to Unicode ranges, so an unknown code is refused here.
SCRIPTS: dict[str, str] = {
    "Latn": "Latin",
    "Cyrl": "Cyrillic",
    "Arab": "Arabic",
    "Hans": "Han (Simplified)",
    "Hant": "Han (Traditional)",
    "Jpan": "Japanese (Han + Hiragana + Katakana)",
    "Kore": "Korean (Hangul + Han)",
    "Hang": "Hangul",
    "Deva": "Devanagari",
    "Beng": "Bengali",
    "Guru": "Gurmukhi",
    "Gujr": "Gujarati",
    "Orya": "Oriya",
    "Taml": "Tamil",
    "Telu": "Telugu",
    "Knda": "Kannada",
    "Mlym": "Malayalam",
    "Sinh": "Sinhala",
    "Thai": "Thai",
    "Laoo": "Lao",
    "Khmr": "Khmer",
    "Mymr": "Myanmar",
    "Tibt": "Tibetan",
    "Hebr": "Hebrew",
    "Grek": "Greek",
    "Ethi": "Ethiopic",
    "Geor": "Georgian",
    "Armn": "Armenian",
    "Thaa": "Thaana",
    "Mong": "Mongolian",
}

# language[-Script][-REGION] in canonical case: "sw", "hbs", "zh-Hant", "pt-BR", "es-419".
_BCP47 = re.compile(r"^[a-z]{2,3}(?:-[A-Z][a-z]{3})?(?:-(?:[A-Z]{2}|[0-9]{3}))?$")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_OPUS_TOKEN = re.compile(r"^>>[a-z]{2,3}(?:_[A-Z][a-z]{3})?<<$")
_SIMPLE_CODE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,4})?$")
_APERTIUM_MODE = re.compile(r"^[a-z]{2,3}(?:_[A-Za-z_]+)?-[a-z]{2,3}(?:[-_][A-Za-z0-9_-]+)?$")
_NLLB = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")

_REQUIRED = ("code", "name", "native", "script", "resource")


@dataclass(frozen=True)
class Locale:
    """One language variety: names, script, resource level and its codes in every tool we use."""

    code: str
    name: str
    native: str
    script: str
    resource: str
    engine: str = "seq2seq"
    langdetect: str | None = None
    fasttext: str | None = None
    opus_mt: str | None = None
    opus_mt_token: str | None = None
    opus_mt_back: str | None = None
    nllb: str | None = None
    m2m100: str | None = None
    apertium: str | None = None
    apertium_back: str | None = None
    # Not hashed: a dict cannot be; the code identifies a locale anyway.
    gates: dict[str, float] = field(default_factory=dict, hash=False)
    safety_prompt: str | None = None
    refusal_lexicon: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field, in declaration order (None for absent ones)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def toml_entry(self) -> dict[str, Any]:
        """The fields a ``[[locale]]`` table holds: set ones only, gates only when non-empty."""
        return {k: v for k, v in self.to_dict().items() if v is not None and v != {}}


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Locale)}


@cache
def langdetect_profiles() -> frozenset[str]:
    """Language codes of the profiles shipped with the installed langdetect package."""
    import langdetect

    profiles = Path(langdetect.__file__).resolve().parent / "profiles"
    return frozenset(p.name for p in profiles.iterdir() if p.is_file())


def is_bcp47(code: str) -> bool:
    """True for language[-Script][-REGION] tags in canonical case (``sw``, ``zh-Hant``, ``pt-BR``)."""
    return bool(_BCP47.match(code))


# ----------------------------------------------------------------------------------------------
# Validation


def _locate(text: str, index: int, field_name: str | None) -> int | None:
    """Line of the ``index``-th ``[[locale]]`` table, or of ``field_name`` inside it.

    tomllib reports no positions for valid documents, so we scan the text: table headers in
    order, then the first ``field =`` line within that table.
    """
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if re.match(r"^\s*\[\[\s*locale\s*\]\]", line)]
    if index >= len(headers):
        return None
    start = headers[index]
    end = headers[index + 1] if index + 1 < len(headers) else len(lines)
    if field_name:
        key = re.compile(rf"^\s*{re.escape(field_name)}\s*=")
        for i in range(start, end):
            if key.match(lines[i]):
                return i + 1
    return start + 1


def _locate_named(text: str, code: str, field_name: str | None) -> int | None:
    """Line of a ``[locale.CODE]`` table (the keyed form), or of ``field_name`` inside it."""
    lines = text.splitlines()
    header = re.compile(rf'^\s*\[\s*locale\s*\.\s*"?{re.escape(code)}"?\s*\]')
    for i, line in enumerate(lines):
        if header.match(line):
            if field_name:
                key = re.compile(rf"^\s*{re.escape(field_name)}\s*=")
                for j in range(i + 1, len(lines)):
                    if lines[j].lstrip().startswith("["):
                        break
                    if key.match(lines[j]):
                        return j + 1
            return i + 1
    return None


def _check_str(entry: Mapping[str, Any], name: str, pattern: re.Pattern[str] | None, what: str) -> str | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}|must be a non-empty string, got {value!r}")
    if pattern is not None and not pattern.match(value):
        raise ValueError(f"{name}|{value!r} is not {what}")
    return value


def _build(entry: Mapping[str, Any]) -> Locale:
    """Validate one entry and build its Locale; raises ValueError('field|message')."""
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(_FIELDS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"{unknown[0]}|unknown field{hint}")
    for name in _REQUIRED:
        if entry.get(name) is None:
            raise ValueError(f"{name}|missing (required: {', '.join(_REQUIRED)})")
    code = _check_str(entry, "code", None, "")
    assert code is not None
    if not is_bcp47(code):
        raise ValueError(
            f"code|{code!r} is not a BCP-47 tag of the form language[-Script][-REGION] "
            "(e.g. 'sw', 'hbs', 'zh-Hant', 'pt-BR')"
        )
    for name in ("name", "native", "safety_prompt", "refusal_lexicon"):
        _check_str(entry, name, None, "")
    script = _check_str(entry, "script", None, "")
    if script not in SCRIPTS:
        close = difflib.get_close_matches(str(script), list(SCRIPTS), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"script|{script!r} is not a known ISO 15924 code{hint}")
    resource = entry.get("resource")
    if resource not in RESOURCES:
        raise ValueError(f"resource|{resource!r} is not one of {', '.join(RESOURCES)}")
    engine = entry.get("engine", "seq2seq")
    if engine not in ENGINES:
        raise ValueError(f"engine|{engine!r} is not one of {', '.join(ENGINES)}")
    ld = _check_str(entry, "langdetect", None, "")
    if ld is not None and ld not in langdetect_profiles():
        close = difflib.get_close_matches(ld, sorted(langdetect_profiles()), n=3)
        hint = f"; close: {', '.join(close)}" if close else ""
        raise ValueError(f"langdetect|{ld!r} is not a langdetect profile{hint} (leave it out when there is none)")
    _check_str(entry, "fasttext", _SIMPLE_CODE, "a fastText lid.176 label such as 'sw' or 'sh'")
    _check_str(entry, "m2m100", _SIMPLE_CODE, "an M2M100 language id such as 'sw'")
    _check_str(entry, "nllb", _NLLB, "a FLORES-200 code such as 'swh_Latn'")
    for name in ("opus_mt", "opus_mt_back"):
        _check_str(entry, name, _HUB_ID, "a hub id such as 'Helsinki-NLP/opus-mt-en-de' (or a local path)")
    token = _check_str(entry, "opus_mt_token", _OPUS_TOKEN, "a target token such as '>>swh<<'")
    if token is not None and entry.get("opus_mt") is None:
        raise ValueError("opus_mt_token|needs opus_mt (the multilingual model the token selects a target in)")
    for name in ("apertium", "apertium_back"):
        _check_str(entry, name, _APERTIUM_MODE, "an Apertium mode such as 'eng-spa'")
    if engine == "apertium":
        for name in ("apertium", "apertium_back"):
            if entry.get(name) is None:
                raise ValueError(f"{name}|engine 'apertium' needs both apertium and apertium_back modes")
    gates = entry.get("gates", {})
    if not isinstance(gates, dict):
        raise ValueError(f"gates|must be a table of gate name = number, got {gates!r}")
    for gate, value in gates.items():
        # bool is an int subclass; `true` as a threshold is a typo, not 1.0.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"gates|threshold for gate '{gate}' must be a number, got {value!r}")
    values = {k: v for k, v in entry.items() if k != "gates"}
    values["gates"] = {str(k): float(v) for k, v in gates.items()}
    values.setdefault("engine", engine)
    return Locale(**values)


def validate_entry(entry: Mapping[str, Any], *, file: str | Path | None = None, line: int | None = None) -> Locale:
    """Validate one locale entry (a mapping of field -> value) and return its Locale.

    Raises ConfigError naming ``file``/``line`` and the offending field.
    """
    try:
        return _build(entry)
    except ValueError as exc:
        name, _, message = str(exc).partition("|")
        raise ConfigError(message, file=file, line=line, field=name) from None


def parse_registry(text: str, file: str | Path) -> dict[str, Locale]:
    """Parse and validate the text of a locales TOML file; ``file`` names it in errors."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(f"not valid TOML: {exc}", file=file, line=int(match.group(1)) if match else None) from None
    unknown = sorted(set(doc) - {"locale"})
    if unknown:
        raise ConfigError("unknown top-level key; locales go in [[locale]] tables", file=file, field=unknown[0])
    raw = doc.get("locale", [])
    # Two spellings: [[locale]] tables (what we write) and [locale.CODE] tables (keyed by code).
    if isinstance(raw, dict):
        entries = []
        for key, value in raw.items():
            if not isinstance(value, dict):
                raise ConfigError("must be a table", file=file, line=_locate_named(text, key, None), field=f"locale.{key}")
            if "code" in value and value["code"] != key:
                raise ConfigError(
                    f"code {value['code']!r} differs from the table name {key!r}",
                    file=file,
                    line=_locate_named(text, key, "code"),
                    field="code",
                )
            entries.append(({"code": key, **value}, lambda f, k=key: _locate_named(text, k, f)))
    elif isinstance(raw, list):
        entries = [(e, lambda f, i=i: _locate(text, i, f)) for i, e in enumerate(raw)]
    else:
        raise ConfigError("must be [[locale]] tables", file=file, field="locale")

    locales: dict[str, Locale] = {}
    for entry, where in entries:
        try:
            loc = _build(entry)
        except ValueError as exc:
            name, _, message = str(exc).partition("|")
            raise ConfigError(message, file=file, line=where(name), field=name) from None
        if loc.code in locales:
            raise ConfigError(f"duplicate locale '{loc.code}'", file=file, line=where("code"), field="code")
        locales[loc.code] = loc
    return locales


# ----------------------------------------------------------------------------------------------
# Loading


def packaged_registry_path() -> Path:
    """The registry shipped with xsafety (``translations/locales.toml``)."""
    return data.translations_dir() / LOCALES_FILE


def user_registry_path() -> Path:
    """The user's additions and overrides (``home_dir()/locales.toml``; may not exist)."""
    return data.home_dir() / LOCALES_FILE


@lru_cache(maxsize=16)
def _parse_cached(path: str, mtime_ns: int, size: int) -> dict[str, Locale]:
    # Keyed by mtime and size so that `locales add` (or a hand edit) is seen without a restart.
    return parse_registry(Path(path).read_text(encoding="utf-8"), path)


def _load_file(path: Path) -> dict[str, Locale]:
    stat = path.stat()
    return dict(_parse_cached(str(path), stat.st_mtime_ns, stat.st_size))


def load_locales(path: str | Path | None = None) -> dict[str, Locale]:
    """The registry as code -> Locale, in file order.

    With no ``path``: the packaged registry, then the user's ``home_dir()/locales.toml`` on top
    (its entries add locales or replace packaged ones). With ``path``: that file alone.
    Parsed files are cached until they change on disk.
    """
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise InputError("locale registry not found", file=path)
        return _load_file(path)
    packaged = packaged_registry_path()
    if not packaged.exists():
        raise ConfigError("the packaged locale registry is missing", file=packaged)
    locales = _load_file(packaged)
    user = user_registry_path()
    if user.exists():
        for code, loc in _load_file(user).items():
            if code in locales:
                log.debug("user locale %s in %s overrides the packaged entry", code, user)
            locales[code] = loc
    return locales


def suggest_codes(code: str, locales: Mapping[str, Locale], n: int = 3) -> list[str]:
    """Registered codes close to ``code``: by code spelling, then by English or native name."""
    codes = list(locales)
    hits = difflib.get_close_matches(code, codes, n=n, cutoff=0.5)
    names = {loc.name.lower(): c for c, loc in locales.items()}
    names.update({loc.native.lower(): c for c, loc in locales.items()})
    for name in difflib.get_close_matches(code.lower(), list(names), n=n, cutoff=0.6):
        if names[name] not in hits:
            hits.append(names[name])
    return hits[:n]


def get_locale(code: str) -> Locale:
    """The registered locale ``code`` (case-insensitive); InputError with close matches otherwise."""
    locales = load_locales()
    if code in locales:
        return locales[code]
    folded = {c.lower(): loc for c, loc in locales.items()}
    if code.lower() in folded:
        return folded[code.lower()]
    close = suggest_codes(code, locales)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise InputError(f"unknown locale '{code}'{hint} (see `xsafety locales list`; add one with `xsafety locales add`)")


# ----------------------------------------------------------------------------------------------
# Adding


def default_add_target() -> Path:
    """Where ``locales add`` writes: the user's own registry (``XSAFETY_HOME/locales.toml``).

    Never the packaged registry, in a checkout or not: an installed package may not be writable
    and a checkout's file is shared code; a user's locale joins the registry from their own file.
    """
    return user_registry_path()


def locale_candidates(locale: str) -> list[str]:
    """File stems tried for a locale: ``pt-BR`` -> ``pt-BR``, ``pt``; ``sr``/``hr``/``bs`` -> ``hbs``; ``no`` -> ``nb``."""
    out = [locale]
    base = locale.split("-", 1)[0].split("_", 1)[0]
    if base != locale:
        out.append(base)
    if base in ("sr", "hr", "bs", "sh", "cnr"):
        out.append("hbs")
    if base == "no":  # Norwegian: the Bokmål list
        out.append("nb")
    return out


def refusal_list_for(code: str) -> Path | None:
    """The refusal phrase list the lexicon judge would use for a locale (``judges/refusal/<stem>.txt``,
    trying the lexicon's own fallbacks such as ``pt-BR`` -> ``pt``), or None when there is none."""
    folder = data.judges_dir() / "refusal"
    for stem in locale_candidates(code):
        path = folder / f"{stem}.txt"
        if path.is_file():
            return path
    return None


def _toml_value(value: Any) -> str:
    if isinstance(value, str):
        # JSON string escapes are TOML basic-string escapes; DEL is the one TOML also forbids raw.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def render_entry(locale: Locale) -> str:
    """The ``[[locale]]`` table text for ``locale``, fields in registry order."""
    lines = ["[[locale]]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in locale.toml_entry().items()]
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_locale(entry: Mapping[str, Any], file: str | Path | None = None) -> tuple[Locale, Path]:
    """Validate ``entry`` and append it as a ``[[locale]]`` table; return the Locale and the file.

    The entry and the whole resulting file are validated before anything is written, a code
    already registered (in the target file or in the merged registry) is refused, the existing
    text is kept byte for byte, and the file is replaced atomically.
    """
    target = Path(file) if file is not None else default_add_target()
    locale = validate_entry({k: v for k, v in entry.items() if v is not None}, file="<new entry>")
    existing = target.read_text(encoding="utf-8") if target.exists() else ""
    current = parse_registry(existing, target) if existing else {}
    merged = current if file is not None else {**load_locales(), **current}
    if locale.code in merged:
        raise ConfigError(f"locale '{locale.code}' already exists; edit it in {target} instead", file=target, field="code")
    separator = "" if not existing or existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
    text = existing + separator + render_entry(locale)
    parse_registry(text, target)  # the whole result must load before we replace the file
    _atomic_write(target, text)
    log.info("added locale %s to %s", locale.code, target)
    return locale, target
