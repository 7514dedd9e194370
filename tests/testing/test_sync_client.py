"""TestClient and WebSocketTestSession: the async client through a blocking portal."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sniffio

from plait import MessageTypeError, WebSocketDisconnect
from plait.testing import LifespanError, TestClient, WebSocketDenied

pytestmark = pytest.mark.parametrize("backend", ["asyncio", "trio"])


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Answers lifespan; on /echo echoes; on /deny denies; on /close closes with 4001."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            scope["state"]["started"] = True
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    if scope["path"] == "/deny":
        start = {"type": "websocket.http.response.start", "status": 404, "headers": []}
        await send(start)
        await send({"type": "websocket.http.response.body", "body": b"not here"})
        return
    await send({"type": "websocket.accept", "subprotocol": "chat"})
    await send({"type": "websocket.send", "text": sniffio.current_async_library()})
    if scope["path"] == "/close":
        await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
    if scope["path"] == "/boom":
        raise ValueError("boom")
    while (message := await receive())["type"] == "websocket.receive":
        await send({**message, "type": "websocket.send"})


def test_echo_on_the_chosen_backend(backend: str) -> None:
    with TestClient(app, backend=backend) as client, client.websocket_connect("/echo") as ws:
        assert ws.subprotocol == "chat"
        assert ws.accept_headers == []
        assert ws.receive_text() == backend
        ws.send_text("hi")
        assert ws.receive_text() == "hi"
        ws.send_bytes(b"\x01")
        assert ws.receive_bytes() == b"\x01"
        ws.send_json([1, "a"], mode="binary")
        assert ws.receive_json(mode="binary") == [1, "a"]
        ws.send({"type": "websocket.receive", "text": "raw"})
        assert ws.receive() == {"type": "websocket.send", "text": "raw"}
        ws.send_json({"k": 1})
        with pytest.raises(MessageTypeError):
            ws.receive_bytes()
        ws.close()


def test_denial(backend: str) -> None:
    with (
        TestClient(app, backend=backend) as client,
        pytest.raises(WebSocketDenied) as info,
        client.websocket_connect("/deny"),
    ):
        pytest.fail("the connection must not open")
    assert (info.value.status_code, info.value.body) == (404, b"not here")


def test_server_close(backend: str) -> None:
    with TestClient(app, backend=backend) as client, client.websocket_connect("/close") as ws:
        ws.receive_text()
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
    assert (info.value.code, info.value.reason) == (4001, "bye")


def test_receive_timeout(backend: str) -> None:
    with TestClient(app, backend=backend) as client, client.websocket_connect("/echo") as ws:
        ws.receive_text()
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no message from the application within 0\.1 s"):
            ws.receive_text(timeout=0.1)
        assert time.monotonic() - started < 2


def test_application_exception(backend: str) -> None:
    with TestClient(app, backend=backend) as client, client.websocket_connect("/boom") as ws:
        assert ws.receive_text() == backend
        with pytest.raises(ValueError, match="boom"):
            ws.receive_text()


def test_lifespan_state_reaches_the_scope(backend: str) -> None:
    states: list[Any] = []

    async def recording_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            states.append(dict(scope["state"]))
        await app(scope, receive, send)

    with TestClient(recording_app, backend=backend) as client, client.websocket_connect("/") as ws:
        ws.receive_text()
    assert states == [{"started": True}]


def test_lifespan_startup_failure(backend: str) -> None:
    async def failing_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with (
        pytest.raises(LifespanError, match="no database"),
        TestClient(failing_app, backend=backend),
    ):
        pytest.fail("the client must not start")


def test_connecting_requires_a_running_client(backend: str) -> None:
    client = TestClient(app, backend=backend)
    with pytest.raises(RuntimeError, match="with TestClient"), client.websocket_connect("/"):
        pytest.fail("the connection must not open")
