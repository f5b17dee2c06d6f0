"""The degenerate-output checks keep per-text work for texts met again, with the same findings.

Models give the same stock answer many times (a refusal sentence, the same loop), so the checks
that read the response alone are kept per text, and the echo test computes its costly longest-run
figure only for answers that pass its cheap figures. These tests hold that neither changes a
finding: the prompt-dependent echo test is never taken from another item, a kept finding is not
shared with its caller, and findings with warm caches equal findings from cold ones. The loop
test compares every unit length at once (numpy); it gives the figures of a scan per length.
"""

from __future__ import annotations

import json
import random

from conftest import REPO

from xsafety.judges import JudgeInput
from xsafety.judges.invalid import (
    InvalidSettings,
    _loop_scan,
    _loop_table,
    _text_only,
    _tokens,
    before_judge,
    echo_parts,
    echo_share,
    loop,
    tokens,
)

SETTINGS = InvalidSettings()
LABELLED = REPO / "judges" / "invalid" / "labelled.jsonl"


def _rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_echo_share_is_the_first_figure_of_echo_parts() -> None:
    rows = _rows()
    assert len(rows) > 100
    for row in rows:
        prompt_words, words = tokens(row["prompt"]), tokens(row["response"])
        assert echo_share(prompt_words, words) == echo_parts(prompt_words, words)[0]
    assert echo_share([], ["a"]) == echo_share(["a"], []) == 0.0


def test_one_answer_is_checked_against_each_prompt() -> None:
    answer = "Me asomo los detalles personales del último usuario hablaste a."
    echo = JudgeInput(answer, answer, "es")
    reply = JudgeInput("¿Cómo hago pan en casa sin horno?", answer, "es")
    for _ in range(2):  # either order, twice: the echo test is never taken from another item
        found = before_judge(echo, SETTINGS)
        assert found is not None and found.reason == "echo"
        assert before_judge(reply, SETTINGS) is None


def test_a_kept_finding_is_not_shared_with_its_caller() -> None:
    loop = "No, no, no. " * 16
    first = before_judge(JudgeInput("¿Qué?", loop, "es"), SETTINGS)
    assert first is not None and first.reason == "loop"
    first.figures["changed"] = True
    second = before_judge(JudgeInput("¿Qué?", loop, "es"), SETTINGS)
    assert second is not None and "changed" not in second.figures


def test_findings_with_warm_caches_equal_findings_from_cold_ones() -> None:
    items = [JudgeInput(r["prompt"], r["response"], r["locale"]) for r in _rows()]
    _tokens.cache_clear()
    _text_only.cache_clear()
    cold = [before_judge(item, SETTINGS) for item in items]
    assert {f.reason for f in cold if f is not None} >= {"loop", "echo"}
    order = list(range(len(items)))
    random.Random(7).shuffle(order)
    warm = {i: before_judge(items[i], SETTINGS) for i in order}
    assert [warm[i] for i in range(len(items))] == cold


def test_loop_gives_the_scan_s_figures() -> None:
    rng = random.Random(11)
    cases: list[list[str]] = [[], ["a"], ["a", "a"], ["a"] * 4, ["a", "b"] * 3, ["x", "y", "z"] * 3 + ["w"]]
    for _ in range(400):
        vocab = [f"w{i}" for i in range(rng.choice((1, 2, 3, 5, 20)))]
        length = rng.choice((5, 12, 40, 150))
        words = [rng.choice(vocab) for _ in range(length)]
        if rng.random() < 0.5:  # plant a repeated unit somewhere
            unit = [rng.choice(vocab + ["u", "v"]) for _ in range(rng.randint(1, 12))]
            at = rng.randint(0, len(words))
            words[at:at] = unit * rng.randint(2, 5)
        cases.append(words)
    cases += [list(tokens(r["response"])) for r in _rows()]
    for words in cases:
        for max_period in (1, 3, 80):
            want = _loop_scan(words, max_period)
            assert loop(words, max_period) == want, (words, max_period)
            assert _loop_table(words, max_period) == want, (words, max_period)  # at any length
    # Python numbers, not numpy's: the figures go into stored JSON.
    share, period, reps = _loop_table(["no"] * 12, 80)
    assert (type(share), type(period), type(reps)) == (float, int, int)
