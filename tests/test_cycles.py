"""A connection that ended is freed by reference counting alone.

With the cyclic garbage collector off, 10,000 connections, each ending one of the ways
a connection ends (the client closes or vanishes, the handler returns, closes, fails,
denies, is cancelled, starts tasks that fail, a message does not decode, a send fails,
watchdogs, App routes with a typed listener, a stream and a heartbeat), must leave
nothing for ``gc.collect()`` to find: not one object, plait's or anyone's that plait's
would keep alive. Otherwise every connection's objects wait for a full collection, which
walks every live object of the process (:doc:`/discussion/closing`, issue 19).
"""

from __future__ import annotations

import collections
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import msgspec
import pytest

import plait
from plait._types import Message

pytestmark = pytest.mark.anyio

CONNECTIONS = 10_000

CONNECT: Message = {"type": "websocket.connect"}
TEXT: Message = {"type": "websocket.receive", "text": "hi"}
JSON: Message = {"type": "websocket.receive", "text": '{"data": "x"}'}
BAD_JSON: Message = {"type": "websocket.receive", "text": "{"}
WRONG_TYPE: Message = {"type": "websocket.receive", "text": '{"data": 1}'}
CLOSED: Message = {"type": "websocket.disconnect", "code": 1000}
VANISHED: Message = {"type": "websocket.disconnect", "code": 1006}

SCOPE = {
    "type": "websocket",
    "path": "/",
    "raw_path": b"/",
    "headers": [],
    "query_string": b"",
    "scheme": "ws",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
}


class Message_(msgspec.Struct):
    """A listener's typed message."""

    data: str


class _Server:
    """A scripted ASGI server: hands the app ``incoming`` in order, each data message
    once the app has sent something (the client answers the accept), and the final
    disconnect once the app sent ``replies`` messages (or soon after), and again to
    every later call. ``failing``:
    every send after the accept raises ``OSError``, as a reset socket's does."""

    def __init__(self, incoming: list[Message], replies: int, *, failing: bool) -> None:
        self.incoming = incoming
        self.replies = replies
        self.failing = failing
        self.sent = 0
        self._due = 0
        self._reached: anyio.Event | None = None

    async def receive(self) -> Message:
        if len(self.incoming) == 1 and self.incoming[0]["type"] == "websocket.disconnect":
            message = self.incoming[0]  # reported again to whoever asks once more
        elif self.incoming:
            message = self.incoming.pop(0)
        else:
            await anyio.sleep_forever()
        kind = message["type"]
        self._due = self.replies if kind == "websocket.disconnect" else kind != "websocket.connect"
        if self.sent < self._due:
            self._reached = anyio.Event()
            with anyio.move_on_after(1):
                await self._reached.wait()
        return message

    async def send(self, message: Message) -> None:
        self.sent += 1
        if self._reached is not None and self.sent >= self._due:
            self._reached.set()
        if self.failing and message["type"] != "websocket.accept":
            raise OSError("connection reset")


Endpoint = Callable[[Any, Any, Any], Awaitable[None]]


def _serving(handler: Callable[[plait.WebSocket], Awaitable[None]], **options: Any) -> Endpoint:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await plait.serve_connection(scope, receive, send, handler, **options)

    return app


async def _echo(ws: plait.WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await ws.send_text(text)


async def _waits(ws: plait.WebSocket) -> None:
    await ws.accept()
    await anyio.sleep_forever()  # cancelled when the peer leaves


async def _fails(ws: plait.WebSocket) -> None:
    await ws.accept()
    raise RuntimeError("the handler's own error")


async def _closes(ws: plait.WebSocket) -> None:
    await ws.accept()
    await ws.close(1000)


async def _denies(ws: plait.WebSocket) -> None:
    return  # before accept: a 403


async def _starts_tasks(ws: plait.WebSocket) -> None:
    await ws.accept()
    ws.task_group.start_soon(anyio.sleep_forever)
    await ws.task_group.start(_started)
    await ws.receive_text()
    await anyio.sleep_forever()


async def _started(*, task_status: anyio.abc.TaskStatus[None]) -> None:
    task_status.started()
    await anyio.sleep_forever()


async def _task_fails(ws: plait.WebSocket) -> None:
    await ws.accept()

    async def fail() -> None:
        raise ValueError("a task's own error")

    ws.task_group.start_soon(fail)
    await anyio.sleep_forever()


async def _reads_json(ws: plait.WebSocket) -> None:
    await ws.accept()
    while True:
        await ws.receive_json()  # the bad message closes with 1007


async def _sends_after_leaving(ws: plait.WebSocket) -> None:
    await ws.accept()
    with anyio.move_on_after(1):
        while True:
            try:
                await ws.send_text("tick")
            except plait.WebSocketDisconnect:
                return


def _app(*, heartbeat: plait.Heartbeat | None = None) -> Endpoint:
    route = plait.WebSocketRoute("/", heartbeat=heartbeat)

    @route.listener
    async def echo(data: Message_) -> Message_:
        return data

    @route.stream
    async def idle() -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield ""

    app: Endpoint = plait.App(routes=[route])
    return app


def _handler_app() -> Endpoint:
    route = plait.WebSocketRoute("/", _echo)
    app: Endpoint = plait.App(routes=[route])
    return app


def _endings() -> list[tuple[str, Endpoint, list[Message], int, bool]]:
    """(name, app, what the client sends, replies before it leaves, sends fail)."""
    watched = _serving(_echo, heartbeat=plait.Heartbeat(30, 10), idle_timeout=60, send_timeout=5)
    app, beating = _app(), _app(heartbeat=plait.Heartbeat(30, 10))
    return [
        ("echo, the client closes", _serving(_echo), [CONNECT, TEXT, CLOSED], 2, False),
        ("echo, the client vanishes", _serving(_echo), [CONNECT, TEXT, VANISHED], 2, False),
        ("the handler is cancelled", _serving(_waits), [CONNECT, CLOSED], 1, False),
        ("the handler fails", _serving(_fails), [CONNECT, CLOSED], 2, False),
        ("the handler closes", _serving(_closes), [CONNECT, CLOSED], 2, False),
        ("the handler denies", _serving(_denies), [CONNECT], 1, False),
        (
            "the handler's tasks are cancelled",
            _serving(_starts_tasks, drain_timeout=0.001),
            [CONNECT, TEXT, CLOSED],
            1,
            False,
        ),
        ("a task of the handler fails", _serving(_task_fails), [CONNECT, CLOSED], 2, False),
        ("a message is not JSON", _serving(_reads_json), [CONNECT, BAD_JSON, CLOSED], 2, False),
        ("the sends fail", _serving(_sends_after_leaving), [CONNECT, VANISHED], 1, True),
        ("every watchdog", watched, [CONNECT, TEXT, CLOSED], 2, False),
        ("an App route", app, [CONNECT, JSON, CLOSED], 2, False),
        ("an App route, heartbeat", beating, [CONNECT, JSON, VANISHED], 2, False),
        ("an App route, invalid message", app, [CONNECT, WRONG_TYPE, CLOSED], 2, False),
        ("an App route with a handler", _handler_app(), [CONNECT, TEXT, CLOSED], 2, False),
    ]


async def _serve(app: Endpoint, incoming: list[Message], replies: int, failing: bool) -> None:
    server = _Server(list(incoming), replies, failing=failing)
    await app(dict(SCOPE), server.receive, server.send)


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The cyclic collector off for the test's duration, and the log quiet (the
    endings log their errors, at a cost that is not the point)."""
    gc.disable()
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _found() -> collections.Counter[str]:
    """What a full collection finds unreachable, by type; then freed for good (the
    objects ``DEBUG_SAVEALL`` kept would otherwise be found again next time)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    kinds = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
    gc.set_debug(0)
    gc.garbage.clear()
    gc.collect()
    return kinds


@pytest.mark.timeout(300)
async def test_connections_that_ended_leave_nothing_for_the_collector(
    collector_off: None,
) -> None:
    endings = _endings()
    for _, app, incoming, replies, failing in endings:  # warm up: first-use caches
        await _serve(app, incoming, replies, failing)
    _found()
    found: dict[str, collections.Counter[str]] = {}
    for n in range(CONNECTIONS):
        name, app, incoming, replies, failing = endings[n % len(endings)]
        await _serve(app, incoming, replies, failing)
        if n < len(endings) or n == CONNECTIONS - 1:  # which ending leaves what
            kinds = _found()
            if kinds:
                found[name] = kinds
    assert not found, found
