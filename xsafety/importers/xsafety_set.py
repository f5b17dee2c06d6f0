"""XSafety (Wang et al. 2024): the parallel JSONL (``category, idx, en, zh, ...``) or the original
repository's folder of per-language CSVs (``en/Insult_n.csv``, ``de/Insult.csv``, ...: one text
column, no header, rows aligned by position). English becomes prompts; every other language
becomes reference translations of the same ids."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from xsafety.errors import InputError
from xsafety.importers.base import ENGLISH, IdRegistry, ImportedSet, check_locale, decode, read_json_rows, require_columns, text_field
from xsafety.records import Prompt
from xsafety.taxonomy import alert_of_xsafety, normalize_xsafety_type, xsafety_group_of

#: The 10 languages XSafety was published in.
LANGUAGES: tuple[str, ...] = ("en", "zh", "ar", "bn", "de", "es", "fr", "hi", "ja", "ru")
_NOT_LOCALES = {"category", "idx", "id"}


def prompt_id(xsafety_type: str, idx: int) -> str:
    """``xsafety-Insult-0007``: the same id in every language of the same row."""
    return f"xsafety-{xsafety_type}-{idx:04d}"


def _prompt(name: str, xsafety_type: str, idx: int, text: str) -> Prompt:
    alert = alert_of_xsafety(xsafety_type)
    return Prompt(
        id=prompt_id(xsafety_type, idx),
        text=text,
        category=alert[0] if alert else "",
        source="xsafety",
        set=name,
        xsafety_type=xsafety_type,
        tags=(xsafety_group_of(xsafety_type),),
        meta={"idx": idx},
    )


def parse(path: Path, name: str) -> ImportedSet:
    """Read the parallel JSONL file or the per-language CSV folder."""
    return parse_folder(path, name) if path.is_dir() else parse_parallel(path, name)


def parse_parallel(path: Path, name: str) -> ImportedSet:
    """The aligned JSONL: one row per prompt with a column per language."""
    out = ImportedSet(name=name, source="xsafety")
    ids = IdRegistry(path, field="idx")
    for line, row in read_json_rows(path):
        require_columns(path, line, row, ["category", "idx", ENGLISH])
        try:
            xtype = normalize_xsafety_type(text_field(path, line, row, "category"))
        except KeyError as exc:
            raise InputError(exc.args[0], file=path, line=line, field="category") from None
        idx = row["idx"]
        if isinstance(idx, str) and idx.strip().isdigit():
            idx = int(idx)
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            raise InputError(f"must be a non-negative integer, got {idx!r}", file=path, line=line, field="idx")
        prompt = _prompt(name, xtype, idx, text_field(path, line, row, ENGLISH))
        ids.claim(prompt.id, line)
        out.prompts.append(prompt)
        for column, value in row.items():
            if column in _NOT_LOCALES or column == ENGLISH:
                continue
            locale = check_locale(column, file=path, line=line, field=column, published=LANGUAGES)
            out.add_reference(locale, prompt.id, text_field(path, line, row, column, allow_empty=True))
    return out


def _read_lines(path: Path) -> list[str]:
    """Cells of a headerless one-column CSV; an unquoted comma is part of the text, not a column."""
    reader = csv.reader(io.StringIO(decode(path), newline=""))
    try:
        return [",".join(cells).strip() for cells in reader if cells]
    except csv.Error as exc:
        raise InputError(f"malformed CSV: {exc}", file=path, line=reader.line_num) from exc


# The English folder holds revised files (``_n``) beside first versions; prefer the revision.
_SUFFIX_RANK = {"_n": 0, "": 1, "_en": 2}


def _type_files(folder: Path, out: ImportedSet) -> dict[str, Path]:
    """XSafety type -> the CSV file of that type in one language folder."""
    chosen: dict[str, tuple[int, Path]] = {}
    for csv_path in sorted(folder.glob("*.csv")):
        stem = csv_path.stem
        suffix = next((s for s in ("_n", "_en") if stem.endswith(s)), "")
        try:
            xtype = normalize_xsafety_type(stem)
        except KeyError:
            out.warnings.append(f"{csv_path}: not an XSafety issue type, ignored")
            continue
        rank = _SUFFIX_RANK[suffix]
        if xtype in chosen:
            kept, dropped = sorted([chosen[xtype], (rank, csv_path)])
            out.warnings.append(f"{folder.name}/{xtype}: using {kept[1].name}, ignoring {dropped[1].name}")
            chosen[xtype] = kept
        else:
            chosen[xtype] = (rank, csv_path)
    return {t: p for t, (_, p) in chosen.items()}


def parse_folder(root: Path, name: str) -> ImportedSet:
    """The original layout: ``<root>/<lang>/<Type>[_n|_en].csv``."""
    out = ImportedSet(name=name, source="xsafety")
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob("*.csv"))}
    if ENGLISH not in folders:
        raise InputError("no en/ folder of English CSV files", file=root, field="en/")
    english: dict[str, list[str]] = {}
    for xtype, csv_path in sorted(_type_files(folders[ENGLISH], out).items()):
        rows = _read_lines(csv_path)
        english[xtype] = rows
        for idx, text in enumerate(rows):
            if not text:
                raise InputError("empty English text", file=csv_path, line=idx + 1, field="text")
            out.prompts.append(_prompt(name, xtype, idx, text))
    for lang, folder in folders.items():
        if lang == ENGLISH:
            continue
        locale = check_locale(lang, file=folder, line=None, field="folder", published=LANGUAGES)
        for xtype, csv_path in sorted(_type_files(folder, out).items()):
            if xtype not in english:
                out.warnings.append(f"{csv_path}: no English file for {xtype}, ignored")
                continue
            rows = _read_lines(csv_path)
            if len(rows) != len(english[xtype]):
                out.warnings.append(f"{csv_path}: {len(rows)} rows but English has {len(english[xtype])}; aligned by position")
                out.skipped[f"{locale}: row count differs"] += abs(len(rows) - len(english[xtype]))
            for idx, text in enumerate(rows[: len(english[xtype])]):
                out.add_reference(locale, prompt_id(xtype, idx), text)
    return out
