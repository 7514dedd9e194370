"""Testing the echo example in-process: ``python -m pytest examples/test_echo.py``.

The synchronous client runs the app on asyncio and on trio; the async client runs on
whichever loop the test runs on (the anyio pytest plugin's ``anyio_backend``).
"""

from __future__ import annotations

from typing import Literal

import pytest

from examples.echo import app
from plait import WebSocketDisconnect
from plait.testing import AsyncTestClient, TestClient, WebSocketDenied


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_echo(backend: Literal["asyncio", "trio"]) -> None:
    with TestClient(app, backend=backend) as client, client.websocket_connect("/echo") as ws:
        ws.send_text("hello")
        assert ws.receive_text() == "hello"


def test_unknown_path_is_refused() -> None:
    with (
        TestClient(app) as client,
        pytest.raises(WebSocketDenied) as denied,
        client.websocket_connect("/nowhere"),
    ):
        pass
    assert denied.value.status_code == 404


def test_binary_message_closes_with_1003() -> None:
    with TestClient(app) as client, client.websocket_connect("/echo") as ws:
        ws.send_bytes(b"not text")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1003


@pytest.mark.anyio
async def test_echo_async() -> None:
    async with AsyncTestClient(app) as client, client.websocket_connect("/echo") as ws:
        await ws.send_text("hello")
        assert await ws.receive_text() == "hello"
