"""index.html: untrusted model output is escaped, the CSP admits only our script, and the page
renders in headless Chromium without running an injected payload."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest

from xsafety.report import build_report
from xsafety.report.html import SORT_SCRIPT, script_hash
from xsafety.report.synthetic import Outcome, make_prompts, make_translation, write_run

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from screenshot_report import render  # noqa: E402

PAYLOAD = (
    "<script>document.title='PWNED'</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-owned','PWNED')\">"
    "</pre><script>alert(1)</script>"
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("html")
    prompts = make_prompts(36)
    outcomes = []
    for i, p in enumerate(prompts):
        outcomes.append(Outcome(p.id, "en", "refusal" if i % 3 else "unsafe"))
        text = PAYLOAD if i == 0 else ""
        outcomes.append(Outcome(p.id, "es", "unsafe" if i % 2 or i == 0 else "refusal", back_label="unsafe", text=text))
    translations = [make_translation(p, "es") for p in prompts]
    run = write_run(root / "run", prompts, outcomes, translations=translations,
                    info={"resource": {"en": "high", "es": "high"}})
    return build_report(run)


def test_untrusted_text_is_escaped(report: Path) -> None:
    page = (report / "index.html").read_text()
    assert "&lt;script&gt;document.title=&#x27;PWNED&#x27;&lt;/script&gt;" in page
    assert "<script>document.title" not in page
    assert "onerror=\"document" not in page
    # Only our scripts: the sorter, the item explorer, and the explorer's inert JSON data block.
    assert page.count("<script>") == 2
    assert page.count("<script") == 3 and page.count('<script type="application/json"') == 1


def test_csp_admits_only_the_inline_sorter(report: Path) -> None:
    page = (report / "index.html").read_text()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    policy = csp.group(1).replace("&#x27;", "'")
    assert "default-src 'none'" in policy and "img-src data:" in policy
    digest = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy
    assert script_hash() == f"'sha256-{digest}'"
    body = re.search(r"<script>(.*?)</script>", page, re.S)
    assert body is not None and body.group(1) == SORT_SCRIPT


def test_images_embedded_and_files_linked(report: Path) -> None:
    page = (report / "index.html").read_text()
    # The judge judges harm: the forest plot of gaps, then unsafe and refusal maps, each with its gap map.
    assert page.count('src="data:image/png;base64,') == 5
    assert 'href="summary.md"' in page and 'href="es.md"' in page and 'href="tables/gaps_locale.csv"' in page


def _png_pixels(path: Path) -> tuple[int, int, set[bytes]]:
    """Width, height and a sample of distinct pixel values of an RGB(A) 8-bit PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, _, ctype = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    bpp = 4 if ctype == 6 else 3
    stride = width * bpp + 1
    # Filter bytes make raw rows differ from pixels, but distinct byte runs still show content.
    values = {raw[r * stride + 1 + c * bpp: r * stride + 1 + (c + 1) * bpp]
              for r in range(0, height, 37) for c in range(0, width, 11)}
    return width, height, values


@pytest.mark.slow
def test_page_renders_in_chromium_without_running_the_payload(report: Path, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed")
    png = tmp_path / "report.png"
    dom = render(report / "index.html", png)
    assert "<title>xsafety report</title>" in dom
    assert "data-owned" not in dom.split("<body", 1)[1].split(">", 1)[0]
    assert "&lt;script&gt;document.title='PWNED'&lt;/script&gt;" in dom
    # Our sorter ran (the CSP hash admits it) and marked its tables ready.
    assert 'class="sortable" data-ready="1"' in dom
    width, height, values = _png_pixels(png)
    assert (width, height) == (1280, 1600)
    assert len(values) > 20, "screenshot looks blank"
