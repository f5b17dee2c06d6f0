"""Re-key a run directory made before store format 2 (``xsafety migrate --run-dir DIR``).

Format 1 keys held the set's name (a prompt's key, and through the item a response's), so a
subset imported under another name found none of the full set's records. Format 2 keys do not
(``runinfo.STORE_FORMAT``). Every format-2 key can be recomputed from what the records already
hold, so a migration recomputes keys and never an answer or a verdict:

* a response's key from its model signature, prompt id, locale, attack, variant and messages
  (``generate.response_key_of``), and its ``input_key`` where that was a prompt's format-1 key
  (now the prompt's id and text, ``Prompt.key``);
* a verdict's key from its response's new key, the judge's signature and the mode;
* failure rows and ``cells.json`` follow their responses' new keys.

The prompts table keeps its rows and their keys (``Prompt.set_key``: one row per set name) and
translations keep theirs (the run finds them by prompt id and text, and the translation stage
accepts a format-1 key as current). Each table is rewritten as one new shard before its old shards
go, and a rerun of the migration maps new keys to themselves, so a migration killed halfway is
finished by running it again. ``store-format.json`` is written last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsafety.errors import InputError
from xsafety.generate import response_key_of
from xsafety.judges.stage import ERRORS_TABLE, verdict_key
from xsafety.records import Prompt, Record
from xsafety.runinfo import (
    STORE_FORMAT,
    Cells,
    read_cells,
    store_format,
    write_cells,
    write_store_format,
)
from xsafety.store import Store

MIGRATED_SHARD = "00000000T000000-migrated-format-{version}.jsonl"


@dataclass
class Migration:
    """What one migration did: the format found and the rows re-keyed per table."""

    found: int
    rekeyed: dict[str, int]

    @property
    def changed(self) -> bool:
        """True when the directory was re-keyed (False: it was current already)."""
        return self.found < STORE_FORMAT

    def describe(self) -> str:
        """One line for the command's output."""
        if not self.changed:
            return f"already in store format {STORE_FORMAT}: nothing to do"
        moved = ", ".join(f"{n} {table}" for table, n in self.rekeyed.items() if n)
        return f"re-keyed from store format {self.found} to {STORE_FORMAT}: {moved or 'no rows'}; nothing recomputed"


def _rewrite(store: Store, table: str, rows: Iterable[dict[str, Any]]) -> int:
    """Replace every shard of ``table`` by one shard holding ``rows`` (first copy of a key kept)."""
    folder = store.root / table
    old = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not old:
        return 0
    seen: set[str] = set()
    lines = []
    for row in rows:
        key = row.get("key")
        if isinstance(key, str):
            if key in seen:
                continue
            seen.add(key)
        lines.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
    target = folder / MIGRATED_SHARD.format(version=STORE_FORMAT)
    tmp = folder / f".{target.name}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
    for shard in old:
        if shard != target:
            shard.unlink()
    return len(lines)


def _rows(store: Store, name: str) -> list[dict[str, Any]]:
    """Every intact row of table ``name`` as a dict (shapes are kept as they are)."""
    return list(store.table(Record, name).iter_dicts())


def _mapped(rows: list[dict[str, Any]], change: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    return [change(dict(row)) for row in rows]


def migrate(run_dir: str | Path) -> Migration:
    """Re-key ``run_dir``'s records to the current store format (see the module docstring)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError("run directory not found", file=root, field="--run-dir")
    found = store_format(root)
    if found > STORE_FORMAT:
        raise InputError(f"store format {found} is newer than this xsafety reads ({STORE_FORMAT})", file=root)
    if found == STORE_FORMAT:
        return Migration(found, {})
    store = Store(root)
    rekeyed: dict[str, int] = {}
    with store.locked():
        prompt_keys: dict[str, str] = {}  # format-1 prompt key (the row's set_key) -> Prompt.key
        for row in _rows(store, "prompts"):
            if isinstance(row.get("id"), str) and isinstance(row.get("text"), str):
                prompt = Prompt.from_dict(row)
                prompt_keys[prompt.set_key] = prompt.key

        response_rows = _rows(store, "responses")
        response_keys: dict[str, str] = {}  # old response key -> new
        for row in response_rows:
            new = response_key_of(
                str(row.get("model", "")), str(row.get("prompt_id", "")), str(row.get("locale", "")),
                str(row.get("attack", "none")), str(row.get("variant", "default")), row.get("messages") or [],
            )
            response_keys[str(row.get("key"))] = new
            row["key"] = new
            if row.get("input_key") in prompt_keys:
                row["input_key"] = prompt_keys[row["input_key"]]
            meta = row.get("meta")
            if isinstance(meta, dict) and meta.get("input_key") in prompt_keys:
                row["meta"] = {**meta, "input_key": prompt_keys[meta["input_key"]]}
        rekeyed["responses"] = _rewrite(store, "responses", response_rows)

        def follow(row: dict[str, Any]) -> dict[str, Any]:
            row["response_key"] = response_keys.get(row.get("response_key", ""), row.get("response_key"))
            return row

        rekeyed["response_errors"] = _rewrite(store, "response_errors", _mapped(_rows(store, "response_errors"), follow))

        def verdict(row: dict[str, Any]) -> dict[str, Any]:
            old = row.get("response_key")
            if old in response_keys:
                row["response_key"] = response_keys[old]
                row["key"] = verdict_key(row["response_key"], str(row.get("judge", "")), str(row.get("mode", "")))
            return row

        rekeyed["verdicts"] = _rewrite(store, "verdicts", _mapped(_rows(store, "verdicts"), verdict))
        rekeyed[ERRORS_TABLE] = _rewrite(store, ERRORS_TABLE, _mapped(_rows(store, ERRORS_TABLE), verdict))

        cells = read_cells(root)
        if cells is not None:
            write_cells(root, Cells(
                frozenset(response_keys.get(k, k) for k in cells.responses),
                {response_keys.get(k, k): name for k, name in cells.sets.items()},
            ))
        write_store_format(root)
    return Migration(found, rekeyed)
