"""Target-model backends behind one small interface (see ``base.ChatModel``).

``load_model(spec, decoding, **options)`` is the one entry point; ``BACKENDS`` is the one table
from a spec kind to the function that builds it. Adding a backend is a line in that table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xsafety.models.base import ChatModel, ChatRequest, ChatResult, Decoding
from xsafety.models.spec import ModelSpec, check_options, parse_spec

__all__ = [
    "BACKENDS",
    "ChatModel",
    "ChatRequest",
    "ChatResult",
    "Decoding",
    "ModelSpec",
    "load_model",
    "parse_spec",
]


def _smollm2(spec: ModelSpec, decoding: Decoding | None, **options: Any) -> ChatModel:
    from xsafety.models.smollm2 import load_smollm2

    return load_smollm2(decoding, spec=spec.raw, **options)


def _hf(spec: ModelSpec, decoding: Decoding | None, **options: Any) -> ChatModel:
    from xsafety.models.hf import HFChatModel

    revision = options.pop("revision", None) or spec.revision
    return HFChatModel(spec.target, decoding, spec=spec.raw, revision=revision, **options)


def _gguf(spec: ModelSpec, decoding: Decoding | None, **options: Any) -> ChatModel:
    from xsafety.models.hf import load_gguf

    return load_gguf(spec.target, decoding, spec=spec.raw, **options)


def _openai(spec: ModelSpec, decoding: Decoding | None, **options: Any) -> ChatModel:
    from xsafety.models.openai import OpenAIChatModel

    return OpenAIChatModel(spec.target, spec.urls, decoding, spec=spec.raw, **options)


# The one table: spec kind -> constructor. Imports are deferred so that an HTTP-only run never
# imports torch, and a local run never needs httpx's event loop.
BACKENDS: dict[str, Callable[..., ChatModel]] = {
    "smollm2": _smollm2,
    "hf": _hf,
    "gguf": _gguf,
    "openai": _openai,
}


def load_model(spec: str, decoding: Decoding | None = None, **options: Any) -> ChatModel:
    """Build the chat model a spec names (``smollm2``, ``hf:ID_OR_PATH``, ``gguf:FILE``, ``openai:MODEL@URL``).

    ``options`` are backend settings: ``device``, ``dtype`` (which does change outputs, and is
    in the signature), ``batch_tokens``, ``max_batch``, ``threads`` (local); ``api_key_env``, ``concurrency``, ``timeout_s``,
    ``max_retries`` (HTTP). Options given as ``None`` mean "the default" and are dropped.
    Raises ``InputError`` for a malformed spec or an option the backend does not take.
    """
    parsed = parse_spec(spec)
    given = {k: v for k, v in options.items() if v is not None}
    check_options(parsed, given)
    return BACKENDS[parsed.kind](parsed, decoding, **given)
