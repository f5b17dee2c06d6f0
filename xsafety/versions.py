"""The implementation version of every component that signs what it makes.

A record's key contains the signature of the component that made it (``records.signature``), and
every signature of a kind listed here carries ``impl:<version>``. Bump a component's version in
the same commit as any change to its code that can change its output (a lexicon matching rule, a
prompt format, a decoding loop, a gate's arithmetic) or the form of its signature: its records are
then recomputed on the next run, instead of old ones being silently reused. A change that cannot
change an output (speed, logging, batching) keeps the version.

A change to how keys are formed from signatures and items (not to what a component makes) is
not a component's version: it is the run directory's store format (``runinfo.STORE_FORMAT``), and
``xsafety migrate`` re-keys an older directory from what its records hold (the set's name left
the prompt and response keys in format 2 without any version here moving).

The versions also stand in for the code in the plan's fingerprints (``xsafety.plan``), which let a
run know a signature without loading the component: no file modification time is involved.
"""

from __future__ import annotations

# signature kind -> implementation version
IMPLEMENTATION_VERSIONS: dict[str, int] = {
    # target models (models/hf.py: hf, gguf and smollm2 specs; models/openai.py)
    "hf": 1,
    "openai": 1,
    # judges (judges/*.py, by the ``kind`` their signatures start with)
    "refusal-lexicon": 1,
    "llm": 1,
    "classifier": 1,
    "ensemble": 1,
    # translation engines and the quality gates (translate/)
    "apertium": 1,
    "seq2seq": 1,
    "chat": 1,
    "reference": 1,
    "gates": 1,
    # attacks (attacks.py: rendering and transforms)
    "attack": 1,
}

MODEL_KINDS: tuple[str, ...] = ("hf", "openai")
JUDGE_KINDS: tuple[str, ...] = ("refusal-lexicon", "llm", "classifier", "ensemble")


def versions_of(kinds: tuple[str, ...]) -> dict[str, int]:
    """The versions of ``kinds`` (for a fingerprint)."""
    return {kind: IMPLEMENTATION_VERSIONS[kind] for kind in kinds}
