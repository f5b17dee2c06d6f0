"""Open a report's index.html in headless Chromium: dump its DOM and take a screenshot.

    python scripts/screenshot_report.py RUN_DIR/report/index.html --png shot.png

Prints the screenshot path and whether the page title is intact. Used by
``tests/test_report_html.py`` (through ``render``) and by hand to look at a report.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def find_chromium() -> str | None:
    """Debian's chromium (or any chromium/chrome on PATH)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render(page: Path, png: Path | None = None, *, width: int = 1280, height: int = 1600,
           timeout: float = 90.0) -> str:
    """Load ``page`` in headless Chromium; returns the DOM after scripts ran, writes ``png`` if given."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium is not installed")
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="xsafety-chromium-") as profile:
        base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [*base, "--virtual-time-budget=2000", "--dump-dom", url],
            capture_output=True, text=True, timeout=timeout, check=True,
        ).stdout
        if png is not None:
            subprocess.run(
                [*base, f"--window-size={width},{height}", f"--screenshot={png.resolve()}", url],
                capture_output=True, text=True, timeout=timeout, check=True,
            )
    return dom


def main() -> int:
    """Command line entry: render one page."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", type=Path)
    parser.add_argument("--png", type=Path, default=Path("report.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args()
    dom = render(args.page, args.png, width=args.width, height=args.height)
    intact = "<title>xsafety report</title>" in dom or "<title>xsafety: runs compared</title>" in dom
    print(f"screenshot: {args.png}  title intact: {intact}  dom: {len(dom)} chars")
    return 0 if intact else 1


if __name__ == "__main__":
    sys.exit(main())
