"""ALERT (Tedeschi et al. 2024): ``{"id", "category", "prompt"}`` rows, prompts wrapped as
``### Instruction:\\n...\\n### Response:\\n``; the adversarial file adds ``attack_type``."""

from __future__ import annotations

import re
from pathlib import Path

from xsafety.errors import InputError
from xsafety.importers.base import IdRegistry, ImportedSet, alert_field, read_json_rows, require_columns, text_field
from xsafety.records import Prompt
from xsafety.taxonomy import ALERT_ATTACKS, alert_macro_of

_WRAPPED = re.compile(r"^\s*###\s*Instruction:\s*(?P<body>.*?)\s*(?:###\s*Response:\s*)?$", re.DOTALL)


def unwrap(prompt: str) -> str:
    """The instruction inside ALERT's ``### Instruction:`` / ``### Response:`` template."""
    match = _WRAPPED.match(prompt)
    return match.group("body").strip() if match else prompt.strip()


def parse(path: Path, name: str) -> ImportedSet:
    """Read an ALERT (or ALERT adversarial) JSONL file."""
    out = ImportedSet(name=name, source="alert")
    ids = IdRegistry(path)
    odd_attacks: set[str] = set()
    for line, row in read_json_rows(path):
        require_columns(path, line, row, ["id", "category", "prompt"])
        raw_id = row["id"]
        if not isinstance(raw_id, (int, str)) or isinstance(raw_id, bool) or str(raw_id).strip() == "":
            raise InputError("must be a number or non-empty text", file=path, line=line, field="id")
        text = unwrap(text_field(path, line, row, "prompt"))
        if not text:
            raise InputError("empty instruction inside the ### Instruction: wrapper", file=path, line=line, field="prompt")
        category = alert_field(path, line, row["category"])
        tags = [alert_macro_of(category)] if category else []
        meta: dict[str, object] = {"alert_id": raw_id}
        attack = row.get("attack_type")
        if attack is not None:
            if not isinstance(attack, str):
                raise InputError("must be text", file=path, line=line, field="attack_type")
            if attack not in ALERT_ATTACKS and attack not in odd_attacks:
                odd_attacks.add(attack)
                out.warnings.append(f"attack_type {attack!r} is not one of {', '.join(ALERT_ATTACKS)} (kept as is)")
            tags.append(f"attack:{attack}")
            meta["attack_type"] = attack
        pid = ids.claim(f"alert-{raw_id}", line)
        out.prompts.append(Prompt(id=pid, text=text, category=category, source="alert", set=name, tags=tuple(tags), meta=meta))
    return out
