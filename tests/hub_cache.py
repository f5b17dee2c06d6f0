"""A local Hugging Face hub cache, laid out the way ``huggingface_hub`` lays it out, and a stand-in
for the first download, so hub-model code paths run offline.

Layout (``HF_HUB_CACHE``)::

    models--ORG--NAME/
      blobs/<git sha1, or sha256 for large files>   the file contents
      refs/main                                     the commit the branch points at (no newline)
      snapshots/<commit>/<file> -> ../../blobs/<h>  relative symlinks, one per file
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

COMMIT = "4f2c1a9e0b7d3c5a8e6f1b2d4c6a8e0f1b3d5c7a"
LFS_SUFFIXES = (".safetensors", ".bin", ".model")


def blob_name(data: bytes, lfs: bool) -> str:
    """The blob file name the hub uses: sha256 for LFS files, the git blob sha1 for the rest."""
    if lfs:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def publish(folder: Path, cache: Path, repo_id: str, commit: str = COMMIT) -> Path:
    """Copy ``folder``'s files into ``cache`` as the hub would after a download; returns the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / blob_name(data, path.suffix in LFS_SUFFIXES)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def use_offline_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """Point huggingface_hub (and transformers through it) at ``cache``, offline."""
    from huggingface_hub import constants

    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def download_on_first_load(
    monkeypatch: pytest.MonkeyPatch, cache: Path, repo_id: str, folder: Path, auto_classes: list[Any]
) -> list[str]:
    """Make the first ``from_pretrained(repo_id)`` on any of ``auto_classes`` publish ``folder``
    into the cache first, as a real first download would; returns the log of downloads."""
    downloads: list[str] = []

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def from_pretrained(name: Any, *args: Any, **kwargs: Any) -> Any:
            repo = cache / f"models--{repo_id.replace('/', '--')}"
            if str(name) == repo_id and not repo.exists():
                publish(folder, cache, repo_id)
                downloads.append(repo_id)
            return original(name, *args, **kwargs)

        return from_pretrained

    for cls in auto_classes:
        monkeypatch.setattr(cls, "from_pretrained", wrap(cls.from_pretrained))
    return downloads
