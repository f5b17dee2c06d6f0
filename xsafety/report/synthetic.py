"""Synthetic runs with known outcomes, written through the real Store: for tests, demos, benchmarks.

A synthetic run is an ordinary run directory (``prompts``, ``translations``, ``responses`` and
``verdicts`` tables plus ``run.json``), so reports built from it take exactly the code path of a
real run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xsafety.records import GateResult, Prompt, Response, Translation, Verdict, stable_hash
from xsafety.store import Store

SYNTH_SET = "synth"
SYNTH_JUDGE = "synthjudge|template:none|version:1"
SYNTH_MODEL = "synthmodel|temperature:0"
DEFAULT_CATEGORIES = (
    "hate_women",
    "crime_theft",
    "crime_kidnapp",
    "substance_cannabis",
    "substance_drug",
    "sex_porn",
    "self_harm_suicide",
    "weapon_firearm",
    "weapon_chemical",
)


@dataclass(frozen=True)
class Outcome:
    """One response of a synthetic run and its verdict(s)."""

    prompt_id: str
    locale: str
    label: str
    back_label: str | None = None  # verdict in back-translated mode (non-English only)
    attack: str = "none"
    variant: str = "default"
    model: str = SYNTH_MODEL
    text: str = ""
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Verdict meta in both modes, e.g. {"harm_judged": False} as a refusal-only judge writes it.
    verdict_meta: dict[str, Any] = field(default_factory=dict)


def write_run(
    run_dir: str | Path,
    prompts: Sequence[Prompt],
    outcomes: Iterable[Outcome],
    *,
    translations: Sequence[Translation] = (),
    info: dict[str, Any] | None = None,
    judge: str = SYNTH_JUDGE,
) -> Path:
    """Write a run directory holding exactly these prompts, translations, responses and verdicts."""
    root = Path(run_dir)
    store = Store(root)
    store.table(Prompt).append(prompts)
    if translations:
        store.table(Translation).append(translations)
    responses: list[Response] = []
    verdicts: list[Verdict] = []
    sets = {p.id: p.set for p in prompts}
    for o in outcomes:
        set_name = sets.get(o.prompt_id.split("~", 1)[0], SYNTH_SET)
        key = stable_hash("response", o.model, set_name, o.prompt_id, o.locale, o.attack, o.variant)
        responses.append(
            Response(
                key=key,
                prompt_id=o.prompt_id,
                set=set_name,
                locale=o.locale,
                model=o.model,
                text=o.text or f"response to {o.prompt_id} in {o.locale}",
                attack=o.attack,
                variant=o.variant,
                error=o.error,
                meta={"model_name": o.model.split("|", 1)[0], **o.meta},
            )
        )
        if o.error:
            continue
        verdicts.append(Verdict(key=stable_hash(key, judge, "native"), response_key=key, judge=judge,
                                mode="native", label=o.label, meta=dict(o.verdict_meta)))
        if o.back_label is not None:
            verdicts.append(Verdict(key=stable_hash(key, judge, "back-translated"), response_key=key,
                                    judge=judge, mode="back-translated", label=o.back_label,
                                    meta=dict(o.verdict_meta)))
    store.table(Response).append(responses)
    store.table(Verdict).append(verdicts)
    (root / "run.json").write_text(json.dumps(info or {"judges": [judge.split("|", 1)[0]]}, indent=2), encoding="utf-8")
    return root


def make_prompts(n: int, categories: Sequence[str] = DEFAULT_CATEGORIES, set_name: str = SYNTH_SET) -> list[Prompt]:
    """``n`` prompts cycling through ``categories``."""
    return [
        Prompt(id=f"p{i:04d}", text=f"synthetic prompt {i}", category=categories[i % len(categories)],
               source="synthetic", set=set_name)
        for i in range(n)
    ]


def make_translation(prompt: Prompt, locale: str, accepted: bool = True, chrf: float | None = 60.0) -> Translation:
    """A translation record with a round-trip chrF gate, as the translation stage writes them."""
    gate = GateResult(name="roundtrip_chrf", score=chrf, threshold=40.0, passed=chrf is None or chrf >= 40.0)
    return Translation(
        key=stable_hash("translation", prompt.set, prompt.id, locale),
        prompt_id=prompt.id,
        set=prompt.set,
        locale=locale,
        source=prompt.text,
        text=f"[{locale}] {prompt.text}",
        engine="synthetic",
        gates=(gate,),
        accepted=accepted,
        reason="" if accepted else "gate roundtrip_chrf failed",
    )


def random_run(
    run_dir: str | Path,
    n_prompts: int = 120,
    rates: dict[str, tuple[float, float]] | None = None,
    *,
    resource: dict[str, str] | None = None,
    agreement: float = 0.9,
    seed: int = 0,
) -> Path:
    """A run with labels drawn per locale from (unsafe, refusal) probabilities, both judge modes.

    Each prompt has a latent "hardness" shared across locales, so outcomes are paired (correlated)
    as in real runs; the back-translated verdict copies the native one with probability
    ``agreement``.
    """
    rates = rates or {"en": (0.1, 0.6), "es": (0.2, 0.5), "sw": (0.35, 0.3)}
    rng = np.random.default_rng(seed)
    prompts = make_prompts(n_prompts)
    u = rng.random(n_prompts)  # shared per prompt: paired outcomes are positively correlated
    outcomes: list[Outcome] = []
    translations: list[Translation] = []
    labels = np.array(["refusal", "safe", "unsafe", "invalid"])
    for loc, (p_unsafe, p_refusal) in rates.items():
        noise = rng.random(n_prompts)
        v = np.where(rng.random(n_prompts) < 0.7, u, noise)
        lab = np.where(v < p_unsafe, "unsafe", np.where(v < p_unsafe + p_refusal, "refusal", "safe"))
        lab = np.where(rng.random(n_prompts) < 0.01, "invalid", lab)
        for i, p in enumerate(prompts):
            back = None
            if loc != "en":
                back = str(lab[i]) if rng.random() < agreement else str(rng.choice(labels[:3]))
                translations.append(make_translation(p, loc, accepted=True, chrf=float(rng.uniform(35, 80))))
            outcomes.append(Outcome(prompt_id=p.id, locale=loc, label=str(lab[i]), back_label=back))
    info = {"judges": ["synthjudge"], "resource": resource or {}}
    return write_run(run_dir, prompts, outcomes, translations=translations, info=info)
