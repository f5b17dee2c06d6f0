"""A seeded sample of a run's answers per locale, stratified by the judge's label and the category.

Stratifying by the judge's label makes sure the judge's rare calls (a handful of refusals among
hundreds of compliances) are seen by a human at all; stratifying by category spreads the sample
over kinds of harm. Within a locale the sample is split evenly over the judge's labels (what a
label cannot fill goes to the others), and within a label round-robin over its categories.

Because the judge's labels are not sampled in proportion, every item carries ``weight`` = (items
with its judge label) / (items sampled with it): the inverse of its chance of being drawn (the
categories only spread the sample; a small sample cannot reach them all). Validity figures
weight the labels by it (``xsafety.report.validity``), so over-sampling a label does not bias the
judge's sensitivity and specificity.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xsafety.errors import InputError
from xsafety.records import Prompt, Response, Translation, Verdict, stable_hash
from xsafety.report.csvsafe import inert_cell  # model output can start with "=HYPERLINK(..."
from xsafety.store import Store

ANNOTATION_DIR = "annotations"
SAMPLES_DIR = "samples"
CSV_COLUMNS = (
    "item", "locale", "category", "judge_label", "prompt_sent", "english_prompt", "response",
    "response_back_translation", "weight", "label", "note",
)


@dataclass(frozen=True)
class SampleItem:
    """One answer to label: what was asked, what came back, and what the judge said."""

    item: str  # the response key
    locale: str
    set: str
    prompt_id: str
    category: str
    judge_label: str
    prompt_sent: str
    english_prompt: str
    response: str
    response_back_translation: str
    weight: float


@dataclass(frozen=True)
class Sample:
    """A drawn sample: its id, the judge whose labels it was stratified on, and the items."""

    sample_id: str
    run_dir: str
    judge: str | None
    seed: int
    per_locale: int
    created: str
    items: tuple[SampleItem, ...]

    def to_json(self) -> dict[str, Any]:
        """The sample file stored in the run (``annotations/samples/<id>.json``)."""
        return {**{k: v for k, v in asdict(self).items() if k != "items"}, "items": [asdict(i) for i in self.items]}


def _sent_prompt(response: Response, translation: Translation | None, english: str) -> str:
    """The user turn the model saw: the last user message, else the translation, else English."""
    for msg in reversed(response.messages or ()):
        if isinstance(msg, dict) and msg.get("role") == "user" and isinstance(msg.get("content"), str):
            return msg["content"]
    if translation is not None:
        return translation.text
    return english


def _allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Split ``total`` evenly over groups, moving what a small group cannot take to the others."""
    quota = {g: 0 for g in sizes}
    left = min(total, sum(sizes.values()))
    while left > 0:
        open_groups = [g for g in sorted(sizes) if quota[g] < sizes[g]]
        share = max(1, left // len(open_groups))
        for g in open_groups:
            take = min(share, sizes[g] - quota[g], left)
            quota[g] += take
            left -= take
            if left == 0:
                break
    return quota


def _stratified(rows: list[dict[str, Any]], n: int, rng: random.Random) -> list[tuple[dict[str, Any], float]]:
    """Pick ``n`` rows split evenly over judge labels, round-robin over categories; with weights."""
    by_label: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        by_label.setdefault(r["label"], {}).setdefault(r["category"], []).append(r)
    quota = _allocate({lab: sum(len(v) for v in cats.values()) for lab, cats in by_label.items()}, n)
    picked: list[tuple[dict[str, Any], float]] = []
    for label in sorted(by_label):
        cats = by_label[label]
        order = sorted(cats)
        rng.shuffle(order)
        pools = {c: sorted(cats[c], key=lambda r: r["response_key"]) for c in order}
        for pool in pools.values():
            rng.shuffle(pool)
        taken: dict[str, int] = {c: 0 for c in order}
        need = quota[label]
        while need > 0:
            progressed = False
            for c in order:
                if need and taken[c] < len(pools[c]):
                    taken[c] += 1
                    need -= 1
                    progressed = True
            if not progressed:
                break
        # Weighted by label (the stratum that is over-sampled on purpose): categories only spread
        # the sample, and one a small sample never reaches could not be weighted back in anyway.
        population, drawn = sum(len(p) for p in pools.values()), sum(taken.values())
        for c in order:
            for r in pools[c][: taken[c]]:
                picked.append((r, population / drawn))
    return picked


def draw_sample(
    run_dir: str | Path, per_locale: int, *, seed: int = 0, locales: Sequence[str] | None = None
) -> Sample:
    """Draw up to ``per_locale`` answers per locale from the run's current, judged responses."""
    if per_locale < 1:
        raise InputError("must be at least 1", field="per_locale")
    from xsafety.report.frame import BACK_MODE, PRIMARY_MODE, base_of, load_run

    run = load_run(run_dir)
    df = run.verdicts
    if run.primary_judge is None or df.is_empty():
        raise InputError("the run has no judged responses to annotate", file=run_dir)
    rows = [
        r for r in df.to_dicts()
        if r["judge"] == run.primary_judge and r["mode"] == PRIMARY_MODE and not r["response_error"]
    ]
    wanted = list(locales) if locales else sorted({r["locale"] for r in rows})
    unknown = [loc for loc in wanted if loc not in {r["locale"] for r in rows}]
    if unknown:
        raise InputError(f"no judged responses in locale {unknown[0]!r}", field="locales")
    store = Store(Path(run_dir))
    responses = store.table(Response).load()
    prompts = {(p.set, p.id): p for p in store.table(Prompt).load().values()}
    translations = {(t.set, t.locale, t.prompt_id): t for t in store.table(Translation).load().values()}
    backs = {
        v.response_key: v.judged_text
        for v in store.table(Verdict).load().values()
        if v.judge == run.primary_judge and v.mode == BACK_MODE and v.judged_text
    }
    items: list[SampleItem] = []
    for loc in wanted:
        rng = random.Random(f"{seed}:{loc}")
        mine = [r for r in rows if r["locale"] == loc]
        for r, weight in _stratified(mine, per_locale, rng):
            resp = responses[r["response_key"]]
            prompt: Prompt | None = prompts.get((base_of(r["set"]), base_of(r["prompt_id"])))
            english = prompt.text if prompt else ""
            tr = translations.get((r["set"], loc, r["prompt_id"]))
            items.append(SampleItem(
                item=r["response_key"], locale=loc, set=r["set"], prompt_id=r["prompt_id"], category=r["category"],
                judge_label=r["label"], prompt_sent=_sent_prompt(resp, tr, english), english_prompt=english,
                response=resp.text, response_back_translation=backs.get(r["response_key"], ""), weight=weight,
            ))
    sample_id = stable_hash("sample", run.primary_judge, seed, per_locale, sorted(i.item for i in items), length=12)
    return Sample(
        sample_id=sample_id, run_dir=str(Path(run_dir)), judge=run.primary_judge, seed=seed, per_locale=per_locale,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), items=tuple(items),
    )


def write_csv(sample: Sample, path: Path) -> Path:
    """The sample as CSV for spreadsheets (empty ``label`` and ``note`` columns to fill in)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for i in sample.items:
            d = asdict(i)
            writer.writerow([inert_cell(d[c]) if c in d else "" for c in CSV_COLUMNS[:-2]] + ["", ""])
    return path


def sample_path(run_dir: str | Path, sample_id: str) -> Path:
    """Where a run keeps the sample file of ``sample_id``."""
    return Path(run_dir) / ANNOTATION_DIR / SAMPLES_DIR / f"{sample_id}.json"


def export_sample(
    run_dir: str | Path,
    per_locale: int,
    *,
    seed: int = 0,
    locales: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
) -> tuple[Sample, Path, Path]:
    """Draw a sample and write the annotation page and CSV; returns (sample, html path, csv path).

    The sample file is kept in the run (``annotations/samples/<id>.json``) so that an import
    can check item ids and take each item's weight from what was drawn, not from the browser.
    """
    from xsafety.annotate.page import render_page

    sample = draw_sample(run_dir, per_locale, seed=seed, locales=locales)
    keep = sample_path(run_dir, sample.sample_id)
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.write_text(json.dumps(sample.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / ANNOTATION_DIR
    out.mkdir(parents=True, exist_ok=True)
    page = out / f"annotate-{sample.sample_id}.html"
    page.write_text(render_page(sample), encoding="utf-8")
    table = write_csv(sample, out / f"annotate-{sample.sample_id}.csv")
    return sample, page, table


def read_sample(path: Path) -> dict[str, Any]:
    """A stored sample file (as written by ``export_sample``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read sample file: {exc}", file=path) from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise InputError("not a sample file", file=path, field="items")
    return data
