"""Judges: label responses ``refusal`` / ``safe`` / ``unsafe`` / ``invalid``.

Every judge is data: a TOML file in ``judges/`` (``kind`` plus that kind's settings) and, for
model judges, a template in ``judges/templates/``. ``KINDS`` is the one explicit table from kind
name to implementation; ``load_judge`` reads a TOML and builds the judge.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xsafety.data import judges_dir
from xsafety.errors import ConfigError
from xsafety.judges.base import COMPLIANCE, Judge, JudgeInput, JudgeOutput, finalize
from xsafety.judges.lexicon import LexiconJudge


def _llm(**settings: Any) -> Judge:
    from xsafety.judges.llm import LLMJudge

    return LLMJudge(**settings)


def _classifier(**settings: Any) -> Judge:
    from xsafety.judges.classifier import ClassifierJudge

    return ClassifierJudge(**settings)


def _ensemble(**settings: Any) -> Judge:
    from xsafety.judges.ensemble import EnsembleJudge

    return EnsembleJudge(**settings)


# The one table: kind name in a judge TOML -> the code that builds it. Model-backed kinds import
# lazily so that the lexicon judge does not pay for torch.
KINDS: dict[str, Callable[..., Judge]] = {
    "refusal-lexicon": LexiconJudge,
    "llm": _llm,
    "classifier": _classifier,
    "ensemble": _ensemble,
}
# Keys of a judge TOML that describe it rather than configure it.
_DESCRIPTIVE = ("kind", "description", "limits")


def list_judges() -> list[str]:
    """Names of the judge definitions shipped in ``judges/``."""
    return sorted(p.stem for p in judges_dir().glob("*.toml"))


def judge_path(name_or_path: str) -> Path:
    """The TOML file for a judge name (``judges/<name>.toml``) or an explicit path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".toml" or candidate.parent != Path("."):
        if not candidate.is_file():
            raise ConfigError(f"judge definition {candidate} does not exist", field="judge")
        return candidate
    path = judges_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(list_judges()) or "none"
        raise ConfigError(f"unknown judge {name_or_path!r} (known: {known})", field="judge")
    return path


def read_definition(path: Path) -> dict[str, Any]:
    """Parse a judge TOML; syntax errors become ``ConfigError`` with file and line."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None)
        raise ConfigError(f"invalid TOML: {exc}", file=path, line=line) from None


def load_judge(name_or_path: str, **options: Any) -> Judge:
    """Build the judge defined by ``judges/<name>.toml`` (or a TOML path); ``options`` override its keys.

    >>> load_judge("refusal-lexicon").signature().startswith("refusal-lexicon|")
    True
    """
    path = judge_path(name_or_path)
    definition = read_definition(path)
    kind = definition.get("kind")
    if kind not in KINDS:
        raise ConfigError(
            f"unknown judge kind {kind!r}; expected one of {', '.join(KINDS)}", file=path, field="kind"
        )
    settings = {k: v for k, v in definition.items() if k not in _DESCRIPTIVE}
    settings.update({k: v for k, v in options.items() if v is not None})
    settings.setdefault("name", path.stem)
    settings["base_dir"] = path.parent
    # Every kind gets the degenerate-output checks around it (judges/invalid.py; `[invalid]` table).
    invalid = settings.pop("invalid", None)
    try:
        from xsafety.judges.invalid import with_invalid_check

        return with_invalid_check(KINDS[kind](**settings), invalid)
    except ConfigError as exc:
        if exc.file is None:
            raise ConfigError(exc.message, file=path, field=exc.field) from None
        raise
    except TypeError as exc:
        # A misspelt key in the TOML reaches the constructor as an unexpected argument.
        raise ConfigError(str(exc), file=path) from None


__all__ = [
    "COMPLIANCE",
    "KINDS",
    "Judge",
    "JudgeInput",
    "JudgeOutput",
    "LexiconJudge",
    "finalize",
    "judge_path",
    "list_judges",
    "load_judge",
    "read_definition",
]


def __getattr__(name: str) -> Any:
    # ``judge_run``/``agreement`` live in stage.py, which imports the translation package: load it
    # only when asked so that ``import xsafety.judges`` stays light.
    if name in ("judge_run", "agreement", "JudgeSummary"):
        from xsafety.judges import stage

        return getattr(stage, name)
    raise AttributeError(name)
