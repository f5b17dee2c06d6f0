"""Translation engines behind one interface, and the ONE table that maps engine names to them.

Constructors import their module only when called: the seq2seq engine pulls in torch and
transformers, which the Apertium and reference engines must not pay for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xsafety.errors import InputError
from xsafety.translate.engines.base import Candidate, Engine

__all__ = ["Candidate", "Engine", "ENGINES", "make_engine", "engine_names"]


def _apertium(**options: Any) -> Engine:
    from xsafety.translate.engines.apertium import ApertiumEngine

    return ApertiumEngine(**options)


def _seq2seq(**options: Any) -> Engine:
    from xsafety.translate.engines.seq2seq import Seq2SeqEngine

    return Seq2SeqEngine(**options)


def _chat(**options: Any) -> Engine:
    from xsafety.translate.engines.chat import ChatEngine

    return ChatEngine(**options)


def _reference(**options: Any) -> Engine:
    from xsafety.translate.engines.reference import ReferenceEngine

    return ReferenceEngine(**options)


ENGINES: dict[str, Callable[..., Engine]] = {
    "apertium": _apertium,
    "seq2seq": _seq2seq,
    "chat": _chat,
    "reference": _reference,
}


def engine_names() -> list[str]:
    """Known engine names, sorted (for help texts and error messages)."""
    return sorted(ENGINES)


def make_engine(name: str, **options: Any) -> Engine:
    """Build the engine called ``name`` with ``options`` (see each engine's constructor).

    Raises ``InputError`` for an unknown name, listing the known ones.
    """
    try:
        factory = ENGINES[name]
    except KeyError:
        raise InputError(
            f"unknown translation engine {name!r}; known engines: {', '.join(engine_names())}",
            field="engine",
        ) from None
    return factory(**options)
