"""Adversarial attacks as data: one TOML file per attack in ``taxonomy/attacks/``.

An attack turns a request into the messages a target model receives. Three kinds exist:

* ``template``: one user message, a template with ``{prompt}`` (suffix/prefix injection, role play,
  MultiJail's intentional scenario);
* ``conversation``: several messages with roles, one of which holds ``{prompt}`` (Chain of
  Utterances);
* ``transform``: the request itself is perturbed by a declared transform (token manipulation); the
  transforms are the explicit table ``TRANSFORMS`` below.

Every attack can be applied at two stages:

* ``before-translation``: the attacked English text is what gets translated, so the model sees the
  whole attack in the target language. The orchestrator translates the attacked texts as items of a
  derived set (``<set>~<attack>``) with derived ids (``<id>~<attack>``); fixed turns of a
  conversation are items ``<attack>~turn<i>`` of the same derived set;
* ``after-translation``: the English wrapper is put around the translated request (code-switching).

The built-in name ``none`` is the plain request and needs no file.

The conversations an attack sends are built here too (``attacked_prompts``: the English items an
attack applied before translation adds; ``conversations``: the messages per prompt of a set in a
locale, from the English text or the locale's translations).
"""

from __future__ import annotations

import difflib
import random
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from xsafety.data import taxonomy_dir
from xsafety.errors import ConfigError
from xsafety.records import Prompt, Translation, signature, stable_hash

NONE = "none"
KINDS: tuple[str, ...] = ("template", "conversation", "transform")
STAGES: tuple[str, ...] = ("before-translation", "after-translation")
PLACEHOLDER = "{prompt}"
ROLES: tuple[str, ...] = ("system", "user", "assistant")
ENGLISH = "en"
_FIELDS = ("name", "description", "source", "kind", "stage", "template", "messages", "transform")


def attacks_dir() -> Path:
    """Folder of the attack definitions shipped with xsafety."""
    return taxonomy_dir() / "attacks"


# --- transforms -------------------------------------------------------------------------------

_WORD = re.compile(r"\w{4,}", re.UNICODE)


def _perturb_words(text: str, rng: random.Random, rate: float, change: Callable[[str, random.Random], str]) -> str:
    """Apply ``change`` to a ``rate`` share of the words of four or more letters."""
    words = list(_WORD.finditer(text))
    if not words:
        return text
    count = max(1, round(rate * len(words))) if rate > 0 else 0
    chosen = sorted(rng.sample(range(len(words)), min(count, len(words))))
    out: list[str] = []
    last = 0
    for i in chosen:
        m = words[i]
        out.append(text[last : m.start()])
        out.append(change(m.group(0), rng))
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def _swap(word: str, rng: random.Random) -> str:
    # Keep the first and last letter, as in the typoglycemia effect: humans (and strong models)
    # still read the word while exact-match filters do not.
    i = rng.randrange(1, len(word) - 2) if len(word) > 3 else 0
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def _space(word: str, rng: random.Random) -> str:
    return " ".join(word)


def _flip_case(word: str, rng: random.Random) -> str:
    return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(word))


def char_swap(text: str, rng: random.Random, rate: float) -> str:
    """Swap two adjacent inner letters in a share of the words."""
    return _perturb_words(text, rng, rate, _swap)


def spacing(text: str, rng: random.Random, rate: float) -> str:
    """Spell a share of the words out with spaces between their letters."""
    return _perturb_words(text, rng, rate, _space)


def case_flip(text: str, rng: random.Random, rate: float) -> str:
    """Alternate the letter case inside a share of the words."""
    return _perturb_words(text, rng, rate, _flip_case)


# The one table of transform kinds an attack file may name in ``[transform] type``.
TRANSFORMS: dict[str, Callable[[str, random.Random, float], str]] = {
    "char_swap": char_swap,
    "spacing": spacing,
    "case_flip": case_flip,
}


# --- the attack record ------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """One attack definition, validated. ``messages`` are ``(role, content)`` templates."""

    name: str
    kind: str
    stage: str
    messages: tuple[tuple[str, str], ...]
    description: str = ""
    source: str = ""
    transform: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def prompt_turn(self) -> int:
        """Index of the message that holds the request."""
        for i, (_, content) in enumerate(self.messages):
            if PLACEHOLDER in content:
                return i
        raise AssertionError("validated attacks always hold {prompt}")  # pragma: no cover

    def signature(self) -> str:
        """Identity of everything that changes the attacked text."""
        return signature(
            "attack",
            name=self.name,
            type=self.kind,
            template=stable_hash(self.messages, self.transform),
        )

    def perturb(self, text: str) -> str:
        """The request after the attack's transform (unchanged for non-transform kinds).

        The random generator is seeded from the attack's seed and the text itself, so a request is
        always perturbed the same way, whatever else is in the batch.
        """
        if self.kind != "transform":
            return text
        spec = self.transform
        rng = random.Random(stable_hash(int(spec.get("seed", 0)), text))
        return TRANSFORMS[spec["type"]](text, rng, float(spec.get("rate", 0.3)))

    def render(self, text: str) -> tuple[dict[str, str], ...]:
        """The messages a model receives for the request ``text`` (all fixed turns as written)."""
        request = self.perturb(text)
        return tuple(
            {"role": role, "content": content.replace(PLACEHOLDER, request)} for role, content in self.messages
        )

    def fixed_turns(self) -> dict[int, str]:
        """Message index -> text of the turns that do not hold the request (translated once)."""
        return {i: content for i, (_, content) in enumerate(self.messages) if PLACEHOLDER not in content}


NO_ATTACK = Attack(name=NONE, kind="template", stage="before-translation", messages=(("user", PLACEHOLDER),),
                   description="The request as it is.", source="")


def derived_set(set_name: str, attack: str) -> str:
    """Name of the derived set that holds a set's prompts attacked before translation."""
    return f"{set_name}~{attack}"


def derived_id(prompt_id: str, attack: str) -> str:
    """Id of a prompt attacked before translation, inside its derived set."""
    return f"{prompt_id}~{attack}"


def turn_id(attack: str, index: int) -> str:
    """Id of a fixed conversation turn inside a derived set (translated once per locale)."""
    return f"{attack}~turn{index}"


def list_attacks() -> list[str]:
    """Names of the shipped attacks, ``none`` first."""
    folder = attacks_dir()
    names = sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []
    return [NONE, *names]


def load_attack(name_or_path: str) -> Attack:
    """Load an attack by name (a file in ``taxonomy/attacks/``) or from a TOML path."""
    if name_or_path == NONE:
        return NO_ATTACK
    path = Path(name_or_path)
    if path.suffix != ".toml" or not path.exists():
        path = attacks_dir() / f"{name_or_path}.toml"
    if not path.exists():
        known = list_attacks()
        close = difflib.get_close_matches(name_or_path, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"
        raise ConfigError(f"unknown attack '{name_or_path}'{hint}", field="attacks")
    return _load_file(str(path.resolve()), path.stat().st_mtime_ns)


@cache
def _load_file(path: str, mtime_ns: int) -> Attack:
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=path) from None
    return _validate(data, path, text)


def _line_of(text: str, key: str) -> int | None:
    """Line number of ``key =`` or ``[key]`` in a TOML text (tomllib gives no positions)."""
    pattern = re.compile(rf"^\s*(\[\[?\s*{re.escape(key)}\s*\]\]?|{re.escape(key)}\s*=)")
    for n, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return n
    return None


def _validate(data: dict[str, Any], path: str, text: str) -> Attack:
    def err(message: str, key: str) -> ConfigError:
        return ConfigError(message, file=path, line=_line_of(text, key), field=key)

    for key in data:
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise err(f"unknown key '{key}'{hint}", key)
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name) or name == NONE:
        raise err("name must be lowercase letters, digits and '_' (and not 'none')", "name")
    kind = data.get("kind")
    if kind not in KINDS:
        raise err(f"kind must be one of {', '.join(KINDS)}, not {kind!r}", "kind")
    stage = data.get("stage", "before-translation")
    if stage not in STAGES:
        raise err(f"stage must be one of {', '.join(STAGES)}, not {stage!r}", "stage")
    for key in ("description", "source"):
        if not isinstance(data.get(key, ""), str):
            raise err("must be a string", key)
    transform: dict[str, Any] = {}
    if kind == "template":
        template = data.get("template")
        if not isinstance(template, str):
            raise err("a template attack needs a 'template' string holding {prompt}", "template")
        messages: tuple[tuple[str, str], ...] = (("user", template),)
    elif kind == "conversation":
        raw = data.get("messages")
        if not isinstance(raw, list) or not raw:
            raise err("a conversation attack needs [[messages]] tables with role and content", "messages")
        out = []
        for m in raw:
            if not isinstance(m, dict) or set(m) != {"role", "content"}:
                raise err("each [[messages]] table needs exactly 'role' and 'content'", "messages")
            if m["role"] not in ROLES or not isinstance(m["content"], str):
                raise err(f"role must be one of {', '.join(ROLES)} and content a string", "messages")
            out.append((m["role"], m["content"]))
        if out[-1][0] != "user":
            raise err("the last message must be the user's (the model answers it)", "messages")
        if any(role == "system" for role, _ in out[1:]):
            raise err("only the first message may be a system message", "messages")
        messages = tuple(out)
    else:
        raw_t = data.get("transform")
        if not isinstance(raw_t, dict) or raw_t.get("type") not in TRANSFORMS:
            raise err(f"a transform attack needs [transform] type = one of {', '.join(TRANSFORMS)}", "transform")
        unknown = set(raw_t) - {"type", "rate", "seed"}
        if unknown:
            raise err(f"unknown transform setting(s): {', '.join(sorted(unknown))}", "transform")
        rate = raw_t.get("rate", 0.3)
        if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise err("transform rate must be a number between 0 and 1", "transform")
        if not isinstance(raw_t.get("seed", 0), int):
            raise err("transform seed must be an integer", "transform")
        transform = dict(raw_t)
        messages = (("user", PLACEHOLDER),)
    holders = sum(content.count(PLACEHOLDER) for _, content in messages)
    if holders != 1:
        field_name = "template" if kind == "template" else "messages"
        raise err(f"the attack must contain {PLACEHOLDER} exactly once (found {holders})", field_name)
    return Attack(
        name=name,
        kind=kind,
        stage=stage,
        messages=messages,
        description=data.get("description", ""),
        source=data.get("source", ""),
        transform=transform,
        path=path,
    )


# --- conversations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversation:
    """What one prompt sends under an attack: its (possibly derived) id and set, the messages,
    and the metadata its response carries (``input_key``: the Prompt or Translation key)."""

    prompt_id: str
    set: str
    messages: tuple[dict[str, str], ...]
    meta: dict[str, Any]


def attacked_prompts(prompts: list[Prompt], attack: Attack) -> list[Prompt]:
    """The English items an attack applied before translation adds: one per prompt (the turn
    that holds the request, rendered) and one per fixed conversation turn, in a derived set."""
    if not prompts:
        return []
    set_name = derived_set(prompts[0].set, attack.name)
    turn = attack.prompt_turn
    out = [
        Prompt(
            id=derived_id(p.id, attack.name),
            text=attack.render(p.text)[turn]["content"],
            category=p.category,
            source=p.source,
            set=set_name,
            xsafety_type=p.xsafety_type,
            tags=(*p.tags, f"attack:{attack.name}"),
            meta={"base_id": p.id, "base_set": p.set, "attack": attack.name},
        )
        for p in prompts
    ]
    out += [
        Prompt(id=turn_id(attack.name, i), text=text, category="", source=f"attack:{attack.name}", set=set_name,
               meta={"attack": attack.name, "turn": i})
        for i, text in attack.fixed_turns().items()
    ]
    return out


def _usable(t: Translation | None) -> bool:
    return t is not None and t.accepted and bool(t.text.strip())


def _why_not(t: Translation | None) -> str:
    return "no translation" if t is None else "translation rejected"


def conversations(
    set_name: str,
    base: list[Prompt],
    locale: str,
    attack: Attack,
    stage: str,
    translations_of: Callable[[str], Mapping[str, Translation]],
    skipped: Counter[tuple[str, str]],
) -> list[Conversation]:
    """The conversation of every prompt of one set in one locale under ``attack`` at ``stage``.

    English uses the prompt text. Elsewhere ``translations_of(set)`` gives the translations that
    count (by prompt id): of the set itself when the attack wraps the translated request, of the
    derived set when it was applied before translation (whose fixed turns must all be translated).
    A prompt with no accepted translation is left out and counted in ``skipped`` by
    ``(locale, reason)``.
    """
    before = attack.name != NONE and stage == "before-translation"
    common = {"attack_name": attack.name, "attack_stage": stage, "base_set": set_name}
    out: list[Conversation] = []
    if locale == ENGLISH:
        for p in base:
            pid, sname = (derived_id(p.id, attack.name), derived_set(set_name, attack.name)) if before else (p.id, set_name)
            meta = {**common, "input_key": p.key, "category": p.category, "base_id": p.id}
            out.append(Conversation(pid, sname, attack.render(p.text), meta))
        return out
    if not before:
        have = translations_of(set_name)
        for p in base:
            t = have.get(p.id)
            if t is None or not _usable(t):
                skipped[(locale, _why_not(t))] += 1
                continue
            meta = {**common, "input_key": t.key, "category": p.category, "base_id": p.id}
            out.append(Conversation(p.id, set_name, attack.render(t.text), meta))
        return out
    dset = derived_set(set_name, attack.name)
    have = translations_of(dset)
    turns: dict[int, str] = {}
    for i in attack.fixed_turns():
        t = have.get(turn_id(attack.name, i))
        if t is None or not _usable(t):
            # Without its fixed turns no conversation of this attack can be sent in this locale.
            skipped[(locale, f"{attack.name}: a fixed turn has no accepted translation")] += len(base)
            return []
        turns[i] = t.text
    roles = [role for role, _ in attack.messages]
    for p in base:
        did = derived_id(p.id, attack.name)
        t = have.get(did)
        if t is None or not _usable(t):
            skipped[(locale, _why_not(t))] += 1
            continue
        contents = [turns.get(i, t.text) for i in range(len(roles))]
        messages = tuple({"role": r, "content": c} for r, c in zip(roles, contents))
        meta = {**common, "input_key": t.key, "category": p.category, "base_id": p.id}
        out.append(Conversation(did, dset, messages, meta))
    return out
