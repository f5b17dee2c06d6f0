"""Machine translations against human references: corpus chrF/BLEU and what predicts quality.

For every locale where a set has human reference translations of the same prompt ids (from the
importers: ``xsafety.taxonomy.load_references``), translate the set with the chosen engine (the
stage is incremental, so translations already made are reused), then report

* corpus chrF and BLEU with their sacrebleu signatures, and the acceptance rate of the gates;
* the Spearman rank correlation between sentence-level reference chrF and every gate score,
  every quality signal, and the combined quality score: the evidence that the gates predict
  real quality, per locale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xsafety.errors import InputError
from xsafety.records import Translation

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger(__name__)


def rankdata(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy's ``rankdata``)."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float | None] | np.ndarray, y: Sequence[float | None] | np.ndarray) -> float:
    """Spearman's rho over the pairs where both values are present; NaN when undefined."""
    a = np.array([np.nan if v is None else v for v in x], dtype=float)
    b = np.array([np.nan if v is None else v for v in y], dtype=float)
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 3:
        return math.nan
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class LocaleEval:
    """Reference-based scores of one locale's machine translations."""

    locale: str
    engine: str
    items: int
    chrf: float
    bleu: float
    chrf_signature: str
    bleu_signature: str
    accepted: float
    accepted_chrf: float | None
    rejected_chrf: float | None
    correlations: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (NaN correlations become None)."""
        out = dict(self.__dict__)
        out["correlations"] = {k: None if math.isnan(v) else round(v, 4) for k, v in self.correlations.items()}
        return out


def score_against_references(
    translations: dict[str, Translation], references: dict[str, str], locale: str
) -> LocaleEval:
    """Corpus chrF/BLEU of ``translations`` against ``references`` (same prompt ids) and correlations."""
    from sacrebleu.metrics import BLEU, CHRF

    ids = sorted(pid for pid in translations if references.get(pid, "").strip())
    if not ids:
        raise InputError(f"no translated prompt of locale {locale!r} has a reference", field="locale")
    hyps = [translations[pid].text for pid in ids]
    refs = [references[pid] for pid in ids]
    chrf, bleu = CHRF(), BLEU()
    corpus_chrf = chrf.corpus_score(hyps, [refs])
    corpus_bleu = bleu.corpus_score(hyps, [refs])
    sentence = np.array([chrf.sentence_score(h, [r]).score for h, r in zip(hyps, refs)])
    recs = [translations[pid] for pid in ids]
    accepted = np.array([r.accepted for r in recs])

    columns: dict[str, list[float | None]] = {}
    for rec in recs:
        for g in rec.gates:
            columns.setdefault(f"gate:{g.name}", [])
        for name in (rec.meta.get("signals") or {}):
            columns.setdefault(f"signal:{name}", [])
    for rec in recs:
        gates = {g.name: g.score for g in rec.gates}
        sigs = rec.meta.get("signals") or {}
        for col in columns:
            kind, name = col.split(":", 1)
            columns[col].append(gates.get(name) if kind == "gate" else sigs.get(name))
    correlations = {col: spearman(vals, sentence) for col, vals in columns.items()}
    correlations["quality"] = spearman([r.quality for r in recs], sentence)
    correlations["accepted"] = spearman(accepted.astype(float), sentence)

    def mean(mask: np.ndarray) -> float | None:
        return round(float(sentence[mask].mean()), 2) if mask.any() else None

    return LocaleEval(
        locale=locale,
        engine=recs[0].engine,
        items=len(ids),
        chrf=round(float(corpus_chrf.score), 2),
        bleu=round(float(corpus_bleu.score), 2),
        chrf_signature="chrF2|" + str(chrf.get_signature()),
        bleu_signature="BLEU|" + str(bleu.get_signature()),
        accepted=round(float(accepted.mean()), 4),
        accepted_chrf=mean(accepted),
        rejected_chrf=mean(~accepted),
        correlations=correlations,
    )


def evaluate(
    set_name: str,
    locales: Sequence[str] | None = None,
    *,
    engine: str | None = None,
    out_dir: str | Path | None = None,
    limit: int | None = None,
    progress: "Progress | None" = None,
    **options: Any,
) -> list[LocaleEval]:
    """Translate ``set_name`` where it has references (all such locales, or ``locales``) and score it.

    Translations go to ``out_dir`` (default: the user's translations folder, so they are reused by
    later runs and never land in the repository unasked). ``limit`` keeps the first N prompts.
    """
    from xsafety.data import home_dir
    from xsafety.taxonomy import load_references, load_set
    from xsafety.translate.stage import translate_set

    references = load_references(set_name)
    if not references:
        raise InputError(f"set {set_name!r} has no reference translations", field="set")
    wanted = list(locales) if locales else sorted(references)
    missing = [loc for loc in wanted if loc not in references]
    if missing:
        raise InputError(
            f"set {set_name!r} has no references for {', '.join(missing)}; it has {', '.join(sorted(references))}",
            field="locales",
        )
    prompts = load_set(set_name)
    target = Path(out_dir) if out_dir is not None else home_dir() / "translations"
    results = []
    for locale in wanted:
        refs = references[locale]
        chosen = [p for p in prompts if refs.get(p.id, "").strip()]
        if limit:
            chosen = chosen[:limit]
        made = translate_set(chosen, [locale], engine=engine, out_dir=target, progress=progress, **options)[locale]
        by_id = {t.prompt_id: t for t in made}
        results.append(score_against_references(by_id, refs, locale))
    return results
