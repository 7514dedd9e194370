"""plait.js in headless Chromium against real hypercorn (asyncio and trio workers).

Each test opens ``probe.html`` (see ``_probe.py``), which connects the client to one
route and lists what it reports: states, messages, recovery notices. The routes drop
connections from the server side mid-stream, resume early, repeat ids, ping, and close
with the codes a test asks for.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from _browser import WORKERS, Browser, Worker, serve
from _probe import IDLE_TIMEOUT, probe_app
from playwright.sync_api import Page, expect
from websockets.sync.client import connect

from plait.testing import HypercornServer

QUICK: dict[str, Any] = {"backoff": {"min": 50, "max": 200}}  # retries within a test's time
PUBLISHED = 60
REFUSED = "() => { try { client.send(%s); } catch (error) { return error.message; } }"


def open_probe(browser: Browser, server: HypercornServer, route: str, **options: Any) -> Page:
    """A new page whose client connects to ``route`` with ``options``."""
    page = browser.page()
    query = urlencode({"ws": route, "options": json.dumps(options)})
    page.goto(server.url(f"/?{query}", "http"))
    return page


def states(page: Page) -> list[str]:
    return page.locator("#states li").all_text_contents()


@pytest.mark.parametrize("worker", WORKERS)
@pytest.mark.parametrize(("names", "resume"), [("a", "single"), ("a,b", "per-channel")])
def test_a_resumed_page_shows_every_message_once_though_the_server_drops_it(
    browser: Browser, worker: Worker, names: str, resume: str
) -> None:
    """The server closes the page's connection every 9 messages while 60 are published;
    each resume starts 3 ids early. The page lists every message once, in order."""
    channels = names.split(",")
    with serve(probe_app(), worker) as server:
        feed = f"/feed/{names}?drop_after=9&overlap=3"
        page = open_probe(browser, server, feed, resume=resume, **QUICK)
        expect(page.locator("#state")).to_have_text("open")
        with connect(server.url(f"/publish/{names}?count={PUBLISHED}&every=0.02")) as publisher:
            assert publisher.recv(timeout=10) == "published"

        expected = [f"{channels[n % len(channels)]}:m{n}" for n in range(PUBLISHED)]
        shown = page.locator("#messages li")
        # Six or more drops, each a backoff and a replay: on a loaded two-core machine the
        # page can still be catching up when the publisher is done.
        catching_up = 20_000
        if len(channels) == 1:
            expect(shown).to_have_text(expected, timeout=catching_up)
        else:
            # resumed, each channel's missed messages come in order, one channel after the other
            expect(shown).to_have_count(PUBLISHED, timeout=catching_up)
            texts = shown.all_text_contents()
            for channel in channels:
                mine = [text for text in texts if text.startswith(f"{channel}:")]
                assert mine == [text for text in expected if text.startswith(f"{channel}:")]
        drops = [state for state in states(page) if state == "closed 1012 service restart"]
        assert len(drops) >= PUBLISHED // 9 - 1, states(page)  # the path was cut mid-stream
        expect(page.locator("#recoveries li")).to_have_count(0)
        expect(page.locator("#state")).to_have_text("open")


def test_duplicates_are_dropped_and_a_recovery_notice_lets_ids_start_over(
    browser: Browser,
) -> None:
    with serve(probe_app()) as server:
        page = open_probe(browser, server, "/scripted", **QUICK)
        expect(page.locator("#messages li")).to_have_text(
            ["c:5-0", "c:6-0", "c:7-0", '{"since":"7-0"}', "c:1-0", "c:2-0"]
        )
        expect(page.locator("#recoveries li")).to_have_text(
            ['{"recovered":false,"channels":["c"]}']
        )


@pytest.mark.parametrize("worker", WORKERS)
def test_the_heartbeat_keeps_an_idle_page_open_past_the_idle_timeout(
    browser: Browser, worker: Worker
) -> None:
    with serve(probe_app(), worker) as server:
        # the client's own timeout (2 s) is longer than the route's ping interval (0.25 s),
        # with room for a loaded machine's delays (0.6 s was seen to trip)
        answering = open_probe(browser, server, "/idle", heartbeat={"timeout": 2000})
        silent = open_probe(browser, server, "/idle", heartbeat=False, backoff={"min": 10_000})
        expect(answering.locator("#state")).to_have_text("open")
        # Without answers the route closes the page: what the heartbeat test guards against.
        expect(silent.locator("#state")).to_have_text(
            re.compile(r"^closed 1001 (idle|heartbeat) timeout$")
        )
        expect(silent.locator("#messages li").first).to_have_text("ping")

        answering.wait_for_timeout(3 * IDLE_TIMEOUT * 1000)
        assert states(answering) == ["connecting", "open"]
        expect(answering.locator("#messages li")).to_have_count(0)  # pings are no messages


def test_a_silent_connection_is_dropped_after_the_clients_heartbeat_timeout(
    browser: Browser,
) -> None:
    with serve(probe_app()) as server:
        page = open_probe(browser, server, "/closer", heartbeat={"timeout": 400}, **QUICK)
        expect(page.locator("#states li").nth(4)).to_have_text("open")
        assert states(page)[:5] == [
            "connecting",
            "open",
            "closed 1006 heartbeat timeout",
            "connecting",
            "open",
        ]


RETRIED = [(1001, "going away"), (1011, "internal error"), (1013, "try again later")]
FINAL = [(1000, "done"), (1008, "policy violation"), (4403, "forbidden")]


def test_the_page_shows_each_state_with_the_close_code_and_reason(browser: Browser) -> None:
    with serve(probe_app()) as server:
        page = open_probe(browser, server, "/closer", **QUICK)
        expect(page.locator("#state")).to_have_text("open")
        page.evaluate("client.send({code: 1012, reason: 'service restart'})")
        expect(page.locator("#states li")).to_have_text(
            ["connecting", "open", "closed 1012 service restart", "connecting", "open"]
        )
        page.evaluate("client.send({code: 4403, reason: 'forbidden'})")
        expect(page.locator("#state")).to_have_text("closed 4403 forbidden")
        assert page.evaluate("[client.state, client.code, client.reason]") == [
            "closed",
            4403,
            "forbidden",
        ]
        closes = page.locator("#states li", has_text="closed")
        assert [item.get_attribute("data-retry") for item in closes.all()] == ["true", "false"]
        refused = page.evaluate(
            "() => { try { client.send({}); } catch (e) { return e.message; } }"
        )
        assert refused == "plait: the connection is closed (4403 forbidden)"
        page.wait_for_timeout(300)
        assert len(states(page)) == 6  # and no retry

        for code, reason in RETRIED + FINAL:
            page.reload()
            expect(page.locator("#state")).to_have_text("open")
            page.evaluate(f"client.send({{code: {code}, reason: {reason!r}}})")
            closed = page.locator("#states li", has_text="closed")
            expect(closed).to_have_text([f"closed {code} {reason}"])
            retried = (code, reason) in RETRIED
            expect(closed).to_have_attribute("data-retry", str(retried).lower())
            if retried:
                expect(page.locator("#states li")).to_have_count(5)
                expect(page.locator("#state")).to_have_text("open")

        page.reload()
        expect(page.locator("#state")).to_have_text("open")
        page.evaluate("client.disconnect()")
        expect(page.locator("#state")).to_have_text("closed 1000")
        page.evaluate("client.connect()")
        expect(page.locator("#states li")).to_have_text(
            ["connecting", "open", "closed 1000", "connecting", "open"]
        )


def test_send_queues_while_reconnecting_and_refuses_beyond_its_buffer(browser: Browser) -> None:
    with serve(probe_app()) as server:
        page = open_probe(browser, server, "/closer", backoff={"min": 1500}, sendBuffer=2)
        expect(page.locator("#state")).to_have_text("open")
        assert page.evaluate("client.send({n: 0})") is True
        expect(page.locator("#messages li")).to_have_text(['{"n":0}'])
        page.evaluate("client.send({code: 1012, reason: 'service restart'})")
        expect(page.locator("#state")).to_have_text("closed 1012 service restart")
        assert page.evaluate("[client.send({n: 1}), client.send({n: 2})]") == [False, False]
        refused = page.evaluate(
            "() => { try { client.send({n: 3}); } catch (e) { return e.message; } }"
        )
        assert refused == "plait: 2 messages already wait for the connection"
        expect(page.locator("#messages li")).to_have_text(['{"n":0}', '{"n":1}', '{"n":2}'])
        expect(page.locator("#state")).to_have_text("open")
