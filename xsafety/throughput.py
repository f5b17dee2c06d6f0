"""Throughput measured on this machine, per component signature, for honest time estimates.

Every generation (and judging) stage that did work records how many items it finished in how
many seconds, under the signature of the model (or judge) that did it, in
``$XSAFETY_CACHE/throughput.json``. ``xsafety run --dry-run`` turns the items still to do into an
estimated time from those figures, or says it has none: a guess from another machine or another
model would be worse than no figure.

The figure is the pooled rate of the last few measurements (items and seconds summed), so one run
on a loaded machine moves it but does not decide it. The cache is per machine by construction;
deleting it only loses the estimates.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from xsafety.data import cache_dir

log = logging.getLogger(__name__)

THROUGHPUT_FILE = "throughput.json"
KEEP = 5  # measurements kept per signature
MIN_SECONDS = 1.0  # shorter stages measure start-up more than throughput


@dataclass(frozen=True)
class Estimate:
    """Seconds expected for ``items`` items, from ``runs`` earlier measurements of ``measured`` items."""

    items: int
    seconds: float
    runs: int
    measured: int
    tokens_per_s: float | None = None


def _path() -> Path:
    return cache_dir() / THROUGHPUT_FILE


def _read(path: Path) -> dict[str, list[dict[str, float]]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, UnicodeDecodeError):
        log.warning("%s is unreadable; time estimates start afresh", path)
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, list[dict[str, float]]] = {}
    for key, rows in data.items():
        if isinstance(rows, list):
            good = [r for r in rows if isinstance(r, dict) and _number(r.get("items")) and _number(r.get("seconds"))]
            out[str(key)] = good
    return out


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def record(kind: str, signature: str, items: int, seconds: float, tokens: int | None = None) -> None:
    """Remember that ``items`` items of ``kind`` ("generate", "judge") took ``seconds`` with
    ``signature``. Too-short measurements are ignored; a failure to write only costs the estimate."""
    if items <= 0 or seconds < MIN_SECONDS:
        return
    path = _path()
    data = _read(path)
    key = f"{kind}|{signature}"
    row: dict[str, float] = {"items": float(items), "seconds": float(seconds), "at": time.time()}
    if tokens:
        row["tokens"] = float(tokens)
    data[key] = [*data.get(key, []), row][-KEEP:]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not record throughput in %s: %s", path, exc)


def estimate(kind: str, signature: str | None, items: int) -> Estimate | None:
    """Expected seconds for ``items`` items with ``signature``, or ``None`` when this machine has
    never measured that component (or the signature is not known yet)."""
    if signature is None:
        return None
    rows = _read(_path()).get(f"{kind}|{signature}", [])
    if not rows:
        return None
    done = sum(r["items"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    tokens = sum(r.get("tokens", 0.0) for r in rows)
    return Estimate(
        items=items,
        seconds=items * seconds / done,
        runs=len(rows),
        measured=int(done),
        tokens_per_s=tokens / seconds if tokens else None,
    )


def format_seconds(seconds: float) -> str:
    """``42 s``, ``4 min 10 s`` or ``2 h 5 min``: the precision an estimate deserves."""
    total = round(seconds)
    if total >= 3600:
        return f"{total // 3600} h {total % 3600 // 60} min"
    return f"{total // 60} min {total % 60} s" if total >= 60 else f"{total} s"


def describe(estimate_: Estimate | None, what: str) -> str:
    """One line for a dry run: ``~4 min 10 s (from 2 runs, 704 items, 213 tok/s)`` or why not."""
    if estimate_ is None:
        return f"{what}: no estimate (no earlier run of this component on this machine)"
    span = format_seconds(estimate_.seconds)
    rate = f", {estimate_.tokens_per_s:.0f} tok/s" if estimate_.tokens_per_s else ""
    runs = "run" if estimate_.runs == 1 else "runs"
    return f"{what}: ~{span} for {estimate_.items} items (from {estimate_.runs} earlier {runs} on this machine, {estimate_.measured} items{rate})"
