"""The chat demo's page in headless Chromium: three users join a room, chat, type, lose
their connection and leave, and each page shows what it should; a flood is limited.

Screenshots of the pages at each step (a wide page and a phone-sized one) are saved when
``PLAIT_SCREENSHOTS`` names a directory; they are not part of the repository::

    PLAIT_SCREENSHOTS=/tmp/chat-shots pytest -p no:cacheprovider tests/browser/test_chat_browser.py

The tests with Redis (a killed server, two processes) are in ``test_chat_redis_browser.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from _browser import WORKERS, Browser, Worker, serve
from examples.chat import app
from playwright.sync_api import Page, expect

from plait.testing import run_hypercorn

SHOTS = os.environ.get("PLAIT_SCREENSHOTS")
CLOCK = re.compile(r"^\d{1,2}:\d{2}( [AP]M)?$")
PHONE = {"width": 375, "height": 700}


def screenshot(page: Page, name: str) -> None:
    """Save the page as ``<PLAIT_SCREENSHOTS>/<name>.png``, if that is set."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=Path(SHOTS) / f"{name}.png")


def join(page: Page, url: str, room: str, name: str) -> None:
    """Open the chat page, join ``room`` as ``name`` and wait until it is connected."""
    # Loading the page and its scripts from a server just started, beside a busy test
    # run on two cores, has taken over the 5 s every other wait gets.
    page.goto(f"{url}?room={room}", timeout=15_000)
    page.fill("#name", name)
    page.click("#join-button")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#status")).to_have_text(f"Connected as {name}")
    expect(page.locator("#room-name")).to_have_text(room)


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")
    expect(page.locator("#text")).to_have_value("")


def texts(page: Page) -> list[str]:
    return page.locator("#messages li.message .text").all_inner_texts()


class Cutter:
    """A TCP proxy in front of the server whose connections the test cuts, as a network
    that goes away would: no close frame, the page sees 1006. While cut, new
    connections are refused too, until :meth:`mend`."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.open = True
        self.stopped = False
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.open:
                client.close()  # refused, as by a network still down
                continue
            server = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with self.lock:
                    self.sockets.discard(end)
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        with self.lock:
            cut, self.sockets = self.sockets, set()
        for end in cut:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def mend(self) -> None:
        self.open = True

    def close(self) -> None:
        self.stopped = True
        self.cut()
        self.listener.close()


@pytest.mark.parametrize("worker", WORKERS)
def test_three_users_join_chat_type_lose_the_connection_and_leave(
    browser: Browser, worker: Worker
) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    with serve(app, worker) as server:
        cutter = Cutter(server.port)  # bob's connection goes through it
        try:
            ada, bob, cy = browser.page(), browser.page(), browser.page()
            cy.set_viewport_size(PHONE)  # cy reads on a phone
            join(ada, server.url("/", scheme="http"), room, "ada")
            join(bob, cutter.url(), room, "bob")
            expect(ada.locator("#messages li.event")).to_have_text(["bob joined"])
            say(ada, "hello")
            say(bob, "hi ada")
            for page in (ada, bob):
                expect(page.locator("#messages li.message .text")).to_have_text(["hello", "hi ada"])
            # your own messages are marked, and every message has its time
            expect(ada.locator("#messages li.message.mine .text")).to_have_text(["hello"])
            expect(bob.locator("#messages li.message.mine .text")).to_have_text(["hi ada"])
            expect(ada.locator("#messages li.message time")).to_have_text([CLOCK, CLOCK])

            # cy, late: the room's history and everyone in it, herself marked
            join(cy, server.url("/", scheme="http"), room, "cy")
            expect(cy.locator("#messages li.message .text")).to_have_text(["hello", "hi ada"])
            expect(cy.locator("#messages li.message .user")).to_have_text(["ada", "bob"])
            expect(cy.locator("#messages li.message time")).to_have_text([CLOCK, CLOCK])
            for page in (ada, bob, cy):
                expect(page.locator("#members li")).to_have_text(["ada", "bob", "cy"])
                expect(page.locator("#member-count")).to_have_text("(3)")
            expect(cy.locator("#members li.me")).to_have_text(["cy"])
            # a phone: no scrolling sideways, the members still shown
            assert cy.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
            expect(cy.locator("#members")).to_be_visible()
            screenshot(cy, f"{worker}-1-phone-joined")

            # typing: shown to the others, not to the typist, and cleared
            ada.locator("#text").press_sequentially("typing a l")
            for page in (bob, cy):
                expect(page.locator("#typing")).to_have_text("ada is typing…")
                expect(page.locator("#members li.typing")).to_have_text(["ada"])
            expect(ada.locator("#typing")).to_have_text("")
            screenshot(bob, f"{worker}-2-typing")
            ada.fill("#text", "")
            ada.locator("#text").dispatch_event("input")
            for page in (bob, cy):
                expect(page.locator("#typing")).to_have_text("")

            # bob's connection is cut, and stays down while the others talk
            cutter.cut()
            expect(bob.locator("#status")).to_have_attribute("data-state", "closed")
            expect(bob.locator("#status")).to_contain_text("Disconnected (1006)")
            missed = [f"while bob is away {number}" for number in range(4)]
            for number, text in enumerate(missed):
                say(ada if number % 2 else cy, text)
            expect(cy.locator("#messages li.message .text")).to_have_text(
                ["hello", "hi ada", *missed]
            )
            screenshot(bob, f"{worker}-3-disconnected")
            cutter.mend()
            expect(bob.locator("#status")).to_have_attribute("data-state", "open")
            say(bob, "back")  # after what he missed: each message once, in order
            everything = ["hello", "hi ada", *missed, "back"]
            for page in (ada, bob, cy):
                expect(page.locator("#messages li.message .text")).to_have_text(everything)
            expect(bob.locator("#messages li.notice")).to_have_count(0)  # nothing lost
            expect(bob.locator("#members li")).to_have_text(["ada", "bob", "cy"])

            # cy leaves: gone from the others' lists
            cy.click("#leave-button")
            expect(cy.locator("#join")).to_be_visible()
            for page in (ada, bob):
                expect(page.locator("#members li")).to_have_text(["ada", "bob"])
                expect(page.locator("#messages li.event").last).to_have_text("cy left")
            screenshot(ada, f"{worker}-4-after-cy-left")
        finally:
            cutter.close()


def test_a_flood_is_limited_with_a_notice_and_spares_the_others(browser: Browser) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    with serve(app) as server:
        eve, ada = browser.page(), browser.page()
        join(eve, server.url("/", scheme="http"), room, "eve")
        join(ada, server.url("/", scheme="http"), room, "ada")
        eve.evaluate(
            """() => {
                const text = document.getElementById("text");
                const form = document.getElementById("say");
                for (let number = 0; number < 30; number++) {
                    text.value = `flood ${number}`;
                    form.requestSubmit();
                }
            }"""
        )
        expect(eve.locator("#alert")).to_be_visible()
        # the messages' budget, or the route's flood guard behind it: which one answers last
        expect(eve.locator("#alert")).to_contain_text("Slow down: at most ")
        screenshot(eve, "flood")
        say(ada, "still fine")
        expect(eve.locator("#messages li.message .text").last).to_have_text("still fine")
        heard = texts(ada)
        assert heard[-1] == "still fine"
        assert 10 <= len(heard) - 1 < 30  # the burst and a few more, not the flood
        assert heard[:-1] == [f"flood {number}" for number in range(len(heard) - 1)]
        # the first refused is back in eve's input (the flood guard's refusals name none)
        assert eve.input_value("#text").startswith(f"flood {len(heard) - 1} ")
        expect(ada.locator("#alert")).to_be_hidden()


def frames_sent(page: Page) -> list[str]:
    """What the page sends on its WebSockets from now on, as the server receives it."""
    sent: list[str] = []
    page.on(
        "websocket",
        lambda socket: socket.on(
            "framesent", lambda payload: sent.append(payload if isinstance(payload, str) else "")
        ),
    )
    return sent


@pytest.mark.parametrize("worker", WORKERS)
def test_typing_and_sending_a_message_every_0_35_s_loses_none(
    browser: Browser, worker: Worker
) -> None:
    # Issue 18, point 4: each message cost three frames (typing on, typing off, say)
    # against one limit, so at this pace messages 8 to 11 of 12 were refused.
    room = f"room-{uuid.uuid4().hex[:8]}"
    with serve(app, worker) as server:
        ada, bob = browser.page(), browser.page()
        sent = frames_sent(ada)
        join(ada, server.url("/", scheme="http"), room, "ada")
        join(bob, server.url("/", scheme="http"), room, "bob")
        said = [f"message {number} from ada" for number in range(12)]
        start = time.monotonic()
        for number, text in enumerate(said):
            time.sleep(max(0.0, start + 0.35 * number - time.monotonic()))
            ada.locator("#text").press_sequentially(text)  # key by key: typing notices go
            ada.press("#text", "Enter")
        for page in (ada, bob):
            expect(page.locator("#messages li.message .text")).to_have_text(said)
        expect(ada.locator("#alert")).to_be_hidden()
        expect(ada.locator("#text")).to_have_value("")
        assert any('"typing":true' in frame for frame in sent)  # the others were told
        assert sum('"type":"say"' in frame for frame in sent) == 12


@pytest.mark.parametrize("worker", WORKERS)
def test_a_message_over_the_limit_stays_in_the_input(browser: Browser, worker: Worker) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    with serve(app, worker) as server:
        ada, bob = browser.page(), browser.page()
        join(ada, server.url("/", scheme="http"), room, "ada")
        join(bob, server.url("/", scheme="http"), room, "bob")
        quick = [f"quick {number}" for number in range(14)]
        ada.evaluate(
            """(quick) => {
                const text = document.getElementById("text");
                const form = document.getElementById("say");
                for (const said of quick) {
                    text.value = said;
                    form.requestSubmit();
                }
            }""",
            quick,
        )
        expect(ada.locator("#alert")).to_contain_text("Slow down: at most 5 messages per 1 s")
        # What the room got is the burst (and what came back meanwhile), in order; the
        # rest is back in the input, in order, not lost.
        deadline = time.monotonic() + 5
        while True:
            heard, left = texts(bob), ada.input_value("#text")
            if left and heard == quick[: len(heard)] and left == " ".join(quick[len(heard) :]):
                break
            assert time.monotonic() < deadline, f"the room got {heard}, the input holds {left!r}"
            time.sleep(0.05)
        assert 10 <= len(heard) < len(quick)
        screenshot(ada, f"{worker}-refused")
        time.sleep(0.5)  # the budget comes back
        ada.press("#text", "Enter")
        expect(ada.locator("#text")).to_have_value("")
        expect(bob.locator("#messages li.message .text").last).to_have_text(
            " ".join(quick[len(heard) :])
        )
        assert texts(bob)[: len(heard)] == heard


@pytest.mark.parametrize(
    ("path", "content_type", "contains"),
    [
        ("/", "text/html; charset=utf-8", b"<title>plait chat</title>"),
        ("/chat.js", "text/javascript; charset=utf-8", b'from "/plait.js"'),
        ("/chat.css", "text/css; charset=utf-8", b"#messages"),
        ("/favicon.svg", "image/svg+xml", b"<svg"),
        ("/favicon.ico", "image/svg+xml", b"<svg"),
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
