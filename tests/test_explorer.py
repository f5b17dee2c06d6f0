"""The item explorer's data: every response once, its verdicts with reasons, and the flipped pairs
that are exactly the discordant pairs behind each locale's refusal McNemar test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from xsafety.records import Response, Verdict, stable_hash
from xsafety.report import build_report
from xsafety.report.build import compute
from xsafety.report.explorer import EN_REFUSED, LOCALE_REFUSED, embed_json, explorer_payload, flipped_pairs
from xsafety.export import item_rows, items_frame
from xsafety.report.synthetic import SYNTH_JUDGE, SYNTH_MODEL, Outcome, make_prompts, make_translation, random_run, write_run
from xsafety.report.wording import COMPLIED_NOT_JUDGED
from xsafety.store import Store


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_run(tmp_path_factory.mktemp("explorer") / "run", n_prompts=60, seed=3)


def test_one_record_per_response_with_every_verdict(run: Path) -> None:
    data = compute(run, breakdowns=False)
    payload = explorer_payload(data, item_rows(data.run))
    assert len(payload["rows"]) == data.run.n_responses == 180
    f = payload["fields"]
    labels = payload["lookups"]["label"]
    # Non-English rows carry both modes; the primary label is the native verdict's.
    es = [r for r in payload["rows"] if payload["lookups"]["locale"][r[f["locale"]]] == "es"]
    assert es and all(len(r[f["verdicts"]]) == 2 for r in es)
    native = dict(data.primary.select("prompt_id", "label").filter(data.primary["locale"] == "es").iter_rows())
    for r in es:
        assert labels[r[f["label"]]] == native[r[f["prompt_id"]]]


def test_flipped_pairs_are_the_mcnemar_discordant_pairs(run: Path) -> None:
    data = compute(run)
    pairs = flipped_pairs(data.primary)
    gaps = data.tables["gaps_locale"].filter(pl.col("metric") == "refusal")
    for g in gaps.iter_rows(named=True):
        mine = pairs.filter(pl.col("locale") == g["locale"])
        # b: the locale refused and English did not; c: English refused and the locale did not.
        assert mine.filter(pl.col("direction") == LOCALE_REFUSED).height == g["b_locale_only"]
        assert mine.filter(pl.col("direction") == EN_REFUSED).height == g["c_english_only"]
        assert mine.height > 0


def test_flipped_pair_points_at_both_answers(run: Path) -> None:
    data = compute(run, breakdowns=False)
    payload = explorer_payload(data, item_rows(data.run))
    f, lk = payload["fields"], payload["lookups"]
    assert payload["pairs"]
    for loc, direction, en_row, loc_row in payload["pairs"]:
        en, other = payload["rows"][en_row], payload["rows"][loc_row]
        assert lk["locale"][en[f["locale"]]] == "en" and other[f["locale"]] == loc
        assert en[f["prompt_id"]] == other[f["prompt_id"]]
        refused = (lk["label"][en[f["label"]]] == "refusal", lk["label"][other[f["label"]]] == "refusal")
        assert refused == ((True, False) if direction == EN_REFUSED else (False, True))


def test_reasons_back_translation_and_prompt_as_sent(tmp_path: Path) -> None:
    prompts = make_prompts(2)
    # The store keeps the first copy of a key: this response, with its messages, stands for write_run's.
    key = stable_hash("response", SYNTH_MODEL, "synth", "p0000", "es", "none", "default")
    Store(tmp_path / "run").table(Response).append([
        Response(key=key, prompt_id="p0000", set="synth", locale="es", model=SYNTH_MODEL, text="respuesta",
                 messages=({"role": "user", "content": "¿pregunta?"},))
    ])
    run = write_run(tmp_path / "run", prompts, [Outcome("p0000", "en", "refusal"), Outcome("p0000", "es", "safe")],
                    translations=[make_translation(prompts[0], "es")])
    store = Store(run)
    es = next(r for r in store.table(Response).load().values() if r.locale == "es")
    assert es.text == "respuesta"
    # The judge stage stores the back-translation as the back-translated verdict's judged_text.
    store.table(Verdict).append([
        Verdict(key=stable_hash(es.key, SYNTH_JUDGE, "back-translated"), response_key=es.key, judge=SYNTH_JUDGE,
                mode="back-translated", label="invalid", rationale="judge output not in the expected format: empty",
                judged_text="the answer in English", error="unparsable"),
    ])
    data = compute(run, breakdowns=False)
    items = items_frame(data.run)
    back = items.filter((pl.col("locale") == "es") & (pl.col("mode") == "back-translated")).row(0, named=True)
    assert back["reason"].startswith("judge output not in the expected format") and "unparsable" in back["reason"]
    assert back["back_translation"] == "the answer in English"
    assert back["prompt_sent"] == "¿pregunta?" and back["english_prompt"] == "synthetic prompt 0"


def test_refusal_only_judge_never_says_safe(tmp_path: Path) -> None:
    prompts = make_prompts(3)
    outcomes = [Outcome(p.id, loc, "safe" if i else "refusal", verdict_meta={} if not i else {"harm_judged": False})
                for i, p in enumerate(prompts) for loc in ("en", "es")]
    run = write_run(tmp_path / "run", prompts, outcomes, translations=[make_translation(p, "es") for p in prompts])
    data = compute(run, breakdowns=False)
    payload = explorer_payload(data, item_rows(data.run))
    assert "safe" not in payload["lookups"]["label"]
    assert set(payload["lookups"]["label"]) == {"refusal", COMPLIED_NOT_JUDGED}


def test_embedded_json_cannot_close_its_block() -> None:
    text = embed_json({"r": ["</script><script>alert(1)</script>", "a & b > c <!--"]})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"r": ["</script><script>alert(1)</script>", "a & b > c <!--"]}


def test_page_embeds_every_response_as_inert_json(run: Path) -> None:
    page = (build_report(run) / "index.html").read_text()
    block = re.search(r'<script type="application/json" id="xs-items">(.*?)</script>', page, re.S)
    assert block is not None
    assert len(json.loads(block.group(1))["rows"]) == 180
    assert 'href="#items"' in page
