"""Charts that carry uncertainty: the forest plot comes first, non-significant gap cells are muted,
the gap colour scale is symmetric and fixed per metric, nothing is cut at 3 rows, and heatmaps by
the source set's own categories are drawn when the prompts have them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from matplotlib.colors import Normalize
from PIL import Image

from xsafety.records import Prompt
from xsafety.report import build_report, plots
from xsafety.report.build import compute
from xsafety.report.synthetic import Outcome, make_translation, write_run

TYPES = ("Insult", "Unfairness And Discrimination", "Crimes And Illegal Activities")
CATS = ("hate_women", "crime_theft", "weapon_firearm")


def _run(root: Path, refusal: dict[str, float], n: int = 90, seed: int = 0) -> Path:
    prompts = [Prompt(id=f"p{i:03d}", text=f"prompt {i}", category=CATS[i % 3], source="xsafety", set="synth",
                      xsafety_type=TYPES[(i // 3) % 3]) for i in range(n)]
    # One draw per prompt shared by every locale: answers are paired, as in real runs, so locales
    # with close refusal rates differ on few prompts and distant ones on many.
    u = np.random.default_rng(seed).random(n)
    outcomes, translations = [], []
    for loc, p in refusal.items():
        for i, pr in enumerate(prompts):
            label = "refusal" if u[i] < p else "safe"
            outcomes.append(Outcome(pr.id, loc, label, back_label=None if loc == "en" else label))
            if loc != "en":
                translations.append(make_translation(pr, loc))
    return write_run(root, prompts, outcomes, translations=translations)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = _run(tmp_path_factory.mktemp("plots") / "run", {"en": 0.8, "es": 0.75, "zh": 0.2, "sw": 0.78})
    return build_report(run)


def test_forest_plot_is_the_first_chart(report: Path) -> None:
    assert (report / "forest_gap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (report / "index.html").read_text()
    alts = re.findall(r'<img alt="([^"]+)"', page)
    assert alts[0].startswith("gap to English per locale with 95% CI")
    summary = (report / "summary.md").read_text()
    assert summary.index("forest_gap.png") < summary.index("heatmap_refusal.png")


def test_source_category_heatmaps(report: Path) -> None:
    assert (report / "heatmap_refusal_gap_source.png").is_file() and (report / "heatmap_refusal_source.png").is_file()
    data = compute(report.parent, breakdowns=False)
    gaps = plots.source_gaps(data)
    assert set(gaps.get_column(plots.SOURCE_COLUMN)) == set(TYPES)
    assert set(gaps.get_column("locale")) == {"es", "zh", "sw"}


def test_no_source_heatmap_without_source_categories(tmp_path: Path) -> None:
    from xsafety.report.synthetic import random_run

    out = build_report(random_run(tmp_path / "run", n_prompts=40))
    assert not (out / "heatmap_refusal_gap_source.png").exists()
    assert (out / "heatmap_refusal_gap.png").exists()


def test_gap_maps_mute_non_significant_cells_on_a_fixed_symmetric_scale(report: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: dict[str, dict[str, Any]] = {}

    def spy(grid: np.ndarray, rows: list[str], cols: list[str], path: Path, **kw: Any) -> Path:
        calls[path.name] = {"grid": grid, "rows": rows, "cols": cols, **kw}
        return path

    monkeypatch.setattr(plots, "heatmap", spy)
    data = compute(report.parent)
    plots.write_heatmaps(data, tmp_path)
    gap = calls["heatmap_refusal_gap.png"]
    assert gap["vmin"] == -plots.GAP_SCALE_PP["refusal"] and gap["vmax"] == plots.GAP_SCALE_PP["refusal"]
    gaps = data.tables["gaps_locale_macro"].filter(pl.col("metric") == "refusal")
    for i, loc in enumerate(gap["rows"]):
        for j, macro in enumerate(gap["cols"]):
            p = gaps.filter((pl.col("locale") == loc) & (pl.col("macro") == macro)).get_column("p_value").item()
            assert bool(gap["muted"][i, j]) == (p >= plots.ALPHA)
    # zh refuses far less than English: significant; es and sw are close to English: muted.
    zh = gap["rows"].index("zh")
    assert not gap["muted"][zh].any() and gap["muted"][gap["rows"].index("es")].all()
    # The scale does not follow the data: the same for a run whose gaps are all small.
    small_run = _run(tmp_path / "small", {"en": 0.5, "es": 0.48})
    calls.clear()
    plots.write_heatmaps(compute(small_run), tmp_path)
    assert calls["heatmap_refusal_gap.png"]["vmax"] == plots.GAP_SCALE_PP["refusal"]


def test_muted_cell_is_paler_than_a_significant_one() -> None:
    import matplotlib

    grid = np.array([[-20.0, -20.0]])
    colours = plots._cell_colours(grid, matplotlib.colormaps["RdBu"], Normalize(-60, 60), np.array([[False, True]]))
    strong, pale = colours[0, 0, :3], colours[0, 1, :3]
    assert pale.mean() > strong.mean() and (pale >= strong - 1e-9).all()


def test_three_rows_leave_nothing_cut(tmp_path: Path) -> None:
    cols = ["Unfairness And Discrimination", "Crimes And Illegal Activities", "Ethics And Morality", "Insult"]
    path = plots.heatmap(np.array([[-5.0, 10, 30, 2], [1, -40, 7, 0], [3, 4, 5, 6]]), ["es", "zh (n=0)", "sw"], cols,
                         tmp_path / "m.png", title="A long title that has to wrap, with a legend on what pale cells mean",
                         cmap="RdBu", vmin=-60, vmax=60, fmt="{:+.0f}", colorbar="locale - en (pp)")
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # Every edge pixel is background: no label, title or colour bar runs off the picture.
    edges = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    assert (edges >= 250).all()
