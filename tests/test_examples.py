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
