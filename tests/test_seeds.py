"""The seed documents' examples, as written with plait's names."""

from __future__ import annotations

from typing import Annotated

import pytest

from plait import App, AsyncResource, Ignore, WebSocket, WebSocketRoute, use
from plait.testing import TestClient

# -- lihil: websocket.md ------------------------------------------------------------------

ws_route = WebSocketRoute("web_socket/{session_id}")


async def ws_factory(ws: Ignore[WebSocket]) -> Ignore[AsyncResource[WebSocket]]:
    await ws.accept()
    yield ws
    await ws.close()


@ws_route.ws_handler
async def ws_handler(
    ws: Annotated[WebSocket, use(ws_factory, reuse=False)],
    session_id: str,
    max_users: int,
):
    assert session_id == "session123" and max_users == 5  # noqa: PT018 - the seed as written
    await ws.send_text("Hello, world!")


lhl = App()
lhl.include_routes(ws_route)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_lihil_seed(backend: str) -> None:
    client = TestClient(lhl, backend=backend)
    with client:  # noqa: SIM117 - the seed as written
        with client.websocket_connect("/web_socket/session123?max_users=5") as websocket:
            data = websocket.receive_text()
            assert data == "Hello, world!"
