"""Benchmark: the item explorer of ``index.html`` on a run of XSafety's size (2,800 prompts x 10 locales).

    python scripts/bench/explorer.py [--prompts 2800] [--chars 600]

Writes a synthetic run through the real store (responses of about ``--chars`` characters, each
non-English one judged natively and on a back-translation of the same length, as a real run
stores them), then prints:

* the time to build the explorer section alone and the whole report (``build_report``);
* the size of ``index.html`` and of the explorer's embedded JSON;
* in headless Chromium (over CDP): the time from navigation to the load event, and to the
  explorer's first rendered page (``performance.now()`` when its rows are in the DOM), then the
  time to apply a locale filter and a text search over every response.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xsafety.records import Response, Verdict, stable_hash
from xsafety.report import build_report
from xsafety.report.build import compute
from xsafety.report.explorer import render_explorer
from xsafety.report.synthetic import SYNTH_JUDGE, Outcome, make_prompts, make_translation, write_run
from xsafety.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chromium_cdp import Browser  # noqa: E402

LOCALES = {
    "en": 0.60, "zh": 0.50, "ar": 0.42, "hi": 0.40, "ru": 0.48, "es": 0.55, "fr": 0.55, "de": 0.57, "ja": 0.50,
    "bn": 0.35,
}
WORDS = ("the of and to in is that for it as with was on be by this are or at from which you have an not "
         "but they his all were can we one there been if more when will would who so no refuse help sorry "
         "cannot provide information instead recommend safety please contact professional").split()


def text(rng: np.random.Generator, chars: int) -> str:
    """A sentence-like text of about ``chars`` characters."""
    words = rng.choice(WORDS, size=max(1, chars // 5))
    return " ".join(words)[:chars]


def make_run(root: Path, n_prompts: int, chars: int, seed: int = 1) -> Path:
    """A run of ``n_prompts`` x the ten locales, with texts and back-translations of real length."""
    rng = np.random.default_rng(seed)
    prompts = make_prompts(n_prompts)
    hard = rng.random(n_prompts)
    outcomes, translations = [], []
    for loc, p_refusal in LOCALES.items():
        flip = rng.random(n_prompts) < 0.25
        v = np.where(flip, rng.random(n_prompts), hard)
        for i, p in enumerate(prompts):
            label = "refusal" if v[i] < p_refusal else ("unsafe" if v[i] > 0.9 else "safe")
            outcomes.append(Outcome(p.id, loc, label, text=text(rng, chars)))
            if loc != "en":
                translations.append(make_translation(p, loc))
    run = write_run(root, prompts, outcomes, translations=translations,
                    info={"judges": ["synthjudge"], "resource": {c: "high" for c in LOCALES}})
    # Back-translated verdicts carry the back-translation (judged_text), as the judge stage writes them.
    store = Store(run)
    backs = []
    for r in store.table(Response).load().values():
        if r.locale == "en":
            continue
        backs.append(Verdict(key=stable_hash(r.key, SYNTH_JUDGE, "back-translated"), response_key=r.key, judge=SYNTH_JUDGE,
                             mode="back-translated", label="refusal", rationale="refusal phrase (en, opening): 'sorry'",
                             judged_text=text(rng, chars)))
    store.table(Verdict).append(backs)
    return run


def main() -> None:
    """Build the run, time the explorer and the report, then load the page in Chromium."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=2800)
    parser.add_argument("--chars", type=int, default=600)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="xsafety-bench-explorer-") as tmp:
        t0 = time.perf_counter()
        run = make_run(Path(tmp) / "run", args.prompts, args.chars)
        print(f"synthetic run: {args.prompts * len(LOCALES)} responses of ~{args.chars} chars "
              f"({args.prompts} prompts x {len(LOCALES)} locales), written in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        data = compute(run, breakdowns=False)
        t_compute = time.perf_counter() - t0
        t0 = time.perf_counter()
        section = render_explorer(data)
        t_explorer = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = build_report(run)
        t_report = time.perf_counter() - t0
        page = out / "index.html"
        html = page.read_text(encoding="utf-8")
        block = re.search(r'<script type="application/json" id="xs-items">(.*?)</script>', html, re.S)
        json_mb = len(block.group(1).encode()) / 1e6 if block else 0.0
        print(f"explorer section: {t_explorer:.2f} s to build (after {t_compute:.2f} s loading the run), "
              f"{len(section.encode()) / 1e6:.1f} MB")
        print(f"build_report: {t_report:.2f} s; index.html {page.stat().st_size / 1e6:.1f} MB "
              f"(embedded JSON {json_mb:.1f} MB)")
        with Browser() as b:
            wall = b.open(page)
            b.wait("document.getElementById('xs-explorer').dataset.ready === '1'")
            ready_ms = float(b.eval("+document.getElementById('xs-explorer').dataset.readyMs"))
            nav = b.eval("performance.getEntriesByType('navigation')[0].loadEventEnd")
            shown = b.eval("document.getElementById('xs-explorer').dataset.shown")
            rows = b.eval("document.querySelectorAll('[data-t=items] tr.item').length")
            print(f"chromium: load event {nav:.0f} ms after navigation (wall {wall:.2f} s); explorer ready "
                  f"{ready_ms:.0f} ms after navigation; {shown} responses listed, {rows} rows in the DOM")
            t0 = time.perf_counter()
            b.select_text("[data-f=locale]", "hi")
            t_filter = time.perf_counter() - t0
            hi = b.eval("document.getElementById('xs-explorer').dataset.shown")
            t0 = time.perf_counter()
            b.type("[data-f=search]", "recommend safety")
            b.wait("document.getElementById('xs-explorer').dataset.shown !== '" + str(hi) + "'", timeout=30)
            t_search = time.perf_counter() - t0 - 0.15  # the search waits 150 ms for typing to pause
            found = b.eval("document.getElementById('xs-explorer').dataset.shown")
            print(f"filter locale=hi: {t_filter * 1000:.0f} ms ({hi} responses); first search over them: "
                  f"{max(t_search, 0) * 1000:.0f} ms ({found} match)")


if __name__ == "__main__":
    main()
