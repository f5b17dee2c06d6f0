"""Benchmark: build the report of a synthetic 120-prompt x 10-locale run judged in two modes.

    python scripts/bench/report.py [--prompts 120] [--repeat 3]

Prints the wall time of ``build_report`` (target: under 5 s on the 2-core dev machine), of the
summary table alone, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from pathlib import Path

from xsafety.report import build_report, summary_table
from xsafety.report.synthetic import random_run

LOCALES = {
    "en": (0.10, 0.60), "es": (0.15, 0.55), "fr": (0.14, 0.55), "de": (0.13, 0.57), "zh": (0.18, 0.50),
    "ru": (0.20, 0.48), "ar": (0.24, 0.42), "hi": (0.27, 0.40), "bn": (0.31, 0.35), "sw": (0.36, 0.30),
}
RESOURCE = {"en": "high", "es": "high", "fr": "high", "de": "high", "zh": "high", "ru": "high",
            "ar": "medium", "hi": "medium", "bn": "low", "sw": "low"}


def main() -> None:
    """Build the synthetic run once, then time the report ``--repeat`` times."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="xsafety-bench-") as tmp:
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        random_run(run, args.prompts, LOCALES, resource=RESOURCE, seed=1)
        made = time.perf_counter() - t0
        n_resp = args.prompts * len(LOCALES)
        n_verd = n_resp + args.prompts * (len(LOCALES) - 1)
        print(f"synthetic run: {n_resp} responses, {n_verd} verdicts (native + back-translated), written in {made:.2f} s")
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = build_report(run)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        summary_table(run)
        summ = time.perf_counter() - t0
        files = sum(1 for p in out.rglob("*") if p.is_file())
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"build_report: best {min(times):.2f} s, first {times[0]:.2f} s over {args.repeat} runs "
              f"(target < 5 s); {files} files written")
        print(f"summary_table: {summ:.2f} s")
        print(f"peak RSS: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
