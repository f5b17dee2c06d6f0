"""The translation stage: prompts -> gated, selected translations in ``<out>/<set>/<locale>.jsonl``.

Per locale: the engine (the run's, else the locale's default), forward translation through the
translation cache, back-translation to English (the same engine's reverse direction, else the
first engine that can), the gates, and candidate selection (``select.py``). Work is incremental:
a translation's key is hash(prompt key, locale, engine signature, back engine signature, fallback
signature, gate settings, quality model), and only prompts whose stored record has another key are
translated. Finished items go to a sidecar as they complete; the file itself is rewritten
atomically (old + new records) at the end, or on an interrupt, so no finished work is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xsafety.errors import InputError
from xsafety.progress import progress_bar
from xsafety.records import Prompt, Translation, stable_hash
from xsafety.translate.engines.base import Engine
from xsafety.translate.files import PartialWriter, partial_path, read_file, to_line, translation_path, write_file
from xsafety.translate.gates import NOT_FOR_REFERENCES, GateSettings, bleu_signature, chrf_signature
from xsafety.translate.gates.langid import HUMAN_REFERENCE
from xsafety.translate.gates.quality import QualityModel, load_quality_model
from xsafety.translate.select import ENGLISH, Attempt, LocaleInfo, Selector, best, reason

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger(__name__)

BATCH = 64  # items per engine call: big enough for batching, small enough to save progress often
REFERENCE_ENGINE = "reference"
# Part of a reference engine's stage signature: references gated before the exemption existed
# (and rejected) are looked up again rather than kept rejected.
# :2 -- references are flagged to the gates, whose langid check then asks fastText first (same
# verdicts, fastText's score recorded where it passes).
# :3 -- references are not put through the gates in ``gates.NOT_FOR_REFERENCES`` (copy, unknown
# words, refusal, repetition).
REFERENCE_EXEMPTION = "reference-gate-exemption:3"
REFERENCE_SKIP_WHY = "human reference: these gates look for machine translation's failures"


def _resolve_locale(locale: Any) -> Any:
    """A registry ``Locale`` for a code; an object that already has a ``code`` is used as given."""
    if hasattr(locale, "code"):
        return locale
    from xsafety.locales import get_locale

    return get_locale(str(locale))


def _engine(spec: str | Engine | None, default: str, options: Mapping[str, Any]) -> Engine:
    if spec is not None and not isinstance(spec, str):
        return spec
    from xsafety.translate.engines import make_engine

    return make_engine(spec or default, **dict(options))


def _cached_translate(use_cache: bool) -> Any:
    """The engine call the selector makes: through the translation cache unless told otherwise.

    A human reference is a dictionary lookup, cheaper than the cache's own key hashing and row
    writing: the reference engine is always asked directly (it gives the same candidates).
    """
    if not use_cache:
        return lambda engine, texts, src, tgt, **kw: engine.translate(texts, src, tgt, **kw)
    from xsafety.translate.cache import TranslationCache

    cache = TranslationCache()

    def call(engine: Engine, texts: Any, src: str, tgt: str, **kw: Any) -> Any:
        if engine.name == REFERENCE_ENGINE:
            return engine.translate(texts, src, tgt, **kw)
        return cache.translate(engine, texts, src, tgt, **kw)

    return call


def _flag_references(translate: Any) -> Any:
    """Wrap the selector's engine call so the reference engine's candidates carry the
    ``human_reference`` flag: the gates then score them cheaply (see the langid gate)."""
    from dataclasses import replace

    def call(engine: Engine, texts: Any, src: str, tgt: str, **kw: Any) -> Any:
        out = translate(engine, texts, src, tgt, **kw)
        if engine.name != REFERENCE_ENGINE:
            return out
        return [[replace(c, meta={**c.meta, HUMAN_REFERENCE: True}) for c in cands] for cands in out]

    return call


def _back_engine(spec: str | Engine | None, engine: Engine, code: str) -> Engine | None:
    """The run's back engine, else the forward engine's reverse direction, else any that can."""
    if spec is not None:
        built = _engine(spec, "", {})
        if not built.supports(code, ENGLISH):
            raise InputError(f"back-translation engine {built.name!r} cannot translate {code} -> en", field="back_engine")
        return built
    if engine.supports(code, ENGLISH):
        return engine
    from xsafety.translate.back import pick_back_engine

    return pick_back_engine(code)


def is_human_reference(attempt: Attempt) -> bool:
    """Whether an attempt is a human reference translation (the ``reference`` engine's lookup)."""
    return attempt.engine.split("|", 1)[0] == REFERENCE_ENGINE and bool(attempt.candidate.text.strip())


def stage_signature(*signatures: str | None) -> str:
    """The hash of every signature a translation into one locale depends on (engine, back-engine,
    fallback, gates, quality model, and any exemption), in that order."""
    return stable_hash(*signatures)


def translation_key(prompt_key: str, locale: str, stage_sig: str) -> str:
    """The key of a prompt's translation into ``locale`` by a stage with signature ``stage_sig``."""
    return stable_hash("translation", prompt_key, locale, stage_sig)


def make_record(
    prompt: Prompt, locale: str, key: str, attempts: list[Attempt], settings: GateSettings, model: QualityModel
) -> Translation:
    """The Translation for one prompt from its attempts (the best one chosen).

    A human reference translation is exempt from the gates: they measure machine translation
    (a length ratio, a round trip through an engine) and a human translator's free rendering must
    not be thrown away by them. It is kept (accepted) with its gates' scores recorded, and the
    gates it would have failed named in ``reason`` and ``meta["gate_exempt"]``, never dropped silently.
    The gates that only look for machine translation's failures are not run on it; they are named,
    with why, in ``meta["gates_not_run"]``.
    """
    chosen = best(attempts)
    exempt = not chosen.passed and is_human_reference(chosen)
    why = reason(chosen)
    extra: dict[str, Any] = {}
    if chosen.candidate.meta.get(HUMAN_REFERENCE):
        # The names, and one line of why (each gate's own reason is in gates.NOT_FOR_REFERENCES):
        # 25,000 reference records each carrying every reason in full was 13% of their size.
        extra["gates_not_run"] = {"gates": [n for n in settings.enabled if n in NOT_FOR_REFERENCES],
                                  "why": REFERENCE_SKIP_WHY}
    if exempt:
        extra["gate_exempt"] = {"why": "human reference translation", "failed": chosen.failed}
        why = "human reference kept, exempt from the gates (" + why.removeprefix("failed ") + ")"
    return Translation(
        key=key,
        prompt_id=prompt.id,
        set=prompt.set,
        locale=locale,
        source=prompt.text,
        text=chosen.candidate.text,
        engine=chosen.engine,
        back=chosen.back,
        back_engine=chosen.back_engine,
        gates=chosen.gates,
        quality=chosen.quality,
        accepted=chosen.passed or exempt,
        reason=why,
        attempts=tuple(a.to_dict() for a in attempts),
        meta={
            "step": chosen.step,
            "unknown_marks": chosen.candidate.unknown_marks,
            "signals": chosen.signals,
            "chrf_signature": chrf_signature(),
            "bleu_signature": bleu_signature(),
            "gate_settings": settings.signature(),
            "quality_model": model.signature(),
            **extra,
        },
    )


def translate_locale(
    prompts: Sequence[Prompt],
    locale: Any,
    *,
    engine: str | Engine | None = None,
    out_dir: str | Path | None = None,
    progress: "Progress | None" = None,
    back_engine: str | Engine | None = None,
    fallback: str | Engine | None = None,
    gates: Mapping[str, float] | None = None,
    disable_gates: Sequence[str] = (),
    engine_options: Mapping[str, Any] | None = None,
    model: QualityModel | None = None,
    use_cache: bool = True,
    batch_size: int = BATCH,
) -> list[Translation]:
    """Translate ``prompts`` (one set) into one locale incrementally; returns records in prompt order."""
    from xsafety.data import writable_translations_dir

    loc = _resolve_locale(locale)
    code = loc.code
    if not prompts:
        return []
    set_names = {p.set for p in prompts}
    if len(set_names) != 1:
        raise InputError(f"prompts from several sets ({', '.join(sorted(set_names))}); translate one set at a time", field="set")
    set_name = set_names.pop()
    eng = _engine(engine, getattr(loc, "engine", None) or "apertium", engine_options or {})
    if not eng.supports(ENGLISH, code):
        raise InputError(f"engine {eng.name!r} cannot translate en -> {code}", field="engine")
    back = _back_engine(back_engine, eng, code)
    fall = _engine(fallback, "", engine_options or {}) if fallback is not None else None
    if fall is not None and not fall.supports(ENGLISH, code):
        raise InputError(f"fallback engine {fall.name!r} cannot translate en -> {code}", field="fallback")
    settings = GateSettings.resolve(getattr(loc, "gates", None) or {}, gates, disable_gates)
    model = model or load_quality_model()
    info = LocaleInfo(
        code=code,
        script=getattr(loc, "script", "Latn") or "Latn",
        langdetect=getattr(loc, "langdetect", None),
        fasttext=getattr(loc, "fasttext", None),
    )
    root = Path(out_dir) if out_dir is not None else writable_translations_dir()
    path, side = translation_path(root, set_name, code), partial_path(root, set_name, code)
    stage_sig = stage_signature(
        eng.signature(ENGLISH, code),
        back.signature(code, ENGLISH) if back else None,
        fall.signature(ENGLISH, code) if fall else None,
        settings.signature(),
        model.signature(),
        *([REFERENCE_EXEMPTION] if eng.name == REFERENCE_ENGINE else []),
    )
    keys = {p.id: translation_key(p.key, code, stage_sig) for p in prompts}

    stored = read_file(path)
    stored.update(read_file(side, tolerate_torn_tail=True))  # the sidecar holds newer work
    # A translation keyed the way store format 1 keyed prompts (with the set's name) was made by
    # this same stage from this same text: it is current, not redone.
    # (Worked out only for a stored record whose key is not the current one: a fresh run has none.)
    todo = [p for p in prompts if p.id not in stored
            or (stored[p.id].key != keys[p.id] and stored[p.id].key != translation_key(p.set_key, code, stage_sig))]
    log.info("%s/%s: %d of %d prompts to translate", set_name, code, len(todo), len(prompts))
    if not todo:
        if side.exists():
            write_file(path, stored.values())
            side.unlink()
        return [stored[p.id] for p in prompts]

    selector = Selector(eng, info, settings, model, _flag_references(_cached_translate(use_cache)), back_engine=back, fallback=fall)
    writer = PartialWriter(side)
    lines: dict[str, str] = {}  # prompt id -> JSON line of a record made now (written twice, serialised once)
    done = 0
    start = time.monotonic()
    try:
        with progress_bar(f"translate {code}", len(todo), progress) as bar:
            for i in range(0, len(todo), batch_size):
                chunk = todo[i : i + batch_size]
                attempts = selector.run([p.text for p in chunk])
                made = []
                for p, tried in zip(chunk, attempts):
                    rec = make_record(p, code, keys[p.id], tried, settings, model)
                    stored[p.id] = rec
                    lines[p.id] = to_line(rec)
                    made.append(lines[p.id])
                # A chunk's records are finished together: one append (and one sync) per chunk.
                writer.write_lines(made)
                done += len(chunk)
                rate = done / max(time.monotonic() - start, 1e-9)
                bar.advance(len(chunk), rate=f"{rate:.1f} it/s")
    finally:
        writer.close()
        # Old records of prompts not asked for this time stay: a file only ever gains work.
        # make_record builds JSON-native records (gate results are the one tuple field, and
        # Translation.from_dict restores it), so reading the file back would give these records.
        write_file(path, stored.values(), lines=lines, remember=True)
        side.unlink(missing_ok=True)
    return [stored[p.id] for p in prompts]


def translate_set(
    prompts: Sequence[Prompt],
    locales: Sequence[Any],
    *,
    engine: str | Engine | None = None,
    out_dir: str | Path | None = None,
    progress: "Progress | None" = None,
    **options: Any,
) -> dict[str, list[Translation]]:
    """Translate ``prompts`` into every locale (see ``translate_locale`` for ``options``).

    Returns locale code -> records in prompt order. Writes ``<out_dir>/<set>/<locale>.jsonl``
    (default: ``writable_translations_dir()``).
    """
    out: dict[str, list[Translation]] = {}
    for locale in locales:
        loc = _resolve_locale(locale)
        out[loc.code] = translate_locale(prompts, loc, engine=engine, out_dir=out_dir, progress=progress, **options)
    return out
