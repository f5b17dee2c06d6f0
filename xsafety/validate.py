"""Value checks shared by the run config, the CLI and the backends, so each rule is written once.

The config calls these at load time (before any model, judge or translator is built), the
commands call them on their options, and backends call them again on what they are handed, so
a bad value is one located error whichever way it came in.
"""

from __future__ import annotations

import math
import re
from typing import Any

# Backend options (see ``xsafety.models.spec.OPTIONS`` for which kinds take which): the type and
# range each accepts. Numbers must be finite; bools are never numbers here.
_INT_MIN: dict[str, int] = {"concurrency": 1, "max_retries": 0, "batch_tokens": 1, "max_batch": 1, "threads": 1}
_FLOAT_MIN: dict[str, tuple[float, bool]] = {  # name -> (bound, strictly above it)
    "timeout_s": (0.0, True),
    "backoff_base_s": (0.0, False),
    "backoff_cap_s": (0.0, False),
}
DTYPES: tuple[str, ...] = ("auto", "float32", "float16", "bfloat16")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_number(value: Any) -> bool:
    """An int or float that is not a bool and not NaN or infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number_problem(value: Any, *, low: float | None = None, high: float | None = None,
                   low_open: bool = False, integer: bool = False) -> str | None:
    """Why ``value`` is not a finite number in the range (None when it is)."""
    if integer:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"must be a whole number, not {type(value).__name__} {value!r}"
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"must be a number, not {type(value).__name__} {value!r}"
    if not math.isfinite(value):
        return f"must be a finite number, not {value!r}"
    if low is not None and (value <= low if low_open else value < low):
        return f"must be {'above' if low_open else 'at least'} {low:g}, not {value!r}"
    if high is not None and value > high:
        return f"must be at most {high:g}, not {value!r}"
    return None


def model_option_problem(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be the backend option ``name`` (None when it can, or is unknown here)."""
    if name in _INT_MIN:
        return number_problem(value, low=_INT_MIN[name], integer=True)
    if name in _FLOAT_MIN:
        bound, strict = _FLOAT_MIN[name]
        return number_problem(value, low=bound, low_open=strict)
    if name == "api_key_env":
        if not isinstance(value, str) or not _ENV_NAME.match(value):
            # The value is not quoted: a key pasted here by mistake must not be echoed.
            return "must be the NAME of an environment variable (letters, digits, '_'), not the key itself"
    elif name == "device":
        if not isinstance(value, str) or not _DEVICE.match(value):
            return f"must be auto, cpu, mps, cuda or cuda:N, not {value!r}"
    elif name == "dtype":
        if value not in DTYPES:
            return f"must be one of {', '.join(DTYPES)}, not {value!r}"
    elif name == "revision":
        if not isinstance(value, str) or not value.strip():
            return f"must be a non-empty text, not {value!r}"
    return None


def decoding_problems(max_new_tokens: Any, temperature: Any, top_p: Any, seed: Any) -> list[tuple[str, str]]:
    """(field, problem) for every decoding setting out of range: tokens >= 1, temperature >= 0 and
    finite, top_p in (0, 1], seed a whole number."""
    checks = [
        ("max_new_tokens", number_problem(max_new_tokens, low=1, integer=True)),
        ("temperature", number_problem(temperature, low=0, high=100)),
        ("top_p", number_problem(top_p, low=0, low_open=True, high=1)),
        ("seed", number_problem(seed, integer=True)),
    ]
    return [(name, problem) for name, problem in checks if problem is not None]


def spec_problem(spec: str) -> str | None:
    """Why a model spec must not be recorded as written: credentials in a base URL would reach
    run.json and reports (the key belongs in the environment variable ``api_key_env`` names)."""
    from urllib.parse import urlsplit

    if not spec.startswith("openai:"):
        return None
    for part in spec.split("@http")[1:]:
        netloc = urlsplit("http" + part).netloc
        if "@" in netloc:
            return "a base URL with a user or password would be written into run.json and reports; put the key in an environment variable and name it with api_key_env"
    return None
