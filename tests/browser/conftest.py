"""The ``browser`` fixture: headless system Chromium for the tests of this directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, Browser
from playwright.sync_api import expect, sync_playwright


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Headless system Chromium with a fresh profile, every page wait bounded by
    ``WAIT_MS``; the test fails if a page raised a script error."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}, and the browser tests need it: "
            "`apt-get install chromium` (.ci/run does), or set PLAIT_CHROMIUM to another path",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 800, "height": 600},
            timeout=15_000,
        )
        context.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)
        browser = Browser(context)
        try:
            yield browser
        finally:
            context.close()
        assert browser.errors == [], "the pages raised script errors"
