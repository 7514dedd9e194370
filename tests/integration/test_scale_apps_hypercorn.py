"""The scale benchmark's apps (``benchmarks.scale_apps``) under real hypercorn, both workers.

`benchmarks.scale` trusts their ``GET /stats`` to say when every handler's ``finally``
ran after 19,000 clients were killed; here five clients connect to each app and leave
(three with a close, two by dropping the TCP connection without one, as a killed client
does), and the count must go up to five and back to zero.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from benchmarks._processes import run_server
from benchmarks.scale_apps import NAMES, READY, read_stats
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.integration

CLIENTS = 5
ABRUPT = 2
"""Of the clients, how many leave without a close frame."""


def wait_for_stats(port: int, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the stats until `condition` holds (at most 10 s); return the last reading."""
    deadline = time.monotonic() + 10
    while True:
        stats = read_stats(port)
        if condition(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


@pytest.mark.parametrize("worker", ["asyncio", "trio"])
@pytest.mark.parametrize("app", NAMES)
def test_stats_count_the_handlers_up_and_back_to_zero(worker: str, app: str) -> None:
    with run_server(worker, app, "benchmarks.scale_apps") as server:
        assert read_stats(server.port)["live"] == 0
        with contextlib.ExitStack() as stack:
            clients = [
                stack.enter_context(connect(server.url, open_timeout=10, compression=None))
                for _ in range(CLIENTS)
            ]
            for ws in clients:
                ws.send("hello")
                # plait_app's listener echoes; the others say they are ready.
                assert ws.recv(timeout=10) in (READY, "hello")
            held = wait_for_stats(server.port, lambda s: s["live"] == CLIENTS)
            assert (held["live"], held["started"]) == (CLIENTS, CLIENTS)
            for ws in clients[:ABRUPT]:
                ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a close frame
        # The others leave with a close, as the stack exits.
        gone = wait_for_stats(server.port, lambda s: s["live"] == 0)
        assert (gone["live"], gone["ended"]) == (0, CLIENTS)
        assert gone["last_finally"] is not None
        collected = read_stats(server.port, collect=True)
        assert collected["collected"] >= 0
        assert collected["objects"] >= collected["objects_after"] > 0


@pytest.mark.parametrize("worker", ["asyncio", "trio"])
@pytest.mark.parametrize("app", ["plait_app", "raw_heartbeat"])
def test_the_heartbeat_pings_and_closes_a_silent_client_under_the_hypercorn_command(
    worker: str, app: str
) -> None:
    # hypercorn's command runs the loop itself, not anyio.run: the watchdog's timers
    # must work there too (a loop callback runs in no task, where sniffio cannot tell
    # the library unless told). The raw app's hand-written heartbeat, the benchmark's
    # baseline for one, must do the same.
    env = {"PLAIT_SCALE_HEARTBEAT": "0.2,0.3"}
    with (
        run_server(worker, app, "benchmarks.scale_apps", env=env) as server,
        connect(server.url, open_timeout=10, compression=None) as ws,
    ):
        ws.send("hello")
        assert ws.recv(timeout=10) in (READY, "hello")
        times = []
        for _ in range(3):  # alive: every ping answered
            assert ws.recv(timeout=5) == "ping"
            times.append(time.monotonic())
            ws.send("pong")
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.1 < gap < 1.5 for gap in gaps), gaps
        assert ws.recv(timeout=5) == "ping"  # and now silent
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
    assert "Traceback" not in server.log
