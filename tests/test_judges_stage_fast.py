"""The judging stage's faster paths give what the plain ones give: keys, labels and stored lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xsafety.judges.stage import MODES, _json_plain, _translation_sources, _VerdictKeys, _write_verdicts, verdict_key
from xsafety.records import GateResult, Translation, Verdict
from xsafety.store import _LOAD_CACHE, Store


def clear_load_cache() -> None:
    """Forget the tables this process has read, so that the next read parses the shards."""
    _LOAD_CACHE.clear()

SIGNATURE = "refusal-lexicon|compliance:safe|lexicon:f63f4eb8d097|opening:2s/400c|invalid|version:1"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "response_key",
    ["b6f3080c6c74128336a3", "", 'quote " and back\\slash', "tab\tnew\nline\x00nul\x1f", "ünïcödé 中文 عربي \u2028 \U0001f600"],
)
def test_verdict_keys_equal_verdict_key(response_key: str, mode: str) -> None:
    assert _VerdictKeys(SIGNATURE, mode)(response_key) == verdict_key(response_key, SIGNATURE, mode)


def test_verdict_keys_with_an_odd_signature() -> None:
    sig = 'judge "x"|ünï\ncode'
    assert _VerdictKeys(sig, "native")("k") == verdict_key("k", sig, "native")
    # A non-string key (not one the store accepts) still gets the general path's answer.
    assert _VerdictKeys(sig, "native")(12) == verdict_key(12, sig, "native")  # type: ignore[arg-type]


def _translation(key: str, text: str, gates: tuple[GateResult, ...] = ()) -> Translation:
    return Translation(key=key, prompt_id="p1", set="s", locale="es", source=f"source of {text}", text=text,
                       engine="test", gates=gates)


def test_translation_sources_are_the_rows_load_keeps(tmp_path: Path) -> None:
    store = Store(tmp_path / "run")
    gate = GateResult(name="chrf", score=0.9, threshold=0.5, passed=True)
    with store.table(Translation).writer() as w:
        w.write(_translation("t1", "uno", (gate,)))
        w.write(_translation("t1", "a later copy of t1"))  # load keeps the first of a key
        w.write(_translation("t2", "dos"))
    shard = store.table(Translation).shards()[0]
    good = _translation("t4", "cuatro").to_dict()
    broken = {**_translation("t3", "tres").to_dict(), "gates": [{"name": "chrf"}]}  # no GateResult in it
    odd = {**_translation("t5", "cinco").to_dict(), "gates": ["chrf"]}  # a gate that is not an object
    with open(shard, "a", encoding="utf-8") as fh:
        for row in (broken, odd, good, {**broken, "gates": []}):  # t3 again, now buildable
            fh.write(json.dumps(row) + "\n")
    expected = [(t.key, t.set, t.locale, t.text, t.source) for t in Store(store.root).table(Translation).load().values()]
    assert [k for k, *_ in expected] == ["t1", "t2", "t4", "t3"]
    clear_load_cache()
    assert list(_translation_sources(Store(store.root))) == expected  # from the rows
    Store(store.root).table(Translation).load()
    assert list(_translation_sources(Store(store.root))) == expected  # from the records this process holds


def _verdict(key: str, meta: dict, categories: tuple = ()) -> Verdict:  # type: ignore[type-arg]
    return Verdict(key=key, response_key="r", judge="j", mode="native", label="refusal", rationale="why ü",
                   categories=categories, meta=meta)


BATCHES = [
    [_verdict("a", {"phrase": "i can't", "list": "en", "invalid": {"loop_share": 0.5, "period": 2}}),
     _verdict("b", {"context": [{"role": "user", "content": "中文 \"q\"\n"}], "score": float("nan")}, ("S1", "S2")),
     _verdict("c", {"lone": "\udc80 surrogate", "n": None, "ok": True, "t": ("x", 1)})],
    [_verdict("d", {"by_number": {1: "one"}})],  # a key that is not a string: written by `write`
    [_verdict("e", {"flag": {True: "yes"}}), _verdict("f", {})],
    [_verdict("g", {"gate": GateResult(name="x", score=None, threshold=None, passed=True)})],  # an object
]


def test_verdict_batches_are_stored_as_write_stores_them(tmp_path: Path) -> None:
    plain, batched = Store(tmp_path / "plain"), Store(tmp_path / "batched")
    with plain.table(Verdict).writer() as w:
        for batch in BATCHES:
            for record in batch:
                w.write(record)
    with batched.table(Verdict).writer() as w:
        for batch in BATCHES:
            _write_verdicts(w, batch)
    (a,), (b,) = plain.table(Verdict).shards(), batched.table(Verdict).shards()
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_bytes().splitlines()) == 7
    assert all(_json_plain(r.meta) for r in BATCHES[0])  # the first batch took the one-write path
    assert not _json_plain({1: "one"}) and not _json_plain({"k": [GateResult("x", None, None, True)]})
    assert _json_plain({"k": [{"a": (1, 2.5, None, True)}]})
