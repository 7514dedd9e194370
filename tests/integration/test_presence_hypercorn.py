"""Presence across two hypercorn processes (asyncio and trio workers) sharing one Redis.

Both serve ``examples.presence`` with ``PRESENCE_REDIS_URL`` set and a short
``PRESENCE_TTL``. A watcher connected to each process keeps the room's state from the
events it receives, as a browser would: joins and leaves made on either side reach
both; then one process is killed with SIGKILL (it cleans nothing up) and the other
side's watcher sees its users leave within the documented bound, ``ttl + ttl / 2``.
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import ExitStack
from typing import Any

import pytest
from test_cross_process import REDIS_URL, hypercorn_processes
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.integration

TTL = 1.0
BOUND = TTL + TTL / 2
"""The example's backend sweeps every ``ttl / 2``: a dead process's users are gone by then."""
SLACK = 1.5
"""What two loaded cores may add (the sweep itself takes a millisecond or two)."""


class Watcher:
    """A client of the room that applies every diff to the state it got first."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        event = self._receive(10)
        assert event["type"] == "presence_state"
        self.state: dict[str, list[dict[str, Any]]] = {
            key: member["metas"] for key, member in event["presences"].items()
        }

    def until(self, counts: dict[str, int], within: float = 10) -> None:
        """Receive diffs until the room is exactly ``counts`` (key → connections)."""
        deadline = time.monotonic() + within
        while self.counts() != counts:
            diff = self._receive(deadline - time.monotonic())
            assert diff["type"] == "presence_diff"
            for key, member in diff["leaves"].items():
                gone = {meta["ref"] for meta in member["metas"]}
                self.state[key] = [m for m in self.state.get(key, []) if m["ref"] not in gone]
            for key, member in diff["joins"].items():
                self.state[key] = [*self.state.get(key, []), *member["metas"]]
            for key, member in (*diff["leaves"].items(), *diff["joins"].items()):
                assert member["count"] == len(self.state[key])  # the count a UI shows
                if not self.state[key]:
                    del self.state[key]

    def counts(self) -> dict[str, int]:
        return {key: len(metas) for key, metas in self.state.items()}

    def _receive(self, timeout: float) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.socket.recv(timeout=max(timeout, 0.01)))
        return event


@pytest.mark.parametrize("killed", ["asyncio", "trio"])
def test_presence_is_shared_and_a_killed_process_leaves_in_time(killed: str) -> None:
    survivor = "trio" if killed == "asyncio" else "asyncio"
    room = f"room-{uuid.uuid4().hex}"
    env = {"PRESENCE_REDIS_URL": REDIS_URL, "PRESENCE_TTL": str(TTL)}
    with hypercorn_processes("examples.presence:app", env) as servers, ExitStack() as stack:

        def join(worker: str, name: str) -> ClientConnection:
            url = f"ws://127.0.0.1:{servers[worker].port}/presence/{room}?name={name}"
            return stack.enter_context(connect(url, open_timeout=10, max_queue=None))

        watchers = {worker: Watcher(join(worker, f"watch-{worker}")) for worker in servers}
        everyone = {"watch-asyncio": 1, "watch-trio": 1}
        for watcher in watchers.values():
            watcher.until(everyone)  # each sees the other process's watcher

        # joins on both sides, the same name on both: one member, counted twice
        tabs = [join("asyncio", "ada"), join("trio", "ada"), join("trio", "bob")]
        for watcher in watchers.values():
            watcher.until({**everyone, "ada": 2, "bob": 1})
        # leaves on both sides
        tabs.pop(0).close()
        tabs.pop().close()
        for watcher in watchers.values():
            watcher.until({**everyone, "ada": 1})
        tabs.pop().close()

        join(killed, "carol")
        join(survivor, "dave")
        for watcher in watchers.values():
            watcher.until({**everyone, "carol": 1, "dave": 1})
        servers[killed].process.kill()  # SIGKILL: it removes nothing itself
        killed_at = time.monotonic()
        watchers[survivor].until({f"watch-{survivor}": 1, "dave": 1}, within=BOUND + SLACK + 5)
        elapsed = time.monotonic() - killed_at
        assert elapsed <= BOUND + SLACK, f"the leaves took {elapsed:.2f} s (bound {BOUND} s)"
