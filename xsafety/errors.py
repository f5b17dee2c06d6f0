"""Errors that the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class XSafetyError(Exception):
    """Any error that should reach the user as one line, without a traceback."""


class InputError(XSafetyError):
    """Bad input, located as precisely as we can: file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        field = f"field '{self.field}': " if self.field else ""
        return f"{where}{field}{self.message}"


class ConfigError(InputError):
    """A run config, locale entry, judge definition or policy that does not validate."""


class RunLockedError(XSafetyError):
    """Another process holds the run directory."""
