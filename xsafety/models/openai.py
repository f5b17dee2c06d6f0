"""OpenAI-compatible chat backend (vLLM, Ollama, llama.cpp server, hosted APIs) over httpx.

Why it is shaped this way:

* Throughput against a served model is bounded by requests in flight, so requests run as asyncio
  tasks under a semaphore (``concurrency``, default 16) and each result is handed to the caller
  as it arrives, so that a kill loses nothing that finished.
* Servers shed load with 429 and 5xx, and sometimes send truncated bodies; those, timeouts and
  connection errors are retried with exponential backoff and full jitter, honouring
  ``Retry-After``, up to ``max_retries``. After the last try the result carries ``error`` and the
  stage stores the failure so that a rerun retries just those items. A server's longer
  ``Retry-After`` wins over ``backoff_cap_s`` (the cap bounds our own backoff, not the server's
  wish); one that asks for more than ``MAX_RETRY_AFTER_S`` fails the item at once.
* ``timeout_s`` is an overall deadline per attempt, not only per socket read: a server that drips
  one byte every few seconds cannot keep a request alive past it.
* A completion is taken for its text; a ``usage`` block that is not token counts is ignored
  (counts become None) rather than failing the item or the stage.
* Several base URLs (one model served by several vLLM processes) share one run: each request goes
  to the server with the fewest requests in flight, ties broken round-robin.
* The API key is read from the environment variable *named* by ``api_key_env``; it is sent only in
  the Authorization header and is scrubbed from every error message
  *before* the message is cut short, so no prefix of it survives a truncation; it must be
  printable ASCII, as HTTP headers are. The signature names the
  served model and decoding only, not the URL (where a model is served does not change what it
  says; serving different weights under one name is the user's lookout and is documented).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from xsafety.errors import ConfigError
from xsafety.validate import model_option_problem
from xsafety.models.base import ChatRequest, ChatResult, Decoding, ResultCallback
from xsafety.models.http import Client, HttpResponse, ProtocolError, proxy_for
from xsafety.records import signature

log = logging.getLogger(__name__)
# httpx logs every request at INFO; across thousands of prompts that buries the run's own messages.
logging.getLogger("httpx").setLevel(logging.WARNING)

LANE_SIZE = 16
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# A server asking for a longer pause than this is treated as down for now: the item fails and a
# rerun retries it, instead of the run sleeping for hours.
MAX_RETRY_AFTER_S = 600.0
# Characters of a server's error body kept in an error message.
BODY_CHARS = 200
# A JSON escape like "\ud800" with no partner decodes to a lone surrogate, which no UTF-8 writer
# (the store, Parquet, HTML) accepts: it becomes U+FFFD, as an invalid byte would.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class _HttpxError(Exception):
    """An httpx transport error (proxy path only), carried without importing httpx elsewhere."""


class RetryableError(Exception):
    """A failure worth another try; ``retry_after`` is the server's wish in seconds, if it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(Exception):
    """A failure another try cannot fix (400, 401, 404 ...)."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


class OpenAIChatModel:
    """Chat completions against one or more OpenAI-compatible base URLs."""

    def __init__(
        self,
        model: str,
        urls: Sequence[str],
        decoding: Decoding | None = None,
        *,
        spec: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        top_logprobs: int = 0,
    ) -> None:
        if not urls:
            raise ConfigError("an openai: model needs at least one base URL", field="model")
        given = {"concurrency": concurrency, "timeout_s": timeout_s, "max_retries": max_retries,
                 "backoff_base_s": backoff_base_s, "backoff_cap_s": backoff_cap_s}
        if api_key_env is not None:
            given["api_key_env"] = api_key_env
        for option, value in given.items():
            problem = model_option_problem(option, value)
            if problem:
                raise ConfigError(problem, field=option)
        self.model = model
        self.urls = tuple(u.rstrip("/") for u in urls)
        self.decoding = decoding or Decoding()
        self.spec = spec or f"openai:{model}@{','.join(self.urls)}"
        self.concurrency = max(1, int(concurrency))
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_cap_s = float(backoff_cap_s)
        # Ask for token log-probabilities (and this many alternatives per token): judges score a
        # guard's verdict token with them. They do not change the text, so not in the signature.
        self.top_logprobs = max(0, int(top_logprobs))
        self._key: str | None = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(f"environment variable {api_key_env} (api_key_env) is empty or unset", field="api_key_env")
            if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
                # Never quote the key: say only what is wrong with it.
                raise ConfigError(
                    f"environment variable {api_key_env} holds characters an HTTP header cannot carry "
                    "(non-ASCII, control characters or spaces); check the key was copied whole",
                    field="api_key_env",
                )
            self._key = key
        # Counters for progress displays and tests: attempts made, retries, final failures.
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "failed": 0}
        self._in_flight = {u: 0 for u in self.urls}
        self._next = 0

    def __repr__(self) -> str:
        return f"OpenAIChatModel(model={self.model!r}, urls={self.urls!r})"

    def signature(self) -> str:
        """Served model name and decoding; never the URL, the key or concurrency."""
        d = self.decoding
        sampling = d.temperature > 0
        return signature(
            "openai",
            model=self.model,
            max_new_tokens=d.max_new_tokens,
            temperature=float(d.temperature),
            top_p=float(d.top_p) if sampling else None,
            seed=d.seed if sampling else None,
        )

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced, for anything that may reach a log or a record.

        Call it on the whole text before cutting it short: a cut can leave a prefix of the key
        that no longer matches. The JSON-escaped form is masked too (a body echoing the key).
        """
        if self._key:
            text = text.replace(self._key, "***")
            escaped = json.dumps(self._key)[1:-1]
            if escaped != self._key:
                text = text.replace(escaped, "***")
        return text

    # -- sync entry point ------------------------------------------------------------------

    def chat(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[ChatResult]:
        """Complete every request (in request order); ``on_result`` fires as each one finishes.

        Runs its own event loop; when called from inside a running loop (a notebook, an async
        caller) it runs that loop in a helper thread instead, since a loop cannot be nested.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.achat(requests, on_result))
        box: dict[str, Any] = {}

        def runner() -> None:
            try:
                box["out"] = asyncio.run(self.achat(requests, on_result))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["err"] = exc

        thread = threading.Thread(target=runner, name="xsafety-openai", daemon=True)
        thread.start()
        thread.join()
        if "err" in box:
            raise box["err"]
        return box["out"]

    async def achat(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[ChatResult]:
        """The async form of ``chat``."""
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        workers = min(self.concurrency, max(1, len(requests)))
        lanes: list[Any]
        if any(proxy_for(u) for u in self.urls):
            # httpx speaks to proxies; the lean client does not.
            import httpx

            # httpcore's pool costs O(connections) per request it schedules, which caps one client
            # at well under 100 req/s with 64 connections on a small CPU; small pools ("lanes")
            # keep that cost flat. Each worker owns one slot of one lane, so no pool ever queues.
            n_lanes = -(-workers // LANE_SIZE)
            lanes = [
                httpx.AsyncClient(
                    headers=headers,
                    limits=httpx.Limits(max_connections=LANE_SIZE, max_keepalive_connections=LANE_SIZE),
                    timeout=self.timeout_s,
                )
                for _ in range(n_lanes)
            ]
        else:
            # One keep-alive client per worker (``xsafety.models.http``: ~50x less CPU per request).
            n_lanes = workers
            lanes = [Client(headers) for _ in range(workers)]
        queue: asyncio.Queue[ChatRequest] = asyncio.Queue()
        for request in requests:
            queue.put_nowait(request)
        results: dict[str, ChatResult] = {}

        async def worker(client: Any) -> None:
            while True:
                try:
                    request = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                result = await self._complete(client, request)
                results[request.id] = result
                if on_result is not None:
                    on_result(result)

        tasks = [asyncio.create_task(worker(lanes[i % n_lanes])) for i in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for lane in lanes:
                await lane.aclose()
        return [results[r.id] for r in requests]

    # -- one request with retries ----------------------------------------------------------

    def _pick_url(self) -> str:
        least = min(self._in_flight.values())
        candidates = [u for u in self.urls if self._in_flight[u] == least]
        url = candidates[self._next % len(candidates)]
        self._next += 1
        return url

    def request_body(self, request: ChatRequest) -> dict[str, Any]:
        """The chat-completions body this model sends for ``request``: also the ``body`` of an
        OpenAI batch file line, so a batch job asks exactly what a live run would."""
        return self._payload(request)

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        d = self.decoding
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": list(request.messages),
            "max_tokens": d.max_new_tokens,
            "temperature": d.temperature,
            "top_p": d.top_p,
            "seed": d.seed,
        }
        if self.top_logprobs:
            payload["logprobs"] = True
            payload["top_logprobs"] = self.top_logprobs
        return payload

    async def _complete(self, client: Any, request: ChatRequest) -> ChatResult:
        payload = self._payload(request)
        started = time.perf_counter()
        last_error = ""
        for attempt in range(self.max_retries + 1):
            url = self._pick_url()
            self._in_flight[url] += 1
            self.stats["requests"] += 1
            try:
                result = await self._attempt(client, url, request, payload)
                result = ChatResult(
                    id=result.id,
                    text=result.text,
                    finish_reason=result.finish_reason,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    latency_s=time.perf_counter() - started,
                    logprobs=result.logprobs,
                )
                return result
            except FatalError as exc:
                last_error = self.redact(str(exc))
                break
            except RetryableError as exc:
                last_error = self.redact(str(exc))
                wait = self._backoff(attempt, exc.retry_after)
                if exc.retry_after is not None and exc.retry_after > MAX_RETRY_AFTER_S:
                    last_error += f"; the server asks to wait {exc.retry_after:.0f} s (over {MAX_RETRY_AFTER_S:.0f} s): giving up for this run"
                    break
            finally:
                self._in_flight[url] -= 1
            if attempt < self.max_retries:
                self.stats["retries"] += 1
                log.debug("request %s: %s; retry %d in %.2f s", request.id, last_error, attempt + 1, wait)
                await asyncio.sleep(wait)
        self.stats["failed"] += 1
        attempts = min(attempt + 1, self.max_retries + 1)
        message = f"{last_error} (after {attempts} attempt{'s' if attempts != 1 else ''})"
        log.warning("request %s failed: %s", request.id, message)
        return ChatResult(id=request.id, text="", error=message, latency_s=time.perf_counter() - started)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before the next try: full-jitter backoff under ``backoff_cap_s``, or the
        server's ``Retry-After`` when it asks for longer (the cap is ours, not the server's)."""
        # Full jitter spreads a burst of 429s out instead of retrying them in lockstep.
        wait = random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * (2**attempt)))
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait

    async def _attempt(self, client: Any, url: str, request: ChatRequest, payload: dict[str, Any]) -> ChatResult:
        try:
            # This bounds the whole attempt (httpx's own timeout bounds each socket read), so a
            # server that drips a byte now and then cannot hold a request open for ever.
            async with asyncio.timeout(self.timeout_s):
                response = await _post(client, f"{url}/chat/completions", payload)
        except TimeoutError as exc:
            raise RetryableError(f"timeout after {self.timeout_s:g} s ({type(exc).__name__})") from None
        except _TRANSPORT_ERRORS as exc:
            cause = exc.__cause__ if isinstance(exc, _HttpxError) and exc.__cause__ is not None else exc
            if isinstance(exc, _HttpxError) and "Timeout" in type(cause).__name__:
                raise RetryableError(f"timeout after {self.timeout_s:g} s ({type(cause).__name__})") from None
            raise RetryableError(self.redact(f"connection error: {type(cause).__name__}: {cause}")) from None
        if response.status != 200:
            # Mask first, then cut: cutting first can leave a prefix of the key unmasked.
            body = self.redact(response.text)[:BODY_CHARS].replace("\n", " ")
            message = f"HTTP {response.status} from {url}: {body}"
            if response.status in RETRY_STATUS:
                raise RetryableError(message, parse_retry_after(response.headers.get("retry-after")))
            raise FatalError(message)
        try:
            data = response.json()
            choice = data["choices"][0]
            message_obj = choice.get("message") or {}
            text = message_obj.get("content")
            if text is None:
                text = choice.get("text", "")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise RetryableError(f"malformed response from {url}: {self.redact(response.text)[:120]!r}") from None
        if not isinstance(text, str):
            raise RetryableError(f"malformed response from {url}: message content is a {type(text).__name__}")
        usage = data.get("usage") if isinstance(data, dict) else None
        return ChatResult(
            id=request.id,
            text=_LONE_SURROGATE.sub("\ufffd", text).strip(),
            finish_reason=str(choice.get("finish_reason") or ""),
            prompt_tokens=token_count(usage, "prompt_tokens"),
            completion_tokens=token_count(usage, "completion_tokens"),
            logprobs=token_logprobs(choice) if self.top_logprobs else None,
        )

    def close(self) -> None:
        """Nothing held between calls: each ``chat`` opens and closes its own connection pool."""
        return None


# What a failed exchange raises: the lean client's socket, stream and protocol errors, and any
# httpx error (only raised on the proxy path, where httpx is imported).
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ProtocolError, asyncio.LimitOverrunError, _HttpxError,
)


async def _post(client: Any, url: str, payload: dict[str, Any]) -> HttpResponse:
    """POST ``payload`` through the lean client or an httpx one; the response in one shape."""
    if isinstance(client, Client):
        return await client.post_json(url, payload)
    import httpx

    try:
        response = await client.post(url, json=payload)
    except httpx.TransportError as exc:
        raise _HttpxError(str(exc)) from exc
    return HttpResponse(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)



def token_logprobs(choice: Any) -> tuple[dict[str, Any], ...] | None:
    """A choice's ``logprobs.content`` as token dicts, or None when absent or malformed (a server
    that ignores the request must not fail the item: the judge just gets no score)."""
    try:
        content = (choice.get("logprobs") or {}).get("content")
        if not isinstance(content, list):
            return None
        return tuple(
            {"token": str(t["token"]), "logprob": float(t["logprob"]),
             "top_logprobs": [{"token": str(a["token"]), "logprob": float(a["logprob"])} for a in t.get("top_logprobs") or []]}
            for t in content
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def token_count(usage: Any, name: str) -> int | None:
    """A token count from a ``usage`` block, or None when the server sent anything but a whole
    number >= 0 there (``"lots"``, ``"12"``, ``-1``, ``1e9999``): the answer is still good."""
    if not isinstance(usage, dict):
        return None
    value = usage.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
