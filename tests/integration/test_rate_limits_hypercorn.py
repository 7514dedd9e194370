"""Rate limits and connection limits under real hypercorn, both workers (issue 13, point 2).

A client floods a rate-limited listener with 100,000 small messages, as fast as a
socket takes them: the listener handles no more than the limit allows, the server's
memory stays flat, and another connection opened meanwhile keeps getting prompt echoes.
The server runs in a thread of this process (plait.testing.run_hypercorn), so its
memory is this process's memory and the handlers report back through ``_records``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import plait
from _records import RECORDS, Record
from _support import PeakRSS
from plait import RateLimit, WebSocket
from plait.testing import HypercornServer, run_hypercorn

pytestmark = pytest.mark.integration

# Messages in the flood, by worker. hypercorn's trio worker reads a flood of small
# messages at half the asyncio worker's pace here (100,000 took 6 to 14 s on a loaded
# two-core machine, against 4.5 s), so it gets half as many, to keep each test near 5 s.
FLOOD = {"asyncio": 100_000, "trio": 50_000}
RATE = 200.0  # the limited listener's messages per second
BURST = 50
FLOOD_LIMIT = RateLimit(messages=RATE, per=1.0, burst=BURST, on_exceed="drop")


async def _report(ws: WebSocket, id: str) -> None:
    record = RECORDS[id]
    record.add(ws.statistics())
    record.finish()


@plait.listener("/limited", rate_limit=FLOOD_LIMIT, on_disconnect=_report)
async def limited(data: str, id: str) -> None:
    RECORDS[id].add(data)


@plait.listener("/echo")
async def echo(data: str) -> str:
    return data


@plait.listener("/closing", rate_limit=RateLimit(messages=1, per=60, burst=10))
async def closing(data: str) -> str:
    return data


@plait.listener("/reply", rate_limit=RateLimit(messages=1, per=60, burst=1, on_exceed="reply"))
async def reply(data: str) -> str:
    return data


@plait.listener("/capped", max_connections=2)
async def capped(data: str) -> str:
    return data


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest) -> Iterator[HypercornServer]:
    app = plait.App(routes=[limited, echo, closing, reply, capped])
    with run_hypercorn(app, worker_class=request.param) as running:
        yield running


# -- tools ------------------------------------------------------------------------------------


class FloodClient:
    """A WebSocket client on a plain blocking socket (websockets' sans-I/O protocol, no
    compression): its frames are made up front, so that sending them costs only the
    socket's time, and the server, not the client, is what the flood measures."""

    def __init__(self, address: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.protocol import State
        from websockets.uri import parse_uri

        uri = parse_uri(address)
        self.protocol = ClientProtocol(uri, max_size=None)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=10)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        while self.protocol.state is State.CONNECTING:
            self._read()
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc

    def frames(self, texts: list[str]) -> bytes:
        """The masked frames of ``texts``, ready to send."""
        for text in texts:
            self.protocol.send_text(text.encode())
        return b"".join(self.protocol.data_to_send())

    def close(self, timeout: float) -> Any:
        """Send a close, read until the server's close; return it (or ``None``)."""
        self.protocol.send_close(1000)
        self._flush()
        deadline = time.monotonic() + timeout
        while self.protocol.close_rcvd is None and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self._read():
                    break
            except TimeoutError:
                break
        return self.protocol.close_rcvd

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _read(self) -> bool:
        data = self.sock.recv(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self._flush()
        self.protocol.events_received()
        return bool(data)


# The probe runs in a process of its own: in this one it would wait for the GIL behind
# the server's thread, and measure that rather than the server.
PROBE = """
import json, select, sys, time
from websockets.sync.client import connect

with connect(sys.argv[1], compression=None, open_timeout=5) as ws:
    print("ready", flush=True)
    trips, n = [], 0
    while not select.select([sys.stdin], [], [], 0.005)[0]:  # until stdin closes
        n += 1
        started = time.perf_counter()
        ws.send(f"probe {n}")
        assert ws.recv(timeout=5) == f"probe {n}"
        trips.append((time.monotonic(), time.perf_counter() - started))
print(json.dumps(trips), flush=True)
"""


class LatencyProbe:
    """Another client, unlimited, in another process: sends to the echo route every
    5 ms and times each round trip, with the (system-wide) monotonic time it ended."""

    def __init__(self, address: str) -> None:
        self._address = address
        self.round_trips: list[tuple[float, float]] = []

    def __enter__(self) -> LatencyProbe:
        self._process = subprocess.Popen(
            [sys.executable, "-c", PROBE, self._address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        assert self._process.stdout.readline() == "ready\n", "the probe did not connect"
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            out, _ = self._process.communicate(input="", timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            raise
        assert self._process.returncode == 0, "the probe failed"
        self.round_trips = [(at, took) for at, took in json.loads(out)]

    def between(self, start: float, end: float) -> list[float]:
        """The round trips that ended between ``start`` and ``end``."""
        return [took for at, took in self.round_trips if start <= at <= end]


# -- the flood ----------------------------------------------------------------------------------


def test_a_flood_is_held_to_the_limit(
    server: HypercornServer, rec: tuple[str, Record], request: pytest.FixtureRequest
) -> None:
    key, record = rec
    flood = FLOOD[request.node.callspec.params["server"]]
    client = FloodClient(server.url(f"/limited?id={key}"))
    try:
        data = client.frames([f"m{i}" for i in range(flood)])
        with LatencyProbe(server.url("/echo")) as probe:
            time.sleep(0.3)  # the probe's quiet round trips, for comparison
            with PeakRSS() as memory:
                started = time.monotonic()
                client.sock.sendall(data)
                sent_at = time.monotonic()
                close = client.close(timeout=30)
                assert record.done.wait(10), "the listener's on_disconnect did not run"
                ended = time.monotonic()
    finally:
        client.sock.close()
    assert close is not None
    assert close.code == 1000
    *handled, stats, finished = record.events
    assert finished == "finally"
    elapsed = ended - started
    assert stats.messages_received == flood
    assert stats.messages_limited == flood - len(handled)
    # The listener saw the burst and then no more than the rate allows over the whole
    # window (which also holds the time the server took to read what was sent).
    assert BURST <= len(handled) <= BURST + RATE * elapsed
    assert handled == [f"m{i}" for i in range(BURST)] + handled[BURST:]  # the burst, in order
    # Memory stays flat. What the server may hold at once: hypercorn's read buffer and
    # its app queue (10 messages), the inbound (16), and the allocator's slack; none of
    # it grows with the flood. A server that kept the dropped messages as ASGI dicts
    # would grow by about 300 bytes each: 30 MB for the flood.
    grown = memory.peak - memory.baseline
    assert grown < 8 * 1024 * 1024, f"the server grew by {grown / 2**20:.1f} MiB"
    # The other connection kept getting prompt echoes.
    quiet = probe.between(0, started)
    during = probe.between(started, ended)
    assert len(during) >= 10, f"only {len(during)} round trips during the flood"
    p50 = statistics.median(during)
    p99 = statistics.quantiles(during, n=100)[98]
    worst = max(during)
    print(  # the figures for the report (pytest -s)
        f"\nflood: {flood} sent in {sent_at - started:.2f} s, read by {elapsed:.2f} s; "
        f"handled {len(handled)} (limit {BURST + RATE * elapsed:.0f}); "
        f"RSS {memory.baseline / 2**20:.1f} -> peak {memory.peak / 2**20:.1f} MiB; "
        f"probe quiet p50 {statistics.median(quiet) * 1e3:.2f} ms, during the flood "
        f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.1f} ms, max {worst * 1e3:.1f} ms "
        f"over {len(during)} round trips"
    )
    # Measured here: p50 1.4 to 2 ms (1.3 to 1.7 ms quiet), p99 2 to 11 ms, max 4 to
    # 14 ms. The bounds leave room for a loaded machine; a server that served the flood
    # before the other connection would hold its echoes for seconds.
    assert p50 < 0.05
    assert p99 < 0.25
    assert worst < 1.0


# -- the other policies and the connection limit ---------------------------------------------


def test_over_the_limit_with_close_the_client_gets_1008(server: HypercornServer) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    received: list[str | bytes] = []
    with connect(server.url("/closing"), compression=None, open_timeout=5) as ws:
        with contextlib.suppress(ConnectionClosed):  # the close may come mid-way
            for i in range(30):
                ws.send(f"m{i}")
        with contextlib.suppress(ConnectionClosed):
            while True:
                received.append(ws.recv(timeout=5))
        close = ws.protocol.close_rcvd
    assert close is not None
    assert (close.code, close.reason) == (1008, "rate limit exceeded")
    assert received == [f"m{i}" for i in range(len(received))]
    assert len(received) <= 10


def test_over_the_limit_with_reply_the_client_is_told_once(server: HypercornServer) -> None:
    from websockets.sync.client import connect

    with connect(server.url("/reply"), compression=None, open_timeout=5) as ws:
        for i in range(20):
            ws.send(f"m{i}")
        ws.send("m-last")
        received = [ws.recv(timeout=5), ws.recv(timeout=5)]
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)  # nothing more: one reply per minute at most
    assert "m0" in received
    (error,) = [json.loads(text) for text in received if text != "m0"]
    assert error["error"] == "rate limit exceeded"
    assert 59 <= error["retry_after"] <= 60
    assert error["detail"] == "at most 1 message per 60 s, burst 1"


def test_past_max_connections_the_handshake_gets_503(server: HypercornServer) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = server.url("/capped")
    with connect(url, open_timeout=5) as first, connect(url, open_timeout=5):
        with pytest.raises(InvalidStatus) as info:
            connect(url, open_timeout=5)
        first.send("still served")
        assert first.recv(timeout=5) == "still served"
    response = info.value.response
    assert response.status_code == 503
    assert json.loads(response.body) == {
        "detail": "too many connections",
        "route": "/capped",
        "max_connections": 2,
    }
    # Both closed: the slots are free again (the server sees the closes shortly after).
    deadline = time.monotonic() + 5
    while True:
        try:
            with connect(url, open_timeout=5) as again:
                again.send("back")
                assert again.recv(timeout=5) == "back"
            break
        except InvalidStatus:
            assert time.monotonic() < deadline, "the slots were never released"
            time.sleep(0.05)
