"""The judging stage's faster paths give what the plain ones give: keys, labels and stored lines."""

from __future__ import annotations

import pytest

from xsafety.judges.stage import MODES, _VerdictKeys, verdict_key

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
