"""Open a report page in headless Chromium and check it really renders offline: every image decoded,
the tables there, nothing fetched from elsewhere; saves a screenshot beside it for a look.

Chromium is Debian's package (``apt-get install chromium``); the flags keep it from reaching for the
network, which this machine refuses (and a self-contained page never needs).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=10000")


class RenderError(RuntimeError):
    """The page did not render as a self-contained report should."""


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _chromium(browser: str, args: list[str]) -> str:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=180)
    if proc.returncode:
        raise RenderError(f"chromium exited with {proc.returncode}: {proc.stderr.strip()[-600:]}")
    return proc.stdout


def check_page(page: Path, screenshot: Path | None = None, browser: str | None = None) -> dict[str, int]:
    """Images decoded / total and table count as the browser saw them; raises :class:`RenderError`."""
    browser = browser or find_chromium()
    if browser is None:
        raise RenderError("no Chromium found (apt-get install chromium, or set CHROMIUM=/path/to/chrome)")
    source = page.read_text()
    external = re.findall(r'(?:src|href)\s*=\s*"((?!data:|#)[^"]*)"', source)
    if external:
        raise RenderError(f"the page loads {len(external)} resources from elsewhere, e.g. {external[0][:80]}")
    url = page.resolve().as_uri()
    dom = _chromium(browser, ["--dump-dom", url])
    found = re.search(r'data-rendered="(\d+)/(\d+)"', dom)
    if not found:
        raise RenderError("the page's load handler never ran (the browser did not finish loading it)")
    ok, total = int(found.group(1)), int(found.group(2))
    tables = dom.count("<table")
    if total == 0 or ok != total:
        raise RenderError(f"only {ok} of {total} images decoded")
    if tables == 0:
        raise RenderError("no tables rendered")
    if screenshot is not None:
        _chromium(browser, [f"--screenshot={screenshot.resolve()}", "--window-size=1500,2400", url])
        if not screenshot.is_file() or screenshot.stat().st_size == 0:
            raise RenderError(f"chromium wrote no screenshot to {screenshot}")
    return {"images": total, "images_decoded": ok, "tables": tables}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.check_html", description=__doc__.split("\n")[0])
    p.add_argument("page", type=Path)
    p.add_argument("--screenshot", type=Path, help="default: PAGE with .png")
    p.add_argument("--skip-without-browser", action="store_true", help="exit 0 with a note where no Chromium is "
                   "installed (make report on a machine without one)")
    args = p.parse_args(argv)
    if args.skip_without_browser and find_chromium() is None:
        print(f"note: no Chromium here, {args.page} was not checked in a browser (apt-get install chromium)")
        return 0
    shot = args.screenshot or args.page.with_suffix(".png")
    try:
        seen = check_page(args.page, shot)
    except (RenderError, OSError, subprocess.TimeoutExpired) as e:
        print(f"error: {args.page}: {e}", file=sys.stderr)
        return 1
    print(f"{args.page}: rendered in headless Chromium: {seen['images_decoded']}/{seen['images']} images, "
          f"{seen['tables']} tables; screenshot {shot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
