"""AsyncTestClient inside pytest-trio tests, where timeouts run on trio's virtual clock."""

from typing import Any

import pytest
import trio
import trio.testing

from plait import WebSocketDisconnect
from plait.testing import AsyncTestClient


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        raise RuntimeError("no lifespan")
    await receive()
    await send({"type": "websocket.accept"})
    message = await receive()
    if message["type"] == "websocket.disconnect":
        return
    await trio.sleep(30)  # a slow handler: free under the autojump clock
    await send({"type": "websocket.send", "text": message["text"]})
    await send({"type": "websocket.close", "code": 4000})


@pytest.mark.trio
async def test_timeouts_use_the_virtual_clock(autojump_clock: trio.testing.MockClock) -> None:
    client = AsyncTestClient(app, timeout=60)
    async with client, client.websocket_connect("/") as ws:
        await ws.send_text("slow")
        started = trio.current_time()
        assert await ws.receive_text() == "slow"
        assert trio.current_time() - started == pytest.approx(30)
        with pytest.raises(WebSocketDisconnect):
            await ws.receive_text()
        await ws.close()
        with pytest.raises(TimeoutError, match="within 60 s"):
            async with client.websocket_connect("/") as idle:
                await idle.receive_text()
