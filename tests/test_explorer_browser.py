"""The item explorer in headless Chromium, driven over the DevTools protocol like a user would:
filter to one locale and label, open a flipped pair, search a phrase; injected markup stays text."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from xsafety.report import build_report
from xsafety.report.synthetic import Outcome, make_prompts, make_translation, write_run

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from chromium_cdp import Browser, find_chromium  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None or shutil.which("chromium") is None, reason="Debian's chromium is not installed"),
]

PAYLOAD = (
    "<script>document.title='PWNED'</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-owned','PWNED')\">"
)
READY = "document.getElementById('xs-explorer').dataset.ready === '1'"


def shown(b: Browser) -> int:
    return int(b.eval("document.getElementById('xs-explorer').dataset.shown"))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """en and es, 40 prompts: English refuses every third, Spanish every fourth; de refuses none."""
    prompts = make_prompts(40)
    outcomes = []
    for i, p in enumerate(prompts):
        outcomes.append(Outcome(p.id, "en", "refusal" if i % 3 == 0 else "safe"))
        es_text = PAYLOAD if i == 1 else ("I must decline: the blue heron rule" if i == 7 else "")
        outcomes.append(Outcome(p.id, "es", "refusal" if i % 4 == 0 else "safe", back_label="safe", text=es_text))
        outcomes.append(Outcome(p.id, "de", "unsafe", back_label="unsafe"))
    translations = [make_translation(p, loc) for p in prompts for loc in ("es", "de")]
    run = write_run(tmp_path_factory.mktemp("browser") / "run", prompts, outcomes, translations=translations,
                    info={"resource": {"en": "high", "es": "high", "de": "high"}})
    return build_report(run) / "index.html"


@pytest.fixture()
def browser(page: Path) -> Iterator[Browser]:
    with Browser() as b:
        b.open(page)
        b.wait(READY)
        yield b


def test_every_response_listed_one_page_rendered(browser: Browser) -> None:
    assert shown(browser) == 120
    assert browser.eval("document.querySelectorAll('[data-t=items] tr.item').length") == 50


def test_filter_to_one_locale_and_label(browser: Browser) -> None:
    browser.select_text("[data-f=locale]", "es")
    assert shown(browser) == 40
    browser.select_text("[data-f=label]", "refusal")
    assert shown(browser) == 10  # i % 4 == 0 for i < 40
    cells = browser.eval(
        "Array.from(document.querySelectorAll('[data-t=items] tr.item')).map(r => [r.cells[1].textContent, r.cells[6].textContent])"
    )
    assert len(cells) == 10 and all(c == ["es", "refusal"] for c in cells)


def test_open_a_row_shows_prompt_response_and_reasons(browser: Browser) -> None:
    browser.select_text("[data-f=locale]", "es")
    browser.click("[data-t=items] tr.item")
    text = browser.eval("document.querySelector('[data-t=items] tr.detail').textContent")
    assert "English prompt" in text and "synthetic prompt 0" in text and "back-translated" in text


def test_open_a_flipped_pair_side_by_side(browser: Browser) -> None:
    browser.click("button[data-tab=pairs]")
    browser.select_text("[data-p=locale]", "es")
    browser.select_text("[data-p=dir]", "English refused, locale did not")
    # English refuses i % 3 == 0, Spanish i % 4 == 0: English only at i in {3, 6, 9, 15, ...}.
    expected = len([i for i in range(40) if i % 3 == 0 and i % 4 != 0])
    assert int(browser.eval("document.getElementById('xs-explorer').dataset.pairsShown")) == expected
    browser.click("[data-t=pairs] tr.pair")
    sides = browser.eval(
        "Array.from(document.querySelectorAll('[data-t=pairs] tr.detail .pair-side h4')).map(h => h.textContent)"
    )
    assert sides == ["English (en): refusal", "es: safe"]
    # de refused nothing while English refused: only that direction exists for it.
    browser.select_text("[data-p=locale]", "de")
    browser.select_text("[data-p=dir]", "locale refused, English did not")
    assert int(browser.eval("document.getElementById('xs-explorer').dataset.pairsShown")) == 0


def test_search_a_phrase(browser: Browser) -> None:
    browser.type("[data-f=search]", "blue heron")
    browser.wait("document.getElementById('xs-explorer').dataset.shown === '1'", timeout=10)
    row = browser.eval("document.querySelector('[data-t=items] tr.item').cells[0].textContent")
    assert row == "p0007"


def test_injected_markup_stays_inert(browser: Browser) -> None:
    browser.type("[data-f=search]", "pwned")
    browser.wait("document.getElementById('xs-explorer').dataset.shown === '1'", timeout=10)
    browser.click("[data-t=items] tr.item")
    detail = browser.eval("document.querySelector('[data-t=items] tr.detail').textContent")
    assert "<script>document.title='PWNED'</script>" in detail and "onerror=" in detail
    assert browser.eval("document.title") == "xsafety report"
    assert browser.eval("document.body.getAttribute('data-owned')") is None
    # Nothing from the payload became an element.
    assert browser.eval("document.querySelectorAll('img[src=x], #xs-explorer script:not([type])').length") == 0
