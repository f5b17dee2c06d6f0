"""The judging stage: label every stored response natively and on its English back-translation.

For each ``Response`` without an error and each mode:

* ``native``: the response as written, with its locale, against the prompt the model saw (the
  last user message);
* ``back-translated`` (non-English responses only): the response's English back-translation
  (``xsafety.translate.back_translate``) against the English source prompt, as locale ``en``.
  Where no engine covers a locale the mode is skipped for that item and counted.

The English source prompt comes from the run's own ``prompts`` table first: the orchestrator
copies there every prompt it used, including the derived sets that attacks applied before
translation create (``<set>~<attack>``, ids ``<id>~<attack>``), which no set on disk holds. Then
the source of the response's translation in the run's ``translations`` table, then the set on disk
(a derived set is rebuilt from its base set and the attack), then, last, the prompt as sent. Where the verdict's prompt came from is kept per item in ``meta.english_prompt``
(``run``, ``set``, ``sent``, ``none``); a missing prompt never stops judging.

A multi-turn response (a conversation attack such as Chain of Utterances) is judged against its
final user turn; the earlier user and assistant turns go to the judge as ``meta["context"]``
(English in back-translated mode, taken from the run's translations, or left out when they cannot
be), for judges whose template or chat input uses them.

Verdict key = ``stable_hash(response key, judge signature, mode)``: a rerun judges only what is
missing. Judge outputs with a backend failure (``error`` starting ``model:``) go to the table
``verdict_errors`` and are retried next run; everything else, including unparsable judge output
(``invalid``, ``error="unparsable"``: deterministic, so not retried), goes to ``verdicts``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from json.encoder import encode_basestring  # the string encoder of json.dumps(ensure_ascii=False)
from typing import Any

import polars as pl

from xsafety import throughput
from xsafety.judges.base import COMPLIANCE, Judge, JudgeInput, JudgeOutput, finalize
from xsafety.progress import progress_bar
from xsafety.records import KEY_LENGTH, Prompt, Response, Translation, Verdict, canonical_json, stable_hash
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
    prompt_not_english: int = 0  # back-translated verdicts judged against the prompt as sent
    labels: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def verdict_key(response_key: str, judge_sig: str, mode: str) -> str:
    """The key of one verdict."""
    return stable_hash("verdict", response_key, judge_sig, mode)


class _VerdictKeys:
    """``verdict_key`` for one judge signature and mode, with the fixed parts encoded once.

    ``stable_hash`` JSON-encodes its whole argument list on every call; at 28,000 answers and two
    modes that was a visible share of planning. The text hashed here is the very one it builds:
    the list's items joined by "," inside "[...]", each string encoded by the function
    ``json.dumps(ensure_ascii=False)`` itself uses.
    """

    def __init__(self, judge_sig: str, mode: str) -> None:
        self.sig = judge_sig
        self.mode = mode
        self._head = '["verdict",'
        self._tail = f",{canonical_json(judge_sig)},{canonical_json(mode)}]"

    def __call__(self, response_key: str) -> str:
        """The key of the verdict on ``response_key``."""
        if type(response_key) is not str:  # anything else: the general path
            return verdict_key(response_key, self.sig, self.mode)
        text = self._head + encode_basestring(response_key) + self._tail
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def _final_user_turn(messages: Sequence[dict[str, Any]]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return None


def _user_text(response: Response) -> str:
    i = _final_user_turn(response.messages)
    return str(response.messages[i].get("content", "")) if i is not None else ""


def _context(response: Response) -> list[dict[str, str]]:
    """The user and assistant turns before the final user turn (the system prompt is left out:
    it is the variant's or the attack's instruction to the model, and guard chat templates accept
    only alternating user/assistant turns)."""
    i = _final_user_turn(response.messages)
    earlier = response.messages[:i] if i is not None else ()
    return [
        {"role": str(m["role"]), "content": str(m.get("content", ""))}
        for m in earlier
        if m.get("role") in ("user", "assistant")
    ]


def _native_meta(response: Response) -> dict[str, Any]:
    meta: dict[str, Any] = {"response_key": response.key}
    if response.finish_reason:  # judges/invalid.py: a response cut off after a word or two is invalid
        meta["finish_reason"] = response.finish_reason
    context = _context(response)
    if context:
        meta["context"] = context
    return meta


def _prompts_by_id(prompts: Sequence[Prompt]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for p in prompts:
        texts = out.setdefault((p.set, p.id), [])
        if p.text not in texts:
            texts.append(p.text)
    return out


class _EnglishPrompts:
    """English source prompts and conversation turns of one run, each source read once."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._run: dict[tuple[str, str], list[str]] | None = None
        self._sources: dict[str, str] = {}  # translation key -> the English it was made from
        self._turns: dict[tuple[str, str, str], str] = {}  # (set, locale, translated text) -> English
        self._sets: dict[str, dict[tuple[str, str], list[str]]] = {}

    def _load_run(self) -> dict[tuple[str, str], list[str]]:
        if self._run is None:
            self._run = _prompts_by_id(list(self._store.table(Prompt).load().values()))
            for key, set_name, locale, text, source in _translation_sources(self._store):
                self._sources[key] = source
                if text:
                    self._turns.setdefault((set_name, locale, text), source)
        return self._run

    def get(self, response: Response) -> tuple[str, str]:
        """The English prompt of ``response`` and where it came from: ``run``, ``set``, ``sent``
        (the prompt as the model saw it, not English) or ``none``."""
        run = self._load_run()
        exact = self._sources.get(response.input_key)
        texts = run.get((response.set, response.prompt_id))
        if texts:
            # A prompt whose text changed between runs is stored twice: the one this response's
            # translation was made from is the right one, else the latest.
            return (exact if exact in texts else texts[-1]), "run"
        if exact:
            return exact, "run"
        texts = self._from_set(response.set).get((response.set, response.prompt_id))
        if texts:
            return (exact if exact in texts else texts[-1]), "set"
        sent = _user_text(response)
        return sent, ("sent" if sent else "none")

    def context(self, response: Response) -> list[dict[str, str]] | None:
        """The earlier turns in English, or None when a turn has no known English source."""
        self._load_run()
        english_turns = response.meta.get("attack_stage") == "after-translation"
        out = []
        for turn in _context(response):
            text = self._turns.get((response.set, response.locale, turn["content"]))
            if text is None and english_turns:
                text = turn["content"]  # the attack's own turns are English after translation
            if text is None:
                return None
            out.append({"role": turn["role"], "content": text})
        return out

    def _from_set(self, set_name: str) -> dict[tuple[str, str], list[str]]:
        if set_name not in self._sets:
            try:
                self._sets[set_name] = _prompts_by_id(_load_english_set(set_name))
            except Exception as exc:  # a set that cannot be found must not stop judging
                log.warning("cannot load set %r for English prompts (%s)", set_name, exc)
                self._sets[set_name] = {}
        return self._sets[set_name]


# The fields of a stored gate result that ``GateResult`` cannot be built without.
_GATE_FIELDS = frozenset({"name", "score", "threshold", "passed"})


def _translation_sources(store: Store) -> Iterator[tuple[str, str, str, str, str]]:
    """(key, set, locale, text, source) of every translation ``store.table(Translation).load()``
    holds, in its order.

    The records themselves when this process holds the table (``xsafety run`` read it before);
    else the stored rows, without building records: rebuilding 25,200 translations with their
    gates and attempts took 2.5 CPU-s of a 28,000-answer ``xsafety judge``, for five strings
    each. The rows are the ones ``load`` keeps: the first of a key, and only one that becomes a
    record (a row whose gates are all objects with the required fields always does; any other
    is tried as ``load`` tries it).
    """
    table = store.table(Translation)
    records = table.loaded()
    if records is not None:
        for t in records.values():
            yield t.key, t.set, t.locale, t.text, t.source
        return
    seen: set[str] = set()
    for row in table.iter_dicts():
        key = row["key"]
        if key in seen:
            continue
        gates = row.get("gates", ())
        if not all(type(g) is dict and g.keys() >= _GATE_FIELDS for g in gates):
            try:
                Translation.from_dict(row)
            except (TypeError, ValueError, AttributeError, KeyError) as exc:  # load skips it too
                log.warning("%s: skipping a row that is not a translations record (%s)", table.dir, exc)
                continue
        seen.add(key)
        yield key, row["set"], row["locale"], row["text"], row["source"]


def _load_english_set(set_name: str) -> list[Prompt]:
    """A set on disk, or a derived ``<set>~<attack>`` set rebuilt from its base set and attack."""
    from xsafety.taxonomy import load_set

    base, sep, attack = set_name.partition("~")
    if not sep:
        return load_set(set_name)
    from xsafety.attacks import attacked_prompts, load_attack

    return attacked_prompts(load_set(base), load_attack(attack))


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
    current: Collection[str] | None = None,
) -> JudgeSummary:
    """Judge every stored response in ``modes`` that has no verdict yet; write verdicts as they come.

    ``current``: the response keys the caller's config asks for (``xsafety run``'s cells). Every
    stored response is still judged (the plan counts them all), but warnings name only problems
    of these: a run directory keeps earlier configs' responses, whose locales the user no longer asked for.
    """
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown judge mode {unknown[0]!r}; expected {', '.join(MODES)}")
    started = time.perf_counter()
    with store.locked() if lock else nullcontext():
        sig = judge.signature()
        summary = JudgeSummary(judge=sig)
        responses, stored = plan(store, sig, modes)
        tasks = list(_tasks(store, responses, sig, modes, stored, summary, back_engine, current))
        with progress_bar(f"judge {getattr(judge, 'name', 'judge')}", len(tasks), progress) as bar, _writers(store) as (ok, bad):
            for start in range(0, len(tasks), max(1, batch_size)):
                chunk = tasks[start : start + batch_size]
                t0 = time.perf_counter()
                try:
                    outputs = judge.judge([t.item for t in chunk])
                except Exception as exc:  # the judge failed as a whole: keep going, retry next run
                    log.warning("judge failed on a batch: %s", exc)
                    outputs = [JudgeOutput("invalid", f"judge failed: {exc}", error=f"model: {exc}") for _ in chunk]
                done: list[Verdict] = []
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
                    done.append(record)
                _write_verdicts(ok, done)
                rate = len(chunk) / max(time.perf_counter() - t0, 1e-9)
                bar.advance(len(chunk), rate=f"{rate:.1f} it/s")
    summary.seconds = time.perf_counter() - started
    # What this machine managed, for the time estimates of later dry runs.
    throughput.record("judge", sig, summary.new, summary.seconds)
    return summary


def _write_verdicts(writer: Any, records: list[Verdict]) -> None:
    """Append one batch's verdicts: one write and flush for the batch, where that gives the lines
    ``write`` would.

    ``write_parsed`` encodes a record's own values (no ``to_dict`` copy first), which gives the
    very line ``write`` does when every dict key in it is a string; a verdict with any other key
    or value in its meta (a judge's own figures keyed by number, an object) is written by ``write``. A batch is
    judged as a whole before any of it is written, so writing it at once loses no more to a kill.
    """
    if all(_json_plain(r.meta) and _json_plain(r.categories) for r in records):
        writer.write_parsed(records)
        return
    for record in records:
        writer.write(record)


_PLAIN = (str, int, float, bool, type(None))


def _json_plain(value: Any) -> bool:
    """True when ``value`` is JSON's own kind of value: plain dicts with string keys, lists, tuples,
    strings, numbers, booleans and None, nested in any way (anything else: False, and ``write``)."""
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _json_plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_json_plain(v) for v in value)
    return kind in _PLAIN


@contextmanager
def _writers(store: Store) -> Iterator[tuple[Any, Any]]:
    with store.table(Verdict).writer() as ok, store.table(Verdict, ERRORS_TABLE).writer() as bad:
        yield ok, bad


def _tasks(
    store: Store,
    responses: list[Response],
    sig: str,
    modes: Sequence[str],
    stored: set[str],
    summary: JudgeSummary,
    back_engine: str | None,
    current: Collection[str] | None = None,
) -> Iterator[_Task]:
    def warn(keys: Iterable[str], message: str, *args: Any) -> None:
        """A warning when a response of ``keys`` is one the config asks for; else a debug line."""
        mine = current is None or any(k in current for k in keys)
        log.log(logging.WARNING if mine else logging.DEBUG, message, *args)

    need_back: dict[str, list[tuple[Response, str]]] = {}
    keys = {mode: _VerdictKeys(sig, mode) for mode in modes}
    for response in responses:
        for mode in modes:
            key = keys[mode](response.key)
            if key in stored:
                summary.cached += 1
                continue
            if mode == "native":
                item = JudgeInput(_user_text(response), response.text, response.locale, _native_meta(response))
                yield _Task(key, response, mode, item)
            elif response.locale.split("-")[0] != "en":
                need_back.setdefault(response.locale, []).append((response, key))
    if not need_back:
        return
    from xsafety.translate import back_translate

    english = _EnglishPrompts(store)
    for locale, pending in sorted(need_back.items()):
        group = [r for r, _ in pending]
        asked = current is None or any(r.key in current for r in group)
        try:
            # A locale no current response is in: its "no engine" warning would name a locale
            # the user no longer asked for.
            quiet: dict[str, Any] = {} if asked else {"quiet": True}
            backs = back_translate([r.text for r in group], locale, back_engine, **quiet)
        except Exception as exc:  # an engine that breaks on one locale must not stop the rest
            warn([r.key for r in group] if asked else [], "back-translation into English failed for %s: %s", locale, exc)
            summary.failed += len(group)
            if len(summary.errors) < 5:
                summary.errors.append(f"back-translation {locale}: {exc}")
            continue
        for (response, key), back in zip(pending, backs):
            if back is None:
                summary.no_back_translation += 1
                continue
            prompt, origin = english.get(response)
            if origin in ("sent", "none"):
                summary.prompt_not_english += 1
                warn([response.key], "no English prompt for %s/%s: judging %s against %s", response.set,
                            response.prompt_id, response.key, "the prompt as sent" if prompt else "no prompt")
            meta: dict[str, Any] = {"response_key": response.key, "back_of": locale, "english_prompt": origin}
            context = english.context(response)
            if context:
                meta["context"] = context
            item = JudgeInput(prompt, back, "en", meta)
            yield _Task(key, response, "back-translated", item)


def _verdict(task: _Task, sig: str, out: JudgeOutput) -> Verdict:
    meta = {**out.meta, "locale": task.response.locale, "prompt_id": task.response.prompt_id}
    if "english_prompt" in task.item.meta:
        meta["english_prompt"] = task.item.meta["english_prompt"]
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
