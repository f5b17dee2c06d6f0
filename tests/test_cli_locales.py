"""`locales add` writes to the user's own registry under XSAFETY_HOME (never the packaged one) and
warns when the default judge has no refusal phrase list for the new locale."""

from __future__ import annotations

from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.locales import get_locale, packaged_registry_path, refusal_list_for, user_registry_path

runner = CliRunner()
YUE = ["yue", "--name", "Cantonese", "--native", "粵語", "--script", "Hant", "--resource", "low"]


def test_add_writes_the_user_registry_even_in_a_checkout() -> None:
    packaged = packaged_registry_path().read_bytes()
    try:
        res = runner.invoke(app, ["locales", "add", *YUE])
        assert res.exit_code == 0, res.output
        assert f"to {user_registry_path()}" in res.output
        assert packaged_registry_path().read_bytes() == packaged
        assert get_locale("yue").native == "粵語"
    finally:
        user_registry_path().unlink(missing_ok=True)


def test_add_warns_without_a_refusal_list() -> None:
    assert refusal_list_for("yue") is None
    try:
        res = runner.invoke(app, ["locales", "add", *YUE])
        assert res.exit_code == 0
        assert "warning: no refusal phrase list for yue (judges/refusal/yue.txt)" in res.output
    finally:
        user_registry_path().unlink(missing_ok=True)


def test_no_warning_when_a_list_covers_the_locale() -> None:
    # pt-BR falls back to pt.txt, as the lexicon judge itself does.
    assert refusal_list_for("pt-BR") is not None and refusal_list_for("pt-BR").name == "pt.txt"
    try:
        res = runner.invoke(app, ["locales", "add", "pt-BR", "--name", "Brazilian Portuguese", "--native", "português",
                                  "--script", "Latn", "--resource", "high"])
        assert res.exit_code == 0, res.output
        assert "warning" not in res.output
    finally:
        user_registry_path().unlink(missing_ok=True)
