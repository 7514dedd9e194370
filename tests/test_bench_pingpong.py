"""The ping-pong that `benchmarks.instructions` counts under callgrind, run as it is.

Every app serves a short connection on both backends and sends every message back, so a
broken app definition fails here rather than in a benchmark run that nobody watches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from benchmarks import apps
from benchmarks.pingpong import APPS, FakeServer, ping_pong

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(APPS))
async def test_every_app_echoes_every_message(name: str) -> None:
    entry = APPS[name]
    server = await ping_pong(entry.load(), 20, entry.text)
    assert (server.handed, server.echoed, server.closed) == (20, 20, None)


async def test_the_server_refuses_an_echo_that_differs() -> None:
    async def wrong(scope: object, receive: apps.Receive, send: apps.Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        await send({"type": "websocket.send", "text": "not the message"})

    with pytest.raises(RuntimeError, match="unexpected echo"):
        await ping_pong(wrong, 3, "x" * 64)


async def test_the_next_message_waits_for_the_echo() -> None:
    server = FakeServer(2, "ping")
    assert (await server.receive())["type"] == "websocket.connect"
    await server.send({"type": "websocket.accept"})
    assert (await server.receive())["text"] == "ping"
    with anyio.move_on_after(0.05) as scope:
        await server.receive()  # the echo of the first message has not come back
    assert scope.cancelled_caught
    await server.send({"type": "websocket.send", "text": "ping"})
    assert (await server.receive())["text"] == "ping"
    await server.send({"type": "websocket.send", "text": "ping"})
    assert await server.receive() == {"type": "websocket.disconnect", "code": 1000}


def test_the_command_prints_what_came_back() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.pingpong", "plait", "20", "trio"],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["echoed"], result["messages"]) == (20, 20)
