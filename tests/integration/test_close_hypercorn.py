"""What happens at the close under real hypercorn (asyncio and trio workers): issue 9,
points 1 and 2.

- Nothing the client sent is lost at the close: buffered messages still reach a
  low-level handler, a listener (also with ``concurrency=N``) and a class-based listener,
  in order, then the disconnect; the drain is bounded by ``drain_timeout``.
- The peer's departure is always seen: a handler that stopped reading is cancelled after
  ``stall_timeout`` plus the drain, whether the client closed, reset or vanished, and
  however much it sent; server memory stays bounded by the inbound capacity; a live
  client whose handler stopped reading is closed with 1008 (``on_stall="close"``) or its
  excess messages are dropped and counted (``on_stall="drop"``).
- ``send_timeout`` cancels the handler on both workers, although hypercorn's trio worker
  shields its own send.

The server runs in a background thread of this process (plait.testing.run_hypercorn), so
the handlers record what happened to them where the test can see it, and the server's
memory is this process's memory.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import selectors
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated, Any, cast
from urllib.parse import urlencode

import anyio
import anyio.lowlevel
import pytest
from websockets.frames import Close, Frame, Opcode
from websockets.sync.client import ClientConnection, connect

import plait
from _records import RECORDS, Record, record_for
from _support import PeakRSS, answer_lifespan
from plait import App, WebSocket, use
from plait.testing import HypercornServer, run_hypercorn
from plait.types import Receive, Scope, Send

pytestmark = pytest.mark.integration

MESSAGES = 5  # sent just before the client leaves
STALL = 0.3  # stall_timeout, seconds
DRAIN = 0.3  # drain_timeout where the handler does not take what is buffered, seconds
SLACK = 1.5  # scheduling slack on a loaded two-core CI machine, seconds


# -- low-level handlers ---------------------------------------------------------------------


async def iterating(ws: WebSocket) -> None:
    record = record_for(ws)
    await ws.accept()
    try:
        async for text in ws.iter_text():
            await anyio.sleep(0.01)  # still working on a message when the client leaves
            record.add(text)
            # After the client left, a send raises and reading drains what it sent.
            with contextlib.suppress(plait.WebSocketDisconnect):
                await ws.send_text(text)
    finally:
        record.finish()


async def receiving(ws: WebSocket) -> None:
    record = record_for(ws)
    await ws.accept()
    try:
        while True:
            try:
                text = await ws.receive_text()
            except plait.WebSocketDisconnect as exc:
                record.add(("disconnect", exc.code))
                return
            await anyio.sleep(0.01)
            record.add(text)
    finally:
        record.finish()


async def overworked(ws: WebSocket) -> None:
    """Takes one message and works on it far longer than the drain allows."""
    record = record_for(ws)
    await ws.accept()
    try:
        async for text in ws.iter_text():
            record.add(text)
            await anyio.sleep(30)
    except anyio.get_cancelled_exc_class():
        record.add("cancelled")
        raise
    finally:
        record.finish()


async def pushing(ws: WebSocket) -> None:
    """Push-only: never reads (the shape of a handler forwarding a subscription)."""
    record = record_for(ws)
    await ws.accept()
    try:
        await anyio.sleep_forever()
    except anyio.get_cancelled_exc_class():
        record.add("cancelled")
        raise
    finally:
        record.finish()


async def stopped_reading(ws: WebSocket) -> None:
    """Reads one message, then never again."""
    record = record_for(ws)
    await ws.accept()
    try:
        await ws.send_text("took " + await ws.receive_text())
        await anyio.sleep_forever()
    finally:
        record.finish()


async def paused(ws: WebSocket) -> None:
    """Reads one message, stops reading until the test says go, then reads again."""
    record = record_for(ws)
    await ws.accept()
    try:
        await ws.send_text("took " + await ws.receive_text())
        for _ in range(500):  # 10 s at most
            if record.go.is_set():
                break
            await anyio.sleep(0.02)
        statistics = ws.statistics()
        record.add(statistics)
        await ws.send_text(f"dropped {statistics.messages_dropped}")
        async for text in ws.iter_text():
            record.add(text)
    finally:
        record.finish()


async def firehose(ws: WebSocket) -> None:
    """Sends 64 KiB messages as fast as it may to a client that never reads."""
    record = record_for(ws)
    await ws.accept()
    payload = b"x" * 64 * 1024
    try:
        try:
            for i in range(10_000):
                await ws.send_bytes(payload)
                record.times["progress"] = i + 1
            record.add("sent everything")
        except plait.WebSocketClosed as exc:  # the send in flight may learn why
            record.add(("closed", exc.code, exc.reason))
            await anyio.sleep(30)  # the handler is cancelled: this must not wait
    except anyio.get_cancelled_exc_class():
        record.add("cancelled")
        raise
    finally:
        record.finish()


FLOOD_CAPACITY = 4


# Each path's handler and the engine's options for it.
async def streaming(ws: WebSocket) -> None:
    """Sends as fast as it may until the connection ends; a child task sends too, and the
    handler closes on the client's word while the child is still sending."""
    record = record_for(ws)
    await ws.accept()

    async def child() -> None:
        with contextlib.suppress(plait.WebSocketDisconnect):
            while True:
                await ws.send_text("child")
                await anyio.lowlevel.checkpoint()

    try:
        ws.task_group.start_soon(child)
        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                with contextlib.suppress(plait.WebSocketDisconnect):
                    while True:
                        await ws.send_text("tick")
                        await anyio.lowlevel.checkpoint()

            tg.start_soon(stream)
            text = await ws.receive_text()  # the client says when to close
            record.add(text)
            await ws.close(4000, "done")
            tg.cancel_scope.cancel()
    finally:
        record.finish()


ENGINE: dict[str, tuple[Callable[[WebSocket], Awaitable[None]], dict[str, Any]]] = {
    "/stream": (streaming, {}),
    "/iterate": (iterating, {"drain_timeout": 2.0}),
    "/receive": (receiving, {"drain_timeout": 2.0}),
    "/overworked": (overworked, {"drain_timeout": DRAIN}),
    "/push": (pushing, {"stall_timeout": STALL, "drain_timeout": DRAIN}),
    **{
        f"/flood-{policy}": (
            pushing,
            {
                "inbound_capacity": FLOOD_CAPACITY,
                "stall_timeout": STALL,
                "drain_timeout": DRAIN,
                "on_stall": policy,
            },
        )
        for policy in ("close", "drop")
    },
    "/stall-close": (
        stopped_reading,
        {"inbound_capacity": 4, "stall_timeout": STALL, "drain_timeout": DRAIN},
    ),
    "/stall-drop": (
        paused,
        {"inbound_capacity": 4, "stall_timeout": STALL, "drain_timeout": DRAIN, "on_stall": "drop"},
    ),
    "/firehose": (firehose, {"send_timeout": 0.5}),
}


# -- listeners, under plait.App ---------------------------------------------------------------


async def recording(ws: WebSocket) -> AsyncIterator[Record]:
    """The connection's record; its teardown (at the connection's end) says it ended."""
    record = record_for(ws)
    try:
        yield record
    finally:
        record.finish()


def collecting(path: str, concurrency: int) -> plait.WebSocketRoute:
    @plait.listener(path, concurrency=concurrency)
    async def collect(data: str, record: Annotated[Record, use(recording)]) -> str:
        await anyio.sleep(0.01)
        record.add(data)
        return f"got {data}"  # replies during the drain are dropped quietly

    return collect


class Collector(plait.Listener):
    path = "/app/class"

    async def on_accept(self, socket: WebSocket) -> None:
        self.record = record_for(socket)

    async def on_receive(self, data: str, socket: WebSocket) -> str:
        await anyio.sleep(0.01)
        self.record.add(data)
        return f"got {data}"

    async def on_disconnect(self, socket: WebSocket) -> None:
        self.record.add("on_disconnect")
        self.record.done.set()


APP = App(routes=[collecting("/app/listen-1", 1), collecting("/app/listen-3", 3), Collector])


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    path = scope["path"]
    if path.startswith("/app/"):
        await APP(scope, receive, send)
        return
    handler, options = ENGINE[path]
    await plait.serve_connection(scope, receive, send, handler, **options)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest) -> Iterator[HypercornServer]:
    with run_hypercorn(app, worker_class=request.param) as running:
        yield running


def url(server: HypercornServer, path: str, **query: Any) -> str:
    if path in ENGINE:
        # The engine must take this path's options: a TypeError names a missing one here
        # rather than as an HTTP 500 from the server.
        _, options = ENGINE[path]
        inspect.signature(plait.serve_connection).bind(None, None, None, None, **options)
    return server.url(path + ("?" + urlencode(query) if query else ""))


def open_client(address: str) -> ClientConnection:
    return connect(address, open_timeout=5, close_timeout=5, max_size=None, compression=None)


def plait_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.name.startswith("plait") and r.levelname in ("ERROR", "CRITICAL")
    ]


def texts(count: int) -> list[str]:
    return [f"message {i}" for i in range(count)]


def send_then_close(address: str, messages: list[str]) -> float:
    """Send ``messages``, close cleanly (1000); return when the close was done."""
    with open_client(address) as ws:
        for text in messages:
            ws.send(text)
    return time.monotonic()


class RawClient:
    """A WebSocket client on a plain blocking socket (websockets' sans-I/O protocol, no
    compression, no background thread): it reads only when asked, and it can leave
    without a close frame, or with a TCP reset."""

    def __init__(self, address: str, *, receive_buffer: int | None = None) -> None:
        from websockets.client import ClientProtocol
        from websockets.protocol import State
        from websockets.uri import parse_uri

        uri = parse_uri(address)
        self.protocol = ClientProtocol(uri, max_size=None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if receive_buffer is not None:  # before connecting, so the window is small
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.sock.settimeout(5)
            self.sock.connect((uri.host, uri.port))
            self.protocol.send_request(self.protocol.connect())
            self.flush()
            self.frames = 0
            self.eof = False
            while self.protocol.state is State.CONNECTING and not self.eof:
                self.read()
            assert self.protocol.handshake_exc is None, self.protocol.handshake_exc
        except BaseException:
            self.sock.close()
            raise

    def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                try:
                    self.sock.sendall(data)
                except OSError:
                    return  # the server is gone; nothing more to say

    def read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if data:
            self.protocol.receive_data(data)
        else:
            self.eof = True
            self.protocol.receive_eof()
        self.flush()
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
                self.frames += 1

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self.flush()

    def read_until_close(self, timeout: float) -> Close | None:
        """Read (counting frames) until the server's close frame or EOF; return it."""
        self._read_while(lambda: self.protocol.close_rcvd is None, timeout)
        return self.protocol.close_rcvd

    def read_until_eof(self, timeout: float) -> bool:
        """Read until the server ends the TCP connection; return whether it did."""
        self._read_while(lambda: True, timeout)
        return self.eof

    def _read_while(self, going: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while going() and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                self.read()
            except TimeoutError:
                return

    def leave(self, how: str) -> None:
        """Go: ``"close-frame"`` (a clean close), ``"reset"`` or ``"no-close-frame"``."""
        if how == "close-frame":
            self.protocol.send_close(1000)
            self.flush()
            self.read_until_close(3)  # the server's answer, if it comes
        elif how == "reset":
            # SO_LINGER 0: close() sends a RST instead of a FIN.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def open_sockets() -> int:
    """How many sockets this process (the server and the clients) has open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


# -- 1. nothing lost at the close: a low-level handler ------------------------------------------


def test_iter_text_gets_every_message_sent_before_the_close(
    server: HypercornServer, rec: tuple[str, Record], caplog: pytest.LogCaptureFixture
) -> None:
    key, record = rec
    send_then_close(url(server, "/iterate", id=key), texts(MESSAGES))
    assert record.done.wait(5), "the handler's finally did not run"
    assert record.events == [*texts(MESSAGES), "finally"]
    assert plait_errors(caplog) == []


def test_receive_text_gets_every_message_then_the_disconnect(
    server: HypercornServer, rec: tuple[str, Record], caplog: pytest.LogCaptureFixture
) -> None:
    key, record = rec
    send_then_close(url(server, "/receive", id=key), texts(MESSAGES))
    assert record.done.wait(5), "the handler's finally did not run"
    # The client closed with 1000, but hypercorn reports every client close to the app
    # as 1006 (hypercorn/protocol/ws_stream.py: StreamClosed while CONNECTED).
    assert record.events == [*texts(MESSAGES), ("disconnect", 1006), "finally"]
    assert plait_errors(caplog) == []


def test_the_drain_is_bounded_by_drain_timeout(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    key, record = rec
    left_at = send_then_close(url(server, "/overworked", id=key), ["a", "b", "c"])
    assert record.done.wait(5), "the handler's finally did not run"
    # It took "a" and worked on it; "b" and "c" waited; drain_timeout cut it short.
    assert record.events == ["a", "cancelled", "finally"]
    assert record.times["finally"] - left_at < DRAIN + SLACK


# -- 1. nothing lost at the close: listeners ----------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_listener_handles_every_message_sent_before_the_close(
    server: HypercornServer,
    rec: tuple[str, Record],
    caplog: pytest.LogCaptureFixture,
    concurrency: int,
) -> None:
    key, record = rec
    send_then_close(url(server, f"/app/listen-{concurrency}", id=key), texts(MESSAGES))
    assert record.done.wait(5), "the connection's dependency teardown did not run"
    handled, last = record.events[:-1], record.events[-1]
    assert last == "finally"  # the teardown came after every call
    if concurrency == 1:
        assert handled == texts(MESSAGES)
    else:  # up to three at once: they may finish out of order
        assert sorted(handled) == texts(MESSAGES)
    assert plait_errors(caplog) == []  # the replies nobody could read: dropped quietly


def test_a_class_listener_handles_every_message_sent_before_the_close(
    server: HypercornServer, rec: tuple[str, Record], caplog: pytest.LogCaptureFixture
) -> None:
    key, record = rec
    send_then_close(url(server, "/app/class", id=key), texts(MESSAGES))
    assert record.done.wait(5), "on_disconnect was not called"
    assert record.events == [*texts(MESSAGES), "on_disconnect"]
    assert plait_errors(caplog) == []


# -- 2. the peer's departure is always seen -------------------------------------------------------


@pytest.mark.parametrize("how", ["close-frame", "reset", "no-close-frame"])
def test_a_push_only_handler_is_cancelled_when_a_client_that_sent_17_leaves(
    server: HypercornServer, rec: tuple[str, Record], how: str
) -> None:
    key, record = rec
    # 17: one more than the default inbound capacity, which the handler never empties.
    with RawClient(url(server, "/push", id=key)) as client:
        for text in texts(17):
            client.send_text(text)
        client.leave(how)
        left_at = time.monotonic()
    assert record.done.wait(STALL + DRAIN + 3), "the handler was never cancelled"
    assert record.events == ["cancelled", "finally"]
    assert record.times["finally"] - left_at < STALL + DRAIN + SLACK


@pytest.mark.parametrize("on_stall", ["close", "drop"])
def test_a_flood_then_reset_cancels_every_handler_and_memory_stays_bounded(
    server: HypercornServer, request: pytest.FixtureRequest, on_stall: str
) -> None:
    # The reproduction: 20 clients each send 30 x 512 KiB, then reset, to
    # handlers that never read. It moves up to 300 MiB over loopback; on a two-core
    # machine it takes a few seconds per run.
    clients_count, messages, size = 20, 30, 512 * 1024
    frame = memoryview(Frame(Opcode.BINARY, bytes(size)).serialize(mask=True))
    keys = [f"{request.node.nodeid}/{i}" for i in range(clients_count)]
    records = [RECORDS.setdefault(key, Record()) for key in keys]
    clients: list[RawClient] = []
    sent = 0
    sockets_before = open_sockets()
    try:
        with PeakRSS() as memory:
            for key in keys:
                clients.append(RawClient(url(server, f"/flood-{on_stall}", id=key)))
            # Non-blocking sends, round robin, for at most 4 s: the server stops reading
            # when a handler's inbound is full, so a blocking send could wait forever.
            left = {client.sock: [messages, 0] for client in clients}  # messages, offset
            with selectors.DefaultSelector() as selector:
                for client in clients:
                    client.sock.setblocking(False)
                    selector.register(client.sock, selectors.EVENT_WRITE)
                deadline = time.monotonic() + 4
                while left and time.monotonic() < deadline:
                    for ready, _ in selector.select(timeout=0.05):
                        sock = cast(socket.socket, ready.fileobj)
                        state = left[sock]
                        try:
                            count = sock.send(frame[state[1] :])
                        except BlockingIOError:
                            continue
                        except OSError:  # the server closed it (on_stall="close")
                            count = -1
                        if count >= 0:
                            sent += count
                            state[1] += count
                            if state[1] == len(frame):
                                state[0] -= 1
                                state[1] = 0
                        if count < 0 or state[0] == 0:
                            selector.unregister(sock)
                            del left[sock]
            for client in clients:
                client.leave("reset")
            reset_at = time.monotonic()
            for i, record in enumerate(records):
                remaining = max(0.0, reset_at + STALL + DRAIN + 5 - time.monotonic())
                assert record.done.wait(remaining), f"handler {i} was never cancelled"
        latest = max(record.times["finally"] for record in records)
        assert latest - reset_at < STALL + DRAIN + 3
        # ...and the server let the sockets go (the clients' are closed already).
        deadline = time.monotonic() + 3
        while open_sockets() > sockets_before and time.monotonic() < deadline:
            time.sleep(0.05)
        held = open_sockets() - sockets_before
        assert held <= 0, f"the server still holds {held} of the {clients_count} sockets"
        # What the server may hold per connection while its handler does not read: the
        # engine's inbound (capacity) and the message in the reader's hand, hypercorn's app
        # queue (max_app_queue_size, 10 messages), and the message hypercorn is assembling
        # plus its copy: 17 x 512 KiB, 170 MiB for 20 connections, all stalled at once;
        # plus 64 MiB for the interpreter, the allocator's slack and the sockets. Measured
        # peaks: 170-192 MiB with on_stall="close", 80-170 MiB with "drop". An engine that
        # read on and kept what it read would hold the 300 MiB the clients send.
        per_connection = (FLOOD_CAPACITY + 1 + 10 + 2) * size
        bound = clients_count * per_connection + 64 * 1024 * 1024
        grown = memory.peak - memory.baseline
        assert grown < bound, (
            f"the server grew by {grown / 2**20:.0f} MiB (bound {bound / 2**20:.0f} MiB) "
            f"while the clients sent {sent / 2**20:.0f} MiB"
        )
    finally:
        for client in clients:
            client.sock.close()
        for key in keys:
            del RECORDS[key]


def test_a_stalled_handler_with_a_live_client_closes_it_with_1008(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    key, record = rec
    with RawClient(url(server, "/stall-close", id=key)) as client:
        client.send_text("first")
        client.sock.settimeout(0.01)  # a message every 10 ms, reading what comes
        started = time.monotonic()
        for i in range(300):  # 3 s at most
            client.send_text(f"message {i}")
            if client.read_until_close(0.01) is not None or client.eof:
                break
        close = client.read_until_close(1)
        closed_after = time.monotonic() - started
    assert client.frames == 1  # "took first"
    assert close is not None, "the server did not close the connection"
    assert (close.code, close.reason) == (1008, "messages not read")
    # The inbound (4) fills within 50 ms; the close follows the stall timeout.
    assert closed_after < STALL + SLACK
    assert record.done.wait(5), "the handler's finally did not run"


def test_after_closing_a_stalled_client_the_server_lets_the_socket_go(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    # hypercorn's app queue (10 messages) is full behind the stalled handler, so hypercorn
    # cannot read the client's close frame, nor the end of the TCP stream, unless the
    # application reads on after its close: otherwise the server holds the socket (and
    # what hypercorn queued) until it stops.
    key, record = rec
    with RawClient(url(server, "/stall-close", id=key)) as client:
        client.send_text("first")
        for i in range(40):  # more than the inbound (4) and hypercorn's queue (10) hold
            client.send_text(f"message {i}")
        close = client.read_until_close(STALL + SLACK + 3)
        assert close is not None, "the server did not close the connection"
        assert (close.code, close.reason) == (1008, "messages not read")
        # The client has answered the close (RawClient.read does): the server should now
        # end the TCP connection.
        assert client.read_until_eof(3), "the server kept the socket after the closing handshake"
    assert record.done.wait(5)


def test_a_stalled_handler_with_on_stall_drop_keeps_the_connection(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    key, record = rec
    with open_client(url(server, "/stall-drop", id=key)) as ws:
        ws.send("first")
        assert ws.recv(timeout=5) == "took first"
        for i in range(80):  # 0.8 s or more: well past the stall timeout
            ws.send(f"message {i}")
            time.sleep(0.01)
        record.go.set()
        reply = ws.recv(timeout=5)  # the handler is alive and the connection open
        assert reply.startswith("dropped ")
        ws.send("still here")
        ws.close()
        assert ws.close_code == 1000  # hypercorn answered the client's clean close
    assert record.done.wait(5), "the handler's finally did not run"
    statistics = record.events[0]
    assert statistics.messages_dropped > 0
    assert reply == f"dropped {statistics.messages_dropped}"
    assert record.events[-1] == "finally"


def test_send_timeout_cancels_the_handler_of_a_client_that_does_not_read(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    key, record = rec
    with RawClient(url(server, "/firehose", id=key), receive_buffer=64 * 1024) as client:
        opened = time.monotonic()
        # The client reads nothing. hypercorn's trio worker shields its send_all, so the
        # engine must give up on the handler without waiting for that send.
        assert record.done.wait(5), "the handler was not cancelled"
        assert record.times["finally"] - opened < 3.0
        # Cancelled; the send in flight may have said why first.
        assert record.events[-2:] == ["cancelled", "finally"]
        assert record.events[:-2] in ([], [("closed", 1008, "client too slow")])
        assert record.times.get("progress", 0) < 10_000
        # Once the client reads, what the server had in flight comes, then 1008.
        close = client.read_until_close(10)
    assert close is not None, "no close frame from the server"
    assert (close.code, close.reason) == (1008, "client too slow")


def test_sends_racing_the_close_stop_and_nothing_follows_the_close(
    server: HypercornServer, rec: tuple[str, Record], caplog: pytest.LogCaptureFixture
) -> None:
    key, record = rec
    with RawClient(url(server, "/stream", id=key)) as client:
        client._read_while(lambda: client.frames < 20, 5)  # the streams are going
        client.send_text("close now")
        close = client.read_until_close(5)
        at_close = client.frames
        client.read_until_eof(3)
        after = client.frames
    assert close is not None
    assert (close.code, close.reason) == (4000, "done")
    assert after == at_close  # no frame followed the close
    assert record.done.wait(3)
    assert record.events == ["close now", "finally"]
    assert plait_errors(caplog) == []


@pytest.mark.parametrize("how", ["close-frame", "reset", "no-close-frame"])
def test_clients_leaving_while_the_server_streams_are_no_error(
    server: HypercornServer, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's sends race the client's leaving (hypercorn's trio worker raises
    BusyResourceError from send when it answers a close meanwhile): every handler ends,
    and nothing is logged as an error."""
    keys = [f"{how}-{i}-{time.monotonic_ns()}" for i in range(20)]
    for key in keys:
        RECORDS[key] = Record()
    try:
        for i, key in enumerate(keys):
            with RawClient(url(server, "/stream", id=key)) as client:
                client._read_while(lambda c=client, n=i: c.frames < 1 + n % 7, 5)
                client.leave(how)
        for key in keys:
            assert RECORDS[key].done.wait(DRAIN + 3), f"{key}: the handler did not end"
            assert RECORDS[key].events[-1] == "finally"
    finally:
        for key in keys:
            del RECORDS[key]
    assert plait_errors(caplog) == []
