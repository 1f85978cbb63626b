"""Headless Chromium for page tests: Debian's ``chromium`` driven by Playwright."""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """The Chromium executable: ``$DERMLEARN_CHROMIUM`` or the first on PATH."""
    env = os.environ.get("DERMLEARN_CHROMIUM")
    if env:
        return env if os.path.exists(env) else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@contextmanager
def browser_page(width: int = 1200, height: int = 900) -> Iterator:
    """A Playwright page in headless Chromium; skips the test with the reason when unavailable."""
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="playwright is not installed (dev extras)")
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium found (install Debian's `chromium`, e.g. `make browser`, or "
                    "set DERMLEARN_CHROMIUM)")
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True,
                                     args=["--no-sandbox", "--disable-gpu",
                                           "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


BROKEN_IMAGES_JS = """() => Array.from(document.images)
    .filter(img => !img.complete || img.naturalWidth === 0).map(img => img.alt || img.src.slice(0, 60))"""
