"""The chat demo's page with its rooms in Redis: pages on two server processes share one
room (messages and members), and a page outlives a killed and restarted server without a
gap or a duplicate.

Redis is taken from ``PLAIT_REDIS_URL`` (default ``redis://127.0.0.1:6379``); without
one these tests fail. ``PLAIT_SCREENSHOTS=<dir>`` saves screenshots, as in
``test_chat_browser.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import coredis
import pytest
from _browser import WORKERS, Browser, Worker
from anyio.from_thread import start_blocking_portal
from playwright.sync_api import expect
from test_chat_browser import join, say, screenshot

from plait.channels import Hub, RedisBackend

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("PLAIT_REDIS_URL", "redis://127.0.0.1:6379")


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

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

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
        keys = [key async for key in redis.scan_iter(match=f"plait:*{room}*")]
        if keys:
            await redis.delete(keys)


def test_pages_on_two_processes_share_the_room_and_its_members(
    browser: Browser, tmp_path: Path
) -> None:
    room = f"two-{uuid.uuid4().hex}"
    with (
        chat_process("asyncio", tmp_path / "asyncio.log") as first,
        chat_process("trio", tmp_path / "trio.log") as second,
        start_blocking_portal() as portal,
    ):
        try:
            ada, bob, cy = browser.page(), browser.page(), browser.page()
            join(ada, first.url(), room, "ada")
            join(bob, second.url(), room, "bob")
            say(ada, "hello from the asyncio process")
            say(bob, "hello from the trio process")
            join(cy, first.url(), room, "cy")  # late: the history comes from Redis
            said = ["hello from the asyncio process", "hello from the trio process"]
            for page in (ada, bob, cy):
                expect(page.locator("#messages li.message .text")).to_have_text(said)
                expect(page.locator("#members li")).to_have_text(["ada", "bob", "cy"])
            bob.locator("#text").press_sequentially("typ")
            expect(cy.locator("#typing")).to_have_text("bob is typing…")
            screenshot(cy, "two-processes")
            bob.click("#leave-button")
            for page in (ada, cy):
                expect(page.locator("#members li")).to_have_text(["ada", "cy"])
        finally:
            portal.call(_remove_keys, room)


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

        def publish(text: str) -> None:
            message = {"type": "message", "user": "bot", "text": text, "at": time.time()}
            portal.call(hub.publish, room, message)

        try:
            page = browser.page()
            join(page, server.url(), room, "ada")
            texts = page.locator("#messages li.message .text")
            # publish until one arrives: from then on the page's subscription is live
            while not texts.count():
                publish("ready")
                page.wait_for_timeout(100)
            page.evaluate(WATCH_STATUS)
            for number in range(count):
                publish(f"m{number}")
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
            expect(page.locator("#members li")).to_have_text(["ada"])
        finally:
            portal.call(_remove_keys, room)
