"""The annotation loop without a browser: stratified seeded samples with inverse-probability weights,
the page's escaping and CSP, append-only import with validation, agreement and calibration."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xsafety.annotate import agreement, draw_sample, export_sample, import_labels, read_labels, run_calibration
from xsafety.annotate.labels import gold_labels, labels_path
from xsafety.annotate.page import SCRIPT
from xsafety.annotate.sample import _allocate
from xsafety.cli import app
from xsafety.errors import InputError
from xsafety.report.synthetic import Outcome, make_prompts, make_translation, random_run, write_run

PAYLOAD = "<script>document.title='PWNED'</script><img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_run(tmp_path_factory.mktemp("ann") / "run", n_prompts=90, seed=2)


def test_allocation_is_even_and_moves_what_a_small_group_cannot_take() -> None:
    assert _allocate({"refusal": 50, "safe": 50, "unsafe": 2}, 12) == {"refusal": 5, "safe": 5, "unsafe": 2}
    assert _allocate({"a": 3}, 10) == {"a": 3}
    assert sum(_allocate({"a": 7, "b": 9, "c": 1}, 11).values()) == 11


def test_sample_is_seeded_stratified_and_weighted(run: Path) -> None:
    a = draw_sample(run, 12, seed=5)
    b = draw_sample(run, 12, seed=5)
    assert [i.item for i in a.items] == [i.item for i in b.items] and a.sample_id == b.sample_id
    assert [i.item for i in draw_sample(run, 12, seed=6).items] != [i.item for i in a.items]
    for loc in ("en", "es", "sw"):
        mine = [i for i in a.items if i.locale == loc]
        assert len(mine) == 12 and len({i.item for i in mine}) == 12
        labels = {i.judge_label for i in mine}
        assert {"refusal", "safe", "unsafe"} <= labels  # every judge label is seen
        # Weights are inverse sampling rates: per label they add up to the label's population.
        from xsafety.report.frame import load_run

        verdicts = load_run(run).verdicts
        for label in labels:
            population = verdicts.filter((verdicts["locale"] == loc) & (verdicts["mode"] == "native")
                                         & (verdicts["label"] == label)).height
            assert sum(i.weight for i in mine if i.judge_label == label) == pytest.approx(population)
    with pytest.raises(InputError, match="'xx'"):
        draw_sample(run, 5, locales=["xx"])


def test_page_escapes_model_output_and_admits_only_its_script(tmp_path: Path) -> None:
    prompts = make_prompts(4)
    outcomes = [Outcome(p.id, "es", "unsafe", text=PAYLOAD) for p in prompts]
    run = write_run(tmp_path / "run", prompts, outcomes, translations=[make_translation(p, "es") for p in prompts])
    sample, page, table = export_sample(run, 4, out_dir=tmp_path / "out")
    html = page.read_text()
    assert "&lt;script&gt;document.title=&#x27;PWNED&#x27;&lt;/script&gt;" in html
    assert "<img src=x" not in html and html.count("<script") == 1
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp is not None
    policy = csp.group(1).replace("&#x27;", "'")
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert "default-src 'none'" in policy and f"script-src 'sha256-{digest}'" in policy and "connect-src 'none'" in policy
    assert html.count('class="lab"') == 4 * 4 and html.count('textarea class="note"') == 4
    assert table.read_text().splitlines()[0].startswith("item,locale,category,judge_label,prompt_sent")
    from xsafety.annotate.sample import inert_cell

    assert inert_cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")" and inert_cell("fine") == "fine"
    assert (run / "annotations" / "samples" / f"{sample.sample_id}.json").is_file()


def _labels(sample_items: list, annotator: str, flip: int = 0) -> str:
    rows = []
    for n, item in enumerate(sample_items):
        label = item.judge_label if item.judge_label != "invalid" else "unclear"
        if n < flip:
            label = {"refusal": "safe", "safe": "unsafe", "unsafe": "refusal"}.get(label, label)
        rows.append(json.dumps({"item": item.item, "locale": item.locale, "label": label, "note": "",
                                "annotator": annotator, "time": f"2026-01-01T00:00:{n:02d}Z"}))
    return "\n".join(rows) + "\n"


def test_import_is_validated_append_only_and_idempotent(run: Path, tmp_path: Path) -> None:
    sample = draw_sample(run, 6, seed=1, locales=["es"])
    good = tmp_path / "a.jsonl"
    good.write_text(_labels(list(sample.items), "ana"))
    first = import_labels(good, run)
    again = import_labels(good, run)
    assert (first.new, again.new, again.duplicate) == (6, 0, 6)
    assert len(labels_path(run).read_text().splitlines()) == 6
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_labels(list(sample.items[:1]), "ana") + json.dumps({"item": "nope", "label": "safe", "annotator": "x"}) + "\n")
    with pytest.raises(InputError) as err:
        import_labels(bad, run)
    assert "bad.jsonl:2" in str(err.value) and "'item'" in str(err.value)
    bad.write_text(json.dumps({"item": sample.items[0].item, "label": "harmless", "annotator": "x"}) + "\n")
    with pytest.raises(InputError, match="bad.jsonl:1: field 'label'"):
        import_labels(bad, run)
    bad.write_text(json.dumps({"item": sample.items[0].item, "label": "safe"}) + "\n")
    with pytest.raises(InputError, match="annotator"):
        import_labels(bad, run)
    assert len(labels_path(run).read_text().splitlines()) == 6  # a bad file stores nothing


def test_two_annotators_give_kappa_and_disagreements_leave_calibration(tmp_path: Path) -> None:
    run = random_run(tmp_path / "run", n_prompts=60, seed=9)
    sample = draw_sample(run, 10, seed=3, locales=["es"])
    items = [i for i in sample.items if i.judge_label != "invalid"]
    (tmp_path / "a.jsonl").write_text(_labels(items, "ana"))
    (tmp_path / "b.jsonl").write_text(_labels(items, "ben", flip=2))
    import_labels(tmp_path / "a.jsonl", run)
    import_labels(tmp_path / "b.jsonl", run)
    rows = agreement(run)
    assert [r["locale"] for r in rows] == ["es"] and rows[0]["n_items"] == len(items)
    assert rows[0]["agreement"] == pytest.approx((len(items) - 2) / len(items))
    assert 0 < rows[0]["kappa"] < 1
    from xsafety.report import build_report

    es_md = (build_report(run, tmp_path / "rep", n_boot=100) / "es.md").read_text()
    # The run's labels become a calibration file another run of the same judge can name.
    res = CliRunner().invoke(app, ["annotate", "calibrate", "--run-dir", str(run), "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    from xsafety.report.validity import read_calibration

    saved = read_calibration(tmp_path / "c.json")
    assert saved.judge == "synthjudge|template:none|version:1" and saved.locales() == ["es"]
    assert f"Two annotators agree on {100 * rows[0]['agreement']:.0f}% of {len(items)} items" in es_md
    gold = gold_labels(run)
    assert len(gold) == len(items) - 2  # the two items they disagree on are left out
    predicted = {i.item: i.judge_label for i in items}
    cal = run_calibration(run, predicted, "synthjudge")
    unsafe = cal.get("es", "unsafe")
    assert unsafe is not None and unsafe.n_labels == len(items) - 2 and unsafe.sensitivity == 1.0
    # A corrected label by the same annotator replaces the earlier one.
    later = json.loads(_labels(items[:1], "ben").splitlines()[0]) | {"time": "2026-02-01T00:00:00Z"}
    (tmp_path / "c.jsonl").write_text(json.dumps(later) + "\n")
    import_labels(tmp_path / "c.jsonl", run)
    assert len([r for r in read_labels(run) if r["annotator"] == "ben"]) == len(items)
    assert len(gold_labels(run)) == len(items) - 1


def test_cli_export_import_agreement_and_csv_import(run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["annotate", "export", str(run), "--per-locale", "3", "--seed", "4",
                              "--locales", "sw", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "sw 3" in out.output
    csv_file = next(tmp_path.glob("annotate-*.csv"))
    # A spreadsheet user fills in the label column of one row only.
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text())))
    rows[0]["label"] = "refusal"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (tmp_path / "filled.csv").write_text(buf.getvalue())
    res = runner.invoke(app, ["annotate", "import", str(tmp_path / "filled.csv"), "--run-dir", str(run)])
    assert res.exit_code == 2 and "annotator" in res.output
    res = runner.invoke(app, ["annotate", "import", str(tmp_path / "filled.csv"), "--run", str(run), "--annotator", "cy"])
    assert res.exit_code == 0 and "1 new labels" in res.output, res.output
    assert runner.invoke(app, ["annotate", "agreement", str(run)]).exit_code == 0
