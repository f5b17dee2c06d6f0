"""Reports escape every user- and model-supplied string for their format: Markdown (no raw HTML,
links, images or code spans), HTML, and CSV (no cell a spreadsheet would run as a formula)."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
from fault_runs import cli, fast_config
from fault_server import fault_server

from xsafety.report.csvsafe import neutralised
from xsafety.report.markdown import md_code, md_table, md_text

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "![pixel](http://evil.example/p.png)",
    "`code` and \\` escapes",
    "a|b|c",
    "line\nbreak\r\n# heading",
    "&lt;script&gt; <script>alert(1)</script>",
]


def test_markdown_cells_are_inert() -> None:
    table = md_table([{"id": v, "n": 1} for v in HOSTILE], [("prompt", "id", None), ("n", "n", None)])
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(HOSTILE)  # no value broke a row in two
    for line in lines[2:]:
        cells = line.replace("\\|", "").split("|")
        assert len(cells) == 4, line  # no value added a column
    assert "<" not in table and ">" not in table.replace("&gt;", "")
    assert "](" not in table.replace("\\](", "")
    assert "`" not in table.replace("\\`", "")
    assert md_text("plain-id_01") == "plain-id_01"  # ordinary ids are left as they are


def test_code_spans_cannot_be_closed_early() -> None:
    assert "`" not in md_code("run`<img src=x>`dir")


def test_csv_cells_that_would_run_as_formulas_are_neutralised() -> None:
    df = pl.DataFrame({"id": ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tx", "ok", None], "gap": [-1.5, 2, 3, 4, 5, 6, 7]})
    out = neutralised(df)
    assert out["id"].to_list() == ["'=1+1", "'+cmd", "'-2+3", "'@SUM(A1)", "'\tx", "ok", None]
    assert out["gap"].to_list() == df["gap"].to_list()  # numbers stay numbers


def test_a_hostile_model_name_is_escaped_in_every_report_format(tmp_path: Path) -> None:
    name = '=HYPERLINK("http://evil.example")<img src=x onerror=alert(1)>'
    with fault_server() as server:
        cfg = fast_config(tmp_path / "run.toml", tmp_path / "run", server.url)
        text = cfg.read_text().replace('name = "remote"', f"name = '{name}'")
        cfg.write_text(text)
        code, _, err = cli("run", str(cfg))
    assert code == 0, err
    report = tmp_path / "run" / "report"
    seen = False
    for path in report.rglob("*"):
        if path.suffix in (".md", ".html"):
            body = path.read_text(encoding="utf-8")
            assert "<img src=x" not in body, path
            seen = seen or "HYPERLINK" in body
        elif path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                for row in csv.reader(fh):
                    for cell in row:
                        assert not cell.startswith(("=", "+", "@")), (path, cell)
                        if cell.startswith("-"):
                            float(cell)  # only a negative number may start with '-'
    assert seen  # the name is shown, escaped, not dropped
