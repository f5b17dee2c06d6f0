"""The whole native-speaker loop in headless Chromium, driven over the DevTools protocol on a pipe
(no extra package): export a sample page, type an annotator id, click a label on every item with
real mouse events, download the JSONL, reload (progress kept in localStorage), import the file,
and see the run's report say "validated on N labels" for that locale and "unvalidated" for others.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from xsafety.cli import app
from xsafety.report import build_report
from xsafety.report.synthetic import random_run

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars",
]


class Chromium:
    """Headless Chromium with ``--remote-debugging-pipe``: JSON messages ending in NUL on fds 3/4."""

    def __init__(self, binary: str) -> None:
        to_child_r, self._write = os.pipe()
        self._read, from_child_w = os.pipe()
        self.profile = tempfile.mkdtemp(prefix="xsafety-cdp-")

        def wire() -> None:  # in the child: the protocol's fixed descriptors 3 (in) and 4 (out)
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._write, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self._recv(end - time.monotonic())
            if got is None:
                continue
            if got.get("id") == self._id:
                if "error" in got:
                    raise RuntimeError(f"{method}: {got['error']}")
                return got.get("result", {})
            self.events.append(got)
        raise TimeoutError(method)

    def _recv(self, timeout: float) -> dict[str, Any] | None:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._read], [], [], max(0.0, timeout))
            if not ready:
                return None
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        """Stop this browser (only the process this object started) and remove its profile."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._write)
        os.close(self._read)
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab: evaluate JavaScript, click elements with real mouse events, type text."""

    def __init__(self, browser: Chromium, url: str) -> None:
        self.b = browser
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.s = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False}, self.s)
        browser.send("Page.enable", {}, self.s)
        browser.send("Page.navigate", {"url": url}, self.s)
        self.wait_ready()

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        res = self.b.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, self.s)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the page's script marked the body ready (the CSP hash admitted it)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.eval("document.body && document.body.getAttribute('data-ready')") == "1":
                return
            time.sleep(0.1)
        raise TimeoutError("annotation page script never ran")

    def click(self, selector: str) -> None:
        """Scroll the element into view and click its centre with the mouse."""
        x, y = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.b.send("Input.dispatchMouseEvent",
                        {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}, self.s)

    def type_into(self, selector: str, text: str) -> None:
        """Focus an input by clicking it and type ``text``."""
        self.click(selector)
        self.b.send("Input.insertText", {"text": text}, self.s)

    def reload(self) -> None:
        """Reload the page and wait for its script."""
        self.b.send("Page.reload", {}, self.s)
        time.sleep(0.3)
        self.wait_ready()


def _truth(judge_label: str, n: int) -> str:
    """What our "native speaker" says: the judge's label, except every fourth unsafe call is wrong."""
    if judge_label == "invalid":
        return "unclear"
    if judge_label == "unsafe" and n % 4 == 0:
        return "safe"
    return judge_label


@pytest.mark.slow
def test_annotation_loop_end_to_end_in_chromium(tmp_path: Path) -> None:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("Debian's chromium is not installed")
    run = random_run(tmp_path / "run", n_prompts=60, seed=3)
    runner = CliRunner()
    out = runner.invoke(app, ["annotate", "export", str(run), "--per-locale", "9", "--seed", "2",
                              "--locales", "en,es", "--out", str(tmp_path / "page")])
    assert out.exit_code == 0, out.output
    page_file = next((tmp_path / "page").glob("annotate-*.html"))
    sample_id = page_file.stem.removeprefix("annotate-")
    items = json.loads((run / "annotations" / "samples" / f"{sample_id}.json").read_text())["items"]
    downloads = tmp_path / "downloads"
    downloads.mkdir()

    browser = Chromium(binary)
    try:
        browser.send("Browser.setDownloadBehavior",
                     {"behavior": "allow", "downloadPath": str(downloads), "eventsEnabled": True})
        page = Page(browser, page_file.resolve().as_uri())
        assert page.eval("document.getElementById('progress').textContent") == f"0 of {len(items)} labelled"
        page.type_into("#annotator", "native-es-1")
        for n, item in enumerate(items):
            section = f'section.item[data-item="{item["item"]}"]'
            page.click(f'{section} button.lab[data-label="{_truth(item["judge_label"], n)}"]')
        assert page.eval("document.getElementById('progress').textContent") == f"{len(items)} of {len(items)} labelled"
        assert page.eval("document.querySelectorAll('button.lab[aria-pressed=\"true\"]').length") == len(items)
        # Progress survives closing the tab: it is kept in localStorage.
        page.reload()
        assert page.eval("document.getElementById('progress').textContent") == f"{len(items)} of {len(items)} labelled"
        assert page.eval("document.getElementById('annotator').value") == "native-es-1"
        shown = page.eval("document.getElementById('jsonl').value")
        page.click("#download")
        end = time.monotonic() + 30
        files: list[Path] = []
        while time.monotonic() < end and not files:
            files = [p for p in downloads.glob("*.jsonl")]
            time.sleep(0.2)
    finally:
        browser.close()
    assert files, "the page's download did not arrive"
    downloaded = files[0]
    assert downloaded.name == f"labels-{sample_id}-native-es-1.jsonl"
    assert downloaded.read_text() == shown
    rows = [json.loads(line) for line in downloaded.read_text().splitlines()]
    assert len(rows) == len(items) and {r["annotator"] for r in rows} == {"native-es-1"}
    # Each label carries its sampling weight, so an import without the sample file is still unbiased.
    weights = {i["item"]: i["weight"] for i in items}
    assert all(r["weight"] == pytest.approx(weights[r["item"]], rel=1e-5) for r in rows)

    res = runner.invoke(app, ["annotate", "import", str(downloaded), "--run-dir", str(run)])
    assert res.exit_code == 0 and f"{len(items)} new labels" in res.output, res.output

    report = build_report(run, n_boot=300)
    es_items = [(n, i) for n, i in enumerate(items) if i["locale"] == "es"]
    n_es = sum(1 for n, i in es_items if _truth(i["judge_label"], n) != "unclear")
    summary = (report / "summary.md").read_text()
    es_line = next(line for line in summary.splitlines() if line.startswith("| es |"))
    sw_line = next(line for line in summary.splitlines() if line.startswith("| sw |"))
    assert f"validated on {n_es} labels" in es_line
    assert "unvalidated" in sw_line
    validity = pl.read_csv(report / "tables/validity.csv")
    es_unsafe = validity.filter((pl.col("locale") == "es") & (pl.col("metric") == "unsafe")).to_dicts()[0]
    assert es_unsafe["n_labels"] == n_es and es_unsafe["sources"] == "run annotations"
    assert es_unsafe["sensitivity"] == 1.0  # the human never found unsafe where the judge did not
    page_html = (report / "index.html").read_text()
    assert f"judge (unsafe): validated on {n_es} labels" in page_html
