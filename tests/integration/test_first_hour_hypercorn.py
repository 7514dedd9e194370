"""The mistakes of a user's first hour, under real hypercorn (asyncio and trio workers).

An asyncio-only call in a handler under trio gets a log line that says what to change;
a listener and a stream on one path serve together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Literal

import anyio
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import ClientConnection, connect

import plait
from plait import App, WebSocket, WebSocketRoute
from plait.testing import run_hypercorn

pytestmark = pytest.mark.integration

WorkerClass = Literal["asyncio", "trio"]
ADVICE = "an asyncio-only call in a handler under trio: use anyio"


@pytest.fixture(params=["asyncio", "trio"])
def worker_class(request: pytest.FixtureRequest) -> WorkerClass:
    worker: WorkerClass = request.param
    return worker


def open_client(address: str) -> ClientConnection:
    return connect(address, open_timeout=5, close_timeout=5)


# -- an asyncio-only call in a handler ------------------------------------------------------


@plait.websocket("/naps/{how}")
async def nap(ws: WebSocket, how: str) -> None:
    await ws.accept()
    await ws.receive_text()
    if how == "asyncio":
        await asyncio.sleep(0.01)  # what the test is about: asyncio's own sleep
    else:
        await anyio.sleep(0.01)
    await ws.send_text("rested")


def closed_with(address: str) -> tuple[int, str]:
    with open_client(address) as ws:
        ws.send("sleep")
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=5)
    received = info.value.rcvd
    assert received is not None
    return received.code, received.reason


def test_an_asyncio_call_under_trio_logs_what_to_change(
    worker_class: WorkerClass, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="plait")
    with run_hypercorn(App([nap]), worker_class=worker_class) as server:
        if worker_class == "trio":
            assert closed_with(server.url("/naps/asyncio")) == (1011, "internal error")
        else:
            with open_client(server.url("/naps/asyncio")) as ws:
                ws.send("sleep")
                assert ws.recv(timeout=5) == "rested"
    errors = [r for r in caplog.records if r.name.startswith("plait") and r.levelname == "ERROR"]
    if worker_class == "trio":
        assert len(errors) == 1
        assert ADVICE in errors[0].getMessage()
        assert "anyio.sleep" in errors[0].getMessage()
        assert errors[0].exc_info is not None  # the traceback still shows where
    else:
        assert errors == []


def test_another_error_under_trio_gets_no_advice(caplog: pytest.LogCaptureFixture) -> None:
    @plait.websocket("/fails")
    async def fails(ws: WebSocket) -> None:
        await ws.accept()
        raise RuntimeError("something else")

    caplog.set_level(logging.ERROR, logger="plait")
    with (
        run_hypercorn(App([fails]), worker_class="trio") as server,
        open_client(server.url("/fails")) as ws,
        pytest.raises(ConnectionClosedError),
    ):
        ws.recv(timeout=5)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("plait")]
    assert messages == ["handler for /fails failed"]


# -- a listener and a stream on one path ----------------------------------------------------


@plait.listener("/chat")
async def chat(data: str) -> str:
    return f"you said {data}"


@plait.stream("/chat")
async def news() -> AsyncIterator[str]:
    for number in range(2):
        yield f"news {number}"


def test_a_listener_and_a_stream_on_one_path_serve_together(worker_class: WorkerClass) -> None:
    with (
        run_hypercorn(App([chat, news]), worker_class=worker_class) as server,
        open_client(server.url("/chat")) as ws,
    ):
        ws.send("hello")
        received = {ws.recv(timeout=5) for _ in range(3)}
    assert received == {"you said hello", "news 0", "news 1"}


# -- a Starlette-style route ----------------------------------------------------------------


async def endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())


def test_a_starlette_style_route_serves(worker_class: WorkerClass) -> None:
    route = WebSocketRoute("/ws", endpoint)
    with (
        run_hypercorn(App([route]), worker_class=worker_class) as server,
        open_client(server.url("/ws")) as ws,
    ):
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
