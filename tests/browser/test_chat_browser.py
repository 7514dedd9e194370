"""The chat example's page in a real browser: two users in one room, on hypercorn's trio worker.

Headless Chromium from the system (Debian's ``chromium`` package; ``.ci/run`` installs it)
is driven by Playwright, which downloads no browser here. Without Chromium the test fails,
it does not skip.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from examples.chat import app
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright

from plait.testing import run_hypercorn

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "test-artifacts" / "chat-browser.png"
CHROMIUM = Path(os.environ.get("PLAIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in a container: Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 5_000  # every wait on a page is bounded by this


def open_chromium(playwright: Playwright, profile: Path) -> BrowserContext:
    """Headless system Chromium with a fresh profile; every page wait bounded."""
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 800, "height": 600},
        timeout=15_000,
    )
    context.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    return context


def join(page: Page, url: str, room: str, name: str) -> None:
    """Open the chat page, join ``room`` as ``name`` and wait until it is connected."""
    page.goto(url)
    page.fill("#room", room)
    page.fill("#name", name)
    page.click("#join-button")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#status")).to_have_text(f"Connected to {room} as {name}")


def test_a_message_sent_on_one_page_appears_on_the_other(tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}, and the browser test needs it: "
            "`apt-get install chromium` (.ci/run does), or set PLAIT_CHROMIUM to another path",
            pytrace=False,
        )
    with run_hypercorn(app, worker_class="trio") as server, sync_playwright() as playwright:
        context = open_chromium(playwright, tmp_path / "chromium-profile")
        try:
            ada = context.pages[0] if context.pages else context.new_page()
            bob = context.new_page()
            script_errors: list[str] = []
            for page in (ada, bob):
                page.on("pageerror", lambda error: script_errors.append(str(error)))
            join(ada, server.url("/", scheme="http"), "browser-test", "ada")
            join(bob, server.url("/", scheme="http"), "browser-test", "bob")
            # ada seeing bob arrive shows that her subscription is live before bob speaks
            expect(ada.locator("#messages li.join")).to_have_text(["bob joined"])

            bob.fill("#text", "hello from bob")
            bob.press("#text", "Enter")

            said = ada.locator("#messages li.message")
            expect(said.locator(".text")).to_have_text(["hello from bob"])
            expect(said.locator(".user")).to_have_text(["bob"])
            expect(bob.locator("#messages li.message .text")).to_have_text(["hello from bob"])
            expect(bob.locator("#text")).to_have_value("")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            ada.screenshot(path=SCREENSHOT)
            assert script_errors == []
        finally:
            context.close()


@pytest.mark.parametrize(
    ("path", "content_type", "contains"),
    [
        ("/", "text/html; charset=utf-8", b"<title>plait chat</title>"),
        ("/chat.js", "text/javascript; charset=utf-8", b"new WebSocket("),
        ("/chat.css", "text/css; charset=utf-8", b"#messages"),
    ],
)
def test_the_page_is_served_over_http(path: str, content_type: str, contains: bytes) -> None:
    with run_hypercorn(app, worker_class="trio") as server:
        with urllib.request.urlopen(server.url(path, scheme="http"), timeout=5) as response:
            assert response.status == 200
            assert response.headers["content-type"] == content_type
            assert contains in response.read()
        for missing in ("/app.py", "/static/chat.js", "/../app.py", "/nope"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(server.url(missing, scheme="http"), timeout=5)
            assert info.value.code == 404
            info.value.close()
