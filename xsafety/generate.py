"""The generation stage: ask a target model every (prompt, locale, attack, variant) item once.

Successes go to the ``responses`` table and failures to a separate ``response_errors`` table.
Why two tables: the store keeps the *first* copy of a key, so a failure stored under a response
key would shadow the success of a later retry. Keeping failures apart makes "wanted keys - stored
response keys" retry exactly the failed and the never-tried items, and keeps a history of what
went wrong. Each result is appended the moment it arrives, so a kill loses nothing finished.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from rich.progress import Progress

from xsafety import throughput
from xsafety.batchfile import read_results, write_requests
from xsafety.errors import InputError
from xsafety.models.base import ChatModel, ChatRequest, ChatResult
from xsafety.progress import progress_bar
from xsafety.records import Record, Response, stable_hash
from xsafety.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenItem:
    """One conversation to send: which prompt, in which locale, under which attack and variant.

    ``messages`` are exactly what the model receives (system prompt included). ``meta`` is copied
    into the Response record; ``meta["input_key"]``, when present, becomes its ``input_key``
    (the Prompt or Translation key the text came from).
    """

    prompt_id: str
    set: str
    locale: str
    attack: str
    variant: str
    messages: tuple[dict[str, str], ...]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResponseError(Record):
    """One failed attempt at an item (every retry of the backend exhausted)."""

    table: ClassVar[str] = "response_errors"

    key: str
    response_key: str
    prompt_id: str
    set: str
    locale: str
    model: str
    error: str
    attack: str = "none"
    variant: str = "default"
    at: float = 0.0


@dataclass
class GenSummary:
    """What one ``generate`` call did."""

    new: int = 0
    cached: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens generated per second of wall time in this call."""
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def response_key(model_signature: str, item: GenItem) -> str:
    """The key of an item's response: model signature, the item's identity and its exact messages.

    The identity (prompt, locale, attack, variant) is in the key as well as the messages, so two
    items that happen to send the same text (an attack that leaves a prompt unchanged) keep
    separate records instead of one shadowing the other. The set's name is not: a subset of a set
    (same ids, same texts) imported under another name reuses the full set's responses.
    """
    messages = tuple(tuple(m.items()) for m in item.messages)
    return _response_key(model_signature, item.prompt_id, item.locale, item.attack, item.variant, messages)


@lru_cache(maxsize=1 << 17)
def _response_key(
    model_signature: str, prompt_id: str, locale: str, attack: str, variant: str, messages: tuple[tuple[tuple[str, str], ...], ...]
) -> str:
    # A run asks the key of every item four times (the plan, twice, generation's pending list,
    # and the run's cells): 28,000 hashes of canonical JSON each time. The messages come back as
    # the same dicts, in the same key order, so the key is the one response_key_of gives.
    return response_key_of(model_signature, prompt_id, locale, attack, variant, [dict(m) for m in messages])


def response_key_of(
    model_signature: str, prompt_id: str, locale: str, attack: str, variant: str, messages: Sequence[dict[str, str]]
) -> str:
    """``response_key`` from its parts (``xsafety migrate`` re-keys stored responses with it)."""
    return stable_hash(
        "response",
        model_signature,
        prompt_id,
        locale,
        attack,
        variant,
        [dict(m) for m in messages],
    )


def load_responses(store: Store) -> dict[str, Response]:
    """Stored successful responses by key."""
    return store.table(Response).load()


def load_errors(store: Store) -> dict[str, ResponseError]:
    """Stored failures by failure key (several per response key when retries failed again)."""
    return store.table(ResponseError).load()


def generate(
    store: Store,
    model: ChatModel,
    items: Sequence[GenItem],
    progress: Progress | None = None,
    *,
    lock: bool = True,
) -> GenSummary:
    """Answer every item not yet answered by this model, appending records as results arrive.

    Items whose key is already in ``responses`` are counted as cached; stored failures are tried
    again. ``lock=False`` is for a caller (the orchestrator) that already holds the run lock.
    """
    if lock:
        with store.locked():
            return _generate(store, model, items, progress)
    return _generate(store, model, items, progress)


def pending(store: Store, sig: str, items: Sequence[GenItem]) -> tuple[dict[str, GenItem], int]:
    """(response key -> item for every item not answered yet, number already answered)."""
    stored = store.table(Response).keys()
    wanted: dict[str, GenItem] = {}
    cached = 0
    for item in items:
        key = response_key(sig, item)
        if key in stored:
            cached += 1
        elif key not in wanted:
            wanted[key] = item
    return wanted, cached


def _generate(store: Store, model: ChatModel, items: Sequence[GenItem], progress: Progress | None) -> GenSummary:
    sig = model.signature()
    summary = GenSummary()
    wanted, summary.cached = pending(store, sig, items)
    if not wanted:
        return summary
    log.info("generating %d responses with %s (%d cached)", len(wanted), sig, summary.cached)
    requests = [ChatRequest(id=key, messages=item.messages) for key, item in wanted.items()]
    started = time.perf_counter()
    responses = store.table(Response)
    failures = store.table(ResponseError)
    with progress_bar("generate", len(requests), progress) as bar, responses.writer() as ok_out, failures.writer() as err_out:

        def on_result(result: ChatResult) -> None:
            _store_result(summary, sig, wanted[result.id], result, ok_out, err_out)
            summary.seconds = time.perf_counter() - started
            # Tokens, not answers, are the work: a long answer counts for more in the estimate.
            bar.advance(1, rate=f"{summary.tokens_per_s:.1f} tok/s",
                        tokens=(result.prompt_tokens or 0) + (result.completion_tokens or 0))

        model.chat(requests, on_result=on_result)
    summary.seconds = time.perf_counter() - started
    # What this machine managed, for the time estimates of later dry runs.
    throughput.record("generate", sig, summary.new, summary.seconds, tokens=summary.completion_tokens)
    return summary


def emit_batch(store: Store, model: ChatModel, items: Sequence[GenItem], path: str | Path) -> tuple[int, int]:
    """Write every item not answered yet as an OpenAI batch input file (``custom_id`` = the
    response key); returns (requests written, items already answered).

    Only a model that can say what body it would send (the ``openai:`` backend) can do this.
    """
    body_of = getattr(model, "request_body", None)
    if body_of is None:
        raise InputError(
            "a batch file needs an openai: model spec (its served name and decoding go in each request)",
            field="--model",
        )
    sig = model.signature()
    wanted, cached = pending(store, sig, items)
    written = write_requests(path, ((key, body_of(ChatRequest(id=key, messages=item.messages))) for key, item in wanted.items()))
    return written, cached


def import_batch(
    store: Store, model: ChatModel, items: Sequence[GenItem], path: str | Path, before_write: Callable[[], None] | None = None
) -> GenSummary:
    """Store the results of a batch job (``vllm run-batch`` or a hosted batch API) as responses
    with the keys this model and these items give, exactly as if xsafety had asked.

    The whole file is checked first: a malformed line, or a result for a request this command
    would not make (another model, other decoding, other prompts), stops the import with its file
    and line and stores nothing (``before_write`` runs only once the file has passed). Results for
    items answered since are skipped; failed lines are stored as failed attempts, which the next
    run or batch tries again.
    """
    sig = model.signature()
    results = read_results(path)
    wanted, cached = pending(store, sig, items)
    answered = store.table(Response).keys()
    for result in results:
        if result.custom_id not in wanted and result.custom_id not in answered:
            raise InputError(
                f"{result.custom_id!r} is not a request of this command (written for another model, "
                "decoding, set or locale? use the options the batch was emitted with)",
                file=path, line=result.line, field="custom_id",
            )
    summary = GenSummary(cached=cached)
    fresh = [r for r in results if r.custom_id in wanted]
    if before_write is not None:
        before_write()
    with store.table(Response).writer() as ok_out, store.table(ResponseError).writer() as err_out:
        for r in fresh:
            item = wanted[r.custom_id]
            result = ChatResult(id=r.custom_id, text=r.text, finish_reason=r.finish_reason,
                                prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, error=r.error)
            _store_result(summary, sig, item, result, ok_out, err_out)
    return summary


def _store_result(summary: GenSummary, sig: str, item: GenItem, result: ChatResult, ok_out: Any, err_out: Any) -> None:
    # A failure goes to its own table (see the module docstring), a success to the responses.
    if result.error:
        summary.failed += 1
        if len(summary.errors) < 5:
            summary.errors.append(result.error)
        err_out.write(_error_record(sig, item, result))
    else:
        summary.new += 1
        summary.prompt_tokens += result.prompt_tokens or 0
        summary.completion_tokens += result.completion_tokens or 0
        ok_out.write(_response_record(sig, item, result))


def _response_record(sig: str, item: GenItem, result: ChatResult) -> Response:
    return Response(
        key=result.id,
        prompt_id=item.prompt_id,
        set=item.set,
        locale=item.locale,
        model=sig,
        text=result.text,
        attack=item.attack,
        variant=item.variant,
        input_key=str(item.meta.get("input_key", "")),
        messages=item.messages,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        latency_s=result.latency_s,
        meta=dict(item.meta),
    )


def _error_record(sig: str, item: GenItem, result: ChatResult) -> ResponseError:
    now = time.time()
    return ResponseError(
        key=stable_hash("response-error", result.id, now, time.perf_counter_ns()),
        response_key=result.id,
        prompt_id=item.prompt_id,
        set=item.set,
        locale=item.locale,
        model=sig,
        error=result.error or "",
        attack=item.attack,
        variant=item.variant,
        at=now,
    )

