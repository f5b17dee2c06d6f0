"""The CLI tunes Python's garbage collector for long batch jobs; cyclic garbage must still go."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, weakref
from xsafety import cli
cli._tune_gc()
assert gc.isenabled()
class Node:
    pass
refs = []
for _ in range(50):
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: refcounting alone never frees it
    refs.append(weakref.ref(a))
    del a, b
junk = [[i] for i in range(3 * cli.GC_YOUNG_THRESHOLD)]  # allocations that trigger collections
print(sum(r() is None for r in refs))
"""


def test_cycles_made_after_tuning_are_still_collected() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip()) == 50
