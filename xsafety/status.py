"""``xsafety status RUN_DIR``: per-stage progress of a run, from its ``run.json`` and its store.

The status re-plans the run exactly as ``xsafety run`` would (nothing is loaded), so "stored vs
planned" is the same arithmetic the run does, and the failures listed are those a rerun retries.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from xsafety.config import RunConfig, parse_config
from xsafety.errors import InputError
from xsafety.generate import ResponseError, response_key
from xsafety.judges.stage import ERRORS_TABLE
from xsafety.plan import Plan, Work, make_plan, resolve
from xsafety.records import Response, Verdict
from xsafety.runinfo import RUN_INFO, RunInfo, SignatureBook, check_store_format, read_info
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


def config_of(run_dir: Path, info: RunInfo | None = None) -> RunConfig:
    """The run's config as snapshotted in ``run.json``, with its locales as they were resolved."""
    info = info if info is not None else read_info(run_dir)  # a malformed run.json is an error there
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise InputError(f"{run_dir} has no {RUN_INFO}: is it a run directory? (`xsafety run` writes one)", file=path)
    if not info.exists:
        raise InputError(f"malformed: {RUN_INFO} holds no run config (`xsafety run` writes one)", file=path, field="config")
    config = parse_config(dict(info.config), source=str(Path(run_dir) / RUN_INFO))
    locales = tuple(e.code for e in info.locales)
    return dataclasses.replace(config, run_dir=Path(run_dir), locales=locales or config.locales)


def run_status(run_dir: str | Path) -> RunStatus:
    """Planned vs stored per stage (translations per locale, responses per model x locale,
    verdicts per judge x mode), with the errors a rerun would retry."""
    run_dir = Path(run_dir)
    # Counted against format-2 keys, a format-1 store would read as nothing done.
    check_store_format(run_dir, stamp=False)
    info = read_info(run_dir)
    config = config_of(run_dir, info)
    store = Store(run_dir)
    work = resolve(config, config.locales)
    book = SignatureBook(run_dir)
    stale = _assume_last_known(work, info, book)
    plan = make_plan(work, store, book)
    rows = _rows(plan)
    for row in rows:
        if row.stage in ("generate", "judge") and row.what.split(" ")[0] in stale and not row.note:
            row.note = "last run's signature: code or files changed since, the next run re-checks"
    status = RunStatus(run_dir, rows)
    status.errors = _errors(plan, store)
    # Failures that are not per-record (a translation engine or a model that would not start)
    # live only in the last run's summary.
    last = info.last_run.get("failures", [])
    status.errors += [f for f in last if isinstance(f, str) and not f.startswith(("generate ", "judge "))]
    lock = run_dir / ".lock"
    if lock.is_file():
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            status.locked_by = lock.read_text().strip() or "another process"
        finally:
            os.close(fd)
    return status


def _assume_last_known(work: Work, info: RunInfo, book: SignatureBook) -> set[str]:
    """Use the signatures the last run recorded for models and judges whose fingerprint has changed
    since (their code or files were edited); returns their names."""
    assume: dict[str, str] = {}
    stale: set[str] = set()
    recorded = {m.name: m.signature for m in info.models}
    for model, fp in zip(work.config.models, work.model_fingerprints):
        sig = recorded.get(model.name)
        if book.get(fp) is None and sig:
            assume[fp] = sig
            stale.add(model.name)
    judged = info.judge_signatures or {}
    for name, fp in zip(work.config.judges, work.judge_fingerprints):
        sig = judged.get(name)
        if sig and book.get(fp) is None:
            assume[fp] = sig
            stale.add(name)
    book.assume(assume)
    return stale


def _rows(plan: Plan) -> list[StageRow]:
    rows: list[StageRow] = []
    todo_tr = Counter[str]()
    for need in plan.translations:
        todo_tr[need.locale] += len(need.prompts)
    skipped = Counter[str]()
    for (loc, _why), n in plan.items.skipped.items():
        skipped[loc] += n
    n_sources = sum(len(v) for v in plan.work.sources.values())
    for locale in plan.locales[1:]:
        note = f"{skipped[locale]} item(s) left out: no accepted translation" if skipped[locale] else ""
        rows.append(StageRow("translate", locale, n_sources, n_sources - todo_tr[locale], todo_tr[locale], note=note))
    for mp in plan.models:
        todo = Counter(i.locale for i in mp.todo)
        total = Counter(i.locale for i in mp.items)
        failed = Counter(i.locale for i in mp.failed_items)
        for locale in plan.locales:
            note = "" if mp.exact else "model not loaded in this run yet: counts are upper bounds"
            rows.append(StageRow("generate", f"{mp.model.name} {locale}", total[locale], total[locale] - todo[locale],
                                 todo[locale], failed.get(locale, 0), note))
    for jp in plan.judges:
        note = "" if jp.signature is not None else "judge not run in this run yet: counts are upper bounds"
        for c in jp.counts:
            rows.append(StageRow("judge", f"{jp.name} {c.mode}", c.planned, c.stored, c.todo, c.failed, note))
    return rows


def _errors(plan: Plan, store: Store, limit: int = 20) -> list[str]:
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
