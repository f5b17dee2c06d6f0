"""Load a run directory into polars frames: one row per (response x judge x mode).

Everything a report needs beside the verdict is joined on here, from the run's records and its
metadata (``xsafety.runinfo``: ``run.json``, ``cells.json``) only, degrading gracefully where
something is missing. The report never imports the orchestrator, the models or the translators.

* prompt categories: a ``prompts`` table in the run dir (a snapshot), else
  ``xsafety.taxonomy.load_set(set)``, else a ``category`` in the response's ``meta``;
* the locale's resource level: ``run.json`` (its locale entries), else
  ``xsafety.locales.get_locale(code).resource``, else ``unknown``;
* translation acceptance and round-trip chrF: the ``translations`` table in the run dir (``xsafety
  run`` and ``xsafety generate`` copy there every translation they asked with);
* the primary judge: ``run.json`` (``primary_judge`` or the first of ``judges``), else the judge
  with the most verdicts;
* the locales to report: every locale with a response, plus every locale ``run.json`` configures.
  A configured locale whose translations were all rejected by the quality gates has no response,
  but it must still be shown (with n = 0 and its acceptance), not silently left out.

A run directory keeps every record it ever got (the store is append-only), so after a change of
model signature (decoding, weights) or of config (a locale, attack or variant removed) it also holds
responses the current config no longer asks for. Counting those would pair one prompt several times
per locale (doubling ``n`` and overstating McNemar). So when the orchestrator's ``cells.json`` is
there, only its responses are read, and only verdicts of the judge signatures ``run.json`` records
for the current config. A directory ``xsafety run`` made (its ``run.json`` holds a config) whose
``cells.json`` is gone is refused, with the command that writes it again. Without either (a run
made by ``xsafety generate``/``judge`` directly) every response is read, and signatures that share
a model name are reported as separate models, with a warning.

Attacks applied before translation use derived ids (``<id>~<attack>`` in set ``<set>~<attack>``);
``base_id``/``base_set`` strip the suffix so that categories join and pairs across locales match.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from xsafety.errors import InputError
from xsafety.locales import get_locale
from xsafety.records import Prompt, Response, Translation, Verdict, stable_hash
from xsafety.report.categories import UNCATEGORISED, macro_of
from xsafety.runinfo import CELLS_FILE, RunInfo, read_cells, read_info
from xsafety.store import Store
from xsafety.taxonomy import load_set

log = logging.getLogger(__name__)

ENGLISH = "en"
PRIMARY_MODE = "native"
BACK_MODE = "back-translated"
ROUNDTRIP_GATE = "roundtrip_chrf"
# A disambiguated model name shows the signature fields that differ, each cut to this length.
MAX_SIG_PART = 32

VERDICT_SCHEMA: dict[str, Any] = {
    "response_key": pl.Utf8,
    "model": pl.Utf8,
    "model_name": pl.Utf8,
    "set": pl.Utf8,
    "base_set": pl.Utf8,
    "prompt_id": pl.Utf8,
    "base_id": pl.Utf8,
    "locale": pl.Utf8,
    "attack": pl.Utf8,
    "variant": pl.Utf8,
    "response_text": pl.Utf8,
    "response_error": pl.Utf8,
    "judge": pl.Utf8,
    "mode": pl.Utf8,
    "label": pl.Utf8,
    "harm_judged": pl.Boolean,
    "category": pl.Utf8,
    "macro": pl.Utf8,
    "xsafety_type": pl.Utf8,
    "resource": pl.Utf8,
    "tr_accepted": pl.Boolean,
    "roundtrip_chrf": pl.Float64,
}

TRANSLATION_SCHEMA: dict[str, Any] = {
    "set": pl.Utf8,
    "prompt_id": pl.Utf8,
    "locale": pl.Utf8,
    "accepted": pl.Boolean,
    "roundtrip_chrf": pl.Float64,
    "quality": pl.Float64,
    # Names of the gates a translation failed (empty when accepted): why a locale has no numbers.
    "failed_gates": pl.List(pl.Utf8),
}


@dataclass
class RunData:
    """A run loaded for reporting."""

    run_dir: Path
    info: RunInfo
    verdicts: pl.DataFrame  # one row per (response x judge x mode), schema VERDICT_SCHEMA
    translations: pl.DataFrame  # one row per translation of a prompt the run asked, TRANSLATION_SCHEMA
    n_responses: int
    n_response_errors: int
    primary_judge: str | None
    judges: list[str] = field(default_factory=list)
    # Responses in the store that the current config (cells.json) does not ask for: left out.
    n_stale_responses: int = 0
    # Every locale to report (with responses or configured in run.json) -> its resource level.
    locales: dict[str, str] = field(default_factory=dict)

    def harm_judged(self) -> bool:
        """False when the primary judge never judged harm (e.g. a refusal lexicon): unsafe is then
        not measured and only refusal rates mean something."""
        if self.primary_judge is None or self.verdicts.is_empty():
            return True
        mine = self.verdicts.filter(pl.col("judge") == self.primary_judge)
        # Such a judge marks its non-refusals harm_judged = false and never says unsafe.
        unjudged = mine.filter(~pl.col("harm_judged")).height
        unsafe = mine.filter(pl.col("label") == "unsafe").height
        return not (unjudged > 0 and unsafe == 0)


def base_of(name: str) -> str:
    """``id~attack`` -> ``id``: the English prompt or set an attacked item derives from."""
    return name.split("~", 1)[0]


def model_names(responses: Iterable[Response], info: RunInfo) -> dict[str, str]:
    """Model signature -> display name, distinct per signature.

    The name is the response's meta ``model_name``, else the name ``run.json`` gives the signature,
    else the signature. When several signatures share a name (a run directory generated again after
    a decoding or weights change, without ``cells.json`` to say which is current), each gets the
    signature fields that set it apart (``smollm2 [max_new_tokens:64]``) so that the model
    breakdowns keep them apart instead of pooling one prompt's answers twice.
    """
    booked = info.model_names()
    names: dict[str, str] = {}
    for r in responses:
        if r.model not in names:
            meta_name = r.meta.get("model_name") if isinstance(r.meta, dict) else None
            names[r.model] = str(meta_name) if meta_name else booked.get(r.model, r.model)
    by_name: dict[str, list[str]] = {}
    for sig, name in names.items():
        by_name.setdefault(name, []).append(sig)
    out = dict(names)
    for name, sigs in by_name.items():
        if len(sigs) < 2:
            continue
        log.warning("report: %d signatures of model %r are reported as separate models", len(sigs), name)
        parts = {sig: sig.split("|") for sig in sigs}
        common = set.intersection(*(set(p) for p in parts.values()))
        # A signature that only lacks a field the others have is told by a hash of itself.
        labels = {
            sig: f"{name} [{','.join(x[:MAX_SIG_PART] for x in p if x not in common) or stable_hash(sig, length=8)}]"
            for sig, p in parts.items()
        }
        if len(set(labels.values())) < len(labels):
            # Cut fields can collide: a hash of the whole signature cannot.
            labels = {sig: f"{name} [{stable_hash(sig, length=8)}]" for sig in sigs}
        out.update(labels)
    return out


def resource_of(code: str, known: dict[str, str]) -> str:
    """Resource level of a locale: from the run snapshot, else the locale registry."""
    if code in known:
        return known[code]
    try:
        return str(get_locale(code).resource)
    except Exception:  # an unknown or malformed locale must not stop a report
        return "high" if code == ENGLISH else "unknown"


def _prompts_for(store: Store, sets: set[str]) -> dict[tuple[str, str], Prompt]:
    prompts: dict[tuple[str, str], Prompt] = {}
    snapshot = store.table(Prompt).load()
    for p in snapshot.values():
        prompts[(p.set, p.id)] = p
    missing = {s for s in sets if not any(k[0] == s for k in prompts)}
    if missing:
        for name in sorted(missing):
            try:
                for p in load_set(name):
                    prompts[(name, p.id)] = p
            except Exception as exc:  # a missing set only costs its categories
                log.warning("report: cannot load prompt set %r for categories: %s", name, exc)
    return prompts


def _translations_for(store: Store) -> dict[tuple[str, str, str], Translation]:
    """(set, locale, prompt_id) -> translation, from the run's snapshot (``xsafety run`` and
    ``xsafety generate`` copy there every translation they asked with)."""
    return {(t.set, t.locale, t.prompt_id): t for t in store.table(Translation).load().values()}


def _roundtrip(t: Translation | None) -> float | None:
    if t is None:
        return None
    gate = t.gate(ROUNDTRIP_GATE)
    return None if gate is None or gate.score is None else float(gate.score)


def _kind_of_judge(name: str) -> str | None:
    """The ``kind`` declared in a judge definition (``judges/<name>.toml`` or a path)."""
    import tomllib

    from xsafety.data import judges_dir

    path = Path(name) if name.endswith(".toml") else judges_dir() / f"{name}.toml"
    try:
        kind = tomllib.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return kind if isinstance(kind, str) else None


def judge_matches(sig: str, name: str) -> bool:
    """Whether verdict signature ``sig`` is judge ``name``: the signature itself, or its kind or name."""
    return sig == name or sig.startswith(name + "|") or f"name:{name}" in sig.split("|")


def pick_primary_judge(judges: list[str], counts: Counter[str], info: RunInfo) -> str | None:
    """The run's primary judge signature.

    A config names a judge (``default``) while verdicts carry its signature (``lexicon|...``), so
    the name is resolved in turn by: the signature ``run.json`` recorded for it, an exact or prefix
    match, the judge definition's ``kind`` when one signature alone has it; else the judge with
    most verdicts.
    """
    wanted = [name for name in (info.primary_judge, *info.judges[:1]) if name]
    current = info.judge_signatures or {}
    for name in wanted:
        # The signature the orchestrator recorded for this config beats a guess from the name.
        if current.get(name) in judges:
            return current[name]
        for sig in judges:
            if judge_matches(sig, name):
                return sig
        kind = _kind_of_judge(name)
        if kind:
            same_kind = [sig for sig in judges if sig.split("|", 1)[0] == kind]
            if len(same_kind) == 1:
                return same_kind[0]
    if not counts:
        return None
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def _missing_cells(run_dir: Path, info: RunInfo) -> InputError:
    """The error for a directory ``xsafety run`` made whose ``cells.json`` is gone: reading on would
    silently pool every response the directory ever held, under every earlier config."""
    config = info.config_file or "CONFIG"
    return InputError(
        f"{CELLS_FILE} is missing, so which stored responses the current config asks for is unknown "
        f"(reading them all would pool every earlier config's answers); write it again with "
        f"`xsafety run {config} --run-dir {run_dir}`, which recomputes nothing already stored",
        file=run_dir / CELLS_FILE,
    )


def load_run(run_dir: str | Path, primary_judge: str | None = None) -> RunData:
    """Read a run directory's responses and verdicts and join everything a report needs.

    With ``cells.json`` only the responses the current config asks for are read, and only verdicts
    of the current judge signatures (and of ``primary_judge`` when it is a signature).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory not found: {run_dir}", file=run_dir)
    info = read_info(run_dir)
    store = Store(run_dir)
    responses = store.table(Response).load()
    stale = 0
    cells = read_cells(run_dir)
    if cells is None and info.exists:
        raise _missing_cells(run_dir, info)
    judge_ok: frozenset[str] | None = None
    if cells is not None:
        kept = {k: r for k, r in responses.items() if k in cells.responses}
        stale = len(responses) - len(kept)
        if stale:
            log.info("report: %d stored responses are outside the current cells and left out", stale)
        # A response is shared by the sets that have its prompt (same id and text); it counts for
        # the set the current run asked it for, not the one its record was first made for.
        responses = {k: r if cells.sets.get(k, r.set) == r.set else dataclasses.replace(r, set=cells.sets[k])
                     for k, r in kept.items()}
        judge_ok = info.current_judge_signatures
        if judge_ok is not None and primary_judge:
            # An explicit signature is honoured even if stale; a bare name must resolve among
            # the current signatures, never to an older one.
            judge_ok = judge_ok | {primary_judge}
    verdicts = [
        v
        for v in store.table(Verdict).load().values()
        if v.response_key in responses and (judge_ok is None or v.judge in judge_ok)
    ]
    resources = info.resource
    base_sets = {base_of(r.set) for r in responses.values()}
    prompts = _prompts_for(store, base_sets)
    used_pairs = {(r.set, r.locale) for r in responses.values() if r.locale != ENGLISH}
    answered = {r.locale for r in responses.values()}
    silent = [c for c in info.locale_codes if c not in answered and c != ENGLISH]
    if silent:
        # A locale with no response (every translation rejected) is asked in the sets English was.
        english_sets = {r.set for r in responses.values() if r.locale == ENGLISH}
        run_sets = english_sets or {r.set for r in responses.values()} or set(info.sets)
        used_pairs |= {(s, c) for s in run_sets for c in silent}
    translations = _translations_for(store)
    by_key = {t.key: t for t in translations.values()}
    names = model_names(responses.values(), info)

    by_response: dict[str, list[Verdict]] = {}
    counts: Counter[str] = Counter()
    for v in verdicts:
        by_response.setdefault(v.response_key, []).append(v)
        counts[v.judge] += 1
    judges = sorted(counts)
    # A name the config gave a judge resolves through the signature run.json recorded for it.
    info_judge = RunInfo(primary_judge=primary_judge, judge_signatures=info.judge_signatures) if primary_judge else info
    if primary_judge and judges and pick_primary_judge(judges, Counter(), info_judge) is None:
        # Without counts nothing falls back to the busiest judge: the name matched none.
        kinds = sorted({sig.split("|", 1)[0] for sig in judges})
        raise InputError(f"no judge {primary_judge!r} among this run's verdicts (judges: {', '.join(kinds)})",
                         field="--judge")
    primary = pick_primary_judge(judges, counts, info_judge)

    rows: list[dict[str, Any]] = []
    resource_cache: dict[str, str] = {}
    macros: dict[str, str] = {}  # ALERT macro per category: a few dozen categories, 28,000 responses
    errors = 0
    for r in responses.values():
        if r.error:
            errors += 1
        base_set, base_id = base_of(r.set), base_of(r.prompt_id)
        prompt = prompts.get((base_set, base_id))
        category = prompt.category if prompt else str(r.meta.get("category", "") or "")
        xtype = (prompt.xsafety_type if prompt else r.meta.get("xsafety_type")) or None
        if r.locale not in resource_cache:
            resource_cache[r.locale] = resource_of(r.locale, resources)
        # A translation made for another set with this prompt is found by the key it was sent from.
        t = translations.get((r.set, r.locale, r.prompt_id)) or by_key.get(r.input_key)
        if category not in macros:
            macros[category] = macro_of(category)
        base = {
            "response_key": r.key,
            "model": r.model,
            "model_name": names[r.model],
            "set": r.set,
            "base_set": base_set,
            "prompt_id": r.prompt_id,
            "base_id": base_id,
            "locale": r.locale,
            "attack": r.attack,
            "variant": r.variant,
            "response_text": r.text,
            "response_error": r.error,
            "category": category or UNCATEGORISED,
            "macro": macros[category],
            "xsafety_type": xtype or "none",
            "resource": resource_cache[r.locale],
            "tr_accepted": None if t is None else bool(t.accepted),
            "roundtrip_chrf": _roundtrip(t),
        }
        for v in by_response.get(r.key, []):
            # A refusal-only judge (the offline default) marks non-refusals harm_judged = false.
            harm = v.meta.get("harm_judged", True) if isinstance(v.meta, dict) else True
            rows.append({**base, "judge": v.judge, "mode": v.mode, "label": v.label, "harm_judged": bool(harm)})
    frame = pl.DataFrame(rows, schema=VERDICT_SCHEMA) if rows else pl.DataFrame(schema=VERDICT_SCHEMA)

    # Rejected translations never reach generation, so acceptance is counted over every
    # translation of the prompts the run asked (in English, when it has an English baseline).
    english_ids = {(base_of(r.set), base_of(r.prompt_id)) for r in responses.values() if r.locale == ENGLISH}
    trows = [
        {
            "set": k[0],
            "prompt_id": k[2],
            "locale": k[1],
            "accepted": bool(t.accepted),
            "roundtrip_chrf": _roundtrip(t),
            "quality": t.quality,
            "failed_gates": [g.name for g in t.gates if not g.passed],
        }
        for k, t in translations.items()
        if (k[0], k[1]) in used_pairs and (not english_ids or (base_of(k[0]), base_of(k[2])) in english_ids)
    ]
    tframe = pl.DataFrame(trows, schema=TRANSLATION_SCHEMA) if trows else pl.DataFrame(schema=TRANSLATION_SCHEMA)
    for code in [*info.locale_codes, *sorted(answered)]:
        if code not in resource_cache:
            resource_cache[code] = resource_of(code, resources)
    return RunData(
        run_dir=run_dir,
        info=info,
        verdicts=frame,
        translations=tframe,
        n_responses=len(responses),
        n_response_errors=errors,
        primary_judge=primary,
        judges=judges,
        n_stale_responses=stale,
        locales=resource_cache,
    )
