"""run_hypercorn: a real hypercorn server on loopback, driven by the websockets client."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from plait import PlaitError
from plait.testing import run_hypercorn

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("worker_class", ["asyncio", "trio"]),
]


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    assert scope["type"] == "websocket"
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({**message, "type": "websocket.send"})


def test_echo(worker_class: str) -> None:
    with run_hypercorn(echo_app, worker_class=worker_class) as server:
        assert server.host == "127.0.0.1"
        assert server.url("/echo?x=1") == f"ws://127.0.0.1:{server.port}/echo?x=1"
        with connect(server.url("/echo"), open_timeout=5) as websocket:
            websocket.send("hello")
            assert websocket.recv(timeout=5) == "hello"
            websocket.send(b"\x00\xff")
            assert websocket.recv(timeout=5) == b"\x00\xff"
    # The server is gone and its port closed.
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection((server.host, server.port), 1),
    ):
        pass


def test_config_keywords_reach_hypercorn(worker_class: str) -> None:
    with (
        run_hypercorn(echo_app, worker_class=worker_class, websocket_max_message_size=16) as server,
        connect(server.url("/"), open_timeout=5) as websocket,
    ):
        websocket.send("x" * 100)
        with pytest.raises(ConnectionClosed) as info:
            websocket.recv(timeout=5)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1009  # message too big


def test_unknown_config_keyword(worker_class: str) -> None:
    with (
        pytest.raises(TypeError, match="not_a_setting"),
        run_hypercorn(echo_app, worker_class=worker_class, not_a_setting=1),
    ):
        pytest.fail("the server must not start")


def test_startup_failure_is_raised(worker_class: str) -> None:
    async def failing_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with (
        pytest.raises(PlaitError, match=r"before it started serving: .*no database"),
        run_hypercorn(failing_app, worker_class=worker_class),
    ):
        pytest.fail("the server must not start")
