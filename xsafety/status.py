"""``xsafety status RUN_DIR``: per-stage progress of a run, from its ``run.json`` and its store.

The status re-plans the run exactly as ``xsafety run`` would (nothing is loaded), so "stored vs
planned" is the same arithmetic the run does, and the failures listed are those a rerun retries.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from xsafety.config import RunConfig, parse_config
from xsafety.errors import InputError
from xsafety.plan import Plan, SignatureBook, make_plan, modes_for, no_back_locales, verdict_key
from xsafety.records import Response, Verdict
from xsafety.store import Store


@dataclass
class StageRow:
    """One line of the status: a stage, the thing it is about, and its counts."""

    stage: str
    what: str
    planned: int
    stored: int
    todo: int
    failed: int = 0
    note: str = ""


@dataclass
class RunStatus:
    """The status of a run directory."""

    run_dir: Path
    rows: list[StageRow]
    errors: list[str] = field(default_factory=list)
    torn: int = 0
    locked_by: str | None = None

    @property
    def complete(self) -> bool:
        """True when nothing is left to do and nothing failed."""
        return all(r.todo == 0 and r.failed == 0 for r in self.rows)


def config_of(run_dir: Path) -> RunConfig:
    """The run's config as snapshotted in ``run.json``, with its locales as they were resolved."""
    from xsafety.run import RUN_INFO, read_info

    info = read_info(run_dir)
    if not info or "config" not in info:
        raise InputError(f"{run_dir} has no {RUN_INFO}: is it a run directory? (`xsafety run` writes one)",
                         file=Path(run_dir) / RUN_INFO)
    config = parse_config(info["config"], source=str(Path(run_dir) / RUN_INFO))
    locales = tuple(e["code"] for e in info.get("locales", []) if isinstance(e, dict) and "code" in e)
    return dataclasses.replace(config, run_dir=Path(run_dir), locales=locales or config.locales)


def run_status(run_dir: str | Path) -> RunStatus:
    """Planned vs stored per stage (translations per locale, responses per model x locale,
    verdicts per judge x mode), with the errors a rerun would retry."""
    run_dir = Path(run_dir)
    config = config_of(run_dir)
    store = Store(run_dir)
    assume, stale = _last_known(config, run_dir)
    plan = make_plan(config, store, list(config.locales), assume=assume)
    rows = _rows(plan, store)
    for row in rows:
        if row.stage in ("generate", "judge") and row.what.split(" ")[0] in stale and not row.note:
            row.note = "last run's signature: code or files changed since, the next run re-checks"
    status = RunStatus(run_dir, rows)
    status.errors = _errors(plan, store)
    from xsafety.run import read_info

    # Failures that are not per-record (a translation engine or a model that would not start)
    # live only in the last run's summary.
    last = read_info(run_dir).get("last_run", {})
    status.errors += [f for f in last.get("failures", []) if not f.startswith(("generate ", "judge "))]
    lock = run_dir / ".lock"
    if lock.is_file():
        import fcntl
        import os

        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            status.locked_by = lock.read_text().strip() or "another process"
        finally:
            os.close(fd)
    return status


def _last_known(config: RunConfig, run_dir: Path) -> tuple[dict[str, str], set[str]]:
    """Signatures the last run recorded, for models and judges whose fingerprint has changed
    since (their code or files were edited): fingerprint -> signature, and their names."""
    from xsafety.plan import judge_fingerprint, model_fingerprint
    from xsafety.run import read_info

    info = read_info(run_dir)
    book = SignatureBook(run_dir)
    assume: dict[str, str] = {}
    stale: set[str] = set()
    recorded = {m.get("name"): m.get("signature") for m in info.get("models", []) if isinstance(m, dict)}
    for model in config.models:
        fp = model_fingerprint(model, config)
        if book.get(fp) is None and recorded.get(model.name):
            assume[fp] = str(recorded[model.name])
            stale.add(model.name)
    for name, sig in (info.get("judge_signatures") or {}).items():
        fp = judge_fingerprint(name)
        if sig and name in config.judges and book.get(fp) is None:
            assume[fp] = str(sig)
            stale.add(name)
    return assume, stale


def _rows(plan: Plan, store: Store) -> list[StageRow]:
    rows: list[StageRow] = []
    todo_tr = Counter[str]()
    for need in plan.translations:
        todo_tr[need.locale] += len(need.prompts)
    skipped = Counter[str]()
    for (loc, _why), n in plan.items.skipped.items():
        skipped[loc] += n
    from xsafety.plan import english_sources

    n_sources = sum(len(v) for v in english_sources(plan.config, plan.prompts).values())
    for locale in plan.locales[1:]:
        note = f"{skipped[locale]} item(s) left out: no accepted translation" if skipped[locale] else ""
        rows.append(StageRow("translate", locale, n_sources, n_sources - todo_tr[locale], todo_tr[locale], note=note))
    for mp in plan.models:
        todo = Counter(i.locale for i in mp.todo)
        total = Counter(i.locale for i in mp.items)
        failed = _failed_by_locale(store, mp)
        for locale in plan.locales:
            note = "" if mp.exact else "model not loaded in this run yet: counts are upper bounds"
            rows.append(StageRow("generate", f"{mp.model.name} {locale}", total[locale], total[locale] - todo[locale],
                                 todo[locale], failed.get(locale, 0), note))
    from xsafety.judges.stage import ERRORS_TABLE

    responses = [(row["key"], row.get("locale", "en")) for row in store.table(Response).iter_dicts() if "key" in row]
    verdicts = {row["key"] for row in store.table(Verdict).iter_dicts() if "key" in row}
    verdict_errors = {row["key"] for row in store.table(Verdict, ERRORS_TABLE).iter_dicts() if "key" in row}
    coming = Counter(i.locale for m in plan.models for i in m.todo)
    book = SignatureBook(store.root)
    all_locales = {loc for _, loc in responses} | set(coming)
    for jp in plan.judges:
        no_back = no_back_locales(book, jp.fingerprint, all_locales)
        for mode in plan.config.judge_modes:
            keys = [k for k, loc in dict(responses).items() if mode in modes_for(loc, plan.config.judge_modes, no_back)]
            to_come = sum(n for loc, n in coming.items() if mode in modes_for(loc, plan.config.judge_modes, no_back))
            if jp.signature is None:
                rows.append(StageRow("judge", f"{jp.name} {mode}", len(keys) + to_come, 0, len(keys) + to_come,
                                     note="judge not run in this run yet: counts are upper bounds"))
                continue
            vkeys = [verdict_key(k, jp.signature, mode) for k in keys]
            stored = sum(1 for v in vkeys if v in verdicts)
            failed = sum(1 for v in vkeys if v in verdict_errors and v not in verdicts)
            rows.append(StageRow("judge", f"{jp.name} {mode}", len(keys) + to_come, stored,
                                 len(keys) + to_come - stored, failed))
    return rows


def _failed_by_locale(store: Store, mp: Any) -> dict[str, int]:
    if mp.signature is None:
        return {}
    from xsafety.generate import ResponseError, response_key

    ok = store.table(Response).keys()
    failed = {row.get("response_key") for row in store.table(ResponseError).iter_dicts()} - ok
    out: Counter[str] = Counter()
    for item in mp.items:
        if response_key(mp.signature, item) in failed:
            out[item.locale] += 1
    return dict(out)


def _errors(plan: Plan, store: Store, limit: int = 20) -> list[str]:
    from xsafety.generate import ResponseError, response_key

    ok = store.table(Response).keys()
    latest: dict[str, dict[str, Any]] = {}
    for row in store.table(ResponseError).iter_dicts():
        key = row.get("response_key", "")
        if key and key not in ok and row.get("at", 0) >= latest.get(key, {}).get("at", 0):
            latest[key] = row
    out = []
    for mp in plan.models:
        if mp.signature is None:
            continue
        for item in mp.items:
            row = latest.get(response_key(mp.signature, item))
            if row is not None:
                out.append(f"generate {mp.model.name} {item.locale} {item.prompt_id}: {row.get('error', '')}")
    from xsafety.judges.stage import ERRORS_TABLE

    done = store.table(Verdict).keys()
    for row in store.table(Verdict, ERRORS_TABLE).iter_dicts():
        if row.get("key") not in done:
            out.append(f"judge {row.get('mode', '')} response {row.get('response_key', '')}: {row.get('error', '')}")
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def status_table(status: RunStatus) -> Table:
    """The status as a rich table: stage, item, planned, stored, to do, failed, note."""
    table = Table(title=f"run {status.run_dir}" + (" (running: pid " + status.locked_by + ")" if status.locked_by else ""))
    for name, justify in (("stage", "left"), ("what", "left"), ("planned", "right"), ("stored", "right"),
                          ("to do", "right"), ("failed", "right"), ("note", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in status.rows:
        style = "red" if r.failed else ("yellow" if r.todo else "green")
        table.add_row(r.stage, r.what, str(r.planned), str(r.stored), str(r.todo), str(r.failed), r.note, style=style)
    return table
