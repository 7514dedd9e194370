"""The ASGI types, the lifespan answer and the raw idle app that benchmark apps share.

Kept apart from `benchmarks.apps` so that an app module can use them without importing
Litestar and Starlette (a second of start-up, and memory in every server).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

READY = "ready"
"""What an idle app sends once it has accepted."""


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer lifespan startup and shutdown so hypercorn starts without warnings."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def idle_raw(receive: Receive, send: Send) -> None:
    """Accept, say so, then read (and drop) messages until the client disconnects."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": READY})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] != "websocket.receive":
            break
    # hypercorn turns a return while connected into a 1011 close: close normally instead.
    await send({"type": "websocket.close", "code": 1000})
