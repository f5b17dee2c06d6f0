"""The interface every model backend implements, shared by generation, chat translation and LLM judges.

A backend takes a batch of chat requests and returns one result per request, in any order of
completion but matched by ``id``. Backends decide how to batch (local transformers) or how many
requests to keep in flight (HTTP); callers only see requests in and results out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


# The one default answer budget, for `xsafety run` and `xsafety generate` alike (the same items
# under the same decoding share response keys whichever command asked).
DEFAULT_MAX_NEW_TOKENS = 96


@dataclass(frozen=True)
class Decoding:
    """Settings that change a model's output, and so belong in its signature."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class ChatRequest:
    """One conversation to complete; ``messages`` are ``{"role": ..., "content": ...}`` dicts."""

    id: str
    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class ChatResult:
    """A completion, or the error that every retry ended in (``text`` is then empty)."""

    id: str
    text: str
    finish_reason: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    error: str | None = None
    # Per generated token: {"token", "logprob", "top_logprobs": [{"token", "logprob"}, ...]}, when
    # the backend was asked for them (an OpenAI-compatible server's `logprobs`); judges score with it.
    logprobs: tuple[dict[str, Any], ...] | None = None


ResultCallback = Callable[[ChatResult], None]


@runtime_checkable
class ChatModel(Protocol):
    """A chat model backend."""

    spec: str
    decoding: Decoding

    def signature(self) -> str:
        """Identity of every setting that changes outputs (model, revision/file hash, dtype, decoding)."""
        ...

    def chat(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[ChatResult]:
        """Complete every request; ``on_result`` is called as each finishes (for streaming to a store)."""
        ...

    def close(self) -> None:
        """Free the model or close connections."""
        ...
