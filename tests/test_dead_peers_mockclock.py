"""Idle timeout and heartbeat on trio's MockClock: minutes of virtual time, instantly.

pytest-trio drives these tests (``@pytest.mark.trio`` with ``autojump_clock``); they do
not use the anyio plugin, so the two are never mixed on one test.
"""

from __future__ import annotations

import pytest
import trio

import plait
from plait import App, Heartbeat, WebSocketDisconnect
from plait.testing import AsyncTestClient


@plait.listener("/idle", idle_timeout=60)
async def idle(data: str) -> str:
    return data


@plait.listener("/beat", heartbeat=Heartbeat(interval=30, timeout=10))
async def beat(data: str) -> str:
    return f"got {data}"


APP = App(routes=[idle, beat])


@pytest.mark.trio
async def test_idle_timeout_after_exactly_its_silence(autojump_clock: trio.abc.Clock) -> None:
    async with (
        AsyncTestClient(APP, timeout=3600) as client,
        client.websocket_connect("/idle") as ws,
    ):
        for _ in range(5):  # a message every 50 s keeps it open for minutes
            await trio.sleep(50)
            await ws.send_text("x")
            assert await ws.receive_text() == "x"
        silent_from = trio.current_time()
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
        waited = trio.current_time() - silent_from
    assert (info.value.code, info.value.reason) == (1001, "idle timeout")
    assert 60 <= waited <= 75  # checked four times per timeout


@pytest.mark.trio
async def test_heartbeat_over_virtual_minutes(autojump_clock: trio.abc.Clock) -> None:
    async with AsyncTestClient(APP, timeout=3600) as client:
        async with client.websocket_connect("/beat") as ws:
            started = trio.current_time()
            for _ in range(10):  # five minutes of answered pings
                assert await ws.receive_text() == "ping"
                await ws.send_text("pong")
            assert trio.current_time() - started >= 300
            await ws.send_text("still here")
            assert await ws.receive_text() == "got still here"
        async with client.websocket_connect("/beat") as ws:
            assert await ws.receive_text() == "ping"
            pinged_at = trio.current_time()
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()  # never answers
            assert trio.current_time() - pinged_at == pytest.approx(10)
    assert (info.value.code, info.value.reason) == (1001, "heartbeat timeout")
