"""A persistent cache of translations so that no text is translated twice by the same engine.

Keyed by (source text, engine signature, src -> tgt, n_best, sample, seed): the same prompt
translated for another set, run or target model, and the same response back-translated for
another judge, are looked up instead of recomputed. Rows live in the project store under
``cache_dir()/translate`` (append-only JSONL, one shard per process, torn lines dropped on
load), so the cache is safe to delete and safe under ``kill -9``.

The index is read once per process and per cache folder, straight from the JSON rows (no record
objects), which keeps loading ~100k rows well under a second; rows this process adds are put in
the index as they are written.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from xsafety.data import cache_dir
from xsafety.records import Record, stable_hash
from xsafety.store import ShardWriter, Store, Table
from xsafety.translate.engines.base import Candidate, Engine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedTranslation(Record):
    """The candidates one engine gave for one text in one direction with one decoding setup."""

    table: ClassVar[str] = "translate_cache"

    key: str
    engine: str
    src: str
    tgt: str
    text: str
    candidates: tuple[dict[str, Any], ...]
    n_best: int = 1
    sample: bool = False
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def cache_key(text: str, engine_signature: str, src: str, tgt: str, n_best: int, sample: bool, seed: int) -> str:
    """The cache key of one text; ``seed`` only counts when sampling."""
    return stable_hash("translate-cache", text, engine_signature, src, tgt, n_best, sample, seed if sample else 0)


@dataclass
class _Shared:
    """Per-process state of one cache folder: the index and the open shard."""

    table: Table[CachedTranslation]
    index: dict[str, list[dict[str, Any]]]
    writer: ShardWriter[CachedTranslation] | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


_SHARED: dict[Path, _Shared] = {}


def _shared(root: Path) -> _Shared:
    root = root.resolve()
    if root not in _SHARED:
        table = Store(root).table(CachedTranslation)
        index: dict[str, list[dict[str, Any]]] = {}
        for row in table.iter_dicts():
            key = row.get("key")
            if isinstance(key, str) and key not in index:
                index[key] = list(row.get("candidates") or ())
        _SHARED[root] = _Shared(table=table, index=index)
        log.debug("translation cache %s: %d rows", root, len(index))
    return _SHARED[root]


@atexit.register
def _close_all() -> None:
    for shared in _SHARED.values():
        shared.close()


class TranslationCache:
    """Look up, translate misses in one engine call, store, and return in input order."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "translate"
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(_shared(self.root).index)

    def translate(
        self,
        engine: Engine,
        texts: Sequence[str],
        src: str,
        tgt: str,
        *,
        n_best: int = 1,
        sample: bool = False,
        seed: int = 0,
    ) -> list[list[Candidate]]:
        """``engine.translate`` with every text answered from the cache when it can be.

        Empty results (a failed request, a missing reference) are not stored, so a later call
        tries again.
        """
        if not texts:
            return []
        shared = _shared(self.root)
        sig = engine.signature(src, tgt)
        keys = [cache_key(t, sig, src, tgt, n_best, sample, seed) for t in texts]
        missing: dict[str, str] = {}  # key -> text, de-duplicated, first occurrence order
        for key, text in zip(keys, texts):
            if key not in shared.index and key not in missing:
                missing[key] = text
        self.hits += len(texts) - sum(1 for k in keys if k in missing)
        self.misses += sum(1 for k in keys if k in missing)
        if missing:
            miss_keys = list(missing)
            fresh = engine.translate(
                [missing[k] for k in miss_keys], src, tgt, n_best=n_best, sample=sample, seed=seed
            )
            if len(fresh) != len(miss_keys):
                raise RuntimeError(f"{engine.name} returned {len(fresh)} results for {len(miss_keys)} texts")
            if shared.writer is None:
                shared.writer = ShardWriter(shared.table)
            for key, cands in zip(miss_keys, fresh):
                rows = [c.to_dict() for c in cands]
                if rows:
                    shared.writer.write(
                        CachedTranslation(
                            key=key,
                            engine=sig,
                            src=src,
                            tgt=tgt,
                            text=missing[key],
                            candidates=tuple(rows),
                            n_best=n_best,
                            sample=sample,
                            seed=seed if sample else 0,
                        )
                    )
                    shared.index[key] = rows
            fresh_by_key = dict(zip(miss_keys, fresh))
        else:
            fresh_by_key = {}
        out: list[list[Candidate]] = []
        for key in keys:
            if key in fresh_by_key:
                out.append(list(fresh_by_key[key]))
            else:
                out.append([Candidate.from_dict(d) for d in shared.index.get(key, ())])
        return out

    def flush(self) -> None:
        """Close this process's shard for the cache folder (a later write opens a new one)."""
        shared = _SHARED.get(self.root.resolve())
        if shared is not None:
            shared.close()

    @staticmethod
    def forget(root: str | Path | None = None) -> None:
        """Drop the in-memory index (tests, or after deleting the folder), closing its shard."""
        root = (Path(root) if root is not None else cache_dir() / "translate").resolve()
        shared = _SHARED.pop(root, None)
        if shared is not None:
            shared.close()
