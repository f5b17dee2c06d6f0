"""The main job: every stage of an evaluation, incrementally, in one run directory.

``run(config)`` resolves the config once (``plan.resolve``), takes the run lock, records the
resolved config in ``run.json`` (``xsafety.runinfo``), counts what is stored (``plan.make_plan``),
and then runs only what the plan says is missing; every stage receives its items, not the config:

1. translations the run needs and nobody has made (new locales, attacks applied before
   translation), written to ``<run>/translated/<set>/<locale>.jsonl``; the built-in default uses
   the committed translations and runs no translator;
2. generation: every model x locale x attack x variant item not yet answered;
3. judging: every judge, natively and on back-translations, for responses not yet judged;
4. ``cells.json``: the response keys the config asks for (the report reads only those);
5. the report, rebuilt unless its folder holds this run's stamp (same records, same settings).

A model or judge is loaded only when its stage has work, so a rerun with nothing new is a matter
of reading the store. One rich ``Progress`` is shared by every stage. A stage that fails on some
items records the error per item and the run carries on; ``RunResult.failures`` lists them, and a
rerun retries exactly those.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import Progress

from xsafety.config import RunConfig
from xsafety.errors import XSafetyError
from xsafety.generate import ResponseError, response_key
from xsafety.plan import (
    JudgePlan,
    ModelPlan,
    Plan,
    TranslationIndex,
    TranslationNeed,
    Work,
    config_digest,
    make_plan,
    plan_summary,
    resolve,
    resolve_locales,
    snapshot_inputs,
    validate,
)
from xsafety.progress import make_progress
from xsafety.records import Response, Verdict
from xsafety.runinfo import (
    REPORT_DIR,
    RUN_TRANSLATIONS,
    AttackEntry,
    Cells,
    LocaleEntry,
    ModelEntry,
    RunInfo,
    SignatureBook,
    VariantEntry,
    check_store_format,
    no_back_key,
    read_info,
    store_stamp,
    write_cells,
    write_info,
)
from xsafety.store import Store

log = logging.getLogger(__name__)


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
    report_data: Any = None  # the computed report (ReportData) when this run rebuilt it
    models_loaded: list[str] = field(default_factory=list)
    judges_loaded: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no item of any stage failed."""
        return not self.failures


def resolved_info(work: Work, book: SignatureBook, previous: RunInfo | None = None) -> RunInfo:
    """The work as ``run.json`` records it (every default and ``committed`` resolved), keeping
    what ``previous`` recorded that the config does not say (the last run, judge signatures)."""
    from xsafety.locales import get_locale

    config = work.config
    entries = []
    for code in work.locales:
        loc = get_locale(code)
        entries.append(LocaleEntry(code, loc.name, loc.resource, config.engine_for(code) or loc.engine))
    return dataclasses.replace(
        previous or RunInfo(),
        config_file=config.source,
        config_digest=config_digest(config),
        config=config.raw,
        sets=tuple(config.sets),
        limit=config.limit,
        locales=tuple(entries),
        resource_map={},
        judges=tuple(config.judges),
        primary_judge=config.primary_judge,
        judge_modes=tuple(config.judge_modes),
        attacks=tuple(
            AttackEntry(c.label, c.name, c.stage, work.attacks[c.name].signature()) for c in config.attacks
        ),
        variants=tuple(VariantEntry(v.name, v.system, v.base) for v in config.variants),
        base_variant=config.base_variant.name,
        models=_model_entries(work, book),
        decoding=dataclasses.asdict(config.decoding),
        policy=config.policy,
    )


def _model_entries(work: Work, book: SignatureBook) -> tuple[ModelEntry, ...]:
    return tuple(
        ModelEntry(m.name, m.spec, m.options, book.get(fp))
        for m, fp in zip(work.config.models, work.model_fingerprints)
    )


def run(config: RunConfig, *, dry_run: bool = False, progress: Progress | None = None) -> RunResult:
    """Run (or with ``dry_run``, only plan) the evaluation ``config`` describes."""
    started = time.perf_counter()
    locales = resolve_locales(config)
    validate(config, locales)
    work = resolve(config, locales)
    run_dir = config.run_dir
    store = Store(run_dir)
    book = SignatureBook(run_dir)
    # Records keyed in an older format would all look missing: refuse rather than recompute them.
    check_store_format(run_dir, stamp=not dry_run)
    if dry_run:
        # Reading only: no lock, nothing written, nothing loaded.
        plan = make_plan(work, store, book)
        return RunResult(run_dir, plan, dry_run=True, seconds=time.perf_counter() - started)
    with store.locked():
        info = resolved_info(work, book, read_info(run_dir))
        write_info(run_dir, info)
        plan = make_plan(work, store, book)
        result = RunResult(run_dir, plan)
        own_progress = progress is None
        progress = progress or make_progress()
        try:
            if own_progress:
                progress.start()
            plan = _run_stages(plan, store, book, result, progress)
        finally:
            if own_progress:
                progress.stop()
        info = dataclasses.replace(
            info,
            models=_model_entries(work, book),
            judge_signatures={name: book.get(fp) for name, fp in zip(config.judges, work.judge_fingerprints)},
        )
        write_cells(run_dir, cells_of(plan, book))
        write_info(run_dir, info)  # the report reads this run's judge signatures from run.json
        _report(config, store, info, result)
        info = dataclasses.replace(info, last_run={
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "plan": plan_summary(result.plan),
            "failures": result.failures[:200],
        })
        write_info(run_dir, info)
    result.seconds = time.perf_counter() - started
    return result


def cells_of(plan: Plan, book: SignatureBook) -> Cells:
    """The response keys the plan's items have under every model signature known.

    A run directory keeps every record it ever got, so after a config change (another decoding,
    a smaller ``limit``, a model removed) it also holds responses the config no longer asks for.
    ``cells.json`` lets a reader (the report) keep to the current cells.
    """
    sets: dict[str, str] = {}
    for mp in plan.models:
        sig = book.get(mp.fingerprint)
        if sig:
            sets.update((response_key(sig, i), i.set) for i in mp.items)
    return Cells(frozenset(sets), sets)


def _run_stages(plan: Plan, store: Store, book: SignatureBook, result: RunResult, progress: Progress) -> Plan:
    """Run every stage with work to do; returns the plan the generation stage worked from."""
    index = TranslationIndex(store.root)
    if plan.translations_todo:
        _translate(plan.translations, store, result, progress)
        # New translations mean new generation items: count again (cheap, nothing is loaded).
        index = TranslationIndex(store.root)
        plan = make_plan(plan.work, store, book, index)
    # The prompts and translations go into the run's store before anything reads them back
    # (judging looks up the English text of attacked prompts; reports their categories).
    snapshot_inputs(plan.work, store, index)
    for mp in plan.models:
        if mp.todo:
            _generate(store, mp, book, result, progress)
    # New responses need verdicts from every judge; without them, the plan's count says.
    generated = any(s.new for s in result.generated.values())
    # The responses this config asks for (model signatures are known once generation ran): the
    # judging stage judges every stored response, but warns and fails only about these.
    current = cells_of(plan, book).responses
    for jp in plan.judges:
        if jp.todo == 0 and jp.exact and not generated:
            continue
        _judge(store, jp, book, result, progress, current)
    return plan


def _translate(needs: list[TranslationNeed], store: Store, result: RunResult, progress: Progress) -> None:
    from xsafety.translate import translate_set

    out_dir = store.root / RUN_TRANSLATIONS
    for need in needs:
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


def _generate(store: Store, mp: ModelPlan, book: SignatureBook, result: RunResult, progress: Progress) -> None:
    from xsafety.generate import generate
    from xsafety.models import load_model

    name = mp.model.name
    try:
        model = load_model(mp.model.spec, mp.decoding, **mp.model.options)
    except XSafetyError as exc:
        result.failures.append(f"model {name}: {exc}")
        return
    except Exception as exc:
        log.exception("loading model %s failed", name)
        result.failures.append(f"model {name}: could not load {mp.model.spec}: {type(exc).__name__}: {exc}")
        return
    result.models_loaded.append(name)
    try:
        sig = model.signature()
        book.put(mp.fingerprint, sig)
        summary = generate(store, model, mp.todo, progress=progress, lock=False)
    finally:
        model.close()
    result.generated[name] = summary
    if summary.failed:
        result.failures += generation_failures(store, name, mp.items, sig)


def generation_failures(store: Store, model_name: str, items: list[Any], model_sig: str) -> list[str]:
    """One line per item whose latest attempt failed: model, locale, prompt, error."""
    ok = store.table(Response).keys()
    latest: dict[str, dict[str, Any]] = {}
    for row in store.table(ResponseError).iter_dicts():
        key = row.get("response_key", "")
        if key and key not in ok and (key not in latest or row.get("at", 0) >= latest[key].get("at", 0)):
            latest[key] = row
    lines = []
    for item in items:
        row = latest.get(response_key(model_sig, item))
        if row is not None:
            lines.append(f"generate {model_name} {item.locale} {item.prompt_id} [{item.attack}/{item.variant}]: "
                         f"{row.get('error', '')}")
    return lines


def _judge(store: Store, jp: JudgePlan, book: SignatureBook, result: RunResult, progress: Progress,
           current: frozenset[str] | None = None) -> None:
    from xsafety.judges import judge_run, load_judge

    name = jp.name
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
        book.put(jp.fingerprint, sig)
        summary = judge_run(store, judge, modes=jp.modes, progress=progress, lock=False, current=current)
    finally:
        judge.close()
    result.judged[name] = summary
    _learn_missing_back_translations(jp, store, sig, book)
    if summary.failed:
        from xsafety.judges.stage import ERRORS_TABLE

        done = store.table(Verdict).keys()
        failed = [v for v in store.table(Verdict, ERRORS_TABLE).load().values()
                  if v.judge == sig and (current is None or v.response_key in current)]
        for v in {v.key: v for v in failed if v.key not in done}.values():
            result.failures.append(f"judge {name} {v.mode} response {v.response_key}: {v.error}")


def _learn_missing_back_translations(jp: JudgePlan, store: Store, sig: str, book: SignatureBook) -> None:
    """Remember the locales that got no back-translated verdict at all: no engine covers them, and
    the plan must not count their back-translated verdicts as work left (or every rerun would load
    the judge again)."""
    if "back-translated" not in jp.modes:
        return
    # The responses as the judge stage loaded them (this process's cached table: not parsed
    # again); the verdicts the stage has just appended are read once.
    responses = store.table(Response).load().values()
    locales = {r.locale for r in responses}
    have = {r.get("response_key") for r in store.table(Verdict).iter_dicts()
            if r.get("judge") == sig and r.get("mode") == "back-translated"}
    with_back = {r.locale for r in responses if r.key in have}
    for locale in sorted(locales - with_back):
        if locale.split("-")[0] != "en":
            book.put(no_back_key(jp.fingerprint, locale), "no engine translates this locale to English")


def _report(config: RunConfig, store: Store, info: RunInfo, result: RunResult) -> None:
    """Rebuild the report unless the folder holds this run's stamp (same records, same settings).

    The stamp lives in the report folder itself, so a report written in between by ``xsafety
    report`` (another policy or judge; it writes no stamp) is never taken for the run's own.
    """
    from xsafety.report import REPORT_FORMAT, compute, write_report
    from xsafety.report.folder import read_stamp
    from xsafety.report.judge_error import config_calibration_path

    report_dir = store.root / REPORT_DIR
    # The resolved settings cover config edits that add no record (a locale or attack dropped);
    # where the config file or run directory lives does not change the report. REPORT_FORMAT covers
    # a newer xsafety writing a different report.
    settings: list[Any] = [info.report_settings(), REPORT_FORMAT]
    calibration = _file_digest(config_calibration_path(info, store.root))
    if calibration is not None:
        settings.append(calibration)  # an edited calibration file adds no record, yet changes the report
    stamp = store_stamp(store.root, settings)
    if read_stamp(report_dir) == stamp:
        result.report = report_dir
        return
    if not store.table(Response).keys():
        return
    try:
        # Computed once: the terminal summary is drawn from the same data the folder is written from.
        result.report_data = compute(store.root, config.policy)
        result.report = write_report(result.report_data, report_dir, stamp=stamp)
    except XSafetyError as exc:
        result.failures.append(f"report: {exc}")
        return
    result.report_rebuilt = True


def _file_digest(path: Path | None) -> str | None:
    """A hash of a file's bytes (None without a path; "unreadable" when it cannot be read)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def failure_counts(result: RunResult) -> dict[str, int]:
    """Failures per stage (the word each failure line starts with)."""
    counts: dict[str, int] = defaultdict(int)
    for line in result.failures:
        counts[line.split(" ", 1)[0].rstrip(":")] += 1
    return dict(counts)
