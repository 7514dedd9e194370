"""The chat example's page in headless Chromium: two users in one room, and a page that
outlives a killed and restarted server (with Redis) without a gap or a duplicate.

Redis is taken from ``PLAIT_REDIS_URL`` (default ``redis://127.0.0.1:6379``); without
one the restart test fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import coredis
import pytest
from _browser import WORKERS, Browser, Worker, serve
from anyio.from_thread import start_blocking_portal
from examples.chat import app
from playwright.sync_api import Page, expect

from plait.channels import Hub, RedisBackend
from plait.testing import run_hypercorn

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "test-artifacts" / "chat-browser.png"
REDIS_URL = os.environ.get("PLAIT_REDIS_URL", "redis://127.0.0.1:6379")


def join(page: Page, url: str, room: str, name: str) -> None:
    """Open the chat page, join ``room`` as ``name`` and wait until it is connected."""
    page.goto(url)
    page.fill("#room", room)
    page.fill("#name", name)
    page.click("#join-button")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator("#status")).to_have_text(f"Connected to {room} as {name}")


def test_a_message_sent_on_one_page_appears_on_the_other(browser: Browser) -> None:
    with serve(app) as server:
        ada = browser.page()
        bob = browser.page()
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


@pytest.mark.parametrize(
    ("path", "content_type", "contains"),
    [
        ("/", "text/html; charset=utf-8", b"<title>plait chat</title>"),
        ("/chat.js", "text/javascript; charset=utf-8", b'from "/plait.js"'),
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


class ChatProcess:
    """``hypercorn examples.chat:app`` in a process of its own, with its rooms in Redis,
    on one port across restarts."""

    def __init__(self, worker: Worker, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.worker = worker
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "CHAT_REDIS_URL": REDIS_URL, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "hypercorn", "-w", "0", "-k", self.worker,
                   "-b", f"127.0.0.1:{self.port}", "examples.chat:app"]  # fmt: skip
        with self.log.open("ab") as log:  # a file: nobody reads a pipe while the test runs
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"hypercorn exited:\n{self.log.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"hypercorn did not listen on {self.port}")

    def kill(self) -> None:
        """SIGKILL: the connections end with no close frame, as when the network goes."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@contextmanager
def chat_process(worker: Worker, log: Path) -> Iterator[ChatProcess]:
    server = ChatProcess(worker, log)
    server.start()
    try:
        server.wait_listening()
        yield server
    finally:
        server.kill()


async def _remove_keys(room: str) -> None:
    async with coredis.Redis.from_url(REDIS_URL) as redis:
        keys = [key async for key in redis.scan_iter(match=f"plait:*{room}")]
        if keys:
            await redis.delete(keys)


# Records what the page's status said, to see the connection that was lost.
WATCH_STATUS = """() => {
    const status = document.getElementById("status");
    window.statuses = [];
    new MutationObserver(() => window.statuses.push(status.textContent))
        .observe(status, { childList: true, characterData: true, subtree: true });
}"""


@pytest.mark.parametrize("worker", WORKERS)
def test_a_page_outlives_a_killed_server_with_no_gap_and_no_duplicate(
    browser: Browser, worker: Worker, tmp_path: Path
) -> None:
    """60 messages are published through Redis; after the 10th the server is killed and
    started again while publishing goes on. The page lists all 60, once each, in order."""
    room = f"restart-{uuid.uuid4().hex}"
    count, kill_after = 60, 10
    with (
        chat_process(worker, tmp_path / "hypercorn.log") as server,
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(Hub(RedisBackend(REDIS_URL, history=100))) as hub,
    ):
        try:
            page = browser.page()
            join(page, f"http://127.0.0.1:{server.port}/", room, "ada")
            texts = page.locator("#messages li.message .text")
            # publish until one arrives: from then on the page's subscription is live
            while not texts.count():
                portal.call(hub.publish, room, {"type": "message", "user": "bot", "text": "ready"})
                page.wait_for_timeout(100)
            page.evaluate(WATCH_STATUS)
            for number in range(count):
                event = {"type": "message", "user": "bot", "text": f"m{number}"}
                portal.call(hub.publish, room, event)
                if number == kill_after:
                    server.kill()
                    server.start()  # publishing goes on while it starts
                time.sleep(0.05)

            shown = page.locator("#messages li.message .text:not(:text-is('ready'))")
            expect(shown).to_have_text([f"m{number}" for number in range(count)], timeout=10_000)
            expect(page.locator("#status")).to_have_attribute("data-state", "open")
            statuses: list[str] = page.evaluate("window.statuses")
            assert any(
                status.startswith("Disconnected (1006); reconnecting") for status in statuses
            )
            expect(page.locator("#messages li.notice")).to_have_count(0)  # nothing was lost
        finally:
            portal.call(_remove_keys, room)
