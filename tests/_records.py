"""What handlers served by an in-process hypercorn report back to their test, across
threads: one ``Record`` per test, found by the ``id`` query parameter."""

from __future__ import annotations

import threading
import time
from typing import Any

from plait import WebSocket


class Record:
    """What one test's handlers report back across threads."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.done = threading.Event()
        self.go = threading.Event()  # the test tells the handler to go on
        self.times: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(self, event: Any) -> None:
        with self.lock:
            self.events.append(event)

    def finish(self) -> None:
        """Called from the handler's ``finally``."""
        self.times["finally"] = time.monotonic()
        self.add("finally")
        self.done.set()

    def wait(self, timeout: float = 5.0, events: int = 0) -> None:
        """Wait for the handler to finish and, optionally, for ``events`` events."""
        assert self.done.wait(timeout), "the handler did not report back in time"
        deadline = time.monotonic() + timeout
        while len(self.events) < events and time.monotonic() < deadline:
            time.sleep(0.01)


RECORDS: dict[str, Record] = {}
"""The records of the running tests, by test id."""


def record_for(ws: WebSocket) -> Record:
    """The record of the test whose client opened ``ws`` (its ``id`` query parameter)."""
    return RECORDS[ws.query_params["id"]]
