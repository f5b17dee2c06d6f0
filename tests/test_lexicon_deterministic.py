"""The refusal lexicon compiles the same patterns in every process, whatever the string hash seed."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import hashlib
from xsafety.judges import load_judge
judge = load_judge("default").inner
h = hashlib.sha256()
for stem in sorted(k for k, v in judge._lists.items() if v is not None):
    plist = judge._lists[stem]
    for attr in ("opening_re", "start_re", "lead_re", "weak_re", "refute_re", "pivot_re"):
        pattern = getattr(plist, attr, None)
        h.update(f"{stem}|{attr}|{pattern.pattern if pattern is not None else None}".encode())
print(h.hexdigest())
"""


def _patterns(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout


def test_phrase_patterns_do_not_depend_on_the_hash_seed() -> None:
    # Equal-length phrases were ordered as a set iterates, which the hash seed decides: seeds 1,
    # 2 and 3 compiled three different sets of patterns before the order was made total.
    assert _patterns("1") == _patterns("2") == _patterns("3")
