"""Progress display shared by every long stage: rich bars with item counts, rates and an honest estimate.

The time left is estimated by the bar itself, from the stage's own start, not by rich's sliding
window: a batched model delivers a whole batch of answers within milliseconds, which a window
reads as thousands of items per second (and shows nothing before a second update). Here the
estimate is there from the first batch on:

* per token when the stage reports tokens (``advance(n, tokens=k)``): throughput is measured in
  tokens per second and the work left in tokens: ``expected_tokens - tokens_done`` when the stage
  knows its total (e.g. prompt tokens plus the generation budget), else the items left times the
  mean tokens per item so far;
* per item otherwise: items left times the mean time per item since the start.

When output is not a terminal (CI, ``nohup``, a log file) no bar is drawn; instead one log line
per ``LOG_EVERY_S`` seconds says how far each stage is, so a long job still reports progress.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

log = logging.getLogger(__name__)

# Progress goes to stderr so that stdout stays clean for tables and machine-readable output.
console = Console(stderr=True)
LOG_EVERY_S = 60.0
# The clock bars read; tests replace it to step time without sleeping.
clock: Callable[[], float] = time.monotonic


def progress_enabled() -> bool:
    """Bars are drawn on a terminal unless ``XSAFETY_PROGRESS=0``; CI logs stay readable."""
    setting = os.environ.get("XSAFETY_PROGRESS")
    if setting is not None:
        return setting not in ("0", "false", "no")
    return sys.stderr.isatty()


def duration(seconds: float | None) -> str:
    """``1h02m``, ``4m10s``, ``12s``; ``?`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class EtaColumn(ProgressColumn):
    """Time left as the bar estimated it (``task.fields['eta']``), with how it was estimated."""

    def render(self, task: Task) -> Text:
        """``eta 4m10s`` (per token or per item), blank until the first update."""
        eta = task.fields.get("eta")
        if eta is None or task.finished:
            return Text("")
        return Text(f"eta {duration(eta)}", style="progress.remaining")


def make_progress() -> Progress:
    """A rich Progress with the columns every stage uses (``{task.fields[rate]}`` is free text)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        EtaColumn(),
        console=console,
        disable=not progress_enabled(),
        transient=False,
    )


class Bar:
    """One task on a Progress; ``advance`` takes optional free-text rate info and a token count."""

    def __init__(self, progress: Progress, description: str, total: int | None,
                 expected_tokens: int | None = None) -> None:
        self.progress = progress
        self.description = description
        self.total = total
        self.expected_tokens = expected_tokens
        self.task = progress.add_task(description, total=total, rate="", eta=None)
        self.started = clock()
        self.last_log = self.started
        self.done = 0
        self.tokens = 0
        self.rate_text = ""

    def eta(self) -> float | None:
        """Seconds left: per token when tokens were reported, else per item; None before any progress."""
        elapsed = clock() - self.started
        if self.done <= 0 or elapsed <= 0:
            return None
        if self.tokens > 0:
            per_second = self.tokens / elapsed
            if self.expected_tokens is not None:
                left = max(0, self.expected_tokens - self.tokens)
            elif self.total is not None:
                left = max(0, self.total - self.done) * self.tokens / self.done
            else:
                return None
            return left / per_second
        if self.total is None:
            return None
        return max(0, self.total - self.done) * elapsed / self.done

    def advance(self, n: int = 1, rate: str | None = None, tokens: int | None = None) -> None:
        """Move the bar on by ``n`` items (and ``tokens`` tokens) and update its rate text and estimate."""
        self.done += n
        self.tokens += tokens or 0
        fields: dict[str, Any] = {"eta": self.eta()}
        if rate is not None:
            fields["rate"] = rate
            self.rate_text = rate
        self.progress.update(self.task, advance=n, **fields)
        if self.progress.disable and clock() - self.last_log >= LOG_EVERY_S:
            self.last_log = clock()
            log.info("%s", self.status_line())

    def status_line(self) -> str:
        """One line on how far the stage is: ``generate: 120/700 (17%), 3,400 tokens, 14.2 tok/s, 4m10s elapsed, eta 6m10s``."""
        parts = [f"{self.description}: {self.done}/{self.total if self.total is not None else '?'}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        if self.tokens:
            parts.append(f"{self.tokens:,} tokens")
        if self.rate_text:
            parts.append(self.rate_text)
        parts.append(f"{duration(clock() - self.started)} elapsed")
        parts.append(f"eta {duration(self.eta())}")
        return ", ".join(parts)


@contextmanager
def progress_bar(description: str, total: int | None, progress: Progress | None = None,
                 expected_tokens: int | None = None) -> Iterator[Bar]:
    """A bar for one stage, on a shared ``progress`` when the caller runs several stages.

    ``expected_tokens``: the stage's whole work in tokens, when it knows it, for a per-token estimate.
    """
    if progress is not None:
        yield Bar(progress, description, total, expected_tokens)
        return
    with make_progress() as p:
        yield Bar(p, description, total, expected_tokens)
