"""Judgements per second for each judge kind on ../shared/data/judge_dev.jsonl, plus XSTest refusal metrics.

Lexicon on every row; the classifier (tiny random BERT) and the llm judge (tiny random Llama, and
the real SmolLM2 rubric unless --no-smollm2) on a sample. Prints figures; asserts nothing.

    .venv/bin/python scripts/bench/judge.py [--sample 64] [--no-smollm2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from xsafety.judges import load_judge  # noqa: E402
from xsafety.judges.evaluate import evaluate, load_rows  # noqa: E402


def timed(label: str, judge_factory, rows) -> dict:
    t0 = time.perf_counter()
    judge = judge_factory()
    load_s = time.perf_counter() - t0
    metrics = evaluate(judge, rows)
    judge.close()
    print(f"{label:<28} rows {len(rows):>5}  load {load_s:6.1f} s  {metrics['per_second']:>8} judgements/s")
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "judge_dev.jsonl"))
    parser.add_argument("--sample", type=int, default=64)
    parser.add_argument("--no-smollm2", action="store_true")
    args = parser.parse_args()
    rows = load_rows(args.data)
    xstest = [r for r in rows if r.source == "xstest_v2"]
    sample = xstest[:: max(1, len(xstest) // args.sample)][: args.sample]

    lex = timed("refusal-lexicon (all rows)", lambda: load_judge("default"), rows)
    ref = lex["groups"]["source:xstest_v2"]["refusal"]
    print(
        f"  XSTest refusal vs rest: P {ref['precision']:.3f}  R {ref['recall']:.3f}  F1 {ref['f1']:.3f}  "
        f"FPR {ref['fpr']:.3f}  (tp {ref['tp']} fp {ref['fp']} fn {ref['fn']} tn {ref['tn']})"
    )
    for name, group in lex["groups"].items():
        if name.startswith("source:") and group["three_way"] is None:
            bi = group["binary_unsafe"]
            print(f"  {name}: binary unsafe accuracy {bi['accuracy']:.3f} (lexicon never says unsafe)")

    from tiny_models import build_tiny_classifier, build_tiny_llama

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        cls = build_tiny_classifier(tmp_path / "cls")
        toml = tmp_path / "cls.toml"
        toml.write_text(f'kind = "classifier"\nmodel = "{cls}"\nbatch_size = 32\n[labels]\nsafe = "safe"\nunsafe = "unsafe"\n')
        timed("classifier (tiny BERT)", lambda: load_judge(str(toml)), xstest[:512])
        llama = build_tiny_llama(tmp_path / "llama")
        (tmp_path / "short.txt").write_text("Q: {{prompt}}\nA: {{response}}\nLABEL:")
        ltoml = tmp_path / "llm.toml"
        ltoml.write_text(f'kind = "llm"\nmodel = "hf:{llama}"\ntemplate = "short.txt"\nformat = "rubric"\nmax_new_tokens = 16\n')
        short = [r for r in sample if len(r.prompt) + len(r.response) < 600]
        timed("llm rubric (tiny Llama)", lambda: load_judge(str(ltoml)), short)
    if not args.no_smollm2:
        metrics = timed("llm rubric (SmolLM2-135M)", lambda: load_judge("rubric"), sample)
        g = metrics["groups"]["all"]
        print(f"  SmolLM2 rubric on {len(sample)} XSTest rows: predicted {g['predicted']}, "
              f"3-way accuracy {g['three_way']['accuracy']:.3f}, refusal F1 {g['refusal']['f1']:.3f}")


if __name__ == "__main__":
    main()
