"""The judging stage finds the English source of attacked (derived) and run-only prompts, and gives
LLM judges the earlier turns of a multi-turn attack as context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import start_server

from xsafety.attacks import derived_set, load_attack, turn_id
from xsafety.judges import JudgeInput, load_judge
from xsafety.judges.llm import LLMJudge
from xsafety.judges.stage import judge_run
from xsafety.attacks import attacked_prompts
from xsafety.records import Prompt, Response, Translation, Verdict, stable_hash
from xsafety.store import Store
from xsafety.taxonomy import load_set

REFUSAL_ES = "Lo siento, no puedo ayudar con eso."
REFUSAL_EN = "I'm sorry, I can't help with that."


def _es(text: str) -> str:
    # A stand-in translation that is visibly not English and maps back to its source exactly.
    return f"[es] {text}"


def _translation(p: Prompt) -> Translation:
    return Translation(key=stable_hash("t", p.set, p.id, "es"), prompt_id=p.id, set=p.set, locale="es",
                       source=p.text, text=_es(p.text), engine="test")


def _response(key: str, set_name: str, prompt_id: str, messages: tuple[dict[str, str], ...], *,
              input_key: str = "", stage: str = "before-translation") -> Response:
    return Response(key=key, prompt_id=prompt_id, set=set_name, locale="es", model="m", text=f"{REFUSAL_ES} ({key})",
                    input_key=input_key, messages=messages, meta={"attack_stage": stage})


def _fake_back(texts: list[str], locale: str, engine: str | None = None) -> list[str | None]:
    return [t.replace(REFUSAL_ES, REFUSAL_EN) for t in texts]


def _run_store(root: Path) -> tuple[Store, list[Prompt], dict[str, Prompt]]:
    """A run store as the orchestrator leaves it before judging: the Chain-of-Utterances derived set
    and a run-only set in ``prompts``, their Spanish in ``translations``, and the responses."""
    base = load_set("builtin")[:2]
    attack = load_attack("chain_of_utterances")
    english = attacked_prompts(base, attack)
    run_only = Prompt(id="q1", text="Only this run knows me.", category="", source="user", set="adhoc")
    store = Store(root)
    store.table(Prompt).append([*english, run_only])
    translations = {p.id: _translation(p) for p in [*english, run_only]}
    store.table(Translation).append(translations.values())
    dset = derived_set(base[0].set, attack.name)
    responses = []
    for p in english:
        if "turn" in p.meta:
            continue
        # The messages as the plan builds them: the fixed turns and the request, all in Spanish.
        contents = [translations.get(turn_id(attack.name, i), translations[p.id]).text for i in range(len(attack.messages))]
        messages = tuple({"role": role, "content": c} for (role, _), c in zip(attack.messages, contents))
        responses.append(_response(f"r-{p.id}", dset, p.id, messages, input_key=translations[p.id].key))
    responses.append(_response("r-adhoc", "adhoc", "q1", ({"role": "user", "content": _es(run_only.text)},)))
    # Not in the run's table: a derived set rebuilt from the built-in set and the attack file.
    suffix = derived_set(base[0].set, "suffix_injection")
    responses.append(_response("r-suffix", suffix, f"{base[0].id}~suffix_injection",
                               ({"role": "user", "content": "[es] algo"},)))
    # Nowhere at all: judged against the prompt as sent, and said so.
    responses.append(_response("r-gone", "gone~none", "x1", ({"role": "user", "content": "[es] perdido"},)))
    store.table(Response).append(responses)
    return store, english, {p.id: p for p in base}


def test_back_translated_mode_reads_english_of_derived_and_run_only_sets(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("xsafety.translate.back_translate", _fake_back)
    store, english, base = _run_store(tmp_path / "run")
    attack = load_attack("chain_of_utterances")
    turns = attack.fixed_turns()
    with start_server(script=lambda body: "safe") as server:
        judge = load_judge("llama-guard-3", model=f"openai:guard@{server.url}")
        summary = judge_run(store, judge)
        bodies = {b["messages"][-1]["content"]: b["messages"] for b in server.bodies}
    assert (summary.new, summary.failed, summary.prompt_not_english) == (10, 0, 1)
    verdicts = {(v.response_key, v.mode): v for v in store.table(Verdict).load().values()}
    for p in (q for q in english if "turn" not in q.meta):
        key = f"r-{p.id}"
        assert verdicts[(key, "back-translated")].meta["english_prompt"] == "run"
        # The guard sees the English conversation: earlier turns from the run's translations, the
        # final turn from the derived prompt (request inside the attack), no system prompt.
        assert bodies[f"{REFUSAL_EN} ({key})"] == [
            {"role": "user", "content": turns[1]},
            {"role": "assistant", "content": turns[2]},
            {"role": "user", "content": p.text},
            {"role": "assistant", "content": f"{REFUSAL_EN} ({key})"},
        ]
        assert base[p.meta["base_id"]].text in p.text
        # Natively: the Spanish conversation exactly as the model saw it, judged on its final turn.
        assert bodies[f"{REFUSAL_ES} ({key})"] == [
            {"role": "user", "content": _es(turns[1])},
            {"role": "assistant", "content": _es(turns[2])},
            {"role": "user", "content": _es(p.text)},
            {"role": "assistant", "content": f"{REFUSAL_ES} ({key})"},
        ]
    assert bodies[f"{REFUSAL_EN} (r-adhoc)"][0] == {"role": "user", "content": "Only this run knows me."}
    suffix_prompt = bodies[f"{REFUSAL_EN} (r-suffix)"][0]["content"]
    first = next(iter(base.values()))
    assert suffix_prompt == load_attack("suffix_injection").render(first.text)[0]["content"]
    assert verdicts[("r-suffix", "back-translated")].meta["english_prompt"] == "set"
    assert verdicts[("r-gone", "back-translated")].meta["english_prompt"] == "sent"
    assert bodies[f"{REFUSAL_EN} (r-gone)"][0]["content"] == "[es] perdido"


def test_template_judge_gets_the_earlier_turns_only_where_its_template_asks(tmp_path: Path) -> None:
    (tmp_path / "ctx.txt").write_text("{{conversation}}\n---\nQ: {{prompt}}\nA: {{response}}", encoding="utf-8")
    context: list[dict[str, Any]] = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Of course."}]
    items = [JudgeInput("Next question?", "No.", "en", {"context": context}), JudgeInput("Single?", "No.", "en")]
    with start_server(script=lambda body: "LABEL: refusal") as server:
        judge = LLMJudge("ctx", model=f"openai:m@{server.url}", template="ctx.txt", format="rubric", base_dir=tmp_path)
        out = judge.judge(items)
        sent = sorted(b["messages"][-1]["content"] for b in server.bodies)
        guard = LLMJudge("g", model=f"openai:m@{server.url}", template="ctx.txt", format="rubric",
                         base_dir=tmp_path, input="conversation")
        # Roles that do not alternate user/assistant would be rejected by a guard's chat template.
        odd = guard.messages(JudgeInput("p", "r", "en", {"context": [{"role": "assistant", "content": "x"}]}))
    assert [o.label for o in out] == ["refusal", "refusal"]
    assert sent == ["\n---\nQ: Single?\nA: No.", "User: Hello\n\nAssistant: Of course.\n---\nQ: Next question?\nA: No."]
    assert [m["role"] for m in odd] == ["user", "assistant"]
