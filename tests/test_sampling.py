"""Stratified samples: N per category, seeded, nested, by ALERT or by the source set's own category."""

from __future__ import annotations

from collections import Counter

import pytest

from xsafety.errors import ConfigError
from xsafety.records import Prompt
from xsafety.sampling import Sample, category_of, parse_sample, stratified_sample
from xsafety.taxonomy import load_set, source_category


def _xsafety_like() -> list[Prompt]:
    # Sorted by type, as XSafety is: the first N prompts would all be Insult.
    out = []
    for xtype, alert in (("Insult", "hate_other"), ("Crimes_And_Illegal_Activities", "crime_other"),
                         ("Goal_Hijacking", "")):
        for i in range(10):
            out.append(Prompt(id=f"{xtype}-{i}", text=f"{xtype} prompt {i}", category=alert, source="xsafety",
                              set="xs", xsafety_type=xtype))
    return out


def test_every_category_gets_its_share_whatever_the_order() -> None:
    prompts = _xsafety_like()
    picked = stratified_sample(prompts, Sample(per_category=3, by="source"))
    assert Counter(p.xsafety_type for p in picked) == {"Insult": 3, "Crimes_And_Illegal_Activities": 3, "Goal_Hijacking": 3}
    # The order of the file does not change which prompts are chosen, and the set's order is kept.
    assert stratified_sample(list(reversed(prompts)), Sample(3, "source")) == list(reversed(picked))
    assert [prompts.index(p) for p in picked] == sorted(prompts.index(p) for p in picked)


def test_by_alert_groups_uncategorised_prompts_together() -> None:
    picked = stratified_sample(_xsafety_like(), Sample(per_category=2, by="alert"))
    assert Counter(category_of(p, "alert") for p in picked) == {"hate_other": 2, "crime_other": 2, "(none)": 2}


def test_samples_are_seeded_and_nested() -> None:
    prompts = _xsafety_like()
    small = stratified_sample(prompts, Sample(2, "source", seed=7))
    large = stratified_sample(prompts, Sample(5, "source", seed=7))
    assert set(map(id, small)) <= set(map(id, large))
    assert stratified_sample(prompts, Sample(2, "source", seed=7)) == small
    assert stratified_sample(prompts, Sample(2, "source", seed=8)) != small


def test_builtin_set_source_categories_are_xsafety_types() -> None:
    prompts = load_set("builtin")
    picked = stratified_sample(prompts, Sample(1, "source"))
    assert len(picked) == len({source_category(p) for p in prompts}) == 14


@pytest.mark.parametrize(
    ("value", "field"),
    [({"per_category": 0}, "sample.per_category"), ({"per_category": 2, "by": "topic"}, "sample.by"),
     ({"per_category": 2, "seed": "x"}, "sample.seed"), ({"per_category": 2, "size": 3}, "sample.size"),
     ("three", "sample"), ([3], "sample")],
)
def test_bad_samples_name_the_field(value: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_sample(value, file="run.toml", line=4)
    assert f"run.toml:4: field '{field}'" in str(info.value)


def test_cli_form() -> None:
    assert parse_sample("3") == Sample(3, "alert", 0)
    assert parse_sample("3:source:5") == Sample(3, "source", 5)
