"""The engine under real hypercorn (asyncio and trio workers), driven by `websockets`.

The server runs in a background thread of this process (plait.testing.run_hypercorn), so
the handlers can record what happened to them where the test can see it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

import plait
from _records import Record, record_for
from _support import answer_lifespan
from plait import DenialResponse, WebSocket
from plait.testing import HypercornServer, run_hypercorn
from plait.types import Receive, Scope, Send

pytestmark = pytest.mark.integration


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await ws.send_text(message["text"])
        else:
            await ws.send_bytes(message["bytes"])


async def sleeper(ws: WebSocket) -> None:
    rec = record_for(ws)
    await ws.accept()
    ws.task_group.start_soon(child_sleeper, rec)
    try:
        await ws.send_text("sleeping")
        await anyio.sleep(600)
    except anyio.get_cancelled_exc_class():
        rec.times["cancelled"] = time.monotonic()
        rec.events.append("cancelled")
        raise
    finally:
        rec.events.append("finally")
        rec.done.set()


async def child_sleeper(rec: Record) -> None:
    try:
        await anyio.sleep(600)
    finally:
        rec.events.append("child finally")


async def receiver(ws: WebSocket) -> None:
    rec = record_for(ws)
    await ws.accept()
    await ws.send_text("waiting")
    try:
        await ws.receive_text()
    except plait.WebSocketDisconnect as exc:
        rec.events.append(("disconnect", exc.code))
    finally:
        rec.done.set()


async def failing(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text("about to fail")
    raise RuntimeError("the secret is 42")


async def burst(ws: WebSocket) -> None:
    await ws.accept()
    for i in range(int(ws.query_params["n"])):
        await ws.send_text(str(i))


async def deny(ws: WebSocket) -> None:
    if ws.query_params.get("how") == "close":
        await ws.close()
    else:
        await ws.send_denial_response(DenialResponse({"detail": "bad token"}, status_code=401))


async def lazy_reader(ws: WebSocket) -> None:
    """Reads nothing for a while, then everything: the reader must not read ahead."""
    rec = record_for(ws)
    await ws.accept()
    await anyio.sleep(1.0)
    rec.events.append(ws.statistics())
    count = 0
    async for _ in ws.iter_bytes():
        count += 1
        if count == int(ws.query_params["n"]):
            await ws.send_text(str(count))
    rec.done.set()


async def firehose(ws: WebSocket) -> None:
    """Sends big messages as fast as it may: a client that does not read must stop it."""
    rec = record_for(ws)
    await ws.accept()
    payload = b"x" * 256 * 1024
    try:
        for i in range(2000):
            await ws.send_bytes(i.to_bytes(4, "big") + payload)
            rec.times["progress"] = i + 1
    finally:
        rec.done.set()


HANDLERS: dict[str, Callable[[WebSocket], Any]] = {
    "/echo": echo,
    "/sleep": sleeper,
    "/receive": receiver,
    "/fail": failing,
    "/burst": burst,
    "/deny": deny,
    "/lazy": lazy_reader,
    "/firehose": firehose,
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    handler = HANDLERS[scope["path"]]
    await plait.serve_connection(scope, receive, send, handler, max_message_size=512 * 1024)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest) -> Iterator[HypercornServer]:
    with run_hypercorn(app, worker_class=request.param) as running:
        yield running


def url(server: HypercornServer, path: str, **query: Any) -> str:
    from urllib.parse import urlencode

    return server.url(path + ("?" + urlencode(query) if query else ""))


def open_client(address: str, **options: Any) -> ClientConnection:
    return connect(address, open_timeout=5, close_timeout=5, max_size=None, **options)


def test_echo_text_and_bytes(server: HypercornServer) -> None:
    with open_client(url(server, "/echo")) as ws:
        for i in range(50):
            ws.send(f"message {i}")
            assert ws.recv(timeout=5) == f"message {i}"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=5) == b"\x00\x01\xff"


def test_disconnect_cancels_the_handler_and_its_children(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    key, record = rec
    with open_client(url(server, "/sleep", id=key)) as ws:
        assert ws.recv(timeout=5) == "sleeping"
        closed_at = time.monotonic()
    record.wait(events=3)
    # both were cancelled, in no particular order, and both cleaned up
    assert sorted(record.events) == ["cancelled", "child finally", "finally"]
    assert record.times["cancelled"] - closed_at < 1.0


def test_pending_receive_raises_disconnect(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    key, record = rec
    with open_client(url(server, "/receive", id=key)) as ws:
        assert ws.recv(timeout=5) == "waiting"
    record.wait()
    # hypercorn reports every client close as 1006, whatever code the client sent
    assert record.events == [("disconnect", 1006)]


def test_handler_error_closes_with_1011_and_hides_the_text(
    server: HypercornServer, caplog: pytest.LogCaptureFixture
) -> None:
    with open_client(url(server, "/fail")) as ws:
        assert ws.recv(timeout=5) == "about to fail"
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1011, "internal error")
    assert "the secret is 42" in caplog.text  # logged with its traceback, on the server


def test_normal_return_delivers_everything_then_closes_1000(server: HypercornServer) -> None:
    with open_client(url(server, "/burst", n=2000)) as ws:
        received = [ws.recv(timeout=5) for _ in range(2000)]
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert received == [str(i) for i in range(2000)]
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1000


def test_message_over_the_limit_closes_with_1009(server: HypercornServer) -> None:
    with open_client(url(server, "/echo")) as ws:
        ws.send(b"a" * 1024)
        assert ws.recv(timeout=5) == b"a" * 1024
        ws.send(b"a" * (512 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1009, "message too big")


def test_denial_response_reaches_the_client(server: HypercornServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        open_client(url(server, "/deny"))
    assert info.value.response.status_code == 401
    assert info.value.response.body == b'{"detail":"bad token"}'


def test_close_before_accept_is_403(server: HypercornServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        open_client(url(server, "/deny", how="close"))
    assert info.value.response.status_code == 403


def test_a_handler_that_does_not_read_pushes_back_on_the_client(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    key, record = rec
    count = 200
    with open_client(url(server, "/lazy", id=key, n=count)) as ws:
        payload = b"y" * 200 * 1024

        def flood() -> None:
            for _ in range(count):
                ws.send(payload)

        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        assert ws.recv(timeout=15) == str(count)  # nothing was lost once it read
        sender.join(5)
    record.wait()
    stats = record.events[0]
    # During the second it did not read, the reader stopped after its 16 messages
    # (and one in hand); the rest waited in the server and on the socket.
    assert stats.messages_received <= stats.inbound_capacity + 1
    assert stats.inbound_buffered == stats.inbound_capacity


def test_a_client_that_does_not_read_makes_the_handler_wait(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    key, record = rec
    with SansIOClient(url(server, "/firehose", id=key)) as client:
        time.sleep(1.0)  # read nothing for a second
        # 0 when the handler's first send, made by itself (the baton), is the one
        # waiting in the server: hypercorn's trio worker blocks in its socket write.
        stalled_at = record.times.get("progress", 0)
        time.sleep(0.5)
        assert record.times.get("progress", 0) == stalled_at  # the handler is waiting
        assert stalled_at < 2000  # 2000 x 256 KiB did not all fit anywhere
        order = [int.from_bytes(frame[:4], "big") for frame in client.receive_frames(300)]
    assert order == list(range(300))  # then everything comes, in order


class SansIOClient:
    """A real WebSocket client (websockets' sans-I/O protocol on a plain socket) that
    reads from the socket only when asked, unlike the threaded clients."""

    def __init__(self, address: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        uri = parse_uri(address)
        self.protocol = ClientProtocol(uri, max_size=None)
        self.sock = socket.create_connection((uri.host, uri.port), timeout=5)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self.pending: list[bytes] = []
        while self.protocol.handshake_exc is None and not self._events():
            self._read()
        assert self.protocol.handshake_exc is None

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            self.sock.sendall(data)

    def _read(self) -> None:
        data = self.sock.recv(65536)
        assert data, "the server closed the connection"
        self.protocol.receive_data(data)
        self._flush()

    def _events(self) -> bool:
        from websockets.frames import Frame

        got = False
        for event in self.protocol.events_received():
            got = True
            if isinstance(event, Frame):
                self.pending.append(bytes(event.data))
        return got

    def receive_frames(self, count: int) -> list[bytes]:
        while len(self.pending) < count:
            self._read()
            self._events()
        frames, self.pending = self.pending[:count], self.pending[count:]
        return frames

    def __enter__(self) -> SansIOClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
