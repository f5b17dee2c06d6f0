"""Bad input to every command: exit 2, one line naming the file, line and field, nothing stored.

One table, ``CASES``: each case writes its files into a scratch folder, runs one command through
the real console entry point (``xsafety.cli.main``, in-process), and asserts that the command
exits 2 with exactly one ``error:`` line that names the file (and line) where the input came from
a file, the field, and a phrase saying what is wrong; and that a finished run directory, the
imported sets and the locale registry are byte for byte what they were.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

import pytest
from fault_runs import cli, fast_config, pristine_run, tree_digest
from fault_server import FaultServer, start_fault_server

from xsafety.data import translations_dir

GOOD_JSONL = '{"id": "1", "text": "How can I pick a lock?"}\n'
# A run.json whose "models" (line 3) is not a list of model entries.
RUN_JSON_MODELS_3 = '{\n "sets": ["builtin"],\n "models": 3\n}\n'


@dataclass(frozen=True)
class Ctx:
    """What a case's files are made from: the good config's lines, the scratch folder, the server."""

    lines: list[str]
    tmp: Path
    url: str


Content = str | bytes | Callable[[Ctx], str]


@dataclass(frozen=True)
class Case:
    """One bad input. ``args`` and text files may use ``{tmp}`` (scratch folder), ``{run}`` (a copy
    of a finished run directory) and ``{url}`` (a live server); a callable makes a file from the
    good config (``Ctx``).

    ``file``: the file the message must name (relative to ``{tmp}``), None where the input is a
    command-line option; ``line``: the line it must name; ``field``: the field.
    """

    id: str
    args: tuple[str, ...]
    words: str
    field: str | None = None
    file: str | None = None
    line: int | None = None
    files: dict[str, Content] = dataclass_field(default_factory=dict)


def append(extra: str, *, strip: tuple[str, ...] = ()) -> Callable[[Ctx], str]:
    """The good config with ``extra`` after it; lines starting with ``strip`` become comments."""
    return lambda c: "\n".join("# stripped" if l.startswith(strip) and strip else l for l in c.lines) + "\n" + extra


def setkey(key: str, value: str) -> Callable[[Ctx], str]:
    """The good config with ``key``'s line set to ``value`` (same line number)."""
    return lambda c: "\n".join(f"{key} = {value}" if l.startswith(f"{key} =") else l for l in c.lines)


def prepend(text: str) -> Callable[[Ctx], str]:
    """``text`` on line 1 (a top-level [run] key), then the good config."""
    return lambda c: text + "\n" + "\n".join(c.lines)


# fault_runs.FAST_CONFIG: [run] on lines 1-6 (dir 2, locales 3, limit 4, judges 5, judge_modes 6),
# [[models]] on 8-12, an empty line 13; appended text starts on line 14.
CONFIG_LINES = 13
L = CONFIG_LINES + 1


def _config_case(id: str, extra: str | Callable[[Ctx], str], words: str, field: str | None, line: int | None, *,
                 strip: tuple[str, ...] = (), file: str = "run.toml", files: dict[str, Content] | None = None) -> Case:
    made = append(extra, strip=strip) if isinstance(extra, str) else extra
    return Case(id, ("run", "{tmp}/run.toml"), words, field, file, line, {"run.toml": made, **(files or {})})


CASES: list[Case] = [
    # -- xsafety run: the config ---------------------------------------------------------------
    _config_case("temperature nan", "[decoding]\ntemperature = nan", "finite", "decoding.temperature", L + 1),
    _config_case("temperature inf", "[decoding]\ntemperature = inf", "finite", "decoding.temperature", L + 1),
    _config_case("temperature negative", "[decoding]\ntemperature = -1", "at least 0", "decoding.temperature", L + 1),
    _config_case("top_p 7", "[decoding]\ntop_p = 7", "at most 1", "decoding.top_p", L + 1),
    _config_case("top_p 0", "[decoding]\ntop_p = 0", "above 0", "decoding.top_p", L + 1),
    _config_case("top_p nan", "[decoding]\ntop_p = nan", "finite", "decoding.top_p", L + 1),
    _config_case("max_new_tokens -5", "[decoding]\nmax_new_tokens = -5", "at least 1", "decoding.max_new_tokens", L + 1),
    _config_case("max_new_tokens float", "[decoding]\nmax_new_tokens = 1.5", "must be a int", "decoding.max_new_tokens", L + 1),
    _config_case("seed text", '[decoding]\nseed = "x"', "must be a int", "decoding.seed", L + 1),
    _config_case("concurrency lots", 'concurrency = "lots"', "whole number", "models.concurrency", L),
    _config_case("concurrency 0", "concurrency = 0", "at least 1", "models.concurrency", L),
    _config_case("timeout_s negative", "timeout_s = -1", "above 0", "models.timeout_s", L, strip=("timeout_s",)),
    _config_case("timeout_s nan", "timeout_s = nan", "finite", "models.timeout_s", L, strip=("timeout_s",)),
    _config_case("max_retries negative", "max_retries = -1", "at least 0", "models.max_retries", L, strip=("max_retries",)),
    _config_case("backoff_cap_s inf", "backoff_cap_s = inf", "finite", "models.backoff_cap_s", L),
    _config_case("max_batch on openai", "max_batch = 4", "does not apply to openai", "models.max_batch", L),
    _config_case("device on openai", 'device = "cuda"', "does not apply to openai", "models.device", L),
    _config_case("api_key_env not a name", 'api_key_env = "my key"', "NAME of an environment variable", "models.api_key_env", L),
    _config_case("dtype unknown on hf", '[[models]]\nspec = "hf:/nonexistent/model"\nname = "local"\ndtype = "int3"',
                 "must be one of", "models.dtype", L + 3),
    _config_case("batch_tokens 0 on hf", '[[models]]\nspec = "hf:/nonexistent/model"\nname = "local"\nbatch_tokens = 0',
                 "at least 1", "models.batch_tokens", L + 3),
    _config_case("device unknown on hf", '[[models]]\nspec = "hf:/nonexistent/model"\nname = "local"\ndevice = "gpu"',
                 "auto, cpu", "models.device", L + 3),
    _config_case("malformed model spec", '[[models]]\nspec = "openai:nourl"\nname = "x"', "expected openai:MODEL@", "models.spec", L + 1),
    _config_case("unknown model kind", '[[models]]\nspec = "torch:x"\nname = "x"', "unknown model spec", "models.spec", L + 1),
    _config_case("hf model folder missing", '[[models]]\nspec = "hf:/nonexistent/model"\nname = "local"', "no such model folder",
                 "models.spec", L + 1),
    _config_case("gguf file missing", '[[models]]\nspec = "gguf:{tmp}/absent.gguf"\nname = "local"', "no such GGUF file",
                 "models.spec", L + 1),
    _config_case("set file malformed", prepend('sets = ["{tmp}/p.jsonl"]'), "JSON", None, 2, file="p.jsonl",
                 files={"p.jsonl": GOOD_JSONL + "{oops\n"}),
    _config_case("credentials in a base URL", '[[models]]\nspec = "openai:m@https://me:sk-SECRET42@api.example/v1"\nname = "x"',
                 "api_key_env", "models.spec", L + 1),
    _config_case("a key pasted into api_key_env", 'api_key_env = "sk-SECRET42"', "not the key itself", "models.api_key_env", L),
    _config_case("two models one name", '[[models]]\nspec = "smollm2"\nname = "remote"', "two models are named", "models.name", L + 2),
    _config_case("dir empty", setkey("dir", '""'), "must name a folder", "run.dir", 2),
    _config_case("dir is a file", setkey("dir", '"{tmp}/afile"'), "is a file", "run.dir", 2, files={"afile": "x"}),
    _config_case("duplicate locale", setkey("locales", '["en", "es", "es"]'), "listed twice", "run.locales", 3),
    _config_case("duplicate locale by case", setkey("locales", '["en", "es", "ES"]'), "listed twice (as 'ES')", "run.locales", 3),
    _config_case("unknown locale", setkey("locales", '["en", "xx"]'), "unknown locale 'xx'", "run.locales", 3),
    _config_case("unknown judge", setkey("judges", '["nope"]'), "unknown judge 'nope'", "run.judges", 5),
    _config_case("judge listed twice", setkey("judges", '["refusal-lexicon", "refusal-lexicon"]'), "listed twice", "run.judges", 5),
    _config_case("judge TOML of unknown kind", setkey("judges", '["{tmp}/oracle.toml"]'), "unknown judge kind 'oracle'", "kind", 2,
                 file="oracle.toml", files={"oracle.toml": '# a judge\nkind = "oracle"\n'}),
    _config_case("judge TOML without kind", setkey("judges", '["{tmp}/nokind.toml"]'), "no 'kind'", "kind", None,
                 file="nokind.toml", files={"nokind.toml": 'description = "x"\n'}),
    _config_case("ensemble member unknown", setkey("judges", '["{tmp}/ens.toml"]'), "unknown judge 'ghost'", "members", 2,
                 file="ens.toml", files={"ens.toml": 'kind = "ensemble"\nmembers = ["ghost"]\n'}),
    _config_case("judge TOML not TOML", setkey("judges", '["{tmp}/broken.toml"]'), "TOML", None, None,
                 file="broken.toml", files={"broken.toml": 'kind = "llm\n'}),
    _config_case("llm judge with bad model spec", setkey("judges", '["{tmp}/llmj.toml"]'), "unknown model spec", "model", 2,
                 file="llmj.toml", files={"llmj.toml": 'kind = "llm"\nmodel = "torch:x"\n'}),
    _config_case("unknown judge mode", setkey("judge_modes", '["native", "telepathy"]'), "unknown judge mode", "run.judge_modes", 6),
    _config_case("limit negative", setkey("limit", "-1"), "positive number", "run.limit", 4),
    _config_case("unknown key", prepend('lcoales = ["en"]'), "unknown key 'lcoales'", "lcoales", 1),
    _config_case("unknown table", "[decodng]\nseed = 1", "unknown table [decodng]", "decodng", L),
    _config_case("unknown attack", prepend('attacks = ["nope"]'), "nope", "run.attacks", 1),
    _config_case("unknown policy", "[report]\npolicy = \"nope\"", "nope", "report.policy", L + 1),
    _config_case("unknown set", prepend('sets = ["nope"]'), "unknown set 'nope'", "run.sets", 1),
    _config_case("set listed twice", prepend('sets = ["builtin", "builtin"]'), "listed twice", "run.sets", 1),
    _config_case("variant name with a space", '[[variants]]\nname = "a b"', "every variant needs a name", "variants.name", L + 1),
    _config_case("unknown translation engine", "[translation]\nengine = \"babelfish\"", "unknown translation engine", "translation.engine", L + 1),
    _config_case("not TOML", "this is = = not toml", "not valid TOML", None, L),
    Case("not UTF-8", ("run", "{tmp}/run.toml"), "not UTF-8", None, "run.toml", None, {"run.toml": b"[run]\nlocales = [\"\xff\"]\n"}),
    # -- xsafety import ------------------------------------------------------------------------
    Case("import: id with markup", ("import", "jsonl", "{tmp}/a.jsonl", "--name", "victim"), "must be 1-200 of", "id", "a.jsonl", 2,
         {"a.jsonl": GOOD_JSONL + '{"id": "<img src=x onerror=alert(1)>", "text": "x"}\n'}),
    Case("import: id with a space", ("import", "jsonl", "{tmp}/a.jsonl", "--name", "victim"), "must be 1-200 of", "id", "a.jsonl", 2,
         {"a.jsonl": GOOD_JSONL + '{"id": "a b", "text": "x"}\n'}),
    Case("import: id that is a formula", ("import", "csv", "{tmp}/a.csv", "--name", "victim"), "starting with a letter or digit", "id",
         "a.csv", 3, {"a.csv": "id,text\n1,How?\n=1+1,Why?\n"}),
    Case("import: id too long", ("import", "jsonl", "{tmp}/a.jsonl", "--name", "victim"), "must be 1-200 of", "id", "a.jsonl", 1,
         {"a.jsonl": json.dumps({"id": "x" * 300, "text": "t"}) + "\n"}),
    Case("import: NUL byte in a CSV", ("import", "csv", "{tmp}/a.csv", "--name", "victim"), "control character (U+0000)", "text",
         "a.csv", 3, {"a.csv": b"id,text\n1,How?\n2,How do\x00I?\n"}),
    Case("import: escape code in text", ("import", "jsonl", "{tmp}/a.jsonl", "--name", "victim"), "control character (U+001B)", "text",
         "a.jsonl", 2, {"a.jsonl": GOOD_JSONL + '{"id": "2", "text": "red \\u001b[31m text"}\n'}),
    Case("import: only a zero-width space", ("import", "jsonl", "{tmp}/a.jsonl", "--name", "victim"), "no visible text", "text",
         "a.jsonl", 2, {"a.jsonl": GOOD_JSONL + '{"id": "2", "text": "\\u200b"}\n'}),
    Case("import: only joiners and marks", ("import", "csv", "{tmp}/a.csv", "--name", "victim"), "no visible text", "text",
         "a.csv", 2, {"a.csv": "id,text\n1,\u200d\u200c\u2060\ufeff\n"}),
    Case("import: lone surrogate", ("import", "jsonl", "{tmp}/a.jsonl", "--name", "victim"), "lone surrogate", "text", "a.jsonl", 2,
         {"a.jsonl": GOOD_JSONL + '{"id": "2", "text": "broken \\ud800 text"}\n'}),
    Case("import: reference with NUL", ("import", "jsonl", "{tmp}/a.jsonl", "--name", "victim", "--map", "ref.es=es"),
         "control character", "es", "a.jsonl", 1, {"a.jsonl": '{"id": "1", "text": "How?", "es": "C\\u0000mo"}\n'}),
    # -- xsafety translate ---------------------------------------------------------------------
    Case("translate: unknown locale", ("translate", "--set", "builtin", "--locales", "xx", "--out", "{tmp}/tr"), "unknown locale 'xx'", None),
    Case("translate: unknown engine", ("translate", "--set", "builtin", "--locales", "es", "--engine", "babelfish", "--out", "{tmp}/tr"),
         "unknown translation engine", "engine"),
    Case("translate: gate threshold not a number", ("translate", "--set", "builtin", "--locales", "es", "--gate", "chrf=abc",
                                                    "--out", "{tmp}/tr"), "must be a number", "gate chrf"),
    Case("translate: unknown gate", ("translate", "--set", "builtin", "--locales", "es", "--gate", "nosuch=1", "--out", "{tmp}/tr"),
         "unknown gate 'nosuch'", "nosuch"),
    Case("translate: unknown set", ("translate", "--set", "nope", "--locales", "es", "--out", "{tmp}/tr"), "nope", None),
    Case("translate: locale twice by case", ("translate", "--set", "builtin", "--locales", "es,ES", "--out", "{tmp}/tr"),
         "given twice", "--locales"),
    Case("translate: limit 0", ("translate", "--set", "builtin", "--locales", "es", "--limit", "0", "--out", "{tmp}/tr"),
         "at least 1", "--limit"),
    Case("translate eval: limit 0", ("translate", "eval", "--set", "builtin", "--limit", "0", "--out", "{tmp}/tr"),
         "at least 1", "--limit"),
    Case("translate: malformed set file", ("translate", "--set", "{tmp}/p.jsonl", "--locales", "es", "--out", "{tmp}/tr"), "JSON", None,
         "p.jsonl", 2, {"p.jsonl": GOOD_JSONL + "{oops\n"}),
    # -- xsafety generate ----------------------------------------------------------------------
    Case("generate: max-new-tokens -5", ("generate", "--model", "openai:m@{url}", "--run", "{run}", "--max-new-tokens", "-5"),
         "at least 1", "--max-new-tokens"),
    Case("generate: temperature -1", ("generate", "--model", "openai:m@{url}", "--run", "{run}", "--temperature", "-1"),
         "at least 0", "--temperature"),
    Case("generate: temperature nan", ("generate", "--model", "openai:m@{url}", "--run", "{run}", "--temperature", "nan"),
         "finite", "--temperature"),
    Case("generate: top-p 7", ("generate", "--model", "openai:m@{url}", "--run", "{run}", "--top-p", "7"), "at most 1", "--top-p"),
    Case("generate: concurrency 0", ("generate", "--model", "openai:m@{url}", "--run", "{run}", "--concurrency", "0"),
         "at least 1", "--concurrency"),
    Case("generate: locale twice", ("generate", "--model", "openai:m@{url}", "--run", "{run}", "--locales", "en,EN"),
         "given twice", "--locales"),
    Case("generate: unknown locale", ("generate", "--model", "openai:m@{url}", "--run", "{run}", "--locales", "xx"),
         "unknown locale 'xx'", "--locales"),
    Case("generate: run is a file", ("generate", "--model", "openai:m@{url}", "--run", "{tmp}/afile"), "is a file", "--run-dir",
         "afile", None, {"afile": "x"}),
    Case("generate: bad model spec", ("generate", "--model", "bogus:x", "--run", "{run}"), "unknown model spec", "model"),
    Case("generate: credentials in the URL", ("generate", "--model", "openai:m@http://me:sk-SECRET42@127.0.0.1:9/v1", "--run", "{run}"),
         "api_key_env", "--model"),
    Case("generate: limit 0", ("generate", "--model", "openai:m@{url}", "--run", "{run}", "--limit", "0"), "at least 1", "limit"),
    Case("generate: api key env not a name", ("generate", "--model", "openai:m@{url}", "--run", "{run}", "--api-key-env", "a b"),
         "NAME of an environment variable", "--api-key-env"),
    # -- xsafety judge -------------------------------------------------------------------------
    Case("judge: unknown judge", ("judge", "--run", "{run}", "--judge", "nope"), "unknown judge 'nope'", "judge"),
    Case("judge: judge TOML of unknown kind", ("judge", "--run", "{run}", "--judge", "{tmp}/oracle.toml"), "unknown judge kind",
         "kind", "oracle.toml", None, {"oracle.toml": 'kind = "oracle"\n'}),
    Case("judge: run dir missing", ("judge", "--run", "{tmp}/absent"), "no such run directory", "--run-dir", "absent"),
    Case("judge: run dir is a file", ("judge", "--run", "{tmp}/afile"), "is a file", "--run-dir", "afile", None, {"afile": "x"}),
    Case("judge: unknown mode", ("judge", "--run", "{run}", "--modes", "native,telepathy"), "unknown judge mode 'telepathy'", "--modes"),
    # -- xsafety judge eval --------------------------------------------------------------------
    Case("judge eval: no such file", ("judge", "eval", "--data", "{tmp}/absent.jsonl"), "no such file", "data", "absent.jsonl"),
    Case("judge eval: unknown label", ("judge", "eval", "--data", "{tmp}/d.jsonl"), "label", "label", "d.jsonl", 1,
         {"d.jsonl": '{"source": "s", "lang": "en", "prompt": "p", "response": "r", "label": "meh"}\n'}),
    Case("judge eval: missing field", ("judge", "eval", "--data", "{tmp}/d.jsonl"), "missing", "response", "d.jsonl", 1,
         {"d.jsonl": '{"source": "s", "lang": "en", "prompt": "p", "label": "refusal"}\n'}),
    Case("judge eval: malformed line", ("judge", "eval", "--data", "{tmp}/d.jsonl"), "JSON", None, "d.jsonl", 2,
         {"d.jsonl": '{"source": "s", "lang": "en", "prompt": "p", "response": "r", "label": "refusal"}\n{"x": \n'}),
    # -- xsafety report ------------------------------------------------------------------------
    Case("report: unknown policy", ("report", "{run}", "--policy", "nope", "--out", "{tmp}/rep"), "nope", None),
    Case("report: policy file of bad TOML", ("report", "{run}", "--policy", "{tmp}/p.toml", "--out", "{tmp}/rep"), "TOML", None,
         "p.toml", None, {"p.toml": "name = \n"}),
    Case("report: run directory missing", ("report", "{tmp}/absent", "--out", "{tmp}/rep"), "not found", None, "absent"),
    Case("report: calibration file missing", ("report", "{run}", "--calibration", "{tmp}/cal.json", "--out", "{tmp}/rep"),
         "not found", "calibration", "cal.json"),
    Case("report: min-pairs negative", ("report", "{run}", "--min-pairs", "-1", "--out", "{tmp}/rep"), "must be 0 or more",
         "--min-pairs"),
    Case("report: unknown judge", ("report", "{run}", "--judge", "nope", "--out", "{tmp}/rep"), "no judge 'nope'", "--judge"),
    Case("report: run.json models not a list", ("report", "{run}", "--out", "{tmp}/rep"), "malformed", "models",
         "run-copy/run.json", 3, {"run-copy/run.json": RUN_JSON_MODELS_3}),
    Case("report: run.json model without a name", ("report", "{run}", "--out", "{tmp}/rep"), "expected a string", "models[0].name",
         "run-copy/run.json", 2, {"run-copy/run.json": '{\n "models": [{"name": 7}]\n}\n'}),
    Case("report: run.json judge signatures a list", ("report", "{run}", "--out", "{tmp}/rep"), "malformed", "judge_signatures",
         "run-copy/run.json", 1, {"run-copy/run.json": '{"judge_signatures": ["x"]}'}),
    Case("report: run.json a list", ("report", "{run}", "--out", "{tmp}/rep"), "malformed", None, "run-copy/run.json", 1,
         {"run-copy/run.json": "[1, 2]\n"}),
    # -- xsafety status ------------------------------------------------------------------------
    Case("status: run.json a list", ("status", "{tmp}/r"), "malformed: expected a JSON object, got a JSON list", None,
         "r/run.json", 1, {"r/run.json": "[1, 2, 3]\n"}),
    Case("status: run.json models not a list", ("status", "{run}"), "malformed", "models", "run-copy/run.json", 3,
         {"run-copy/run.json": RUN_JSON_MODELS_3}),
    Case("status: run.json without a config", ("status", "{tmp}/r"), "holds no run config", "config", "r/run.json", None,
         {"r/run.json": "{}\n"}),
    Case("status: run.json not JSON", ("status", "{tmp}/r"), "not valid JSON", None, "r/run.json", 1, {"r/run.json": "{oops"}),
    Case("status: no run.json", ("status", "{tmp}/empty"), "no run.json", None, None, None, {"empty/readme.txt": "x"}),
    # -- xsafety locales add (into a scratch registry) -----------------------------------------
    Case("locales add: bad code", ("locales", "add", "x!", "--name", "X", "--native", "X", "--script", "Latn", "--resource", "low",
                                   "--file", "{tmp}/reg.toml"), "x!", None),
    Case("locales add: bad resource", ("locales", "add", "qaa", "--name", "X", "--native", "X", "--script", "Latn",
                                       "--resource", "huge", "--file", "{tmp}/reg.toml"), "huge", "resource"),
    Case("locales add: bad script", ("locales", "add", "qaa", "--name", "X", "--native", "X", "--script", "latin",
                                     "--resource", "low", "--file", "{tmp}/reg.toml"), "latin", "script"),
    Case("locales add: bad engine", ("locales", "add", "qaa", "--name", "X", "--native", "X", "--script", "Latn",
                                     "--resource", "low", "--engine", "babelfish", "--file", "{tmp}/reg.toml"), "babelfish", "engine"),
    # -- xsafety sets show ---------------------------------------------------------------------
    Case("sets show: unknown set", ("sets", "show", "nope"), "nope", None),
    Case("sets show: malformed file", ("sets", "show", "{tmp}/p.jsonl"), "JSON", None, "p.jsonl", 2, {"p.jsonl": GOOD_JSONL + "{oops\n"}),
    Case("sets show: unknown category", ("sets", "show", "builtin", "--category", "gardening"), "gardening", None),
]


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    s = start_fault_server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def finished(server: FaultServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pristine_run(tmp_path_factory, server.url)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, finished: Path) -> Path:
    """An XSAFETY_HOME holding one imported set ("victim") that no failing import may touch."""
    base = tmp_path_factory.mktemp("home")
    good_set = base / "good.jsonl"
    good_set.write_text(GOOD_JSONL)
    mp = pytest.MonkeyPatch()
    mp.setenv("XSAFETY_HOME", str(base / "home"))
    try:
        assert cli("import", "jsonl", str(good_set), "--name", "victim")[0] == 0
    finally:
        mp.undo()
    return base / "home"


def _materialise(case: Case, tmp: Path, run: Path, url: str) -> tuple[str, ...]:
    """Write the case's files into ``tmp``; return its arguments with the placeholders filled."""
    good = fast_config(tmp / ".good.toml", run, url)
    ctx = Ctx(good.read_text(encoding="utf-8").splitlines(), tmp, url)
    good.unlink()
    assert len(ctx.lines) == CONFIG_LINES, ctx.lines  # the line numbers in CASES depend on it
    for name, content in case.files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
            continue
        text = content(ctx) if callable(content) else content
        path.write_text(text.replace("{tmp}", str(tmp)).replace("{url}", url), encoding="utf-8")
    return tuple(a.replace("{tmp}", str(tmp)).replace("{run}", str(run)).replace("{url}", url) for a in case.args)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_located_line_and_changes_nothing(
    case: Case, finished: Path, home: Path, server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run-copy"
    shutil.copytree(finished, run)
    shutil.copytree(home, tmp_path / "home")
    monkeypatch.setenv("XSAFETY_HOME", str(tmp_path / "home"))
    args = _materialise(case, tmp_path, run, server.url)
    watched = {"run": run, "home": tmp_path / "home", "translations": translations_dir()}
    before = {name: tree_digest(path) for name, path in watched.items()}

    code, out, err = cli(*args)

    lines = err.strip().splitlines()
    assert code == 2, (code, out[-500:], err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    message = lines[0]
    assert case.words in message, message
    if case.file is not None:
        where = str(tmp_path / case.file)
        assert where in message, message
        if case.line is not None:
            assert f"{where}:{case.line}:" in message, message
    if case.field is not None:
        assert f"field '{case.field}'" in message, message
    assert "Traceback" not in out + err and "SECRET42" not in out + err  # keys in the input are never echoed
    assert {name: tree_digest(path) for name, path in watched.items()} == before
    assert not (tmp_path / "tr").exists() and not (tmp_path / "rep").exists()


def test_the_table_covers_every_command_with_sixty_cases() -> None:
    commands = {" ".join(c.args[:2]) if c.args[:2] in (("judge", "eval"), ("locales", "add"), ("sets", "show")) else c.args[0]
                for c in CASES}
    assert commands >= {"run", "import", "translate", "generate", "judge", "judge eval", "report", "status", "locales add", "sets show"}
    assert len(CASES) >= 60
