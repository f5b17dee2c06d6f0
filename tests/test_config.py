"""Run configs validate with one-line errors that name the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.config import COMMITTED, DEFAULT_CONFIG, load_config, validate_names
from xsafety.errors import ConfigError
from xsafety.plan import validate

GOOD = """\
[run]
dir = "RUN"
sets = ["builtin"]
locales = ["en", "es"]
limit = 3
judges = ["refusal-lexicon"]
attacks = ["none", "suffix_injection", {name = "suffix_injection", stage = "after-translation"}]

[translation]
engines = {es = "apertium"}

[[models]]
spec = "smollm2"

[[models]]
spec = "openai:m@http://127.0.0.1:9/v1"
name = "remote"
concurrency = 4
api_key_env = "MY_KEY"

[decoding]
max_new_tokens = 32

[[variants]]
name = "none"

[[variants]]
name = "safety-prompt"
system = "locale"

[report]
policy = "default"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text.replace("RUN", str(tmp_path / "run")), encoding="utf-8")
    return path


def test_default_config_is_the_documented_built_in_run() -> None:
    cfg = load_config(None)
    assert cfg.source == str(DEFAULT_CONFIG)
    assert cfg.sets == ("builtin",) and cfg.locales == (COMMITTED,)
    assert [m.spec for m in cfg.models] == ["smollm2"] and cfg.judges == ("default",)
    assert [a.name for a in cfg.attacks] == ["none"] and [v.name for v in cfg.variants] == ["none"]
    assert cfg.run_dir == Path("xsafety-runs/default") and cfg.decoding.max_new_tokens == 96


def test_a_full_config_resolves_every_setting(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.run_dir == tmp_path / "run" and cfg.limit == 3 and cfg.locales == ("en", "es")
    assert [(a.label, a.stage) for a in cfg.attacks] == [
        ("none", "before-translation"),
        ("suffix_injection@before", "before-translation"),
        ("suffix_injection@after", "after-translation"),
    ]
    assert cfg.models[1].name == "remote" and cfg.models[1].options == {"concurrency": 4, "api_key_env": "MY_KEY"}
    assert cfg.decoding.max_new_tokens == 32 and cfg.engine_for("es") == "apertium" and cfg.engine_for("ca") is None
    assert cfg.base_variant.name == "none"
    sp = cfg.variants[1]
    assert sp.system_prompt("es", {"es": "Sé seguro."}.get) == "Sé seguro."
    validate_names(cfg, ["en", "es"])  # every name in it exists


def test_run_keys_may_sit_at_the_top_of_the_file(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, 'dir = "RUN"\nlimit = 2\n\n[decoding]\nseed = 3\n'))
    assert cfg.limit == 2 and cfg.decoding.seed == 3


@pytest.mark.parametrize(
    ("edit", "field", "line", "message"),
    [
        (("limit = 3", "limt = 3"), "run.limt", 5, "did you mean 'limit'"),
        (("limit = 3", 'limit = "ten"'), "run.limit", 5, "must be a int"),
        (("max_new_tokens = 32", "max_tokens = 32"), "decoding.max_tokens", 22, "did you mean 'max_new_tokens'"),
        (('api_key_env = "MY_KEY"', 'api_key = "MY_KEY"'), "models.api_key", 19, "did you mean 'api_key_env'"),
        (('"none", "suffix_injection",', '"none", "sufix_injection",'), "run.attacks", 7, "did you mean 'suffix_injection'"),
        (('engines = {es = "apertium"}', 'engines = {es = "babelfish"}'), "translation.engines", 10, "unknown translation engine"),
        (('system = "locale"', 'system = ""'), "variants.system", 29, "empty system prompt"),
        (('spec = "smollm2"', 'spec = "gpt:x"'), "models.spec", 13, "unknown model spec"),
        (("[report]", "[reprot]"), "reprot", 31, "did you mean 'report'"),
    ],
)
def test_invalid_configs_say_where(tmp_path: Path, edit: tuple[str, str], field: str, line: int, message: str) -> None:
    path = _write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.field == field and err.value.line == line and err.value.file == str(path)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("edit", "field", "line", "message"),
    [
        (('locales = ["en", "es"]', 'locales = ["en", "qq"]'), "run.locales", 4, "unknown locale 'qq'"),
        (('judges = ["refusal-lexicon"]', 'judges = ["refusal-lexicn"]'), "run.judges", 6, "refusal-lexicon"),
        (('sets = ["builtin"]', 'sets = ["nosuchset"]'), "run.sets", 3, "unknown set 'nosuchset'"),
        (('policy = "default"', 'policy = "nosuchpolicy"'), "report.policy", 32, "unknown policy"),
    ],
)
def test_unknown_names_are_caught_before_anything_runs(
    tmp_path: Path, edit: tuple[str, str], field: str, line: int, message: str
) -> None:
    path = _write(tmp_path, GOOD.replace(*edit))
    cfg = load_config(path)
    with pytest.raises(ConfigError) as err:
        validate(cfg, list(cfg.locales))
    assert err.value.field == field and err.value.line == line and message in str(err.value)


def test_broken_toml_names_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("limit = 3", "limit = = 3"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.line == 5 and "not valid TOML" in str(err.value)


def test_cli_turns_a_bad_config_into_one_line_and_exit_2(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace('locales = ["en", "es"]', 'locales = ["en", "qq"]'))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"{path}:4: field 'run.locales'" in lines[0]
    assert not (tmp_path / "run").exists()  # nothing was written
