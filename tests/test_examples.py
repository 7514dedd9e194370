"""The examples run: in-process on both backends."""

from __future__ import annotations

import pytest
from examples.rooms import app

from plait.testing import AsyncTestClient, WebSocketDenied

pytestmark = pytest.mark.anyio


async def test_rooms_example() -> None:
    async with AsyncTestClient(app) as client:
        async with client.websocket_connect(
            "/rooms/lobby?name=ada&limit=3", headers={"x-token": "secret"}
        ) as ws:
            assert await ws.receive_json() == {
                "room": "lobby",
                "name": "ada",
                "limit": 3,
                "session": "session of ada",
            }
            await ws.send_text("hi")
            assert await ws.receive_text() == "[lobby] ada: hi"
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/rooms/lobby?name=ada"):
                pass
        assert info.value.status_code == 401


@pytest.mark.parametrize("path", ["/dashboard", "/by-hand"])
async def test_dashboard_example(path: str) -> None:
    from examples.dashboard import app as dashboard_app

    async with AsyncTestClient(dashboard_app) as client, client.websocket_connect(path) as ws:
        await ws.send_json({"every": 0.05})
        seen: dict[str, list[object]] = {}
        while len(seen.get("ticker", [])) < 5 or "clock" not in seen or "reply" not in seen:
            item = await ws.receive_json()
            if "every" in item:
                seen.setdefault("reply", []).append(item["every"])
            else:
                seen.setdefault(item["stream"], []).append(item["data"])
    assert seen["reply"] == [0.05]
    ticks = seen["ticker"]
    assert ticks == list(range(len(ticks)))
