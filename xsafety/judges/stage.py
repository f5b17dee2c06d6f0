"""The judging stage: label every stored response natively and on its English back-translation.

For each ``Response`` without an error and each mode:

* ``native``: the response as written, with its locale, against the prompt the model saw (the
  last user message);
* ``back-translated`` (non-English responses only): the response's English back-translation
  (``xsafety.translate.back_translate``) against the English source prompt, as locale ``en``.
  Where no engine covers a locale the mode is skipped for that item and counted.

Verdict key = ``stable_hash(response key, judge signature, mode)``: a rerun judges only what is
missing. Judge outputs with a backend failure (``error`` starting ``model:``) go to the table
``verdict_errors`` and are retried next run; everything else, including unparsable judge output
(``invalid``, ``error="unparsable"``: deterministic, so not retried), goes to ``verdicts``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from xsafety.judges.base import COMPLIANCE, Judge, JudgeInput, JudgeOutput, finalize
from xsafety.progress import progress_bar
from xsafety.records import Prompt, Response, Verdict, stable_hash
from xsafety.store import Store

log = logging.getLogger(__name__)

MODES = ("native", "back-translated")
ERRORS_TABLE = "verdict_errors"
BATCH = 64


@dataclass
class JudgeSummary:
    """What a judging run did: new, cached, failed (retried next run) and skipped counts."""

    judge: str = ""
    new: int = 0
    cached: int = 0
    failed: int = 0
    unparsable: int = 0
    no_back_translation: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def verdict_key(response_key: str, judge_sig: str, mode: str) -> str:
    """The key of one verdict."""
    return stable_hash("verdict", response_key, judge_sig, mode)


def _user_text(response: Response) -> str:
    for message in reversed(response.messages):
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


class _EnglishPrompts:
    """English source prompts by (set, prompt id), loading each set once."""

    def __init__(self) -> None:
        self._sets: dict[str, dict[str, Prompt]] = {}

    def get(self, set_name: str, prompt_id: str) -> str | None:
        if set_name not in self._sets:
            try:
                from xsafety.taxonomy import load_set

                self._sets[set_name] = {p.id: p for p in load_set(set_name)}
            except Exception as exc:  # a set that cannot be found must not stop judging
                log.warning("cannot load set %r for English prompts (%s): using the prompt sent", set_name, exc)
                self._sets[set_name] = {}
        prompt = self._sets[set_name].get(prompt_id)
        return prompt.text if prompt else None


@dataclass(frozen=True)
class _Task:
    key: str
    response: Response
    mode: str
    item: JudgeInput


def plan(store: Store, judge_sig: str, modes: Sequence[str]) -> tuple[list[Response], set[str]]:
    """Responses to judge (those without errors) and the verdict keys already stored."""
    responses = [r for r in store.table(Response).load().values() if not r.error]
    return responses, store.table(Verdict).keys()


def judge_run(
    store: Store,
    judge: Judge,
    *,
    modes: Sequence[str] = MODES,
    progress: Any = None,
    lock: bool = True,
    back_engine: str | None = None,
    batch_size: int = BATCH,
) -> JudgeSummary:
    """Judge every stored response in ``modes`` that has no verdict yet; write verdicts as they come."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown judge mode {unknown[0]!r}; expected {', '.join(MODES)}")
    started = time.perf_counter()
    with store.locked() if lock else nullcontext():
        sig = judge.signature()
        summary = JudgeSummary(judge=sig)
        responses, stored = plan(store, sig, modes)
        tasks = list(_tasks(responses, sig, modes, stored, summary, back_engine))
        with progress_bar(f"judge {getattr(judge, 'name', 'judge')}", len(tasks), progress) as bar, _writers(store) as (ok, bad):
            for start in range(0, len(tasks), max(1, batch_size)):
                chunk = tasks[start : start + batch_size]
                t0 = time.perf_counter()
                try:
                    outputs = judge.judge([t.item for t in chunk])
                except Exception as exc:  # the judge failed as a whole: keep going, retry next run
                    log.warning("judge failed on a batch: %s", exc)
                    outputs = [JudgeOutput("invalid", f"judge failed: {exc}", error=f"model: {exc}") for _ in chunk]
                for task, out in zip(chunk, outputs):
                    out = finalize(out) if out.label == COMPLIANCE else out
                    record = _verdict(task, sig, out)
                    if out.error and out.error.startswith("model:"):
                        summary.failed += 1
                        if len(summary.errors) < 5:
                            summary.errors.append(out.error)
                        bad.write(_error_copy(record))
                        continue
                    if out.error:
                        summary.unparsable += 1
                    summary.new += 1
                    summary.labels[out.label] = summary.labels.get(out.label, 0) + 1
                    ok.write(record)
                rate = len(chunk) / max(time.perf_counter() - t0, 1e-9)
                bar.advance(len(chunk), rate=f"{rate:.1f} it/s")
    summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def _writers(store: Store) -> Iterator[tuple[Any, Any]]:
    with store.table(Verdict).writer() as ok, store.table(Verdict, ERRORS_TABLE).writer() as bad:
        yield ok, bad


def _tasks(
    responses: list[Response],
    sig: str,
    modes: Sequence[str],
    stored: set[str],
    summary: JudgeSummary,
    back_engine: str | None,
) -> Iterator[_Task]:
    english = _EnglishPrompts()
    need_back: dict[str, list[Response]] = {}
    for response in responses:
        for mode in modes:
            key = verdict_key(response.key, sig, mode)
            if key in stored:
                summary.cached += 1
                continue
            if mode == "native":
                item = JudgeInput(_user_text(response), response.text, response.locale, {"response_key": response.key})
                yield _Task(key, response, mode, item)
            elif response.locale.split("-")[0] != "en":
                need_back.setdefault(response.locale, []).append(response)
    if not need_back:
        return
    from xsafety.translate import back_translate

    for locale, group in sorted(need_back.items()):
        backs = back_translate([r.text for r in group], locale, back_engine)
        for response, back in zip(group, backs):
            if back is None:
                summary.no_back_translation += 1
                continue
            prompt = english.get(response.set, response.prompt_id) or _user_text(response)
            item = JudgeInput(prompt, back, "en", {"response_key": response.key, "back_of": locale})
            yield _Task(verdict_key(response.key, sig, "back-translated"), response, "back-translated", item)


def _verdict(task: _Task, sig: str, out: JudgeOutput) -> Verdict:
    meta = {**out.meta, "locale": task.response.locale, "prompt_id": task.response.prompt_id}
    return Verdict(
        key=task.key,
        response_key=task.response.key,
        judge=sig,
        mode=task.mode,
        label=out.label,
        rationale=out.rationale,
        raw=out.raw,
        categories=tuple(out.categories),
        judged_text=task.item.response if task.mode == "back-translated" else "",
        error=out.error,
        meta=meta,
    )


def _error_copy(record: Verdict) -> Verdict:
    # Failures get a key of their own so that the one successful verdict later is never shadowed.
    unique = stable_hash("verdict-error", record.key, time.time_ns())
    return Verdict(**{**record.__dict__, "key": unique, "meta": {**record.meta, "wanted_key": record.key}})


def agreement(store: Store, judge_sig: str) -> pl.DataFrame:
    """Per locale: items with both modes, share where native and back-translated labels agree, Cohen's kappa."""
    verdicts = [v for v in store.table(Verdict).load().values() if v.judge == judge_sig]
    by_response: dict[str, dict[str, Verdict]] = {}
    for v in verdicts:
        by_response.setdefault(v.response_key, {})[v.mode] = v
    pairs: dict[str, list[tuple[str, str]]] = {}
    for modes in by_response.values():
        if "native" in modes and "back-translated" in modes:
            locale = str(modes["native"].meta.get("locale", ""))
            pairs.setdefault(locale, []).append((modes["native"].label, modes["back-translated"].label))
    rows = []
    for locale, items in sorted(pairs.items()):
        agree = sum(a == b for a, b in items) / len(items)
        rows.append({"locale": locale, "items": len(items), "agreement": agree, "kappa": cohen_kappa(items)})
    schema = {"locale": pl.Utf8, "items": pl.Int64, "agreement": pl.Float64, "kappa": pl.Float64}
    return pl.DataFrame(rows, schema=schema)


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two label sequences; None when undefined (no pairs, or chance agreement is 1)."""
    n = len(pairs)
    if n == 0:
        return None
    observed = sum(a == b for a, b in pairs) / n
    labels = {a for a, _ in pairs} | {b for _, b in pairs}
    expected = sum(
        (sum(a == lab for a, _ in pairs) / n) * (sum(b == lab for _, b in pairs) / n) for lab in labels
    )
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)
