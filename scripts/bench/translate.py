"""Benchmark the translation engines and the translation cache; prints figures, asserts nothing.

    .venv/bin/python scripts/bench/translate.py [--n 64] [--single 16] [--max-new 32]

* seq2seq: a random Marian model built offline (d_model 512, 6+6 layers, ~44M parameters: big enough that compute,
  not Python overhead, dominates), the same sentences translated greedily at batch 32 and one at
  a time on the SAME loaded model, then rerun through the translation cache (first run = cache
  misses + writes; rerun = all hits). A random model rarely emits EOS, so every output runs to
  ``--max-new`` tokens: both modes do the same amount of decoding.
* apertium: one null-flushed process for N lines vs one process per line (on a sample).

Peak memory is the process's ``ru_maxrss`` high-water mark after each phase (phases run from the
least to the most memory-hungry, so each figure is that phase's peak).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.tiny_models import corpus  # noqa: E402
from tests.tiny_seq2seq import build_tiny_marian  # noqa: E402
from xsafety.translate.cache import TranslationCache  # noqa: E402
from xsafety.translate.engines.apertium import ApertiumEngine  # noqa: E402
from xsafety.translate.engines.seq2seq import Seq2SeqEngine, describe  # noqa: E402

D_MODEL = 512
LAYERS = 6
VOCAB = 8000
SHARED = REPO.parent / "shared" / "data" / "xsafety_parallel.jsonl"


def vocab_lines() -> list[str]:
    """English and Spanish XSafety sentences to train the benchmark vocabulary on, when ../shared is here."""
    if not SHARED.exists():
        return corpus(400)
    rows = [json.loads(line) for line in SHARED.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r[k].strip() for r in rows for k in ("en", "es") if r.get(k)]


def sentences(n: int) -> list[str]:
    """Real XSafety English prompts when ../shared is here, else the tiny-model corpus."""
    if SHARED.exists():
        rows = [json.loads(line) for line in SHARED.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = [r["en"].strip() for r in rows if r.get("en")]
    else:
        texts = corpus(n * 2)
    # Keep sentence-sized inputs: the point is decoding cost, not truncation.
    texts = [t for t in texts if len(t) < 200]
    return texts[:n]


def peak_mb() -> float:
    """Process peak resident memory so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_seq2seq(n: int, single: int, max_new: int, work: Path) -> None:
    # The vocabulary is trained on real English and Spanish sentences with an opus-mt-like size, so
    # sentences tokenize to realistic lengths (a 140-piece test vocabulary makes them ~4x longer,
    # which inflates encoder and attention cost and is not what users run).
    model = build_tiny_marian(
        work / "marian", d_model=D_MODEL, layers=LAYERS, ffn=4 * D_MODEL, heads=8,
        vocab_size=VOCAB, lines=vocab_lines(),
    )
    info = describe(str(model))
    size_mb = sum(p.stat().st_size for p in model.glob("*.safetensors")) / 1e6
    print(
        f"seq2seq model: Marian d_model={D_MODEL} {LAYERS}+{LAYERS} layers, vocab {VOCAB}, "
        f"{info['params'] / 1e6:.1f}M params, {size_mb:.0f} MB on disk"
    )
    texts = sentences(n)
    engine = Seq2SeqEngine(str(model), device="cpu", dtype="fp32", max_new_tokens=max_new, batch_tokens=10**9)
    # Warm-up at both shapes: first-call allocations and kernel choice are not what is measured.
    engine.translate(texts[:2], "en", "es")
    engine.translate(texts[:32], "en", "es")
    print(f"  after load: peak {peak_mb():.0f} MB")

    t0 = time.perf_counter()
    one = [engine.translate([t], "en", "es")[0] for t in texts[:single]]
    t_single = time.perf_counter() - t0
    rate_single = single / t_single
    print(f"  one at a time : {single} sentences in {t_single:.2f} s = {rate_single:.2f} sent/s, peak {peak_mb():.0f} MB")

    t0 = time.perf_counter()
    batched: list = []
    for i in range(0, len(texts), 32):
        batched.extend(engine.translate(texts[i : i + 32], "en", "es"))
    t_batch = time.perf_counter() - t0
    rate_batch = len(texts) / t_batch
    same = sum(a[0].text == b[0].text for a, b in zip(one, batched[:single]))
    print(
        f"  batch 32      : {len(texts)} sentences in {t_batch:.2f} s = {rate_batch:.2f} sent/s, "
        f"peak {peak_mb():.0f} MB; speed-up x{rate_batch / rate_single:.1f}; "
        f"{same}/{single} outputs identical to one-at-a-time"
    )

    cache = TranslationCache(work / "cache")
    t0 = time.perf_counter()
    cache.translate(engine, texts, "en", "es")
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    cache.translate(engine, texts, "en", "es")
    t_rerun = time.perf_counter() - t0
    cache.flush()
    TranslationCache.forget(work / "cache")
    t0 = time.perf_counter()
    TranslationCache(work / "cache").translate(engine, texts, "en", "es")
    t_reload = time.perf_counter() - t0
    print(
        f"  cache         : first run {t_first:.2f} s, rerun {t_rerun * 1000:.1f} ms "
        f"({100 * t_rerun / t_first:.2f}% of first), rerun after reloading from disk {t_reload * 1000:.1f} ms "
        f"({100 * t_reload / t_first:.2f}%)"
    )


def bench_apertium(n: int, sample: int) -> None:
    if shutil.which("apertium") is None:
        print("apertium: not installed, skipped")
        return
    engine = ApertiumEngine(modes={("en", "es"): "eng-spa"})
    texts = sentences(n)
    t0 = time.perf_counter()
    batched = engine.translate(texts, "en", "es")
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [engine.translate([t], "en", "es")[0] for t in texts[:sample]]
    t_single = time.perf_counter() - t0
    same = sum(a[0].text == b[0].text for a, b in zip(single, batched))
    print(
        f"apertium eng-spa: one process for {len(texts)} lines {len(texts) / t_batch:.0f} sent/s; "
        f"one process per line {sample / t_single:.1f} sent/s (sample {sample}); "
        f"x{(len(texts) / t_batch) / (sample / t_single):.0f}; {same}/{sample} identical outputs"
    )


def main() -> None:
    """Run both benchmarks and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="sentences for the batched seq2seq run")
    parser.add_argument("--single", type=int, default=16, help="sentences translated one at a time")
    parser.add_argument("--max-new", type=int, default=32, help="new tokens per sentence")
    parser.add_argument("--apertium-n", type=int, default=500)
    parser.add_argument("--apertium-sample", type=int, default=30)
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.apertium_n > 0:
        bench_apertium(args.apertium_n, args.apertium_sample)
    with tempfile.TemporaryDirectory() as tmp:
        bench_seq2seq(args.n, args.single, args.max_new, Path(tmp))


if __name__ == "__main__":
    main()
