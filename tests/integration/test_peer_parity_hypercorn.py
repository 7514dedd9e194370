"""Issue 11's peer behaviours under real hypercorn (asyncio and trio workers), driven by
the `websockets` client: hook injection, function-listener hooks, a stream reading its
socket, a sync listener, send modes and denials that explain themselves.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Annotated, Any, ClassVar

import anyio
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

import plait
from _records import Record, record_for
from plait import App, Listener, WebSocket
from plait.testing import HypercornServer, run_hypercorn

pytestmark = pytest.mark.integration


def provide_user(user: str) -> Iterator[str]:
    yield user.title()


class Room(Listener):
    """Litestar's class listener: every hook takes the dependency and the path."""

    path = "/rooms/{room}"
    dependencies: ClassVar[dict[str, Any]] = {"member": provide_user}

    async def on_accept(self, socket: WebSocket, room: str, member: str) -> None:
        await socket.send_text(f"{member} joined {room}")

    async def on_receive(self, data: str, member: str) -> str:
        return f"{member}: {data}"

    async def on_disconnect(self, socket: WebSocket, room: str, member: str) -> None:
        record_for(socket).add(f"{member} left {room}")
        record_for(socket).finish()


async def leave(socket: WebSocket, room: str) -> None:
    await anyio.lowlevel.checkpoint()
    record_for(socket).add(f"on_disconnect {room}")
    record_for(socket).finish()


@plait.listener("/hang/{room}", on_disconnect=leave)
async def hang(data: str, socket: WebSocket) -> None:
    record_for(socket).add(f"got {data}")
    await anyio.sleep_forever()


@plait.stream("/upper", on_receive="stream")
async def upper(socket: WebSocket) -> AsyncGenerator[str, None]:
    """Litestar's ``listen_for_disconnect=False``: the stream reads the socket."""
    record = record_for(socket)
    try:
        async for text in socket.iter_text():
            yield text.upper()
    finally:
        record.finish()


@plait.listener("/sync")
def blocking(data: str, socket: WebSocket) -> str:
    record_for(socket).add(threading.current_thread() is threading.main_thread())
    return data[::-1]


@plait.listener("/text", mode="text")
async def as_text(data: str) -> bytes:
    return data.encode()


@plait.listener("/limited")
async def limited(data: str, limit: int, name: Annotated[str, plait.Header("x-name")]) -> None:
    raise AssertionError("not reached")


APP = App(routes=[Room, hang, upper, blocking, as_text, limited])


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest) -> Iterator[HypercornServer]:
    with run_hypercorn(APP, worker_class=request.param) as running:
        yield running


def open_client(server: HypercornServer, path: str) -> ClientConnection:
    return connect(server.url(path), open_timeout=5, close_timeout=5)


def test_class_listener_hooks_are_injected(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    """Litestar: ``on_accept(self, socket, some)`` gets its dependency (plait used to call
    it with the socket alone and close with 1011)."""
    key, record = rec
    with open_client(server, f"/rooms/lobby?user=ada&id={key}") as ws:
        assert ws.recv(timeout=5) == "Ada joined lobby"
        ws.send("hi")
        assert ws.recv(timeout=5) == "Ada: hi"
    record.wait()
    assert record.events == ["Ada left lobby", "finally"]


def test_function_listener_on_disconnect_runs_when_the_client_resets(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    """Litestar's ``websocket_listener(..., on_disconnect=...)`` is called however the
    connection ends; here the client drops the TCP connection mid-call."""
    key, record = rec
    with open_client(server, f"/hang/lobby?id={key}") as ws:
        ws.send("wait for me")
        while not record.events:
            threading.Event().wait(0.01)
        ws.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the peer is just gone
    record.wait()
    assert record.events == ["got wait for me", "on_disconnect lobby", "finally"]


def test_a_stream_reads_its_own_socket(server: HypercornServer, rec: tuple[str, Record]) -> None:
    """A stream with ``on_receive="stream"`` gets every message, and ends at the close."""
    key, record = rec
    with open_client(server, f"/upper?id={key}") as ws:
        for word in ("one", "two", "three"):
            ws.send(word)
        assert [ws.recv(timeout=5) for _ in range(3)] == ["ONE", "TWO", "THREE"]
    record.wait()


def test_sync_listener_in_a_thread_and_bytes_sent_as_text(
    server: HypercornServer, rec: tuple[str, Record]
) -> None:
    """Litestar runs a sync listener in a thread, and ``mode="text"`` sends bytes as text."""
    key, record = rec
    with open_client(server, f"/sync?id={key}") as ws:
        ws.send("abc")
        assert ws.recv(timeout=5) == "cba"
    assert record.events == [False]
    with open_client(server, "/text") as ws:
        ws.send("héllo")
        reply = ws.recv(timeout=5)
        assert (type(reply), reply) == (str, "héllo")  # a text frame, not binary
        ws.close()
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=1)


def test_a_400_lists_each_failure_once_in_words(server: HypercornServer) -> None:
    """FastAPI's 422 names each failing field once with a readable message."""
    with pytest.raises(InvalidStatus) as info:
        open_client(server, "/limited?limit=abc")
    response = info.value.response
    assert response.status_code == 400
    assert json.loads(response.body) == {
        "detail": "invalid parameters",
        "errors": [
            {"source": "query", "name": "limit", "message": 'expected an integer, got "abc"'},
            {"source": "header", "name": "x-name", "message": "missing"},
        ],
    }
