"""The main job: every stage of an evaluation, incrementally, in one run directory.

``run(config)`` takes the run lock, snapshots the resolved config into ``run.json``, plans, and then
runs only what the plan says is missing:

1. translations the run needs and nobody has made (new locales, attacks applied before
   translation), written to ``<run>/translated/<set>/<locale>.jsonl``; the built-in default uses
   the committed translations and runs no translator;
2. generation: every model x locale x attack x variant item not yet answered;
3. judging: every judge, natively and on back-translations, for responses not yet judged;
4. the report, rebuilt only when a record or the policy changed.

A model or judge is loaded only when its stage has work, so a rerun with nothing new is a matter
of reading the store. One rich ``Progress`` is shared by every stage. A stage that fails on some
items records the error per item and the run carries on; ``RunResult.failures`` lists them, and a
rerun retries exactly those.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from xsafety.attacks import load_attack
from xsafety.config import RunConfig, validate_names
from xsafety.errors import XSafetyError
from xsafety.plan import (
    RUN_TRANSLATIONS,
    Plan,
    SignatureBook,
    TranslationIndex,
    config_digest,
    english_sources,
    make_plan,
    plan_summary,
    resolve_locales,
)
from xsafety.progress import make_progress
from xsafety.records import Prompt, Response, Translation, Verdict, stable_hash
from xsafety.store import Store

log = logging.getLogger(__name__)

RUN_INFO = "run.json"
# The run.json fields a report depends on (not where the config file or run directory lives).
REPORT_SETTINGS = (
    "sets", "limit", "locales", "judges", "primary_judge", "judge_modes", "attacks", "variants",
    "base_variant", "models", "judge_signatures", "decoding", "policy",
)


@dataclass
class RunResult:
    """What a run did: the plan it started from, per-stage counts, the report, and failures."""

    run_dir: Path
    plan: Plan
    dry_run: bool = False
    translated: int = 0
    generated: dict[str, Any] = field(default_factory=dict)  # model name -> GenSummary
    judged: dict[str, Any] = field(default_factory=dict)  # judge name -> JudgeSummary
    report: Path | None = None
    report_rebuilt: bool = False
    models_loaded: list[str] = field(default_factory=list)
    judges_loaded: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no item of any stage failed."""
        return not self.failures


def resolved_info(config: RunConfig, locales: list[str]) -> dict[str, Any]:
    """The config with every default and ``committed`` resolved: the ``run.json`` snapshot."""
    from xsafety.locales import get_locale

    entries = []
    for code in locales:
        loc = get_locale(code)
        entries.append({"code": code, "name": loc.name, "resource": loc.resource, "engine": config.engine_for(code) or loc.engine})
    return {
        "config_file": config.source,
        "config_digest": config_digest(config),
        "config": config.raw,
        "sets": list(config.sets),
        "limit": config.limit,
        "locales": entries,
        "resource": {e["code"]: e["resource"] for e in entries},
        "judges": list(config.judges),
        "primary_judge": config.primary_judge,
        "judge_modes": list(config.judge_modes),
        "attacks": [
            {"label": c.label, "name": c.name, "stage": c.stage, "signature": load_attack(c.name).signature()}
            for c in config.attacks
        ],
        "variants": [dataclasses.asdict(v) for v in config.variants],
        "base_variant": config.base_variant.name,
        "models": [{"name": m.name, "spec": m.spec, "options": m.options} for m in config.models],
        "decoding": dataclasses.asdict(config.decoding),
        "policy": config.policy,
    }


def write_info(run_dir: Path, info: dict[str, Any]) -> None:
    """Write ``run.json`` atomically (a reader never sees half a file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{RUN_INFO}.tmp"
    tmp.write_text(json.dumps(info, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / RUN_INFO)


def read_info(run_dir: Path) -> dict[str, Any]:
    """The ``run.json`` snapshot of a run directory (``{}`` when there is none)."""
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        from xsafety.errors import InputError

        raise InputError(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno) from None
    return data if isinstance(data, dict) else {}


def run(config: RunConfig, *, dry_run: bool = False, progress: Progress | None = None) -> RunResult:
    """Run (or with ``dry_run``, only plan) the evaluation ``config`` describes."""
    started = time.perf_counter()
    locales = resolve_locales(config)
    validate_names(config, locales)
    run_dir = config.run_dir
    store = Store(run_dir)
    if dry_run:
        # Reading only: no lock, nothing written, nothing loaded.
        plan = make_plan(config, store, locales)
        return RunResult(run_dir, plan, dry_run=True, seconds=time.perf_counter() - started)
    with store.locked():
        info = {**read_info(run_dir), **resolved_info(config, locales)}
        write_info(run_dir, info)
        plan = make_plan(config, store, locales)
        result = RunResult(run_dir, plan)
        own_progress = progress is None
        progress = progress or make_progress()
        try:
            if own_progress:
                progress.start()
            _run_stages(config, store, locales, result, progress)
        finally:
            if own_progress:
                progress.stop()
        info = {**info, **_signatures(config, store)}
        write_cells(config, store, locales)
        write_info(run_dir, info)  # the report reads this run's judge signatures from run.json
        info = _report(config, store, info, result)
        info["last_run"] = {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "plan": plan_summary(plan),
            "failures": result.failures[:200],
        }
        write_info(run_dir, info)
    result.seconds = time.perf_counter() - started
    return result


def _run_stages(config: RunConfig, store: Store, locales: list[str], result: RunResult, progress: Progress) -> None:
    plan = result.plan
    if plan.translations_todo:
        _translate(plan, store, result, progress)
        # New translations mean new generation items: plan again (cheap, nothing is loaded).
        plan = make_plan(config, store, locales)
    # The prompts and translations go into the run's store before anything reads them back
    # (judging looks up the English text of attacked prompts; reports their categories).
    _snapshot_inputs(config, store, locales)
    book = SignatureBook(store.root)
    for mp in plan.models:
        if not mp.todo:
            continue
        _generate(config, store, mp, book, result, progress)
    if result.generated:
        # Judging sees the responses generation just added.
        plan = make_plan(config, store, locales)
    for jp in plan.judges:
        if jp.todo == 0 and jp.exact:
            continue
        _judge(config, store, jp.name, jp.fingerprint, book, result, progress)


def _translate(plan: Plan, store: Store, result: RunResult, progress: Progress) -> None:
    from xsafety.translate import translate_set

    out_dir = store.root / RUN_TRANSLATIONS
    for need in plan.translations:
        try:
            engine: Any = need.engine
            if engine == "reference":
                # Human references belong to one set: the engine is built for the set at hand (an
                # attacked derived set has none, and its items are recorded as rejected).
                from xsafety.translate.engines import make_engine

                engine = make_engine("reference", set_name=need.set.split("~", 1)[0])
            made = translate_set(need.prompts, [need.locale], engine=engine, out_dir=out_dir, progress=progress)
        except XSafetyError as exc:
            result.failures.append(f"translate {need.set} -> {need.locale}: {exc}")
            continue
        except Exception as exc:  # an engine crash must not lose the other locales' work
            log.exception("translation of %s into %s failed", need.set, need.locale)
            result.failures.append(f"translate {need.set} -> {need.locale}: {type(exc).__name__}: {exc}")
            continue
        result.translated += sum(len(v) for v in made.values())


def _generate(config: RunConfig, store: Store, mp: Any, book: SignatureBook, result: RunResult, progress: Progress) -> None:
    from xsafety.generate import generate
    from xsafety.models import load_model

    name = mp.model.name
    try:
        model = load_model(mp.model.spec, config.decoding, **mp.model.options)
    except XSafetyError as exc:
        result.failures.append(f"model {name}: {exc}")
        return
    except Exception as exc:
        log.exception("loading model %s failed", name)
        result.failures.append(f"model {name}: could not load {mp.model.spec}: {type(exc).__name__}: {exc}")
        return
    result.models_loaded.append(name)
    try:
        book.put(mp.fingerprint, model.signature())
        summary = generate(store, model, mp.todo, progress=progress, lock=False)
    finally:
        model.close()
    result.generated[name] = summary
    if summary.failed:
        for line in _generation_failures(store, mp, model_sig=book.get(mp.fingerprint) or ""):
            result.failures.append(line)


def _generation_failures(store: Store, mp: Any, model_sig: str) -> list[str]:
    """One line per item whose latest attempt failed: model, locale, prompt, error."""
    from xsafety.generate import ResponseError, response_key

    ok = store.table(Response).keys()
    latest: dict[str, dict[str, Any]] = {}
    for row in store.table(ResponseError).iter_dicts():
        key = row.get("response_key", "")
        if key and (key not in latest or row.get("at", 0) >= latest[key].get("at", 0)):
            latest[key] = row
    lines = []
    for item in mp.items:
        key = response_key(model_sig, item)
        if key in latest and key not in ok:
            row = latest[key]
            lines.append(f"generate {mp.model.name} {item.locale} {item.prompt_id} [{item.attack}/{item.variant}]: {row.get('error', '')}")
    return lines


def _judge(config: RunConfig, store: Store, name: str, fingerprint: str, book: SignatureBook, result: RunResult,
           progress: Progress) -> None:
    from xsafety.judges import judge_run, load_judge

    try:
        judge = load_judge(name)
    except XSafetyError as exc:
        result.failures.append(f"judge {name}: {exc}")
        return
    except Exception as exc:
        log.exception("loading judge %s failed", name)
        result.failures.append(f"judge {name}: could not load: {type(exc).__name__}: {exc}")
        return
    result.judges_loaded.append(name)
    try:
        sig = judge.signature()
        book.put(fingerprint, sig)
        summary = judge_run(store, judge, modes=config.judge_modes, progress=progress, lock=False)
    finally:
        judge.close()
    result.judged[name] = summary
    _learn_missing_back_translations(config, store, sig, fingerprint, book)
    if summary.failed:
        from xsafety.judges.stage import ERRORS_TABLE

        done = store.table(Verdict).keys()
        failed = [v for v in store.table(Verdict, ERRORS_TABLE).load().values() if v.judge == sig]
        for v in {v.key: v for v in failed if v.key not in done}.values():
            result.failures.append(f"judge {name} {v.mode} response {v.response_key}: {v.error}")


def _learn_missing_back_translations(config: RunConfig, store: Store, sig: str, fingerprint: str,
                                     book: SignatureBook) -> None:
    """Remember the locales that got no back-translated verdict at all: no engine covers them, and
    the plan must not count their back-translated verdicts as work left (or every rerun would load
    the judge again)."""
    if "back-translated" not in config.judge_modes:
        return
    from xsafety.plan import no_back_key

    locales = {r.get("locale", "en") for r in store.table(Response).iter_dicts()}
    have = {r.get("response_key") for r in store.table(Verdict).iter_dicts()
            if r.get("judge") == sig and r.get("mode") == "back-translated"}
    with_back: set[str] = set()
    for r in store.table(Response).iter_dicts():
        if r.get("key") in have:
            with_back.add(r.get("locale", "en"))
    for locale in sorted(locales - with_back):
        if locale.split("-")[0] != "en":
            book.put(no_back_key(fingerprint, locale), "no engine translates this locale to English")


def _signatures(config: RunConfig, store: Store) -> dict[str, Any]:
    """The model and judge signatures this config's cells carry, for ``run.json``: a store keeps
    every record it ever got, and these say which of them the current config asked for."""
    from xsafety.plan import judge_fingerprint, model_fingerprint

    book = SignatureBook(store.root)
    models = [
        {"name": m.name, "spec": m.spec, "options": m.options, "signature": book.get(model_fingerprint(m, config))}
        for m in config.models
    ]
    judges = {name: book.get(judge_fingerprint(name)) for name in config.judges}
    return {"models": models, "judge_signatures": judges}


CELLS_FILE = "cells.json"


def write_cells(config: RunConfig, store: Store, locales: list[str]) -> Path:
    """Write ``cells.json``: the response keys the current config asks for.

    A run directory keeps every record it ever got, so after a config change (another decoding,
    a smaller ``limit``, a model removed) it also holds responses the config no longer asks for.
    This file lets a reader (the report) keep to the current cells.
    """
    from xsafety.generate import response_key

    plan = make_plan(config, store, locales)
    keys = sorted(response_key(mp.signature, i) for mp in plan.models if mp.signature for i in mp.items)
    path = store.root / CELLS_FILE
    tmp = store.root / f".{CELLS_FILE}.tmp"
    tmp.write_text(json.dumps({"responses": keys}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _snapshot_inputs(config: RunConfig, store: Store, locales: list[str]) -> None:
    """Copy the prompts and translations the run used into its store, so the run directory alone
    says what was asked (reports read them from there first)."""
    from xsafety.plan import load_prompts

    prompts = load_prompts(config)
    sources = english_sources(config, prompts)
    table_p = store.table(Prompt)
    have_p = table_p.keys()
    new_p = [p for items in sources.values() for p in items if _key(p) not in have_p]
    if new_p:
        table_p.append(_ForStore(p) for p in new_p)  # type: ignore[misc]
    index = TranslationIndex(store.root)
    table_t = store.table(Translation)
    have_t = table_t.keys()
    new_t = []
    for locale in locales[1:]:
        for set_name, items in sources.items():
            found = index.get(set_name, locale)
            new_t += [found[p.id] for p in items if p.id in found and found[p.id].key not in have_t]
    if new_t:
        table_t.append(new_t)


def _key(prompt: Prompt) -> str:
    return prompt.key


class _ForStore:
    """A Prompt with ``key`` as a field in its JSON (the store de-duplicates by that key)."""

    def __init__(self, prompt: Prompt) -> None:
        self.prompt = prompt
        self.key = prompt.key

    def to_dict(self) -> dict[str, Any]:
        return {**self.prompt.to_dict(), "key": self.key}


def store_stamp(store: Store, extra: Any) -> str:
    """A hash of every shard's name and size: changes whenever any record is added."""
    parts = []
    for sub in sorted(store.root.iterdir()) if store.root.is_dir() else []:
        if sub.is_dir() and sub.name not in ("report", RUN_TRANSLATIONS):
            parts += [(f.name, f.stat().st_size) for f in sorted(sub.glob("*.jsonl"))]
    return stable_hash("store", parts, extra)


def _report(config: RunConfig, store: Store, info: dict[str, Any], result: RunResult) -> dict[str, Any]:
    from xsafety.report import REPORT_FORMAT, build_report

    report_dir = store.root / "report"
    # The resolved settings cover config edits that add no record (a locale or attack dropped);
    # where the config file or run directory lives does not change the report. REPORT_FORMAT covers
    # a newer xsafety writing a different report.
    settings = {k: info.get(k) for k in REPORT_SETTINGS}
    stamp = store_stamp(store, [settings, REPORT_FORMAT])
    if info.get("report_stamp") == stamp and report_dir.is_dir():
        result.report = report_dir
        return info
    if not store.table(Response).keys():
        return info
    try:
        result.report = build_report(store.root, policy=config.policy)
    except XSafetyError as exc:
        result.failures.append(f"report: {exc}")
        return info
    result.report_rebuilt = True
    try:
        from xsafety.variants import write_variant_effects

        write_variant_effects(store.root, result.report, base=config.base_variant.name, policy=config.policy)
    except XSafetyError as exc:
        result.failures.append(f"report (variants): {exc}")
    return {**info, "report_stamp": stamp}


def failure_counts(result: RunResult) -> dict[str, int]:
    """Failures per stage (the word each failure line starts with)."""
    counts: dict[str, int] = defaultdict(int)
    for line in result.failures:
        counts[line.split(" ", 1)[0].rstrip(":")] += 1
    return dict(counts)
