"""Reports keep to the current cells: stale responses (an old model signature, an old judge, a
removed locale) left in the append-only store must not change n, rates, gaps or p-values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from xsafety.errors import InputError
from xsafety.records import Response, stable_hash
from xsafety.report import build_report, compute
from xsafety.report.frame import load_run
from xsafety.report.synthetic import SYNTH_JUDGE, SYNTH_MODEL, Outcome, make_prompts, make_translation, write_run
from xsafety.store import Store

OLD_MODEL = "synthmodel|max_new_tokens:64|temperature:0"
OLD_JUDGE = "synthjudge|template:none|version:0"
N = 40
RESOURCE = {"en": "high", "es": "high", "sw": "low", "gl": "low"}


def _labels(locale: str, shift: int = 0) -> list[str]:
    """Deterministic labels with real gaps: es and sw are less safe than en."""
    unsafe_every = {"en": 8, "es": 4, "sw": 3, "gl": 2}[locale]
    return [
        "unsafe" if (i + shift) % unsafe_every == 0 else "refusal" if (i + shift) % 3 else "safe" for i in range(N)
    ]


def _outcomes(model: str, locales: tuple[str, ...], shift: int = 0) -> list[Outcome]:
    prompts = make_prompts(N)
    return [
        Outcome(p.id, loc, lab, back_label=None if loc == "en" else lab, model=model)
        for loc in locales
        for p, lab in zip(prompts, _labels(loc, shift))
    ]


def _translations(locales: tuple[str, ...]) -> list[Any]:
    return [make_translation(p, loc) for loc in locales if loc != "en" for p in make_prompts(N)]


def _info(judge_sig: str = SYNTH_JUDGE) -> dict[str, Any]:
    return {
        "judges": ["synthjudge"],
        "primary_judge": "synthjudge",
        "resource": RESOURCE,
        "models": [{"name": "synthmodel", "spec": "synth", "signature": SYNTH_MODEL}],
        "judge_signatures": {"synthjudge": judge_sig},
    }


def clean_run(root: Path) -> Path:
    """The run as the current config asks for it: one model signature, one judge, en/es/sw."""
    locales = ("en", "es", "sw")
    return write_run(root, make_prompts(N), _outcomes(SYNTH_MODEL, locales), translations=_translations(locales),
                     info=_info())


def stale_run(root: Path, with_cells: bool = True) -> Path:
    """The same current cells, plus what earlier configs left in the store: every response of an
    older model signature (with other labels, and a locale since removed), and verdicts of an
    older judge signature on the current responses."""
    prompts = make_prompts(N)
    old_locales = ("en", "es", "sw", "gl")
    write_run(root, prompts, _outcomes(OLD_MODEL, old_locales, shift=1), translations=_translations(old_locales))
    # The older judge's verdicts on today's responses (write_run appends; response records repeat).
    write_run(root, prompts, _outcomes(SYNTH_MODEL, ("en", "es", "sw"), shift=2), judge=OLD_JUDGE)
    write_run(root, prompts, _outcomes(SYNTH_MODEL, ("en", "es", "sw")), info=_info())
    if with_cells:
        current = sorted(k for k, r in Store(root).table(Response).load().items() if r.model == SYNTH_MODEL)
        (root / "cells.json").write_text(json.dumps({"responses": current}), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cells")
    return clean_run(base / "clean"), stale_run(base / "stale")


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns[: min(3, len(df.columns))])


def test_stale_responses_and_verdicts_leave_every_table_unchanged(runs: tuple[Path, Path]) -> None:
    clean, stale = compute(runs[0]), compute(runs[1])
    summary = clean.summary
    assert summary.get_column("n").to_list() == [N, N, N]
    # The gaps are real (so the p-values below compare something).
    assert (summary.filter(pl.col("locale") == "sw").get_column("unsafe_p").item()) < 0.05
    assert stale.run.n_responses == 3 * N and stale.run.n_stale_responses == 4 * N
    assert stale.run.judges == [SYNTH_JUDGE] and stale.run.primary_judge == SYNTH_JUDGE
    assert set(stale.primary.get_column("model").unique()) == {SYNTH_MODEL}
    assert sorted(clean.tables) == sorted(stale.tables)
    for name in clean.tables:
        assert _sorted(stale.tables[name]).equals(_sorted(clean.tables[name]), null_equal=True), name


def test_a_judge_named_on_the_command_line_resolves_among_current_signatures(runs: tuple[Path, Path]) -> None:
    # The bare name matches the old judge's signature too: it must still mean the current one.
    assert load_run(runs[1], primary_judge="synthjudge").primary_judge == SYNTH_JUDGE
    # An old signature spelled out in full is what the user asked for.
    old = load_run(runs[1], primary_judge=OLD_JUDGE)
    assert old.primary_judge == OLD_JUDGE and old.verdicts.filter(pl.col("judge") == OLD_JUDGE).height > 0


def test_without_cells_the_stale_store_doubles_n(tmp_path: Path) -> None:
    # Why cells.json matters: reading every stored response pools both signatures per locale.
    data = compute(stale_run(tmp_path / "run", with_cells=False))
    es = data.summary.filter(pl.col("locale") == "es").to_dicts()[0]
    assert es["n"] == 2 * N and es["unsafe_n_pairs"] == 2 * N


def test_without_cells_signatures_of_one_model_are_separate_models(tmp_path: Path) -> None:
    data = compute(stale_run(tmp_path / "run", with_cells=False))
    # The old signature is told by the field it adds; the current one, which adds none, by its hash.
    current = f"synthmodel [{stable_hash(SYNTH_MODEL, length=8)}]"
    names = sorted(data.primary.get_column("model_name").unique().to_list())
    assert names == [current, "synthmodel [max_new_tokens:64]"]
    by_model = data.tables["rates_locale_model"].filter(pl.col("locale") == "es")
    assert by_model.height == 2 and by_model.get_column("n").to_list() == [N, N]
    gaps = data.tables["gaps_locale_model"].filter((pl.col("locale") == "es") & (pl.col("metric") == "unsafe"))
    assert gaps.height == 2 and gaps.get_column("n_pairs").to_list() == [N, N]
    # Each signature's numbers are those of a clean run of it alone.
    clean = compute(clean_run(tmp_path / "clean"))
    mine = by_model.filter(pl.col("model_name") == current)
    assert mine.get_column("unsafe_rate").item() == clean.tables["rates_locale"].filter(
        pl.col("locale") == "es").get_column("unsafe_rate").item()


def test_report_files_say_how_many_stale_responses_were_left_out(runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = build_report(runs[1], tmp_path / "report", n_boot=200)
    assert f"left out: {4 * N} stored responses" in (out / "summary.md").read_text(encoding="utf-8")
    assert f"{4 * N} from earlier configs left out" in (out / "index.html").read_text(encoding="utf-8")
    clean_out = build_report(runs[0], tmp_path / "clean_report", n_boot=200)
    assert "left out" not in (clean_out / "summary.md").read_text(encoding="utf-8")


def test_bad_cells_file_names_file_and_field(tmp_path: Path) -> None:
    root = clean_run(tmp_path / "run")
    (root / "cells.json").write_text(json.dumps({"responses": "all"}), encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_run(root)
    assert "cells.json" in str(err.value) and "responses" in str(err.value)
    (root / "cells.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="cells.json"):
        load_run(root)


def _variant_run(root: Path, variants: tuple[str, ...], base_variant: str | None) -> Path:
    prompts = make_prompts(12)
    outcomes = [
        Outcome(p.id, loc, "refusal" if (i + k) % 2 else "unsafe", variant=v)
        for k, v in enumerate(variants)
        for loc in ("en", "es")
        for i, p in enumerate(prompts)
    ]
    info: dict[str, Any] = {"judges": ["synthjudge"], "resource": RESOURCE}
    if base_variant:
        info["base_variant"] = base_variant
    return write_run(root, prompts, outcomes, translations=[make_translation(p, "es") for p in prompts], info=info)


def _links_variants(out: Path) -> tuple[bool, bool]:
    return (
        'href="variants.md"' in (out / "index.html").read_text(encoding="utf-8"),
        "](variants.md)" in (out / "summary.md").read_text(encoding="utf-8"),
    )


def test_variants_page_is_written_and_linked_when_the_run_has_variants(tmp_path: Path) -> None:
    # With a base variant in run.json the report writes the page itself, and links it.
    run = _variant_run(tmp_path / "orchestrated", ("default", "safety_prompt"), "default")
    out = build_report(run, n_boot=100)
    assert _links_variants(out) == (True, True) and (out / "variants.csv").is_file()
    # No base variant recorded (no orchestrator): no page and no dead link; the folder is replaced
    # whole, so a page someone left in it goes with it.
    run = _variant_run(tmp_path / "direct", ("default", "safety_prompt"), None)
    out = tmp_path / "direct_report"
    out.mkdir()
    (out / "variants.md").write_text("# Variants\n", encoding="utf-8")
    assert _links_variants(build_report(run, out, n_boot=100)) == (False, False)
    assert not (out / "variants.md").exists()


def test_a_variants_page_left_from_an_earlier_config_is_not_linked(tmp_path: Path) -> None:
    run = _variant_run(tmp_path / "run", ("default",), "default")
    (run / "report").mkdir()
    (run / "report" / "variants.md").write_text("# Variants of an earlier config\n", encoding="utf-8")
    assert _links_variants(build_report(run, n_boot=100)) == (False, False)


def test_a_run_directory_without_its_cells_is_refused_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    """cells.json gone from a directory `xsafety run` made (its run.json holds a config): the
    report must not silently pool every response the store ever held (n = 2N instead of N)."""
    from typer.testing import CliRunner

    from xsafety.cli import app

    root = stale_run(tmp_path / "run", with_cells=False)
    info = {**_info(), "config_file": "my-run.toml", "config": {"run": {"dir": str(root)}}}
    (root / "run.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(InputError) as err:
        compute(root)
    assert err.value.file == str(root / "cells.json")
    assert f"xsafety run my-run.toml --run-dir {root}" in str(err.value)
    result = CliRunner().invoke(app, ["report", str(root)])
    assert result.exit_code == 2 and "cells.json is missing" in result.output
    assert not (root / "report").exists()
