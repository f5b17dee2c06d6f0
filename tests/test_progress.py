"""Progress: the estimate is there from the first batch (per token when tokens are reported), and
without a terminal one log line a minute says how far a stage is."""

from __future__ import annotations

import logging

import pytest
from rich.progress import Progress

from xsafety import progress as prog


class Clock:
    """A clock the test steps by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(prog, "clock", c)
    return c


def _progress(enabled: bool) -> Progress:
    return Progress(prog.EtaColumn(), disable=not enabled)


def test_estimate_from_the_first_batch_per_item(clock: Clock) -> None:
    bar = prog.Bar(_progress(False), "translate es", 100)
    assert bar.eta() is None  # nothing done yet: no guess
    clock.now += 10
    bar.advance(20)  # one batch of 20 in 10 s
    assert bar.eta() == pytest.approx(40.0)


def test_estimate_per_token(clock: Clock) -> None:
    bar = prog.Bar(_progress(False), "generate", 100)
    clock.now += 10
    # A batch of 10 short answers, 50 tokens each: 50 tok/s.
    bar.advance(10, tokens=500)
    assert bar.eta() == pytest.approx(90 * 50 / 50)
    # A stage that knows its whole work in tokens (prompt tokens + budget) uses it instead.
    known = prog.Bar(_progress(False), "generate", 100, expected_tokens=20_000)
    clock.now += 10
    known.advance(10, tokens=500)
    assert known.eta() == pytest.approx((20_000 - 500) / 50)


def test_a_burst_of_results_does_not_shrink_the_estimate(clock: Clock) -> None:
    # A batched model hands back 32 answers within a millisecond after 32 s of work.
    bar = prog.Bar(_progress(False), "generate", 320)
    clock.now += 32
    for _ in range(32):
        bar.advance(1, tokens=10)
        clock.now += 0.00003
    assert bar.eta() == pytest.approx(288.0, rel=0.01)


def test_one_log_line_a_minute_without_a_terminal(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="xsafety.progress")
    bar = prog.Bar(_progress(False), "generate", 600)
    for _ in range(150):  # 150 items, one every 2 s: 300 s
        clock.now += 2
        bar.advance(1, rate="12.0 tok/s", tokens=24)
    lines = [r.getMessage() for r in caplog.records if r.name == "xsafety.progress"]
    assert len(lines) == 5
    assert lines[-1] == "generate: 150/600 (25%), 3,600 tokens, 12.0 tok/s, 5m00s elapsed, eta 15m00s"


def test_no_log_lines_when_a_bar_is_drawn(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="xsafety.progress")
    p = _progress(True)
    bar = prog.Bar(p, "judge", 10)
    clock.now += 120
    bar.advance(5)
    assert not [r for r in caplog.records if r.name == "xsafety.progress"]
    assert p.tasks[0].fields["eta"] == pytest.approx(120.0)


def test_duration_text() -> None:
    assert [prog.duration(x) for x in (None, 5, 250, 3720)] == ["?", "5s", "4m10s", "1h02m"]
