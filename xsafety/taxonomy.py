"""Category schemes (ALERT, XSafety, MultiJail, CatQA, HarmfulQA), their mappings, and instruction sets.

The schemes are data in ``taxonomy/categories.toml``; this module loads and validates that file
once at import and exposes it as plain constants plus lookup helpers. ALERT micro labels are the
pivot every ``Prompt.category`` uses, in the data's published spellings (``crime_kidnapp``,
``sex_harrasment``); :func:`normalize_alert` turns the spellings people type into those.

Instruction sets are JSONL files of :class:`~xsafety.records.Prompt` records: the built-in set in
``taxonomy/builtin.jsonl`` and imported sets in ``sets_dir()/<name>/prompts.jsonl`` (human
reference translations beside them in ``references/<locale>.jsonl``). Parsed sets are cached by
path, mtime and size because stages call :func:`load_set` often.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import tomllib
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xsafety.data import sets_dir, taxonomy_dir
from xsafety.errors import ConfigError, InputError
from xsafety.records import Prompt, Translation

log = logging.getLogger(__name__)

BUILTIN = "builtin"
CATEGORIES_FILE = "categories.toml"
BUILTIN_FILE = "builtin.jsonl"
PROMPTS_FILE = "prompts.jsonl"
REFERENCES_DIR = "references"


def _fold(label: str) -> str:
    """Fold case, spaces and hyphens so that ``Crime Kidnap`` and ``crime-kidnap`` meet."""
    return re.sub(r"[\s\-]+", "_", label.strip().lower())


@dataclass(frozen=True)
class _Schemes:
    """Everything parsed from categories.toml, validated."""

    alert_macros: dict[str, tuple[str, ...]]
    alert_macro_names: dict[str, str]
    alert_lookup: dict[str, str]  # folded spelling or alias -> published micro label
    alert_attacks: tuple[str, ...]
    xsafety_groups: dict[str, tuple[str, ...]]
    xsafety_lookup: dict[str, str]  # folded type name or file stem -> published type
    xsafety_to_alert: dict[str, tuple[str, ...]]
    multijail_to_alert: dict[str, str]
    catqa: dict[str, tuple[str, ...]]
    catqa_to_alert: dict[str, str]
    catqa_sub_to_alert: dict[tuple[str, str], str]
    harmfulqa_topics: dict[str, tuple[str, ...]]


def _load_schemes(path: Path) -> _Schemes:
    """Parse and cross-check categories.toml; any inconsistency is a ConfigError naming the field."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read category schemes: {exc}", file=path) from exc

    def need(table: dict[str, Any], key: str, where: str) -> Any:
        if key not in table:
            raise ConfigError("missing", file=path, field=f"{where}.{key}" if where else key)
        return table[key]

    alert = need(raw, "alert", "")
    macros: dict[str, tuple[str, ...]] = {}
    names: dict[str, str] = {}
    lookup: dict[str, str] = {}
    for macro, body in need(alert, "macro", "alert").items():
        micro = tuple(need(body, "micro", f"alert.macro.{macro}"))
        macros[macro] = micro
        names[macro] = str(need(body, "name", f"alert.macro.{macro}"))
        for label in micro:
            lookup[_fold(label)] = label
    for alias, target in alert.get("aliases", {}).items():
        if target not in lookup.values():
            raise ConfigError(f"alias target {target!r} is not an ALERT micro label", file=path, field=f"alert.aliases.{alias}")
        lookup[_fold(alias)] = target
    micros = set(lookup.values())

    def check_alert(value: str, field: str) -> str:
        if value and value not in micros:
            raise ConfigError(f"{value!r} is not an ALERT micro label", file=path, field=field)
        return value

    xs = need(raw, "xsafety", "")
    groups = {g: tuple(types) for g, types in need(xs, "groups", "xsafety").items()}
    xs_lookup: dict[str, str] = {}
    for types in groups.values():
        for t in types:
            xs_lookup[_fold(t)] = t
    for t, stems in xs.get("file_stems", {}).items():
        for stem in stems:
            xs_lookup[_fold(stem)] = t
    xs_alert: dict[str, tuple[str, ...]] = {}
    for t, labels in need(xs, "to_alert", "xsafety").items():
        if _fold(t) not in xs_lookup:
            raise ConfigError(f"unknown XSafety type {t!r}", file=path, field=f"xsafety.to_alert.{t}")
        xs_alert[t] = tuple(check_alert(label, f"xsafety.to_alert.{t}") for label in labels)

    mj = {tag: check_alert(label, f"multijail.to_alert.{tag}") for tag, label in need(raw, "multijail", "")["to_alert"].items()}

    catqa: dict[str, tuple[str, ...]] = {}
    catqa_alert: dict[str, str] = {}
    catqa_sub: dict[tuple[str, str], str] = {}
    for cat, body in need(raw, "catqa", "").items():
        subs = tuple(need(body, "subcategories", f"catqa.{cat}"))
        catqa[cat] = subs
        catqa_alert[cat] = check_alert(str(body.get("to_alert", "")), f"catqa.{cat}.to_alert")
        for sub, label in body.get("sub_to_alert", {}).items():
            if sub not in subs:
                raise ConfigError(f"{sub!r} is not a subcategory of {cat!r}", file=path, field=f"catqa.{cat}.sub_to_alert")
            catqa_sub[(cat, sub)] = check_alert(label, f"catqa.{cat}.sub_to_alert.{sub}")

    hq = {topic: tuple(subs) for topic, subs in need(need(raw, "harmfulqa", ""), "topics", "harmfulqa").items()}
    return _Schemes(
        alert_macros=macros,
        alert_macro_names=names,
        alert_lookup=lookup,
        alert_attacks=tuple(alert.get("attacks", ())),
        xsafety_groups=groups,
        xsafety_lookup=xs_lookup,
        xsafety_to_alert=xs_alert,
        multijail_to_alert=mj,
        catqa=catqa,
        catqa_to_alert=catqa_alert,
        catqa_sub_to_alert=catqa_sub,
        harmfulqa_topics=hq,
    )


_S = _load_schemes(taxonomy_dir() / CATEGORIES_FILE)

#: ALERT macro category -> its micro labels, published spellings, in the published order.
ALERT_MACROS: dict[str, tuple[str, ...]] = _S.alert_macros
#: ALERT macro category -> display name ("crime" -> "Criminal Planning").
ALERT_MACRO_NAMES: dict[str, str] = _S.alert_macro_names
#: All 32 ALERT micro labels, in the published order.
ALERT_MICROS: tuple[str, ...] = tuple(m for micros in ALERT_MACROS.values() for m in micros)
#: ALERT's adversarial augmentation types.
ALERT_ATTACKS: tuple[str, ...] = _S.alert_attacks
#: XSafety group -> its issue types.
XSAFETY_GROUPS: dict[str, tuple[str, ...]] = _S.xsafety_groups
#: XSafety's 14 issue types, in the published order.
XSAFETY_TYPES: tuple[str, ...] = tuple(t for types in XSAFETY_GROUPS.values() for t in types)
#: MultiJail's 18 tags.
MULTIJAIL_TAGS: tuple[str, ...] = tuple(_S.multijail_to_alert)
#: CatQA category -> its 5 subcategories.
CATQA_CATEGORIES: dict[str, tuple[str, ...]] = _S.catqa
#: HarmfulQA topic -> subtopics.
HARMFULQA_TOPICS: dict[str, tuple[str, ...]] = _S.harmfulqa_topics

_MACRO_OF: dict[str, str] = {micro: macro for macro, micros in ALERT_MACROS.items() for micro in micros}
_MULTIJAIL_FOLDED: dict[str, str] = {_fold(tag): tag for tag in MULTIJAIL_TAGS}


def normalize_alert(label: str) -> str:
    """Return the published ALERT micro spelling of ``label`` (an alias, any case); KeyError if unknown.

    >>> normalize_alert("Crime-Kidnap")
    'crime_kidnapp'
    """
    try:
        return _S.alert_lookup[_fold(label)]
    except KeyError:
        raise KeyError(_unknown("ALERT category", label, ALERT_MICROS)) from None


def is_alert_label(label: str) -> bool:
    """True when ``label`` is an ALERT micro label or one of its accepted aliases."""
    return _fold(label) in _S.alert_lookup


def alert_macro_of(micro: str) -> str:
    """The macro category (``crime``) of an ALERT micro label or alias (``crime_kidnap``)."""
    return _MACRO_OF[normalize_alert(micro)]


def alert_macro_name(macro: str) -> str:
    """Display name of an ALERT macro category (``self_harm`` -> ``Suicide & Self-Harm``)."""
    return ALERT_MACRO_NAMES[macro]


def normalize_xsafety_type(name: str) -> str:
    """Published XSafety issue type for a name or the original repository's file stem; KeyError if unknown."""
    stem = re.sub(r"_(en|n)$", "", _fold(name))
    for candidate in (_fold(name), stem):
        if candidate in _S.xsafety_lookup:
            return _S.xsafety_lookup[candidate]
    raise KeyError(_unknown("XSafety issue type", name, XSAFETY_TYPES))


def xsafety_group_of(xsafety_type: str) -> str:
    """The group (``instruction_attacks`` ...) an XSafety issue type belongs to."""
    t = normalize_xsafety_type(xsafety_type)
    return next(g for g, types in XSAFETY_GROUPS.items() if t in types)


def alert_of_xsafety(xsafety_type: str) -> tuple[str, ...]:
    """ALERT micro labels an XSafety issue type covers, main one first; empty for attack types."""
    return _S.xsafety_to_alert.get(normalize_xsafety_type(xsafety_type), ())


def alert_of_multijail(tag: str) -> str:
    """The ALERT micro label for a MultiJail tag (case and spacing folded); KeyError if unknown."""
    try:
        return _S.multijail_to_alert[_MULTIJAIL_FOLDED[_fold(tag)]]
    except KeyError:
        raise KeyError(_unknown("MultiJail tag", tag, MULTIJAIL_TAGS)) from None


def normalize_multijail_tag(tag: str) -> str:
    """The published spelling of a MultiJail tag; KeyError if unknown."""
    try:
        return _MULTIJAIL_FOLDED[_fold(tag)]
    except KeyError:
        raise KeyError(_unknown("MultiJail tag", tag, MULTIJAIL_TAGS)) from None


def alert_of_catqa(category: str, subcategory: str | None = None) -> str:
    """ALERT micro label for a CatQA category (refined by subcategory); ``""`` when none fits."""
    if category not in CATQA_CATEGORIES:
        raise KeyError(_unknown("CatQA category", category, tuple(CATQA_CATEGORIES)))
    if subcategory is not None and (category, subcategory) in _S.catqa_sub_to_alert:
        return _S.catqa_sub_to_alert[(category, subcategory)]
    return _S.catqa_to_alert[category]


def _unknown(kind: str, value: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {value!r}{hint}"


# --------------------------------------------------------------------------------------------
# Instruction sets
# --------------------------------------------------------------------------------------------

_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-~]*$")
_CACHE: dict[Path, tuple[tuple[int, int], Any]] = {}


def valid_set_name(name: str) -> bool:
    """A set name is a plain folder name: letters, digits, ``_ . - ~``; not ``builtin``'s path."""
    return bool(_SET_NAME.match(name)) and name not in (".", "..")


def set_dir(name: str) -> Path:
    """Folder of an imported set (it may not exist yet)."""
    return sets_dir() / name


def list_sets() -> list[str]:
    """Names of every loadable set: ``builtin`` first, then imported sets alphabetically."""
    names = [BUILTIN]
    root = sets_dir()
    if root.is_dir():
        names += sorted(p.name for p in root.iterdir() if (p / PROMPTS_FILE).is_file() and p.name != BUILTIN)
    return names


def set_file(name_or_path: str) -> Path:
    """Resolve a set name or a path to its ``prompts.jsonl``; InputError naming the known sets if none."""
    if name_or_path == BUILTIN:
        return taxonomy_dir() / BUILTIN_FILE
    if valid_set_name(name_or_path) and (set_dir(name_or_path) / PROMPTS_FILE).is_file():
        return set_dir(name_or_path) / PROMPTS_FILE
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / PROMPTS_FILE).is_file():
        return path / PROMPTS_FILE
    if path.is_file():
        return path
    known = list_sets()
    close = difflib.get_close_matches(name_or_path, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known sets: {', '.join(known)}"
    raise InputError(f"unknown set {name_or_path!r} (not a set name nor a file){hint}")


def _cached(path: Path, parse: Any) -> Any:
    """Parse ``path`` once per (mtime, size): stages call load_set for every item batch."""
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = parse(path)
    _CACHE[path] = (stamp, value)
    return value


def load_set(name_or_path: str) -> list[Prompt]:
    """The prompts of a set: ``builtin``, an imported set's name, or a path to a prompts JSONL file."""
    path = set_file(name_or_path).resolve()
    default_set = BUILTIN if name_or_path == BUILTIN else (path.parent.name if path.name == PROMPTS_FILE else path.stem)
    return list(_cached(path, lambda p: tuple(read_prompts(p, default_set=default_set))))


def iter_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    The one JSONL reader for user files: InputError naming the file and line on unreadable files,
    bad bytes, malformed JSON or a row that is not an object. A UTF-8 byte-order mark is dropped.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file=path) from exc
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid UTF-8 (byte {exc.start})", file=path, line=number) from exc
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg} at column {exc.colno}", file=path, line=number) from exc
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}", file=path, line=number)
        yield number, obj


def read_prompts(path: Path, default_set: str = BUILTIN) -> list[Prompt]:
    """Read and validate a prompts JSONL file (ids unique, text non-empty, categories known)."""
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for number, row in iter_json_lines(path):
        for name in ("id", "text"):
            value = row.get(name)
            if not isinstance(value, str) or not value.strip():
                problem = "missing" if value is None else ("empty" if isinstance(value, str) else f"must be text, got {type(value).__name__}")
                raise InputError(problem, file=path, line=number, field=name)
        pid = row["id"]
        if pid in seen:
            raise InputError(f"duplicate id {pid!r} (first on line {seen[pid]})", file=path, line=number, field="id")
        seen[pid] = number
        category = row.get("category") or ""
        if not isinstance(category, str):
            raise InputError("must be text", file=path, line=number, field="category")
        if category:
            try:
                category = normalize_alert(category)
            except KeyError as exc:
                raise InputError(exc.args[0], file=path, line=number, field="category") from None
        xtype = row.get("xsafety_type")
        if xtype:
            try:
                xtype = normalize_xsafety_type(str(xtype))
            except KeyError as exc:
                raise InputError(exc.args[0], file=path, line=number, field="xsafety_type") from None
        tags = row.get("tags") or ()
        if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
            raise InputError("must be a list of strings", file=path, line=number, field="tags")
        prompts.append(
            Prompt(
                id=pid,
                text=row["text"],
                category=category,
                source=str(row.get("source") or default_set),
                set=str(row.get("set") or default_set),
                xsafety_type=xtype or None,
                tags=tuple(tags),
                meta=dict(row.get("meta") or {}),
            )
        )
    return prompts


def _set_folder(set_name: str) -> Path | None:
    """The folder holding ``references/`` for a set name or a set path; None for the built-in set."""
    if set_name == BUILTIN:
        return None
    if valid_set_name(set_name) and set_dir(set_name).is_dir():
        return set_dir(set_name)
    path = Path(set_name).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.name == PROMPTS_FILE:
        return path.parent
    return None


def reference_files(set_name: str) -> dict[str, Path]:
    """Locale -> ``references/<locale>.jsonl`` of a set (empty when it has none)."""
    folder = _set_folder(set_name)
    if folder is None or not (folder / REFERENCES_DIR).is_dir():
        return {}
    return {p.stem: p for p in sorted((folder / REFERENCES_DIR).glob("*.jsonl"))}


def load_reference_records(set_name: str, locale: str) -> dict[str, Translation]:
    """Prompt id -> reference Translation record of one locale (empty when none)."""
    path = reference_files(set_name).get(locale)
    if path is None:
        return {}

    def parse(p: Path) -> dict[str, Translation]:
        out: dict[str, Translation] = {}
        for number, row in iter_json_lines(p):
            try:
                rec = Translation.from_dict(row)
            except TypeError as exc:
                raise InputError(f"not a Translation record: {exc}", file=p, line=number) from exc
            out[rec.prompt_id] = rec
        return out

    return dict(_cached(path.resolve(), parse))


def load_references(set_name: str) -> dict[str, dict[str, str]]:
    """Locale -> prompt id -> human reference text of a set; empty when it has none."""
    return {
        locale: {pid: rec.text for pid, rec in load_reference_records(set_name, locale).items()}
        for locale in reference_files(set_name)
    }


# --------------------------------------------------------------------------------------------
# Policies (files owned by the report work; this is only where they are found and parsed)
# --------------------------------------------------------------------------------------------


def policies_dir() -> Path:
    """``taxonomy/policies``: scoring policies as TOML."""
    return taxonomy_dir() / "policies"


def load_policy(name: str) -> dict[str, Any]:
    """Parse the policy TOML called ``name`` (or at a path); validation is the report's job.

    The returned table gains ``name`` (when absent) and ``path`` so callers can cite the file.
    """
    path = Path(name).expanduser()
    if not path.is_file():
        path = policies_dir() / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in policies_dir().glob("*.toml")) if policies_dir().is_dir() else []
        raise InputError(f"unknown policy {name!r}; known policies: {', '.join(known) or 'none'}")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("not valid UTF-8", file=path) from exc
    table.setdefault("name", path.stem)
    table["path"] = str(path)
    return table


# The scheme each source set files its own categories under, and where a Prompt keeps it.
SOURCE_SCHEMES: dict[str, str] = {
    "xsafety": "XSafety issue type",
    "multijail": "MultiJail tag",
    "catqa": "CatQA category",
    "harmfulqa": "HarmfulQA topic",
    "alert": "ALERT category",
}


def source_category(prompt: Prompt) -> str:
    """The source set's own category of a prompt, as the set published it.

    XSafety's issue type (also carried by the built-in set and by plain files that map one), the
    first MultiJail tag, the CatQA category, the HarmfulQA topic, ALERT's own label; ``""`` when
    the source has none. Reports and samples stratify by it beside the ALERT category, because a
    mapping to ALERT merges categories the source kept apart.
    """
    source = (prompt.source or "").lower()
    if source in ("multijail", "catqa", "harmfulqa") and prompt.tags:
        return str(prompt.tags[0])
    if prompt.xsafety_type:
        return str(prompt.xsafety_type)
    if source == "alert":
        return prompt.category
    # A plain file's own labels are its tags (derived tags such as "attack:x" are not categories).
    own = [t for t in prompt.tags if ":" not in t]
    return str(own[0]) if own else ""
