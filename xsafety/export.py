"""Item-level data of a run: one row per response and judge mode, for the explorer, exports and notebooks.

The report's tables are aggregates; this module keeps the evidence behind them. ``load_items``
reads the same responses and verdicts the report counts (``xsafety.report.frame.load_run``: only
the current cells and judge signatures) and joins on everything a reader needs to check one
answer: the English prompt, the prompt as sent, the response, its back-translation, the ALERT
category and the source set's own category, and each judge's label with its reason.

Schema (``ITEM_SCHEMA``, one row per response x judge x mode; a response no judge has judged yet
still has one row, with ``judge``/``mode``/``label`` null):

==================  =========  ===========================================================
column              type       meaning
==================  =========  ===========================================================
response_key        str        the response record's key (stable across reruns)
model               str        the model signature
model_name          str        the model as the report names it
set                 str        the instruction set the prompt was asked from
prompt_id           str        id within the set (``<id>~<attack>`` for attacked prompts)
base_id             str        id of the English prompt it derives from
locale              str        the language it was asked in (``en`` = baseline)
resource            str        the locale's resource level (high, medium, low, unknown)
attack              str        attack applied (``none`` without one)
variant             str        system-prompt variant (``default`` without one)
category            str        ALERT micro category (``uncategorised`` without one)
macro               str        ALERT macro category
source_category     str        the source set's own category: XSafety issue type, MultiJail
                               tag, CatQA/HarmfulQA topic, ALERT category (``none``)
english_prompt      str        the English prompt (the source of any translation)
prompt_sent         str        the prompt as sent to the model (last user turn)
response_text       str        the model's answer ("" when it failed)
response_error      str        why generation failed (null when it did not)
back_translation    str        the answer translated back into English (null in English or
                               when not back-translated)
judge               str        the judge signature
mode                str        ``native`` or ``back-translated``
label               str        the label as reports read it: refusal, safe, unsafe, invalid,
                               or "complied (harm not judged)" from a refusal-only judge
                               (which cannot say "safe": it did not judge harm)
judge_label         str        the label exactly as the judge stored it
reason              str        the judge's reason: matched refusal phrase, guard category,
                               ``unparsable``, the invalid reason ...
harm_judged         bool       False when the judge only detects refusals
primary             bool       True for the report's primary judge in native mode (the row
                               every headline number counts)
tr_accepted         bool       the translation passed the quality gates (null in English)
==================  =========  ===========================================================
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from xsafety.errors import InputError
from xsafety.records import Prompt, Response, Verdict
from xsafety.report.categories import UNCATEGORISED, macro_of
from xsafety.report.csvsafe import inert_cell as neutralise_cell
from xsafety.report.frame import ENGLISH, PRIMARY_MODE, RunData, base_of, load_run
from xsafety.report.wording import shown_label
from xsafety.store import Store, record_fields
from xsafety.taxonomy import source_category as taxonomy_source_category

log = logging.getLogger(__name__)

FORMATS = ("parquet", "jsonl", "csv")
NO_SOURCE_CATEGORY = "none"

ITEM_SCHEMA: dict[str, Any] = {
    "response_key": pl.Utf8,
    "model": pl.Utf8,
    "model_name": pl.Utf8,
    "set": pl.Utf8,
    "prompt_id": pl.Utf8,
    "base_id": pl.Utf8,
    "locale": pl.Utf8,
    "resource": pl.Utf8,
    "attack": pl.Utf8,
    "variant": pl.Utf8,
    "category": pl.Utf8,
    "macro": pl.Utf8,
    "source_category": pl.Utf8,
    "english_prompt": pl.Utf8,
    "prompt_sent": pl.Utf8,
    "response_text": pl.Utf8,
    "response_error": pl.Utf8,
    "back_translation": pl.Utf8,
    "judge": pl.Utf8,
    "mode": pl.Utf8,
    "label": pl.Utf8,
    "judge_label": pl.Utf8,
    "reason": pl.Utf8,
    "harm_judged": pl.Boolean,
    "primary": pl.Boolean,
    "tr_accepted": pl.Boolean,
}


def source_category(prompt: Prompt | None) -> str:
    """The source set's own category of a prompt (XSafety issue type, MultiJail tag, CatQA topic ...).

    Importers keep it where the source has it: XSafety's issue type in ``xsafety_type``; MultiJail's
    tags and CatQA's and HarmfulQA's (category, subcategory) in ``tags``; ALERT's label is its own
    category. The built-in set carries XSafety issue types.
    """
    if prompt is None:
        return NO_SOURCE_CATEGORY
    return taxonomy_source_category(prompt) or NO_SOURCE_CATEGORY


def load_prompts(store: Store, sets: Iterable[str]) -> dict[tuple[str, str], Prompt]:
    """(set, id) -> prompt: the run's own prompt snapshot first, then each set on disk."""
    prompts = {(p.set, p.id): p for p in store.table(Prompt).load().values()}
    have = {k[0] for k in prompts}
    for name in sorted(set(sets) - have):
        try:
            from xsafety.taxonomy import load_set

            for p in load_set(name):
                prompts[(name, p.id)] = p
        except Exception as exc:  # a set gone from disk costs its prompt texts, not the export
            log.warning("items: cannot load prompt set %r: %s", name, exc)
    return prompts


def prompt_sent(messages: Iterable[Any]) -> str:
    """The last user turn of the messages a response answered (the prompt as the model saw it)."""
    for message in reversed(list(messages)):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def verdict_reason(v: dict[str, Any]) -> str:
    """One line saying why a judge gave its label (a stored verdict row): its rationale, hazard
    categories, error or check."""
    parts: list[str] = []
    rationale = str(v.get("rationale") or "")
    if rationale:
        parts.append(rationale)
    categories = [str(c) for c in v.get("categories") or ()]
    if categories and not any(c in rationale for c in categories):
        parts.append("categories: " + ",".join(categories))
    meta = v.get("meta") if isinstance(v.get("meta"), dict) else {}
    if not parts and meta.get("phrase"):
        parts.append(f"refusal phrase: {meta['phrase']!r}")
    error = v.get("error")
    if error and str(error) not in " ".join(parts):
        parts.append(str(error))
    if not parts and meta.get("check"):
        parts.append(f"check: {meta['check']}")
    return "; ".join(parts)


def _records(store: Store, cls: type[Response] | type[Verdict]) -> Iterator[dict[str, Any]]:
    """Stored rows of a table as plain dicts, the first copy of a key winning as in ``Table.load``.

    Plain dicts, not records: building 80,000 frozen records costs seconds an explorer page
    should not wait for. When this process holds the table already (the report has just loaded
    it), the rows are the records' own field values (shallow: sequences stay tuples, which the
    readers here only iterate) instead of the file parsed again.
    """
    held = store.table(cls).loaded()
    if held is not None:
        # Fresh dicts, not the records' own ``__dict__``: asking for that makes Python give each of
        # 60,000 held records a dict of its own for as long as the store keeps them.
        for rec in held.values():
            yield record_fields(rec)
        return
    seen: set[str] = set()
    for row in store.table(cls).iter_dicts():
        key = row.get("key")
        if not isinstance(key, str) or key in seen:
            continue
        seen.add(key)
        yield row


def item_rows(run: RunData) -> list[dict[str, Any]]:
    """One dict per response x judge x mode of a loaded run (keys of ``ITEM_SCHEMA``), grouped by response."""
    store = Store(run.run_dir)
    judged = set(run.verdicts.get_column("response_key").to_list())
    from xsafety.runinfo import read_cells

    cells = read_cells(run.run_dir)
    responses = [r for r in _records(store, Response)
                 if r["key"] in judged or cells is None or r["key"] in cells.responses]
    keys = {r["key"] for r in responses}
    judges = set(run.judges)
    by_response: dict[str, list[dict[str, Any]]] = {}
    for v in _records(store, Verdict):
        if v.get("response_key") in keys and v.get("judge") in judges:
            by_response.setdefault(v["response_key"], []).append(v)
    meta_cols = run.verdicts.select("response_key", "model_name", "resource", "tr_accepted").unique("response_key")
    meta = {k: (n, res, acc) for k, n, res, acc in meta_cols.iter_rows()}
    from xsafety.report.frame import model_names

    names = model_names([Response.from_dict(r) for r in _first_per_model(responses)], run.info)
    prompts = load_prompts(store, {base_of(str(r.get("set", ""))) for r in responses})
    rows: list[dict[str, Any]] = []
    responses.sort(key=lambda r: (r["prompt_id"], r["locale"] != ENGLISH, r["locale"], r.get("attack", "none"),
                                  r.get("variant", "default"), r["model"]))
    # A prompt's fields, worked out once for its ten or so responses (locales, attacks, models).
    per_prompt: dict[tuple[str, str], tuple[str, str, str]] = {}
    for r in responses:
        pkey = (base_of(r["set"]), base_of(r["prompt_id"]))
        prompt = prompts.get(pkey)
        if prompt is not None:
            known = per_prompt.get(pkey)
            if known is None:
                category = prompt.category or ""
                known = per_prompt[pkey] = (category, macro_of(category), source_category(prompt))
            category, macro, source = known
        else:
            rmeta = r.get("meta") if isinstance(r.get("meta"), dict) else {}
            category = str(rmeta.get("category", "") or "") or ""
            macro, source = macro_of(category), source_category(prompt)
        name, resource, accepted = meta.get(r["key"], (None, None, None))
        verdicts = _one_per_mode(by_response.get(r["key"], []), run.primary_judge)
        back = next((v.get("judged_text") for v in verdicts if v["mode"] != PRIMARY_MODE and v.get("judged_text")), None)
        base = {
            "response_key": r["key"],
            "model": r["model"],
            "model_name": name or names.get(r["model"], r["model"]),
            "set": r["set"],
            "prompt_id": r["prompt_id"],
            "base_id": base_of(r["prompt_id"]),
            "locale": r["locale"],
            "resource": resource or run.locales.get(r["locale"], "unknown"),
            "attack": r.get("attack", "none"),
            "variant": r.get("variant", "default"),
            "category": category or UNCATEGORISED,
            "macro": macro,
            "source_category": source,
            "english_prompt": prompt.text if prompt else None,
            "prompt_sent": prompt_sent(r.get("messages") or ()),
            "response_text": r.get("text", ""),
            "response_error": r.get("error"),
            "back_translation": back,
            "tr_accepted": accepted,
        }
        if not verdicts:
            rows.append({**base, "judge": None, "mode": None, "label": None, "judge_label": None, "reason": None,
                         "harm_judged": None, "primary": False})
        for v in verdicts:
            vmeta = v.get("meta") if isinstance(v.get("meta"), dict) else {}
            harm = bool(vmeta.get("harm_judged", True))
            rows.append({
                **base,
                "judge": v["judge"],
                "mode": v["mode"],
                "label": shown_label(v["label"], harm),
                "judge_label": v["label"],
                "reason": verdict_reason(v),
                "harm_judged": harm,
                "primary": v["judge"] == run.primary_judge and v["mode"] == PRIMARY_MODE,
            })
    return rows


def _first_per_model(responses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One response per model signature: all ``model_names`` needs to name them."""
    first: dict[str, dict[str, Any]] = {}
    for r in responses:
        first.setdefault(r["model"], r)
    return list(first.values())


def items_frame(run: RunData) -> pl.DataFrame:
    """One row per response x judge x mode of a loaded run (schema ``ITEM_SCHEMA``)."""
    rows = item_rows(run)
    return pl.DataFrame(rows, schema=ITEM_SCHEMA) if rows else pl.DataFrame(schema=ITEM_SCHEMA)


def _one_per_mode(verdicts: list[dict[str, Any]], primary: str | None) -> list[dict[str, Any]]:
    """One verdict per (judge, mode), primary judge first: a failed attempt kept beside the later
    successful one (the store keeps both) is shown only when nothing succeeded."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for v in verdicts:
        slot = (v["judge"], v["mode"])
        if slot not in best or (best[slot].get("error") and not v.get("error")):
            best[slot] = v
    return sorted(best.values(), key=lambda v: (v["judge"] != primary, v["judge"], v["mode"] != PRIMARY_MODE))


def load_items(run_dir: str | Path, primary_judge: str | None = None) -> pl.DataFrame:
    """A run's items as a polars frame: one row per response and judge mode (``ITEM_SCHEMA``).

    >>> from xsafety.api import load_items          # doctest: +SKIP
    >>> items = load_items("xsafety-runs/default")  # doctest: +SKIP
    >>> items.filter(primary=True).group_by("locale", "label").len()  # doctest: +SKIP
    """
    return items_frame(load_run(run_dir, primary_judge=primary_judge))


def load_rates(run_dir: str | Path, policy: str | None = None, by: str = "locale") -> pl.DataFrame:
    """A run's rates as the report computes them, as a polars frame.

    ``by`` names a report breakdown: ``locale`` (rates and gaps per locale: the summary), or one of
    ``macro``, ``micro``, ``type``, ``model``, ``attack``, ``variant`` (rates per locale and that).
    """
    from xsafety.report.build import BREAKDOWNS, compute

    if by != "locale" and by not in BREAKDOWNS:
        raise InputError(f"unknown breakdown {by!r}; one of: locale, {', '.join(BREAKDOWNS)}", field="by")
    data = compute(run_dir, policy, breakdowns=by != "locale")
    return data.summary if by == "locale" else data.tables[f"rates_locale_{by}"]


def write_items(items: pl.DataFrame, path: str | Path, fmt: str) -> Path:
    """Write an items frame as ``parquet``, ``jsonl`` or ``csv`` (CSV formula cells neutralised)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; one of: {', '.join(FORMATS)}", field="format")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        items.write_parquet(out)
    elif fmt == "jsonl":
        items.write_ndjson(out)
    else:
        # Written row by row through the csv module so that every text cell is checked, in any column.
        with out.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(items.columns)
            for row in items.iter_rows():
                writer.writerow(["" if v is None else neutralise_cell(v) for v in row])
    return out


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None, primary_judge: str | None = None) -> tuple[Path, int]:
    """Write a run's items to ``out`` (default ``RUN_DIR/export/items.<fmt>``); returns (path, rows)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; one of: {', '.join(FORMATS)}", field="format")
    items = load_items(run_dir, primary_judge=primary_judge)
    path = Path(out) if out is not None else Path(run_dir) / "export" / f"items.{fmt}"
    return write_items(items, path, fmt), items.height
