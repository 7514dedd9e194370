"""The dashboard example's page in headless Chromium: tagged streams, each in its own list.

The page (``examples/dashboard_static``) connects plait.js to ``/dashboard``, whose two
streams arrive on one socket as ``{"stream": name, "data": item}``.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _browser import WORKERS, Browser, Worker, serve
from examples.dashboard import app
from playwright.sync_api import expect

STATIC = Path(__file__).resolve().parents[2] / "examples" / "dashboard_static"


@pytest.mark.parametrize("worker", WORKERS)
def test_each_stream_shows_its_items_in_its_own_list(browser: Browser, worker: Worker) -> None:
    with serve(app, worker) as server:
        page = browser.page()
        page.goto(server.url("/", scheme="http"))
        expect(page.locator("#status")).to_have_attribute("data-state", "open")
        page.fill("#every", "0.05")
        page.click("#speed button")
        # the listener's reply is not tagged: the page shows it apart from both lists
        expect(page.locator("#setting")).to_have_text("The ticker ticks every 0.05 s.")
        ticker = page.locator("#ticker li")
        expect(ticker).to_have_count(10)  # the last ten: fast, now
        ticks = [int(text) for text in ticker.all_text_contents()]
        assert ticks == list(range(ticks[0], ticks[0] + 10))
        clock = page.locator("#clock li")
        expect(clock.nth(1)).to_be_attached()  # once a second: the first two
        readings = clock.all_text_contents()[:2]
        # a time of day (the server's wall clock), not seconds of a monotonic clock
        assert all(re.search(r"\b\d{1,2}:\d{2}:\d{2}\b", text) for text in readings), readings
        assert not any(re.search(r"\d{4,}", text) for text in readings), readings
        assert readings[0] != readings[1], readings  # a second apart


def test_the_page_is_served_over_http() -> None:
    with serve(app) as server:
        for path, file, media_type in [
            ("/", "index.html", "text/html; charset=utf-8"),
            ("/dashboard.js", "dashboard.js", "text/javascript; charset=utf-8"),
        ]:
            with urllib.request.urlopen(server.url(path, scheme="http"), timeout=5) as response:
                assert response.headers["content-type"] == media_type
                assert response.read() == (STATIC / file).read_bytes()
        for missing in ("/index.html", "/dashboard_static/dashboard.js", "/app.py"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(server.url(missing, scheme="http"), timeout=5)
            assert info.value.code == 404
            info.value.close()
