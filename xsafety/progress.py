"""Progress display shared by every long stage: rich bars with item counts and rates."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Progress goes to stderr so that stdout stays clean for tables and machine-readable output.
console = Console(stderr=True)


def progress_enabled() -> bool:
    """Bars are drawn on a terminal unless ``XSAFETY_PROGRESS=0``; CI logs stay readable."""
    setting = os.environ.get("XSAFETY_PROGRESS")
    if setting is not None:
        return setting not in ("0", "false", "no")
    return sys.stderr.isatty()


def make_progress() -> Progress:
    """A rich Progress with the columns every stage uses (``{task.fields[rate]}`` is free text)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress_enabled(),
        transient=False,
    )


class Bar:
    """One task on a Progress; ``advance`` takes optional free-text rate info (e.g. tokens/s)."""

    def __init__(self, progress: Progress, description: str, total: int | None) -> None:
        self.progress = progress
        self.task = progress.add_task(description, total=total, rate="")

    def advance(self, n: int = 1, rate: str | None = None) -> None:
        """Move the bar on by ``n`` items and update its rate text."""
        fields: dict[str, Any] = {}
        if rate is not None:
            fields["rate"] = rate
        self.progress.update(self.task, advance=n, **fields)


@contextmanager
def progress_bar(description: str, total: int | None, progress: Progress | None = None) -> Iterator[Bar]:
    """A bar for one stage, on a shared ``progress`` when the caller runs several stages."""
    if progress is not None:
        yield Bar(progress, description, total)
        return
    with make_progress() as p:
        yield Bar(p, description, total)
