"""Precision and recall of the degenerate-output detector (xsafety/judges/invalid.py).

Two kinds of labelled rows:

* ``judges/invalid/labelled.jsonl`` (in the project): answers of the built-in SmolLM2-135M in en,
  es, ca, gl and eo taken from the default run and labelled by hand (``class``: loop, echo,
  wrong-language, incoherent, fluent), plus hand-written fluent answers that must pass (short
  answers, refusals in 12 languages, lists, code, a table, an answer quoting the prompt);
* from ``../shared/data`` when present (never copied into the project): human-translated XSafety
  prompts in 10 languages as fluent text in their locale, and model answers from ``judge_dev.jsonl``
  (en, fr) as fluent answers; and, built from the same texts, synthetic degenerate answers (the
  prompt echoed, a loop of one sentence, the text of another language under the locale).

"incoherent" rows (fluent-looking nonsense in the right language) are outside what the detector
can see without a language model; they count as misses in the recall and are shown apart.

    .venv/bin/python scripts/invalid_eval.py [--shared ../shared] [--per-language 60]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "judges" / "invalid" / "labelled.jsonl"
PARALLEL_LANGS = ("en", "zh", "ar", "bn", "de", "es", "fr", "hi", "ja", "ru")


@dataclass(frozen=True)
class Row:
    """One labelled answer."""

    source: str
    locale: str
    prompt: str
    response: str
    invalid: bool
    cls: str
    finish_reason: str = "stop"


def load_labelled(path: Path = LABELLED) -> list[Row]:
    """The project's own labelled file."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            rows.append(Row(d["source"], d["locale"], d["prompt"], d["response"], bool(d["invalid"]), d["class"], d.get("finish_reason", "stop")))
    return rows


def shared_rows(shared: Path, per_language: int = 60, seed: int = 0) -> list[Row]:
    """Fluent and synthetic degenerate rows built from ``shared/data`` (empty when it is absent)."""
    data = shared / "data"
    parallel = data / "xsafety_parallel.jsonl"
    dev = data / "judge_dev.jsonl"
    if not parallel.is_file() or not dev.is_file():
        return []
    rng = random.Random(seed)
    table = [json.loads(line) for line in parallel.read_text(encoding="utf-8").splitlines() if line.strip()]
    table = [r for r in table if all(isinstance(r.get(lang), str) and len(r[lang].strip()) > 0 for lang in PARALLEL_LANGS)]
    rows: list[Row] = []
    for n_lang, lang in enumerate(PARALLEL_LANGS):
        sample = rng.sample(table, per_language * 2)
        for k in range(per_language):
            row, other = sample[2 * k], sample[2 * k + 1]
            text, prompt = row[lang].strip(), other[lang].strip()
            rows.append(Row("xsafety-parallel", lang, prompt, text, False, "fluent"))
            kind = k % 3
            if kind == 0:  # the prompt said back
                rows.append(Row("synthetic", lang, text, text, True, "echo"))
            elif kind == 1:  # one sentence over and over
                rows.append(Row("synthetic", lang, prompt, " ".join([text] * 4), True, "loop"))
            else:  # another language's text under this locale
                foreign = PARALLEL_LANGS[(n_lang + 1 + k) % len(PARALLEL_LANGS)]
                if foreign == lang:
                    foreign = PARALLEL_LANGS[(n_lang + 2) % len(PARALLEL_LANGS)]
                rows.append(Row("synthetic", lang, prompt, row[foreign].strip(), True, "wrong-language"))
    answers = [json.loads(line) for line in dev.read_text(encoding="utf-8").splitlines() if line.strip()]
    for lang in ("en", "fr"):
        pool = [a for a in answers if a.get("lang") == lang and str(a.get("response", "")).strip()]
        for a in rng.sample(pool, min(len(pool), per_language * 4)):
            # Some dataset answers are the prompt said back word for word: those are echoes.
            echo = " ".join(a["response"].split()).strip(" .").casefold() == " ".join(a["prompt"].split()).strip(" .").casefold()
            rows.append(Row(f"judge-dev:{a.get('source', '')}", lang, a["prompt"], a["response"], echo, "echo" if echo else "fluent"))
    return rows


def predict(rows: Sequence[Row]) -> list[tuple[bool, str]]:
    """The detector's call on each row: (invalid?, reason). Both the before-judge checks and the
    language check apply (the language check would spare a judged refusal; here none is judged)."""
    from xsafety.judges.base import JudgeInput
    from xsafety.judges.invalid import InvalidSettings, after_judge, before_judge

    settings = InvalidSettings()
    out = []
    for r in rows:
        item = JudgeInput(r.prompt, r.response, r.locale, {"finish_reason": r.finish_reason})
        found = before_judge(item, settings) or after_judge(item, settings)
        out.append((found is not None, found.reason if found else ""))
    return out


def score(rows: Sequence[Row], predictions: Sequence[tuple[bool, str]]) -> dict[str, Any]:
    """Precision, recall, F1 overall; recall per class; false-positive rate per source and locale."""
    tp = sum(r.invalid and p for r, (p, _) in zip(rows, predictions))
    fp = sum((not r.invalid) and p for r, (p, _) in zip(rows, predictions))
    fn = sum(r.invalid and not p for r, (p, _) in zip(rows, predictions))
    by_class: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    fluent: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r, (p, _) in zip(rows, predictions):
        if r.invalid:
            by_class[r.cls][0] += int(p)
            by_class[r.cls][1] += 1
        else:
            for key in (f"source:{r.source}", f"locale:{r.locale}"):
                fluent[key][0] += int(p)
                fluent[key][1] += 1
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return {
        "n": len(rows),
        "invalid": tp + fn,
        "tp": tp, "fp": fp, "fn": fn,
        "precision": precision,
        "recall": recall,
        "recall_without_incoherent": _recall(rows, predictions, exclude="incoherent"),
        "recall_by_class": {c: (k / n, n) for c, (k, n) in sorted(by_class.items())},
        "false_positive_rate": {g: (k / n, n) for g, (k, n) in sorted(fluent.items())},
        "reasons": dict(Counter(reason for _, reason in predictions if reason)),
    }


def _recall(rows: Sequence[Row], predictions: Sequence[tuple[bool, str]], exclude: str) -> float | None:
    pairs = [(r, p) for r, (p, _) in zip(rows, predictions) if r.invalid and r.cls != exclude]
    return sum(p for _, p in pairs) / len(pairs) if pairs else None


def report(name: str, figures: dict[str, Any]) -> str:
    """The figures as text."""
    lines = [f"== {name}: {figures['n']} answers, {figures['invalid']} degenerate"]
    lines.append(f"precision {figures['precision']:.3f}  recall {figures['recall']:.3f}  "
                 f"recall without 'incoherent' {figures['recall_without_incoherent']:.3f}  "
                 f"(tp {figures['tp']}, fp {figures['fp']}, fn {figures['fn']})")
    for cls, (value, n) in figures["recall_by_class"].items():
        lines.append(f"  recall {cls:<15} {value:.3f}  (n={n})")
    for group, (value, n) in figures["false_positive_rate"].items():
        lines.append(f"  false positives {group:<32} {value:.3f}  (n={n})")
    lines.append(f"  reasons given: {figures['reasons']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the figures for the project's file and, when present, the shared-data rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--per-language", type=int, default=60)
    args = parser.parse_args(argv)
    own = load_labelled()
    print(report("judges/invalid/labelled.jsonl", score(own, predict(own))))
    extra = shared_rows(args.shared, args.per_language)
    if not extra:
        print(f"(no {args.shared}/data: shared-data rows skipped)")
        return 0
    print(report(f"{args.shared}/data (built at run time)", score(extra, predict(extra))))
    both = own + extra
    print(report("all", score(both, predict(both))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
