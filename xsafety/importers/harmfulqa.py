"""HarmfulQA (Bhardwaj & Poria 2023): a JSON list (or JSONL) of ``{topic, subtopic, question, ...}``.

Topics are academic subjects the questions are dressed in, not harm types, so prompts get no
ALERT category; topic and subtopic become tags.
"""

from __future__ import annotations

from pathlib import Path

from xsafety.errors import InputError
from xsafety.importers.base import IdRegistry, ImportedSet, derived_id, read_json_rows, require_columns, text_field
from xsafety.records import Prompt
from xsafety.taxonomy import HARMFULQA_TOPICS


def parse(path: Path, name: str) -> ImportedSet:
    """Read HarmfulQA questions."""
    out = ImportedSet(name=name, source="harmfulqa")
    ids = IdRegistry(path)
    unknown: set[str] = set()
    for line, row in read_json_rows(path):
        require_columns(path, line, row, ["topic", "question"])
        text = text_field(path, line, row, "question")
        topic = text_field(path, line, row, "topic")
        subtopic = text_field(path, line, row, "subtopic", allow_empty=True) if "subtopic" in row else ""
        if topic not in HARMFULQA_TOPICS and topic not in unknown:
            unknown.add(topic)
            out.warnings.append(f"topic {topic!r} is not one of HarmfulQA's published topics (kept as a tag)")
        raw_id = row.get("id")
        if raw_id is None or raw_id == "":
            pid = derived_id("harmfulqa", text)
        elif isinstance(raw_id, (int, str)) and not isinstance(raw_id, bool):
            pid = f"harmfulqa-{raw_id}"
        else:
            raise InputError("must be a number or text", file=path, line=line, field="id")
        ids.claim(pid, line)
        tags = tuple(t for t in (topic, subtopic) if t)
        out.prompts.append(Prompt(id=pid, text=text, category="", source="harmfulqa", set=name, tags=tags))
    return out
