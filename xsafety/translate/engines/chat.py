"""Any chat model as a translation engine, with the checks that keep it from answering instead.

Safety prompts are exactly what chat models refuse or answer, so the engine asks for the
translation between markers and parses strictly. A candidate is flagged (``meta["refused"]`` or
``meta["answered"]``, with ``meta["reason"]``) when the markers are missing, the output holds a
refusal phrase (unless the source is a refusal itself), it starts like an answer ("Sure", "Here is", "Step 1"), or it
is much longer than the source. Flagged candidates are still returned so the stage can record
why it rejected them. The prompt and phrase lists live in ``translations/prompts/chat_translate.toml``
(data, hashed into the signature).
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xsafety.data import translations_dir
from xsafety.errors import ConfigError, XSafetyError
from xsafety.models.base import ChatModel, ChatRequest, Decoding
from xsafety.records import signature, text_hash
from xsafety.translate.engines.base import Candidate

log = logging.getLogger(__name__)

TEMPLATE_NAME = "chat_translate.toml"


def default_template_path() -> Path:
    """``translations/prompts/chat_translate.toml``."""
    return translations_dir() / "prompts" / TEMPLATE_NAME


@dataclass(frozen=True)
class ChatTemplate:
    """The translation prompt and the phrase lists that detect refusals and answers."""

    system: str
    user: str
    open_marker: str
    close_marker: str
    max_length_ratio: float
    min_chars: int
    refusal_phrases: tuple[str, ...]
    answer_starts: tuple[str, ...]
    digest: str

    @classmethod
    def load(cls, path: str | Path | None = None) -> "ChatTemplate":
        """Read and validate a template TOML (``InputError`` naming the file and field)."""
        path = Path(path) if path else default_template_path()
        try:
            raw_text = path.read_text(encoding="utf-8")
            data = tomllib.loads(raw_text)
        except FileNotFoundError:
            raise ConfigError("chat translation template not found", file=path) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", file=path) from None
        for name in ("system", "user"):
            if not isinstance(data.get(name), str) or not data[name].strip():
                raise ConfigError("must be a non-empty string", file=path, field=name)
        if "{text}" not in data["user"]:
            raise ConfigError("must contain the {text} placeholder", file=path, field="user")
        return cls(
            system=data["system"],
            user=data["user"],
            open_marker=str(data.get("open_marker", "<translation>")),
            close_marker=str(data.get("close_marker", "</translation>")),
            max_length_ratio=float(data.get("max_length_ratio", 3.0)),
            min_chars=int(data.get("min_chars", 20)),
            refusal_phrases=tuple(str(p).lower() for p in data.get("refusal_phrases", ())),
            answer_starts=tuple(str(p).lower() for p in data.get("answer_starts", ())),
            digest=text_hash(raw_text),
        )

    def messages(self, text: str, src_name: str, tgt_name: str) -> tuple[dict[str, str], ...]:
        """The system and user messages for one text."""
        fill = {"src_name": src_name, "tgt_name": tgt_name}
        # str.replace, not str.format: a prompt may contain braces of its own.
        system = self.system
        user = self.user
        for key, value in fill.items():
            system = system.replace("{" + key + "}", value)
            user = user.replace("{" + key + "}", value)
        user = user.replace("{text}", text)
        return ({"role": "system", "content": system}, {"role": "user", "content": user})


def check_output(output: str, source: str, template: ChatTemplate) -> Candidate:
    """Parse a chat model's output into a candidate, flagging refusals and answers."""
    pattern = re.escape(template.open_marker) + r"(.*?)" + re.escape(template.close_marker)
    match = re.search(pattern, output, flags=re.DOTALL)
    text = (match.group(1) if match else output).strip()
    meta: dict[str, Any] = {}
    lowered, src_lower = text.lower(), source.lower()
    # A source that is itself a refusal translates into one: only a marker-less output can then
    # be told apart, and that check below still applies.
    source_refuses = any(p in src_lower for p in template.refusal_phrases)
    refusal = None if source_refuses else next((p for p in template.refusal_phrases if p in lowered), None)
    start = next(
        (s for s in template.answer_starts if lowered.startswith(s) and not src_lower.startswith(s)), None
    )
    ratio = len(text) / max(1, len(source))
    if refusal:
        meta = {"refused": True, "reason": f"refusal phrase {refusal!r}"}
    elif not match:
        meta = {"answered": True, "reason": "no translation markers in the output"}
    elif start:
        meta = {"answered": True, "reason": f"starts like an answer ({start!r})"}
    elif len(source) >= template.min_chars and ratio > template.max_length_ratio:
        meta = {"answered": True, "reason": f"{ratio:.1f}x longer than the source"}
    if not match:
        meta["markers"] = False
    return Candidate(text=text, raw=output, meta=meta)


def _language_name(code: str) -> str:
    from xsafety.locales import get_locale

    try:
        return get_locale(code).name
    except XSafetyError:
        return code


class ChatEngine:
    """Translate with a chat model: a spec for ``xsafety.models.load_model`` or a ``ChatModel``.

    Options: ``model`` (spec or instance), ``template`` (path of a template TOML),
    ``max_new_tokens`` (default 512), ``model_options`` (passed to ``load_model``: ``device``,
    ``concurrency``, ``api_key_env``...). The model decodes greedily; ``n_best``/``sample`` are
    not offered (one candidate per text) because a ChatModel's decoding is fixed when it loads.
    """

    name = "chat"

    def __init__(
        self,
        model: str | ChatModel = "smollm2",
        *,
        template: str | Path | None = None,
        max_new_tokens: int = 512,
        **model_options: Any,
    ) -> None:
        self.template = ChatTemplate.load(template)
        self._spec = model if isinstance(model, str) else None
        self._model: ChatModel | None = None if isinstance(model, str) else model
        self.max_new_tokens = max_new_tokens
        self.model_options = model_options

    @property
    def model(self) -> ChatModel:
        """The chat model, loaded on first use."""
        if self._model is None:
            from xsafety.models import load_model

            assert self._spec is not None
            self._model = load_model(self._spec, Decoding(max_new_tokens=self.max_new_tokens), **self.model_options)
        return self._model

    def supports(self, src: str, tgt: str) -> bool:
        """A chat model is asked for any pair; the gates judge how well it did."""
        return src != tgt

    def signature(self, src: str, tgt: str) -> str:
        """The chat model's signature plus the translation template's hash."""
        return signature("chat", model=self.model.signature(), template=self.template.digest)

    def translate(
        self,
        texts: Sequence[str],
        src: str,
        tgt: str,
        *,
        n_best: int = 1,
        sample: bool = False,
        seed: int = 0,
    ) -> list[list[Candidate]]:
        """One (possibly flagged) candidate per text; an empty list where the request failed."""
        if not texts:
            return []
        src_name, tgt_name = _language_name(src), _language_name(tgt)
        requests = [
            ChatRequest(id=str(i), messages=self.template.messages(t, src_name, tgt_name)) for i, t in enumerate(texts)
        ]
        results = {r.id: r for r in self.model.chat(requests)}
        out: list[list[Candidate]] = []
        for i, text in enumerate(texts):
            res = results.get(str(i))
            if res is None or res.error:
                log.warning("chat translation of item %d failed: %s", i, res.error if res else "no result")
                out.append([])
                continue
            out.append([check_output(res.text, text, self.template)])
        return out

    def close(self) -> None:
        """Close the chat model (only when this engine loaded it)."""
        if self._model is not None and self._spec is not None:
            self._model.close()
            self._model = None
