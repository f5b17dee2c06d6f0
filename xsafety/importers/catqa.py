"""CatQA (CategoricalHarmfulQA): the parallel JSONL ``category, subcategory, idx, en, zh, vi``;
English becomes prompts, Chinese and Vietnamese become references."""

from __future__ import annotations

import re
from pathlib import Path

from xsafety.errors import InputError
from xsafety.importers.base import ENGLISH, IdRegistry, ImportedSet, check_locale, read_json_rows, require_columns, text_field
from xsafety.records import Prompt
from xsafety.taxonomy import CATQA_CATEGORIES, alert_of_catqa

#: The languages CatQA was published in besides English.
LANGUAGES: tuple[str, ...] = ("zh", "vi")
_NOT_LOCALES = {"category", "subcategory", "idx", "id", ENGLISH}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def parse(path: Path, name: str) -> ImportedSet:
    """Read the CatQA parallel JSONL."""
    out = ImportedSet(name=name, source="catqa")
    ids = IdRegistry(path, field="idx")
    for line, row in read_json_rows(path):
        require_columns(path, line, row, ["category", "subcategory", "idx", ENGLISH])
        category = text_field(path, line, row, "category")
        if category not in CATQA_CATEGORIES:
            raise InputError(f"unknown CatQA category {category!r}", file=path, line=line, field="category")
        sub = text_field(path, line, row, "subcategory")
        if sub not in CATQA_CATEGORIES[category]:
            raise InputError(f"{sub!r} is not a subcategory of {category!r}", file=path, line=line, field="subcategory")
        idx = row["idx"]
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            raise InputError(f"must be a non-negative integer, got {idx!r}", file=path, line=line, field="idx")
        pid = ids.claim(f"catqa-{_slug(category)}-{_slug(sub)}-{idx:02d}", line)
        out.prompts.append(
            Prompt(
                id=pid,
                text=text_field(path, line, row, ENGLISH),
                category=alert_of_catqa(category, sub),
                source="catqa",
                set=name,
                tags=(category, sub),
                meta={"idx": idx},
            )
        )
        for column in row:
            if column in _NOT_LOCALES:
                continue
            locale = check_locale(column, file=path, line=line, field=column, published=LANGUAGES)
            out.add_reference(locale, pid, text_field(path, line, row, column, allow_empty=True))
    return out
