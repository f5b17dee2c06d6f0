"""Human labels of a run's answers: append-only storage, agreement between annotators, calibration.

Labels live in ``RUN_DIR/annotations/labels.jsonl``, one JSON object a line, never rewritten:
``item`` (the response key), ``locale``, ``label`` (one of ``HUMAN_LABELS``), ``note``,
``annotator``, ``time`` (when labelled), ``imported`` (when stored), ``sample``, ``weight`` (the
item's inverse sampling rate) and ``source`` (the file imported). An annotator who labels an item
again corrects it: per (annotator, item) the latest label counts. Importing the same file twice
adds nothing.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xsafety.annotate.sample import ANNOTATION_DIR, read_sample, sample_path
from xsafety.errors import InputError
from xsafety.report.stats import cohen_kappa
from xsafety.report.validity import Calibration, from_labelled

LABELS_FILE = "labels.jsonl"
# The four buttons of the page: refused; complied and harmless; complied and harmful; cannot tell.
HUMAN_LABELS = ("refusal", "safe", "unsafe", "unclear")


@dataclass(frozen=True)
class ImportSummary:
    """What one import stored."""

    new: int
    duplicate: int
    annotators: tuple[str, ...]
    path: Path


def labels_path(run_dir: str | Path) -> Path:
    """The run's append-only labels file."""
    return Path(run_dir) / ANNOTATION_DIR / LABELS_FILE


def _rows_of(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) of a labels JSONL (as the page downloads it) or a filled-in sample CSV."""
    if path.suffix.lower() == ".csv":
        try:
            with path.open(encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                # Rows left without a label in the spreadsheet are not labels.
                return [(i, dict(r)) for i, r in enumerate(reader, 2) if (r.get("label") or "").strip()]
        except UnicodeDecodeError:
            raise InputError("not UTF-8 text", file=path) from None
    from xsafety.taxonomy import iter_json_lines

    return list(iter_json_lines(path))


def _known_items(run_dir: Path) -> dict[str, str]:
    """Response key -> its locale, for every response the run holds."""
    from xsafety.records import Response
    from xsafety.store import Store

    return {k: r.locale for k, r in Store(run_dir).table(Response).load().items()}


def import_labels(path: str | Path, run_dir: str | Path, *, annotator: str | None = None) -> ImportSummary:
    """Validate a labels file against the run and append its labels to the run's labels file.

    Every row must name an ``item`` of the run and a ``label`` in ``HUMAN_LABELS``; the annotator
    comes from the row, else ``annotator``. A bad row stops the import (nothing is stored) with
    an InputError naming file, line and field.
    """
    path, run_dir = Path(path), Path(run_dir)
    if not path.is_file():
        raise InputError("no such file", file=path)
    if not run_dir.is_dir():
        raise InputError("run directory not found", file=run_dir)
    known = _known_items(run_dir)
    samples: dict[str, dict[str, dict[str, Any]]] = {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    new_rows: list[dict[str, Any]] = []
    for line, row in _rows_of(path):
        item = row.get("item")
        if not isinstance(item, str) or not item:
            raise InputError("missing or not a string", file=path, line=line, field="item")
        if item not in known:
            raise InputError(f"no response {item!r} in run {run_dir}", file=path, line=line, field="item")
        label = str(row.get("label") or "").strip()
        if label not in HUMAN_LABELS:
            raise InputError(f"unknown label {label!r}; expected one of {', '.join(HUMAN_LABELS)}",
                             file=path, line=line, field="label")
        who = str(row.get("annotator") or annotator or "").strip()
        if not who:
            raise InputError("no annotator id (give --annotator)", file=path, line=line, field="annotator")
        sample_id = str(row.get("sample") or "")
        drawn: dict[str, Any] = {}
        if sample_id:
            if sample_id not in samples:
                spath = sample_path(run_dir, sample_id)
                samples[sample_id] = (
                    {i["item"]: i for i in read_sample(spath)["items"]} if spath.is_file() else {}
                )
            drawn = samples[sample_id].get(item, {})
        try:
            weight = float(drawn.get("weight", row.get("weight") or 1.0))
        except (TypeError, ValueError):
            raise InputError("not a number", file=path, line=line, field="weight") from None
        if not weight > 0:
            raise InputError("must be > 0", file=path, line=line, field="weight")
        new_rows.append({
            "item": item,
            "locale": known[item],  # the response's own locale, whatever the file says
            "label": label,
            "note": str(row.get("note") or ""),
            "annotator": who,
            "time": str(row.get("time") or now),
            "sample": sample_id,
            "weight": weight,
            "source": path.name,
        })
    target = labels_path(run_dir)
    seen = {_identity(r) for r in _stored(target)}
    fresh = []
    for r in new_rows:
        if _identity(r) not in seen:
            seen.add(_identity(r))
            fresh.append(r | {"imported": now})
    if fresh:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as fh:
            for r in fresh:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return ImportSummary(len(fresh), len(new_rows) - len(fresh), tuple(sorted({r["annotator"] for r in new_rows})), target)


def _identity(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in ("annotator", "item", "label", "note", "time"))


def _stored(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line from an interrupted import: the import is simply redone
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_labels(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's current labels: per (annotator, item) the one labelled last."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in _stored(labels_path(run_dir)):
        key = (str(row.get("annotator")), str(row.get("item")))
        if key not in latest or str(row.get("time")) >= str(latest[key].get("time")):
            latest[key] = row
    return sorted(latest.values(), key=lambda r: (r["locale"], r["item"], r["annotator"]))


def agreement(run_dir: str | Path) -> list[dict[str, Any]]:
    """Per locale, items labelled by two or more annotators: raw agreement and Cohen's kappa.

    Each item contributes the labels of its first two annotators (by id), so the kappa is that of
    two labelings of the same items.
    """
    by_item: dict[str, dict[str, str]] = {}
    locale_of: dict[str, str] = {}
    for r in read_labels(run_dir):
        by_item.setdefault(r["item"], {})[r["annotator"]] = r["label"]
        locale_of[r["item"]] = r["locale"]
    pairs: dict[str, list[tuple[str, str]]] = {}
    for item, who in by_item.items():
        if len(who) >= 2:
            first, second = sorted(who)[:2]
            pairs.setdefault(locale_of[item], []).append((who[first], who[second]))
    out = []
    for loc, labs in sorted(pairs.items()):
        a, b = [x for x, _ in labs], [y for _, y in labs]
        kappa = cohen_kappa(a, b)
        out.append({
            "locale": loc,
            "n_items": len(labs),
            "agreement": sum(x == y for x, y in labs) / len(labs),
            "kappa": None if kappa != kappa else kappa,
        })
    return out


def gold_labels(run_dir: str | Path) -> list[dict[str, Any]]:
    """One gold label per item: the label its annotators agree on (items they disagree on are out)."""
    by_item: dict[str, list[dict[str, Any]]] = {}
    for r in read_labels(run_dir):
        by_item.setdefault(r["item"], []).append(r)
    gold = []
    for item, rows in sorted(by_item.items()):
        labels = {r["label"] for r in rows}
        if len(labels) == 1:
            gold.append({"item": item, "locale": rows[0]["locale"], "gold": rows[0]["label"],
                         "weight": float(rows[0].get("weight") or 1.0), "n_annotators": len(rows)})
    return gold


def run_calibration(run_dir: str | Path, predicted: Mapping[str, str], judge: str | None) -> Calibration:
    """The judge's confusion counts per locale against the run's own annotations.

    ``predicted`` maps a response key to the judge's native label (the report passes the primary
    judge's current verdicts, so a changed judge is measured, not the one the sample was drawn with).
    """
    rows = [
        {"locale": g["locale"], "gold": g["gold"], "predicted": predicted[g["item"]], "weight": g["weight"]}
        for g in gold_labels(run_dir)
        if g["item"] in predicted
    ]
    return from_labelled(rows, "run annotations", judge=judge)
