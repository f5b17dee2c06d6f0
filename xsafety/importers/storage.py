"""Writing an imported set into ``sets_dir()/<name>/`` atomically.

Everything is written to a temporary sibling folder first and swapped in with renames, so a
failing import (bad row, full disk, Ctrl-C) never touches a set already imported under that name.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from xsafety.data import sets_dir
from xsafety.importers.base import ImportedSet
from xsafety.records import Translation, canonical_json, signature, stable_hash
from xsafety.taxonomy import PROMPTS_FILE, REFERENCES_DIR

META_FILE = "meta.json"


def reference_engine(set_name: str) -> str:
    """Signature of a human reference translation of ``set_name``."""
    return signature("reference", source=set_name)


def reference_record(set_name: str, prompt_id: str, locale: str, source: str, text: str) -> Translation:
    """A human reference as a Translation record (accepted; keyed by set, id, locale and text)."""
    return Translation(
        key=stable_hash("reference", set_name, prompt_id, locale, text),
        prompt_id=prompt_id,
        set=set_name,
        locale=locale,
        source=source,
        text=text,
        engine=reference_engine(set_name),
        accepted=True,
    )


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(canonical_json(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_set(imported: ImportedSet, origin: dict[str, Any]) -> Path:
    """Write prompts, references and a small ``meta.json``; replace any same-named set atomically."""
    root = sets_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / imported.name
    tmp = root / f".tmp-{imported.name}-{os.getpid()}"
    old = root / f".old-{imported.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _write_jsonl(tmp / PROMPTS_FILE, [p.to_dict() for p in imported.prompts])
        english = {p.id: p.text for p in imported.prompts}
        if imported.references:
            (tmp / REFERENCES_DIR).mkdir()
        for locale, texts in sorted(imported.references.items()):
            records = [reference_record(imported.name, pid, locale, english[pid], text).to_dict() for pid, text in texts.items()]
            _write_jsonl(tmp / REFERENCES_DIR / f"{locale}.jsonl", records)
        meta = {
            **origin,
            "name": imported.name,
            "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "prompts": len(imported.prompts),
            "references": {loc: len(t) for loc, t in sorted(imported.references.items())},
            "skipped": dict(imported.skipped),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not target.exists():
            old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target
