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

Guards as data (``judges/*.toml``): a per-policy guard (ShieldGemma) lists ``[policies]`` (name ->
policy text, rendered into the template's ``{{policy}}``) and is asked once per policy; the item
is ``unsafe`` when any policy says so, with the policies as categories. A policy-in-prompt judge
(gpt-oss-safeguard style) names ``policy_file``, sent as the system message (and available as
``{{policy}}``). A guard's middle severity (Qwen3Guard's ``Controversial``) is kept in
``meta.guard_label`` and mapped by the TOML's ``controversial`` policy; a format that can say it
needs that key.

Scores: for formats whose verdict is one token (``SCORE_FIELDS``), the probability of the unsafe
token among the format's choices is stored as ``meta.score`` (and every choice's in
``meta.token_probs``), from a forward pass on a transformers model or from an OpenAI-compatible
server's ``logprobs``, so that a threshold can be calibrated per locale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xsafety.data import judges_dir
from xsafety.errors import ConfigError
from xsafety.judges.base import JudgeInput, JudgeOutput, check_label
from xsafety.judges.templates import (
    CONTROVERSIAL,
    PARSERS,
    SCORE_FIELDS,
    ParseResult,
    ScoreField,
    format_turns,
    load_template,
    render,
)
from xsafety.records import signature, text_hash

log = logging.getLogger(__name__)

INPUTS = ("template", "conversation")
# Formats that can answer with a middle severity, which the TOML must map (`controversial`).
SEVERITY_FORMATS = ("qwen3guard",)
# Alternatives per token asked of an OpenAI-compatible server when the format can be scored.
TOP_LOGPROBS = 5


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
        policies: Mapping[str, str] | None = None,
        policy_file: str | None = None,
        controversial: str | None = None,
        score: bool = True,
        languages: Sequence[str] | None = None,
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
        self.policy_text = ""
        if policy_file is not None:
            path = base / policy_file
            if not path.is_file():
                raise ConfigError(f"policy file {path} does not exist", field="policy_file")
            self.policy_text = path.read_text(encoding="utf-8").strip()
        # The policy of a policy-in-prompt judge is its system message unless the template places it.
        self.system = system if system is not None or "{{policy}}" in self.template else (self.policy_text or None)
        self.policies = {str(k): str(v).strip() for k, v in (policies or {}).items()}
        if "{{policy}}" in self.template and not (self.policies or self.policy_text):
            raise ConfigError("the template has {{policy}} but the judge names no policies or policy_file", field="template")
        if format in SEVERITY_FORMATS:
            if controversial is None:
                raise ConfigError(
                    f"format {format!r} can answer 'Controversial': say what it counts as "
                    "(controversial = \"unsafe\", \"safe\", \"refusal\" or \"invalid\")", field="controversial")
            try:
                check_label(controversial, allow_compliance=False)
            except ValueError as exc:
                raise ConfigError(str(exc), field="controversial") from None
        self.controversial = controversial
        self.categories = {str(k): tuple(v) for k, v in (categories or {}).items()}
        self.score_field: ScoreField | None = SCORE_FIELDS.get(format) if score else None
        self.languages = tuple(languages or ())  # claimed by the model card; descriptive only
        options = dict(model_options or {})
        if isinstance(model, str):
            from xsafety.models import Decoding, load_model

            if self.score_field is not None and model.startswith("openai:"):
                options.setdefault("top_logprobs", TOP_LOGPROBS)
            # Greedy and short: a judge must be deterministic and its answer is a line or two.
            decoding = Decoding(max_new_tokens=int(max_new_tokens), temperature=0.0)
            self.model = load_model(model, decoding, **options)
        else:
            self.model = model  # an already-built ChatModel (tests, or sharing one model)
        self.max_new_tokens = int(max_new_tokens)

    def signature(self) -> str:
        """Kind, format, template and system hashes, policies, category map, severity policy,
        scoring and the model's own signature."""
        return signature(
            self.kind,
            format=self.format,
            input=self.input,
            template=text_hash(self.template),
            system=text_hash(self.system) if self.system else None,
            policy=text_hash(self.policy_text) if self.policy_text else None,
            policies=text_hash(repr(sorted(self.policies.items()))) if self.policies else None,
            categories=text_hash(repr(sorted(self.categories.items()))) if self.categories else None,
            controversial=self.controversial,
            score="yes" if self.score_field is not None else None,
            model=self.model.signature(),
        )

    def messages(self, item: JudgeInput, policy: str = "") -> tuple[dict[str, str], ...]:
        """The chat messages sent for one item (and one policy, for a per-policy guard)."""
        context = _turns(item.meta.get("context"))
        if self.input == "conversation":
            msgs = [*_alternating(context), {"role": "user", "content": item.prompt},
                    {"role": "assistant", "content": item.response}]
        else:
            text = render(self.template, prompt=item.prompt, response=item.response, locale=item.locale,
                          conversation=format_turns(context), policy=policy or self.policy_text)
            msgs = [{"role": "user", "content": text}]
        if self.system:
            msgs.insert(0, {"role": "system", "content": self.system})
        return tuple(msgs)

    def judge(self, items: Sequence[JudgeInput]) -> list[JudgeOutput]:
        """Ask the model about every item (once per policy) in one batch and parse each answer."""
        from xsafety.models import ChatRequest

        policies = list(self.policies.items()) or [("", "")]
        requests = [
            ChatRequest(id=f"{i}:{p}", messages=self.messages(item, text))
            for i, item in enumerate(items)
            for p, (_, text) in enumerate(policies)
        ]
        results = {r.id: r for r in self.model.chat(requests)} if requests else {}
        outputs = []
        for i, item in enumerate(items):
            answers = []
            for p, (policy, text) in enumerate(policies):
                result = results.get(f"{i}:{p}")
                if result is None or result.error:
                    answers = None
                    why = result.error if result is not None else "no result returned"
                    outputs.append(JudgeOutput("invalid", f"judge model failed: {why}", error=f"model: {why}"))
                    break
                answers.append((policy, result, self.messages(item, text)))
            if answers is not None:
                outputs.append(self._decide(answers))
        return outputs

    def _decide(self, answers: list[tuple[str, Any, tuple[dict[str, str], ...]]]) -> JudgeOutput:
        """One item's output from its answer (or, per policy, answers)."""
        parsed = [(policy, self.parse(result.text), result, msgs) for policy, result, msgs in answers]
        raw = "\n".join(f"[{p}] {r.text}" if p else r.text for p, _, r, _ in parsed)
        scores = [self._score(result, msgs) for _, _, result, msgs in parsed]
        bad = [(p, r) for p, r, _, _ in parsed if r.error]
        if bad:
            policy, first = bad[0]
            why = f"{first.rationale} (policy {policy})" if policy else first.rationale
            return JudgeOutput("invalid", why, raw=raw, error=first.error, meta=_score_meta(scores, [p for p, *_ in parsed]))
        if len(parsed) == 1:
            result = parsed[0][1]
        else:  # per-policy guard: unsafe when any policy says so, its policies the categories
            unsafe = [p for p, r, _, _ in parsed if r.label == "unsafe"]
            result = ParseResult(
                "unsafe" if unsafe else "safe",
                tuple(unsafe),
                f"guard: violates {', '.join(unsafe)}" if unsafe else "guard: violates no policy",
                meta={"policy_labels": {p: r.meta.get("guard_label", r.label) for p, r, _, _ in parsed}},
            )
        label, meta = result.label, {**result.meta, **_score_meta(scores, [p for p, *_ in parsed])}
        if label == CONTROVERSIAL:
            label = self.controversial or "invalid"
            meta["severity_policy"] = f"Controversial -> {label}"
            if label == "safe" and meta.get("refusal"):
                label = "refusal"
        mapped = tuple(dict.fromkeys(c for code in result.categories for c in self.categories.get(code, ())))
        if result.categories:
            meta["hazards"] = list(result.categories)
        return JudgeOutput(label=label, rationale=result.rationale, raw=raw, categories=mapped or result.categories,
                           error=None, meta=meta)

    def _score(self, result: Any, msgs: tuple[dict[str, str], ...]) -> dict[str, float] | None:
        """Probabilities of the format's verdict choices at the verdict token, or None."""
        field = self.score_field
        if field is None:
            return None
        probs: dict[str, float] | None = None
        try:
            if getattr(result, "logprobs", None):
                probs = logprob_choice(result.logprobs, field)
            elif all(hasattr(self.model, a) for a in ("tokenizer", "model", "encode")):
                m = field.pattern.search(result.text)
                if m is not None:
                    probs = hf_choice(self.model, msgs, result.text[: m.start(1)], field.candidates)
        except Exception as exc:  # a score is extra: failing to compute it must not fail the verdict
            log.warning("could not score the verdict token: %s", exc)
        return {**probs, "_positive": probs[field.positive]} if probs else None

    def close(self) -> None:
        """Free the model."""
        self.model.close()


def _score_meta(scores: Sequence[dict[str, float] | None], policies: Sequence[str] = ()) -> dict[str, Any]:
    """``score`` (the highest probability of the unsafe choice: any policy violated) and the
    choices' probabilities (per policy for a per-policy guard)."""
    got = [s for s in scores if s is not None]
    if not got or len(got) != len(scores):
        return {}
    positive = [s["_positive"] for s in got]
    clean = [{k: round(v, 6) for k, v in s.items() if k != "_positive"} for s in got]
    meta: dict[str, Any] = {"score": round(max(positive), 6)}
    if len(clean) == 1:
        meta["token_probs"] = clean[0]
    else:
        meta["token_probs"] = dict(zip(policies, clean))
    return meta


def logprob_choice(logprobs: Sequence[dict[str, Any]], field: ScoreField) -> dict[str, float] | None:
    """The verdict choice probabilities from a server's token log-probabilities: the token where
    the verdict starts, and its alternatives that begin one choice (and only one), renormalised."""
    text = "".join(t["token"] for t in logprobs)
    m = field.pattern.search(text)
    if m is None:
        return None
    offset, token = 0, None
    for t in logprobs:
        if offset + len(t["token"]) > m.start(1):
            token = t
            break
        offset += len(t["token"])
    if token is None:
        return None
    alternatives = token.get("top_logprobs") or [{"token": token["token"], "logprob": token["logprob"]}]
    mass = {c: 0.0 for c in field.candidates}
    for alt in alternatives:
        piece = alt["token"].strip().lower()
        matches = [c for c in field.candidates if piece and c.lower().startswith(piece)]
        if len(matches) == 1:
            mass[matches[0]] += math.exp(float(alt["logprob"]))
    total = sum(mass.values())
    if total <= 0:
        return None
    return {c: v / total for c, v in mass.items()}


def hf_choice(chat_model: Any, messages: Sequence[dict[str, str]], prefix: str,
              candidates: Sequence[str]) -> dict[str, float] | None:
    """The verdict choice probabilities from a transformers chat model: for each choice, the
    probability of all its tokens after the chat prompt and the answer up to the verdict
    (``prefix``), renormalised over the choices (a choice may take several tokens, and two choices
    may share their first one: " Unsafe" and " Controversial" can both start with a space)."""
    import torch

    tok = chat_model.tokenizer
    # A BPE vocabulary puts the space before a word into the word's token: cut the prefix there.
    cut = len(prefix.rstrip())
    head, gap = prefix[:cut], prefix[cut:]
    head_ids = tok(head, add_special_tokens=False).input_ids if head else []
    base = list(chat_model.encode(messages)) + head_ids
    scores = []
    for cand in candidates:
        ids = tok(head + (gap or (" " if head else "")) + cand, add_special_tokens=False).input_ids
        if ids[: len(head_ids)] != head_ids or len(ids) <= len(head_ids):
            return None
        tail = ids[len(head_ids):]
        seq = torch.tensor([base + tail], device=chat_model.device)
        with torch.inference_mode():
            logits = chat_model.model(input_ids=seq).logits[0].float()
        logp = torch.log_softmax(logits[len(base) - 1 : len(base) - 1 + len(tail)], dim=-1)
        scores.append(float(sum(logp[k, t] for k, t in enumerate(tail))))
    probs = torch.softmax(torch.tensor(scores), dim=0).tolist()
    return {c: float(p) for c, p in zip(candidates, probs)}


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
