"""The ``llm`` judge: a guard or rubric model on any backend of ``xsafety.models``.

A judge TOML names the model spec, the template, the output format (parser) and how the model
is asked (``input``):

* ``input = "template"``: the template is rendered into one user message (rubric judges, and
  guards served without their own chat template);
* ``input = "conversation"``: the model receives ``[user: prompt, assistant: response]`` and its
  own chat template builds the guard prompt (Llama Guard 3 served by vLLM/TGI or loaded with
  ``hf:``). The template file is still hashed into the signature as the documented format.

A multi-turn item (a conversation attack) carries its earlier turns in ``meta["context"]``: the
conversation input sends them before the prompt (guards judge the last assistant turn of a
conversation), and a template gets them through ``{{conversation}}`` if it has that placeholder.

Hazard codes in the answer (Llama Guard's S1-S14) map to taxonomy categories through the TOML's
``[categories]`` table and are stored on the verdict. A backend failure becomes an output with
``error`` set (``model: ...``) that the stage keeps apart and retries; an answer that does not
parse becomes ``invalid`` with ``error="unparsable"`` and the raw text kept, never a guess.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xsafety.data import judges_dir
from xsafety.errors import ConfigError
from xsafety.judges.base import JudgeInput, JudgeOutput
from xsafety.judges.templates import PARSERS, format_turns, load_template, render
from xsafety.records import signature, text_hash

log = logging.getLogger(__name__)

INPUTS = ("template", "conversation")


class LLMJudge:
    """Judge with a chat model: render, ask in one batch, parse strictly."""

    kind = "llm"

    def __init__(
        self,
        name: str = "llm",
        *,
        model: str | Any,
        template: str,
        format: str,
        base_dir: str | Path | None = None,
        input: str = "template",
        system: str | None = None,
        max_new_tokens: int = 64,
        categories: dict[str, Sequence[str]] | None = None,
        model_options: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> None:
        if format not in PARSERS:
            raise ConfigError(f"unknown format {format!r}; expected one of {', '.join(PARSERS)}", field="format")
        if input not in INPUTS:
            raise ConfigError(f"input must be one of {', '.join(INPUTS)}", field="input")
        self.name = name
        base = Path(base_dir) if base_dir else judges_dir()
        self.template_path = base / template
        self.template = load_template(self.template_path)
        self.format = format
        self.parse = PARSERS[format]
        self.input = input
        self.system = system
        self.categories = {str(k): tuple(v) for k, v in (categories or {}).items()}
        if isinstance(model, str):
            from xsafety.models import Decoding, load_model

            # Greedy and short: a judge must be deterministic and its answer is a line or two.
            decoding = Decoding(max_new_tokens=int(max_new_tokens), temperature=0.0)
            self.model = load_model(model, decoding, **(model_options or {}))
        else:
            self.model = model  # an already-built ChatModel (tests, or sharing one model)
        self.max_new_tokens = int(max_new_tokens)

    def signature(self) -> str:
        """Kind, format, template and system hashes, category map and the model's own signature."""
        return signature(
            self.kind,
            format=self.format,
            input=self.input,
            template=text_hash(self.template),
            system=text_hash(self.system) if self.system else None,
            categories=text_hash(repr(sorted(self.categories.items()))) if self.categories else None,
            model=self.model.signature(),
        )

    def messages(self, item: JudgeInput) -> tuple[dict[str, str], ...]:
        """The chat messages sent for one item."""
        context = _turns(item.meta.get("context"))
        if self.input == "conversation":
            msgs = [*_alternating(context), {"role": "user", "content": item.prompt},
                    {"role": "assistant", "content": item.response}]
        else:
            text = render(self.template, prompt=item.prompt, response=item.response, locale=item.locale,
                          conversation=format_turns(context))
            msgs = [{"role": "user", "content": text}]
        if self.system:
            msgs.insert(0, {"role": "system", "content": self.system})
        return tuple(msgs)

    def judge(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        """Ask the model about every item in one batch and parse each answer."""
        from xsafety.models import ChatRequest

        requests = [ChatRequest(id=str(i), messages=self.messages(item)) for i, item in enumerate(items)]
        results = {r.id: r for r in self.model.chat(requests)} if requests else {}
        outputs = []
        for i in range(len(items)):
            result = results.get(str(i))
            if result is None or result.error:
                why = result.error if result is not None else "no result returned"
                outputs.append(JudgeOutput("invalid", f"judge model failed: {why}", error=f"model: {why}"))
                continue
            parsed = self.parse(result.text)
            mapped = tuple(dict.fromkeys(c for code in parsed.categories for c in self.categories.get(code, ())))
            meta = {**parsed.meta}
            if parsed.categories:
                meta["hazards"] = list(parsed.categories)
            outputs.append(
                JudgeOutput(
                    label=parsed.label,
                    rationale=parsed.rationale,
                    raw=result.text,
                    categories=mapped or parsed.categories,
                    error=parsed.error,
                    meta=meta,
                )
            )
        return outputs

    def close(self) -> None:
        """Free the model."""
        self.model.close()


def _turns(context: Any) -> list[dict[str, str]]:
    """The earlier turns in ``meta["context"]`` as role/content dicts (none when malformed)."""
    if not isinstance(context, (list, tuple)) or not all(isinstance(t, dict) for t in context):
        return []
    return [{"role": str(t.get("role")), "content": str(t.get("content", ""))} for t in context]


def _alternating(turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """``turns`` if they can go before ``[user, assistant]``: user first, roles alternating, ending
    with the assistant; else none (a guard's chat template rejects anything else, and a rejected
    request would come back as a backend failure, retried on every run)."""
    roles = [t["role"] for t in turns]
    if len(turns) % 2 or roles != ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]:
        if turns:
            log.debug("conversation context left out: roles %s do not alternate user/assistant", roles)
        return []
    return turns
