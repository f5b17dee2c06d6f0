"""`sets show -c` takes an ALERT category or the set's own (XSafety issue type here), and a name
that is neither is one line listing the set's own categories, exit 2."""

from __future__ import annotations

from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.export import source_category
from xsafety.taxonomy import load_set

runner = CliRunner()


def test_source_category_filter_matches_case_and_spacing_free() -> None:
    insults = [p for p in load_set("builtin") if source_category(p) == "Insult"]
    assert insults
    for spelling in ("Insult", "insult", " INSULT "):
        res = runner.invoke(app, ["sets", "show", "builtin", "-c", spelling, "-n", "0"])
        assert res.exit_code == 0, res.output
        assert f"builtin: {len(insults)} prompts" not in res.output  # -n 0: counts only
        counted = sum(int(line.split("│")[2]) for line in res.output.splitlines() if line.count("│") == 3)
        assert counted == len(insults)
    crimes = [p for p in load_set("builtin") if source_category(p) == "Crimes_And_Illegal_Activities"]
    res = runner.invoke(app, ["sets", "show", "builtin", "-c", "crimes and illegal activities", "-n", "100"],
                        terminal_width=200)
    assert res.exit_code == 0 and f"builtin: {len(crimes)} prompts" in res.output


def test_alert_category_still_wins() -> None:
    res = runner.invoke(app, ["sets", "show", "builtin", "-c", "crime_theft", "-n", "100"], terminal_width=200)
    n = sum(1 for p in load_set("builtin") if p.category == "crime_theft")
    assert res.exit_code == 0 and f"builtin: {n} prompts in crime_theft" in res.output


def test_unknown_category_is_one_line() -> None:
    res = runner.invoke(app, ["sets", "show", "builtin", "-c", "nothing"])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "unknown ALERT category 'nothing'; nor is it one of the set's own categories (" in lines[0]
