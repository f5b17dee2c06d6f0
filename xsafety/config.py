"""The run config: a TOML file validated into frozen dataclasses, with errors that point at lines.

A config names what to evaluate (sets, locales, attacks, variants), with what (models, decoding,
judges) and where (the run directory). Every section is optional; what is left out takes the
built-in default (``xsafety/default_run.toml`` is exactly those defaults, written out). The
reference is in ``scripts/configs/README.md``; in short::

    [run]
    dir = "xsafety-runs/my-run"      # relative paths are taken from the current directory
    sets = ["builtin"]
    locales = "committed"            # or a list: ["en", "es", "sw"]; "en" is always added first
    limit = 0                        # first N prompts of each set (0: all)
    sample = {per_category = 3, by = "alert", seed = 0}   # optional: a stratified sample (before limit)
    judges = ["default"]             # judge names (judges/<name>.toml) or TOML paths
    primary_judge = "default"        # the judge whose native verdicts the report leads with
    judge_modes = ["native", "back-translated"]
    attacks = ["none", "suffix_injection", {name = "intentional", stage = "before-translation"}]
    attack_stage = "after-translation"   # optional: one stage for every attack without its own

    [translation]
    engine = "apertium"              # optional: one engine for every locale ...
    engines = {sw = "seq2seq"}       # ... or per locale (default: the locale's own engine)

    [[models]]
    spec = "smollm2"
    name = "smollm2"                 # display name (default: the spec)
    # options: concurrency, api_key_env, batch_tokens, max_batch, device, dtype, timeout_s, ...

    [decoding]
    max_new_tokens = 96
    temperature = 0.0
    seed = 0

    [[variants]]
    name = "none"                    # no system prompt: the base every variant is compared with
    [[variants]]
    name = "safety-prompt"
    system = "locale"                # the locale's own safety prompt, written in that language
                                     # ("locale:en" = English's for every locale; other text: literal)
    [report]
    policy = "default"

The ``[run]`` keys may also be written at the top of the file, before any table.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsafety.errors import ConfigError, InputError
from xsafety.sampling import Sample, parse_sample
# DEFAULT_MAX_NEW_TOKENS (models.base) is sized so that the built-in run (SmolLM2 on ~750 prompts,
# 2 CPU cores) ends within 15 minutes.
from xsafety.models.base import DEFAULT_MAX_NEW_TOKENS, Decoding
from xsafety.records import stable_hash
from xsafety.validate import decoding_problems, model_option_problem, spec_problem

ENGLISH = "en"
COMMITTED = "committed"
JUDGE_MODES: tuple[str, ...] = ("native", "back-translated")
DEFAULT_CONFIG = Path(__file__).resolve().parent / "default_run.toml"
DEFAULT_RUN_DIR = "xsafety-runs/default"

# Model options the orchestrator passes to ``load_model``; the backend validates them per kind.
MODEL_OPTIONS: tuple[str, ...] = (
    "concurrency",
    "api_key_env",
    "batch_tokens",
    "max_batch",
    "device",
    "dtype",
    "threads",
    "timeout_s",
    "max_retries",
    "backoff_base_s",
    "backoff_cap_s",
    "revision",
)

# The schema: section -> key -> short type name. "table[]" sections are arrays of tables.
SCHEMA: dict[str, dict[str, str]] = {
    "run": {
        "dir": "str",
        "sets": "list[str]",
        "locales": "list[str]|committed",
        "limit": "int",
        "sample": "table",
        "judges": "list[str]",
        "primary_judge": "str",
        "judge_modes": "list[str]",
        "attacks": "list[attack]",
        "attack_stage": "str",
    },
    "translation": {"engine": "str", "engines": "dict[str]"},
    "models": {"spec": "str", "name": "str", **{k: "scalar" for k in MODEL_OPTIONS}},
    "decoding": {"max_new_tokens": "int", "temperature": "float", "top_p": "float", "seed": "int"},
    "variants": {"name": "str", "system": "str", "base": "bool"},
    "report": {"policy": "str", "calibration": "str"},
}
ARRAY_SECTIONS = ("models", "variants")
TRANSLATION_ENGINES: tuple[str, ...] = ("apertium", "seq2seq", "chat", "reference")


@dataclass(frozen=True)
class ModelConfig:
    """One target model: its spec, a display name and backend options (kept out of signatures)."""

    spec: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackChoice:
    """An attack the run applies, at which stage, and the label responses carry (``Response.attack``)."""

    name: str
    stage: str
    label: str


@dataclass(frozen=True)
class VariantConfig:
    """A system-prompt variant: ``system`` is None, ``"locale"``, ``"locale:<code>"`` or literal text."""

    name: str
    system: str | None = None
    base: bool = False

    def system_prompt(self, locale_code: str, safety_prompt_of: Callable[[str], str | None]) -> str | None:
        """The system prompt this variant gives a conversation in ``locale_code``."""
        if self.system is None:
            return None
        if self.system == "locale":
            return safety_prompt_of(locale_code)
        if self.system.startswith("locale:"):
            return safety_prompt_of(self.system.split(":", 1)[1])
        return self.system


# No system prompt: the base every variant is compared with, and what `xsafety generate` asks with.
DEFAULT_VARIANT = VariantConfig("none", None, True)


@dataclass(frozen=True)
class RunConfig:
    """A validated run config. ``locales`` may still be ``("committed",)`` until resolved."""

    run_dir: Path
    sets: tuple[str, ...] = ("builtin",)
    locales: tuple[str, ...] = (COMMITTED,)
    limit: int = 0
    # A stratified sample of each set, taken before ``limit`` (None: every prompt).
    sample: Sample | None = None
    judges: tuple[str, ...] = ("default",)
    primary_judge: str = "default"
    judge_modes: tuple[str, ...] = JUDGE_MODES
    attacks: tuple[AttackChoice, ...] = (AttackChoice("none", "before-translation", "none"),)
    translation_engine: str | None = None
    translation_engines: dict[str, str] = field(default_factory=dict)
    models: tuple[ModelConfig, ...] = (ModelConfig("smollm2", "smollm2"),)
    decoding: Decoding = Decoding(max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
    variants: tuple[VariantConfig, ...] = (DEFAULT_VARIANT,)
    policy: str | None = None
    calibration: str | None = None  # judge calibration file (xsafety.report.validity), relative to the config
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def base_variant(self) -> VariantConfig:
        """The variant others are compared with: the one marked ``base``, else the first."""
        for v in self.variants:
            if v.base:
                return v
        return self.variants[0]

    def engine_for(self, locale: str) -> str | None:
        """The translation engine the config asks for ``locale`` (None: the locale's default)."""
        return self.translation_engines.get(locale, self.translation_engine)


class _Locator:
    """Finds the line of a table or key in TOML text (tomllib keeps no positions)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    def line(self, section: str | None, key: str | None = None, index: int = 0) -> int | None:
        """Line of ``key`` in ``section`` (its ``index``-th occurrence for arrays of tables)."""
        start, end = 0, len(self.lines)
        if section is not None:
            header = re.compile(rf"^\s*\[\[?\s*{re.escape(section)}\s*\]\]?\s*(#.*)?$")
            hits = [i for i, l in enumerate(self.lines) if header.match(l)]
            if index < len(hits):
                start = hits[index]
                if key is None:
                    return start + 1
                end = next((i for i in range(start + 1, len(self.lines)) if self.lines[i].lstrip().startswith("[")), end)
            elif key is None:
                return None
        else:
            end = next((i for i, l in enumerate(self.lines) if l.lstrip().startswith("[")), end)
        if key is not None:
            pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
            for i in range(start, end):
                if pattern.match(self.lines[i]):
                    return i + 1
            # A key written at the top of the file (the [run] shorthand) or in an inline table.
            inline = re.compile(rf"(^|[\s{{,]){re.escape(key)}\s*=")
            for i, l in enumerate(self.lines):
                if inline.search(l):
                    return i + 1
        return start + 1 if section is not None and start < len(self.lines) else None


def _hint(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(choices)}"


class _Parser:
    def __init__(self, data: dict[str, Any], text: str, source: str) -> None:
        self.data = data
        self.loc = _Locator(text)
        self.source = source

    def err(self, message: str, section: str | None, key: str | None = None, index: int = 0) -> ConfigError:
        field_name = ".".join(p for p in (section, key) if p)
        return ConfigError(message, file=self.source or None, line=self.loc.line(section, key, index), field=field_name)

    def check_type(self, value: Any, kind: str, section: str, key: str, index: int = 0) -> Any:
        ok: bool
        if kind == "str":
            ok = isinstance(value, str)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "list[str]":
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        elif kind == "list[str]|committed":
            ok = value == COMMITTED or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        elif kind == "dict[str]":
            ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        elif kind == "list[attack]":
            ok = isinstance(value, list) and all(isinstance(v, (str, dict)) for v in value)
        elif kind == "table":
            ok = isinstance(value, dict)
        elif kind == "scalar":
            ok = isinstance(value, (str, int, float, bool))
        else:  # pragma: no cover - the schema above is the only source of kinds
            raise AssertionError(kind)
        if not ok:
            wanted = {
                "list[str]|committed": f'a list of strings or "{COMMITTED}"',
                "dict[str]": "a table of strings",
                "list[attack]": "a list of attack names or {name = ..., stage = ...} tables",
                "list[str]": "a list of strings",
                "scalar": "a string, number or boolean",
                "table": "a table like {per_category = 3, by = \"alert\", seed = 0}",
            }.get(kind, f"a {kind}")
            raise self.err(f"must be {wanted}, not {type(value).__name__} {value!r}", section, key, index)
        return value

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise self.err("must be a table", name)
        self.check_keys(value, name)
        return value

    def check_keys(self, table: dict[str, Any], name: str, index: int = 0) -> None:
        allowed = SCHEMA[name]
        for key, value in table.items():
            if key not in allowed:
                raise self.err(f"unknown key '{key}'{_hint(key, tuple(allowed))}", name, key, index)
            self.check_type(value, allowed[key], name, key, index)


def parse_config(data: dict[str, Any], *, text: str = "", source: str = "") -> RunConfig:
    """Validate a parsed TOML dict into a ``RunConfig``; ``text`` lets errors name lines."""
    p = _Parser(dict(data), text, source)
    top = {k: v for k, v in p.data.items() if k not in SCHEMA}
    for key in list(top):
        if key not in SCHEMA["run"]:
            sections = [*SCHEMA, *SCHEMA["run"]]
            if isinstance(top[key], (dict, list)) and p.loc.line(key) is not None:
                raise p.err(f"unknown table [{key}]{_hint(key, sections)}", key)
            raise p.err(f"unknown key '{key}'{_hint(key, sections)}", None, key)
    run_table = p.data.get("run", {})
    if not isinstance(run_table, dict):
        raise p.err("must be a table", "run")
    for key in top:
        if key in run_table:
            raise p.err(f"'{key}' is set both at the top of the file and in [run]", "run", key)
    run = {**top, **run_table}
    p.check_keys(run, "run")

    raw_dir = run.get("dir", DEFAULT_RUN_DIR)
    if not raw_dir.strip():
        # Path("") is the current directory: a run would scatter its tables over it.
        raise p.err("must name a folder (an empty dir would write into the current directory)", "run", "dir")
    run_dir = Path(raw_dir).expanduser()
    if run_dir.exists() and not run_dir.is_dir():
        raise p.err(f"{run_dir} is a file, not a run directory", "run", "dir")
    sets = tuple(run.get("sets", ["builtin"]))
    if not sets:
        raise p.err("needs at least one set", "run", "sets")
    if len(set(sets)) != len(sets):
        raise p.err(f"set '{_first_repeat(list(sets))}' is listed twice", "run", "sets")
    raw_locales = run.get("locales", COMMITTED)
    locales = (COMMITTED,) if raw_locales == COMMITTED else _parse_locales(p, raw_locales)
    if not locales:
        raise p.err(f'needs at least one locale (or "{COMMITTED}")', "run", "locales")
    limit = run.get("limit", 0)
    if limit < 0:
        raise p.err("must be 0 (all prompts) or a positive number", "run", "limit")
    sample = None
    if "sample" in run:
        try:
            sample = parse_sample(run["sample"], field="run.sample")
        except ConfigError as exc:
            # parse_sample knows the field; the parser knows the file and line.
            line = p.loc.line("run", "sample", 0)
            raise ConfigError(exc.message, file=p.source or None, line=line, field=exc.field) from None
    judges = tuple(run.get("judges", ["default"]))
    if not judges:
        raise p.err("needs at least one judge", "run", "judges")
    if len(set(judges)) != len(judges):
        raise p.err(f"judge '{_first_repeat(list(judges))}' is listed twice", "run", "judges")
    _check_judge_definitions(p, judges)
    primary = run.get("primary_judge", judges[0])
    if primary not in judges:
        raise p.err(f"primary judge '{primary}' is not one of judges {list(judges)}", "run", "primary_judge")
    modes = tuple(dict.fromkeys(run.get("judge_modes", list(JUDGE_MODES))))
    for mode in modes:
        if mode not in JUDGE_MODES:
            raise p.err(f"unknown judge mode '{mode}'{_hint(mode, JUDGE_MODES)}", "run", "judge_modes")
    if "native" not in modes:
        raise p.err("'native' judging is required (back-translated verdicts are compared with it)", "run", "judge_modes")
    attacks = _parse_attacks(p, run)

    tr = p.section("translation")
    engine = tr.get("engine")
    engines = dict(tr.get("engines", {}))
    for name in [engine, *engines.values()]:
        if name is not None and name not in TRANSLATION_ENGINES:
            key = "engine" if name == engine else "engines"
            raise p.err(f"unknown translation engine '{name}'{_hint(name, TRANSLATION_ENGINES)}", "translation", key)

    models = _parse_models(p)
    dec = p.section("decoding")
    values = {
        "max_new_tokens": dec.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
        "temperature": dec.get("temperature", 0.0),
        "top_p": dec.get("top_p", 1.0),
        "seed": dec.get("seed", 0),
    }
    for key, problem in decoding_problems(**values):
        # nan and inf are valid TOML floats; they pass every "< 0" test and break sampling later.
        raise p.err(problem, "decoding", key)
    decoding = Decoding(
        max_new_tokens=values["max_new_tokens"],
        temperature=float(values["temperature"]),
        top_p=float(values["top_p"]),
        seed=values["seed"],
    )
    variants = _parse_variants(p)
    report = p.section("report")
    return RunConfig(
        run_dir=run_dir,
        sets=sets,
        locales=locales,
        limit=limit,
        sample=sample,
        judges=judges,
        primary_judge=primary,
        judge_modes=modes,
        attacks=attacks,
        translation_engine=engine,
        translation_engines=engines,
        models=models,
        decoding=decoding,
        variants=variants,
        policy=report.get("policy"),
        calibration=report.get("calibration"),
        source=source,
        raw=data,
    )


def _parse_attacks(p: _Parser, run: dict[str, Any]) -> tuple[AttackChoice, ...]:
    from xsafety.attacks import STAGES, load_attack

    global_stage = run.get("attack_stage")
    if global_stage is not None and global_stage not in STAGES:
        raise p.err(f"unknown stage '{global_stage}'{_hint(global_stage, STAGES)}", "run", "attack_stage")
    entries: list[tuple[str, str]] = []
    for entry in run.get("attacks", ["none"]):
        if isinstance(entry, str):
            name, stage = entry, None
        else:
            unknown = set(entry) - {"name", "stage"}
            if unknown or not isinstance(entry.get("name"), str):
                raise p.err("an attack table needs 'name' and may have 'stage', nothing else", "run", "attacks")
            name, stage = entry["name"], entry.get("stage")
            if stage is not None and stage not in STAGES:
                raise p.err(f"unknown stage {stage!r}{_hint(str(stage), STAGES)}", "run", "attacks")
        try:
            attack = load_attack(name)
        except InputError as exc:
            raise p.err(exc.message, "run", "attacks") from None
        entries.append((name, stage or global_stage or attack.stage))
    if not entries:
        raise p.err('needs at least one attack ("none" is the plain request)', "run", "attacks")
    if len(set(entries)) != len(entries):
        raise p.err("the same attack and stage are listed twice", "run", "attacks")
    names = [n for n, _ in entries]
    # An attack listed at both stages needs two labels so that reports can tell them apart.
    return tuple(
        AttackChoice(n, s, f"{n}@{s.split('-')[0]}" if names.count(n) > 1 and n != "none" else n) for n, s in entries
    )


def _parse_models(p: _Parser) -> tuple[ModelConfig, ...]:
    raw = p.data.get("models", [{"spec": "smollm2"}])
    if not isinstance(raw, list) or not raw:
        raise p.err("must be one or more [[models]] tables", "models")
    out: list[ModelConfig] = []
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            raise p.err("must be a [[models]] table", "models", None, i)
        p.check_keys(table, "models", i)
        if "spec" not in table:
            raise p.err("every [[models]] table needs a spec (e.g. spec = \"smollm2\")", "models", "spec", i)
        from xsafety.models.spec import OPTIONS, parse_spec

        try:
            parsed = parse_spec(table["spec"])
        except InputError as exc:
            raise p.err(exc.message, "models", "spec", i) from None
        problem = spec_problem(table["spec"])
        if problem:
            raise p.err(problem, "models", "spec", i)
        name = table.get("name", table["spec"])
        if not name.strip():
            raise p.err("must not be empty", "models", "name", i)
        options = {k: v for k, v in table.items() if k not in ("spec", "name")}
        # Options are checked here, not when the model loads: a typo or a value out of range must
        # stop the run before hours of work on the models listed before this one.
        for key, value in options.items():
            if key not in OPTIONS[parsed.kind]:
                allowed = ", ".join(sorted(OPTIONS[parsed.kind]))
                raise p.err(f"'{key}' does not apply to {parsed.kind} models (allowed: {allowed})", "models", key, i)
            problem = model_option_problem(key, value)
            if problem:
                raise p.err(problem, "models", key, i)
        out.append(ModelConfig(table["spec"], name, options))
    names = [m.name for m in out]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise p.err(f"two models are named '{name}'; give each a distinct name", "models", "name", i)
    return tuple(out)


def _first_repeat(values: list[str]) -> str:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return ""


def _parse_locales(p: _Parser, raw: list[str]) -> tuple[str, ...]:
    """Locale codes in the registry's spelling (``ES`` -> ``es``); a code listed twice is an error.

    An unknown code is kept as written: ``validate_names`` reports it with close matches.
    """
    from xsafety.locales import get_locale

    out: list[str] = []
    for code in raw:
        try:
            canonical = get_locale(code.strip()).code
        except InputError:
            canonical = code
        if canonical in out:
            same = f" (as '{code}')" if code != canonical else ""
            raise p.err(f"locale '{canonical}' is listed twice{same}", "run", "locales")
        out.append(canonical)
    return tuple(out)


def _check_judge_definitions(p: _Parser, judges: tuple[str, ...]) -> None:
    """Every judge definition the run names (and every ensemble member) has a known ``kind``.

    Runs at config load: a bad judge file would otherwise be found only after generation. An
    unknown judge *name* is left to ``validate_names``, which suggests close names.
    """
    from xsafety.judges import KINDS, judge_path, read_definition

    seen: set[Path] = set()
    todo = list(judges)
    while todo:
        name = todo.pop(0)
        try:
            path = judge_path(name)
        except InputError:
            continue
        if path in seen:
            continue
        seen.add(path)
        definition = read_definition(path)
        loc = _Locator(path.read_text(encoding="utf-8", errors="replace"))
        kind = definition.get("kind")
        if kind not in KINDS:
            what = "no 'kind'" if kind is None else f"unknown judge kind {kind!r}"
            raise ConfigError(f"{what}; expected one of {', '.join(KINDS)}", file=path, line=loc.line(None, "kind"), field="kind")
        if kind == "ensemble":
            members = definition.get("members")
            if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
                raise ConfigError("must be a list of judge names", file=path, line=loc.line(None, "members"), field="members")
            for member in members:
                # Resolved as EnsembleJudge does: a relative .toml path is taken from the ensemble's folder.
                if member.endswith(".toml") and not Path(member).is_absolute():
                    member = str(path.parent / member)
                try:
                    todo.append(str(judge_path(member)))
                except InputError as exc:
                    raise ConfigError(exc.message, file=path, line=loc.line(None, "members"), field="members") from None
        if kind == "llm" and isinstance(definition.get("model"), str):
            from xsafety.models.spec import parse_spec

            try:
                parse_spec(definition["model"])
            except InputError as exc:
                raise ConfigError(exc.message, file=path, line=loc.line(None, "model"), field="model") from None


def _parse_variants(p: _Parser) -> tuple[VariantConfig, ...]:
    raw = p.data.get("variants", [{"name": "none"}])
    if not isinstance(raw, list) or not raw:
        raise p.err("must be one or more [[variants]] tables", "variants")
    out: list[VariantConfig] = []
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            raise p.err("must be a [[variants]] table", "variants", None, i)
        p.check_keys(table, "variants", i)
        name = table.get("name")
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise p.err("every variant needs a name of letters, digits, '_', '-' or '.'", "variants", "name", i)
        system = table.get("system")
        if system is not None and not system.strip():
            raise p.err("an empty system prompt: leave 'system' out for no system prompt", "variants", "system", i)
        out.append(VariantConfig(name, system, bool(table.get("base", False))))
    names = [v.name for v in out]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise p.err(f"two variants are named '{name}'", "variants", "name", i)
    if sum(v.base for v in out) > 1:
        raise p.err("only one variant can be the base", "variants", "base")
    return tuple(out)


def load_config(path: str | Path | None = None) -> RunConfig:
    """Read and validate a run config file (the built-in default when ``path`` is None)."""
    file = Path(path) if path is not None else DEFAULT_CONFIG
    if not file.is_file():
        raise ConfigError("config file not found", file=file)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason})", file=file) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib puts the position only in the message: "... (at line 5, column 9)".
        found = re.search(r"\(at line (\d+)", str(exc))
        line = int(found.group(1)) if found else None
        message = str(exc).split(" (at line")[0]
        raise ConfigError(f"not valid TOML: {message}", file=file, line=line) from None
    return parse_config(data, text=text, source=str(file))


def located_error(config: RunConfig, message: str, section: str, key: str | None = None) -> ConfigError:
    """An error at the line of ``[section] key`` in the config's file, for checks made outside
    this module (the report's policy is checked by the plan, which may import the report)."""
    text = Path(config.source).read_text(encoding="utf-8") if config.source and Path(config.source).is_file() else ""
    return _Parser(config.raw, text, config.source).err(message, section, key)


def validate_names(config: RunConfig, locales: list[str]) -> None:
    """Check that every locale, judge and set the config names exists (before anything runs);
    ``xsafety.plan.validate`` adds the policy."""
    text = Path(config.source).read_text(encoding="utf-8") if config.source and Path(config.source).is_file() else ""
    p = _Parser(config.raw, text, config.source)
    from xsafety.locales import get_locale

    for code in locales:
        try:
            loc = get_locale(code)
        except InputError as exc:
            raise p.err(exc.message, "run", "locales") from None
        for variant in config.variants:
            if variant.system is not None and variant.system.startswith("locale"):
                target = code if variant.system == "locale" else variant.system.split(":", 1)[1]
                try:
                    target_loc = loc if target == code else get_locale(target)
                except InputError as exc:
                    raise p.err(exc.message, "variants", "system") from None
                if not target_loc.safety_prompt:
                    raise p.err(
                        f"locale '{target}' has no safety_prompt in the registry (add one, or drop it)",
                        "variants",
                        "system",
                    )
    for code in config.translation_engines:
        try:
            get_locale(code)
        except InputError as exc:
            raise p.err(exc.message, "translation", "engines") from None
    from xsafety.data import judges_dir

    for judge in config.judges:
        if not (judges_dir() / f"{judge}.toml").is_file() and not (judge.endswith(".toml") and Path(judge).is_file()):
            known = sorted(f.stem for f in judges_dir().glob("*.toml"))
            raise p.err(f"unknown judge '{judge}'{_hint(judge, known)}", "run", "judges")
    from xsafety.taxonomy import list_sets

    known_sets = list_sets()
    for name in config.sets:
        if name not in known_sets and not Path(name).is_file():
            raise p.err(f"unknown set '{name}'{_hint(name, known_sets)}", "run", "sets")
    from xsafety.taxonomy import load_set

    for name in config.sets:
        # A malformed prompts file stops here, naming its own file and line, before the run
        # directory is touched.
        load_set(name)
    _check_local_models(p, config)


def _check_local_models(p: _Parser, config: RunConfig) -> None:
    """A model spec that names a local file or folder must name one that exists: found here, not
    after the models listed before it have run for hours. Hub ids and URLs are checked at load."""
    from xsafety.models.spec import parse_spec

    for i, model in enumerate(config.models):
        spec = parse_spec(model.spec)
        target = Path(spec.target).expanduser()
        if spec.kind == "gguf" and not target.is_file():
            raise p.err(f"no such GGUF file: {target}", "models", "spec", i)
        if spec.kind == "hf" and spec.target.startswith(("/", ".", "~")) and not target.is_dir():
            raise p.err(f"no such model folder: {target}", "models", "spec", i)


def generation_config(
    model: str,
    set_name: str,
    locales: tuple[str, ...],
    run_dir: Path,
    *,
    decoding: Decoding = Decoding(),
    system_prompt: str | None = None,
    limit: int | None = None,
    options: dict[str, Any] | None = None,
    sample: Sample | None = None,
) -> RunConfig:
    """The one-model run config ``xsafety generate`` asks with: no attack, one variant (the run's
    default ``none``, or one with the given system prompt), so that its items and response keys
    are those ``xsafety run`` has for the same model, set, locales and decoding."""
    variant = (
        VariantConfig(f"system:{stable_hash(system_prompt, length=8)}", system_prompt, True)
        if system_prompt
        else DEFAULT_VARIANT
    )
    return RunConfig(
        run_dir=run_dir,
        sets=(set_name,),
        locales=locales,
        limit=limit or 0,
        sample=sample,
        models=(ModelConfig(model, model, {k: v for k, v in (options or {}).items() if v is not None}),),
        decoding=decoding,
        variants=(variant,),
    )
