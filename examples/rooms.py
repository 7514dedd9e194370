"""Routing and injection: ``hypercorn -k trio examples.rooms:app``.

Connect to ``ws://127.0.0.1:8000/rooms/lobby?name=ada`` with header ``x-token: secret``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

import plait
from plait import Deny, Header, WebSocket, use

logger = logging.getLogger(__name__)


def current_user(token: Annotated[str | None, Header("x-token")] = None) -> str:
    """Authenticate the handshake; a bad token is refused with 401 before accept."""
    if token != "secret":
        raise Deny(401, "a valid x-token header is required")
    return "ada"


async def session(user: Annotated[str, use(current_user)]) -> AsyncIterator[str]:
    """A per-connection resource: the code after ``yield`` runs however it ends."""
    logger.info("%s joined", user)
    yield f"session of {user}"
    logger.info("%s left", user)


@plait.websocket("/rooms/{room}")
async def room(
    ws: WebSocket,
    room: str,
    name: str,
    limit: int = 100,
    session: Annotated[str, use(session)] = "",
) -> None:
    """Echo in a room: path, query and dependencies injected, typed."""
    await ws.accept()
    await ws.send_json({"room": room, "name": name, "limit": limit, "session": session})
    async for text in ws.iter_text():
        await ws.send_text(f"[{room}] {name}: {text}")


app = plait.App(routes=[room])
