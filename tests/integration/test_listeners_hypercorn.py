"""Listeners, streams, class-based listeners, accept handlers and dead-peer detection under
real hypercorn (asyncio and trio workers), driven by the `websockets` sync client.

The server runs in a background thread of this process (plait.testing.run_hypercorn), so
handlers record what happened to them where the test can see it.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any
from urllib.parse import urlencode

import anyio
import msgspec
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import plait
from _records import RECORDS, Record
from plait import App, Heartbeat, WebSocket, WebSocketRoute
from plait.testing import HypercornServer, run_hypercorn

pytestmark = pytest.mark.integration


# -- a typed listener ---------------------------------------------------------------------


class Greeting(msgspec.Struct):
    name: str
    count: int


class Reply(msgspec.Struct):
    text: str
    count: int


@plait.listener("/typed")
async def typed(data: Greeting) -> Reply:
    return Reply(f"hello {data.name}", data.count + 1)


# -- a stream that sleeps for minutes between items ---------------------------------------


@plait.stream("/slow")
async def slow(key: str) -> AsyncGenerator[str, None]:
    record = RECORDS[key]
    try:
        yield "first"
        await anyio.sleep(300)
        yield "second"
    finally:
        record.times["finally"] = time.monotonic()
        record.done.set()


# -- two streams and a listener at once ----------------------------------------------------

mixed = WebSocketRoute("/mixed", tag_streams=True)


@mixed.stream
async def ticks() -> AsyncGenerator[int, None]:
    i = 0
    while True:
        yield i
        i += 1
        await anyio.sleep(0.03)


@mixed.stream(name="letters")
async def letter_stream() -> AsyncGenerator[str, None]:
    i = 0
    while True:
        yield "abcdefghijklmnopqrstuvwxyz"[i % 26]
        i += 1
        await anyio.sleep(0.05)


@mixed.listener
async def answer(data: str) -> dict[str, str]:
    return {"reply": data.upper()}


# -- a stream that fails while another waits ------------------------------------------------

failing = WebSocketRoute("/failing")


@failing.stream
async def doomed() -> AsyncGenerator[str, None]:
    yield "one"
    await anyio.sleep(0.1)
    raise RuntimeError("the stream broke")


@failing.stream
async def patient(key: str) -> AsyncGenerator[str, None]:
    record = RECORDS[key]
    try:
        yield "waiting"
        await anyio.sleep(300)
    except anyio.get_cancelled_exc_class():
        record.add("cancelled")
        raise
    finally:
        record.add("finally")
        record.done.set()


# -- a class-based listener -----------------------------------------------------------------


class Counter(plait.Listener):
    path = "/counter"

    async def on_accept(self, socket: WebSocket) -> None:
        self.key = socket.query_params["key"]
        self.seen: list[str] = []

    async def on_receive(self, data: str, socket: WebSocket) -> str:
        self.seen.append(data)
        return f"{len(self.seen)}: {' '.join(self.seen)}"

    async def on_disconnect(self, socket: WebSocket) -> None:
        record = RECORDS[self.key]
        record.add(("disconnect", list(self.seen), socket.close_code is not None))
        record.times["disconnect"] = time.monotonic()
        record.done.set()


# -- accepting: headers and subprotocols ----------------------------------------------------


async def custom_accept(socket: WebSocket) -> None:
    await socket.accept(headers=[(b"X-Custom", b"value")], subprotocol="chat-v1")


@plait.listener("/custom", connection_accept_handler=custom_accept)
async def custom(data: str) -> str:
    return f"custom: {data}"


@plait.listener("/negotiated", subprotocols=["v2.chat", "v1.chat"])
async def negotiated(data: str) -> str:
    return f"negotiated: {data}"


# -- dead peers -----------------------------------------------------------------------------


@plait.listener("/idle", idle_timeout=0.3)
async def idle(data: str) -> str:
    return data


@plait.listener("/heartbeat", heartbeat=Heartbeat(0.2, 0.2))
async def beating(data: str) -> str:
    return f"beat: {data}"


APP = App(
    routes=[typed, slow, mixed, failing, Counter, custom, negotiated, idle, beating],
)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest) -> Iterator[HypercornServer]:
    with run_hypercorn(APP, worker_class=request.param) as running:
        yield running


def url(server: HypercornServer, path: str, **query: Any) -> str:
    return server.url(path + ("?" + urlencode(query) if query else ""))


def open_client(address: str, **options: Any) -> ClientConnection:
    return connect(address, open_timeout=5, close_timeout=5, **options)


def closed_with(ws: ClientConnection, timeout: float = 5) -> tuple[tuple[int, str], list[Any]]:
    """Read until the server closes; return its (code, reason) and what came before."""
    before: list[Any] = []
    closed: ConnectionClosed | None = None
    while closed is None:
        try:
            before.append(ws.recv(timeout=timeout))
        except ConnectionClosed as exc:
            closed = exc
    assert closed.rcvd is not None, "the server did not send a close frame"
    return (closed.rcvd.code, closed.rcvd.reason), before


def test_typed_listener_echo_and_invalid_message(server: HypercornServer) -> None:
    with open_client(url(server, "/typed")) as ws:
        for count in range(3):
            ws.send(json.dumps({"name": "ada", "count": count}))
            assert json.loads(ws.recv(timeout=5)) == {"text": "hello ada", "count": count + 1}
        ws.send(json.dumps({"count": 1}))
        (code, reason), before = closed_with(ws)
    assert before == []
    assert code == 1007
    assert reason == "invalid message: Object missing required field `name`"


def test_closing_ends_a_sleeping_stream_at_once(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    key, record = rec
    with open_client(url(server, "/slow", key=key)) as ws:
        assert ws.recv(timeout=5) == "first"
        closed_at = time.monotonic()
    assert record.done.wait(5), "the stream's finally did not run"
    assert record.times["finally"] - closed_at < 1.0


def test_two_tagged_streams_and_a_listener_run_at_once(server: HypercornServer) -> None:
    items: list[tuple[str, Any]] = []
    replies: list[tuple[int, str]] = []  # (how many stream items came before, reply)
    with open_client(url(server, "/mixed")) as ws:
        deadline = time.monotonic() + 0.6
        sent = 0
        while time.monotonic() < deadline or len(replies) < sent:
            if sent < 3 and len(items) >= 4 * (sent + 1):
                ws.send(f"message {sent}")
                sent += 1
            message = json.loads(ws.recv(timeout=5))
            if "reply" in message:
                replies.append((len(items), message["reply"]))
            else:
                assert set(message) == {"stream", "data"}
                items.append((message["stream"], message["data"]))
    assert [reply for _, reply in replies] == ["MESSAGE 0", "MESSAGE 1", "MESSAGE 2"]
    ticks_seen = [data for name, data in items if name == "ticks"]
    letters_seen = [data for name, data in items if name == "letters"]
    assert ticks_seen == list(range(len(ticks_seen)))
    assert letters_seen == list("abcdefghijklmnopqrstuvwxyz"[: len(letters_seen)])
    assert len(ticks_seen) >= 5
    assert len(letters_seen) >= 3
    # Interleaved: the stream of consecutive items changes many times, not once.
    changes = sum(1 for a, b in itertools.pairwise(items) if a[0] != b[0])
    assert changes >= 4
    # The replies came while the streams went on.
    assert all(0 < before < len(items) for before, _ in replies)


def test_a_failing_stream_closes_1011_and_cancels_the_other(
    server: HypercornServer, rec: tuple[str, Record], caplog: pytest.LogCaptureFixture
) -> None:
    key, record = rec
    with open_client(url(server, "/failing", key=key)) as ws:
        (code, reason), before = closed_with(ws)
    assert sorted(before) == ["one", "waiting"]
    assert (code, reason) == (1011, "internal error")
    assert record.done.wait(5)
    assert record.events == ["cancelled", "finally"]
    assert "the stream broke" in caplog.text  # logged on the server only


def test_class_listener_keeps_state_per_connection(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    key, record = rec
    with open_client(url(server, "/counter", key=key)) as first:
        first.send("a")
        assert first.recv(timeout=5) == "1: a"
        with open_client(url(server, "/counter", key=key)) as second:
            second.send("x")
            assert second.recv(timeout=5) == "1: x"  # its own instance
            first.send("b")
            assert first.recv(timeout=5) == "2: a b"
            second.send("y")
            assert second.recv(timeout=5) == "2: x y"
            assert record.events == []  # nobody left yet
        assert record.done.wait(5), "on_disconnect was not called"
        assert record.events == [("disconnect", ["x", "y"], True)]
        first.send("c")
        assert first.recv(timeout=5) == "3: a b c"
        record.done.clear()
        left_at = time.monotonic()
    assert record.done.wait(5), "on_disconnect was not called"
    assert record.events[1:] == [("disconnect", ["a", "b", "c"], True)]
    assert record.times["disconnect"] - left_at < 1.0


def test_accept_handler_sends_headers_and_a_subprotocol(server: HypercornServer) -> None:
    with open_client(url(server, "/custom"), subprotocols=["chat-v1"]) as ws:
        assert ws.subprotocol == "chat-v1"
        assert ws.response is not None
        assert ws.response.headers["X-Custom"] == "value"
        ws.send("hi")
        assert ws.recv(timeout=5) == "custom: hi"


def test_subprotocol_is_the_first_offered_that_the_route_speaks(
    server: HypercornServer,
) -> None:
    offered = ["v3.chat", "v1.chat", "v2.chat"]
    with open_client(url(server, "/negotiated"), subprotocols=offered) as ws:
        assert ws.subprotocol == "v1.chat"  # the client's preference, not the route's
        ws.send("hi")
        assert ws.recv(timeout=5) == "negotiated: hi"
    with open_client(url(server, "/negotiated"), subprotocols=["v2.chat"]) as ws:
        assert ws.subprotocol == "v2.chat"
    with open_client(url(server, "/negotiated")) as ws:
        assert ws.subprotocol is None  # none offered: none chosen, still accepted
        ws.send("plain")
        assert ws.recv(timeout=5) == "negotiated: plain"


def test_idle_timeout_closes_a_silent_client_with_1001(server: HypercornServer) -> None:
    with open_client(url(server, "/idle")) as ws:
        for i in range(6):  # talking every 0.1 s for 0.6 s keeps it open
            time.sleep(0.1)
            ws.send(f"m{i}")
            assert ws.recv(timeout=5) == f"m{i}"
        quiet_since = time.monotonic()
        (code, reason), before = closed_with(ws)
        closed_after = time.monotonic() - quiet_since
    assert before == []
    assert (code, reason) == (1001, "idle timeout")
    assert 0.25 <= closed_after < 1.0


def answer_pings(ws: ClientConnection, seconds: float, count: int | None = None) -> list[float]:
    """Answer every ping for ``seconds`` (or until ``count`` came); return when each came
    (from the start)."""
    start = time.monotonic()
    pinged: list[float] = []
    while (left := start + seconds - time.monotonic()) > 0 and len(pinged) != count:
        try:
            message = ws.recv(timeout=left)
        except TimeoutError:
            break
        assert message == "ping"
        pinged.append(time.monotonic() - start)
        ws.send("pong")
    return pinged


def test_heartbeat_keeps_a_client_that_answers(server: HypercornServer) -> None:
    with open_client(url(server, "/heartbeat")) as ws:
        pinged = answer_pings(ws, 1.2)
        # A client that does not answer is gone 0.4 s after opening (the next test).
        assert len(pinged) >= 2
        ws.send("still here")  # and the pongs never reached the listener
        message = ws.recv(timeout=5)
        while message == "ping":
            ws.send("pong")
            message = ws.recv(timeout=5)
        assert message == "beat: still here"


def test_heartbeat_pings_every_interval(server: HypercornServer) -> None:
    # Heartbeat's docs: "every ``interval`` seconds the engine sends the text message
    # ping"; "interval: Seconds between pings". Counted in pings, not in a time window:
    # a loaded machine may delay a ping, which must not make the others look missing.
    with open_client(url(server, "/heartbeat")) as ws:
        pinged = answer_pings(ws, 10.0, count=6)
    gaps = [b - a for a, b in itertools.pairwise([0.0, *pinged])]
    assert len(pinged) == 6, f"pings at {pinged}"
    assert all(gap > 0.15 for gap in gaps), f"early: pings at {pinged}"  # never early
    assert 0.15 < statistics.median(gaps) < 0.3, f"pings at {pinged}"  # on time as a rule
    assert all(gap < 1.0 for gap in gaps), f"late: pings at {pinged}"  # none ever skipped


def test_heartbeat_closes_a_client_that_does_not_answer(server: HypercornServer) -> None:
    with open_client(url(server, "/heartbeat")) as ws:
        opened = time.monotonic()
        (code, reason), before = closed_with(ws)
        closed_after = time.monotonic() - opened
    assert before == ["ping"]
    assert (code, reason) == (1001, "heartbeat timeout")
    assert 0.3 <= closed_after < 1.0
