"""The engine without an App: ``hypercorn -k trio examples.serve_connection:app``.

A raw ASGI app hands each WebSocket connection to ``plait.serve_connection``, which runs
the handler next to a reader and a writer task. Connect to any path and send text.
"""

from __future__ import annotations

import plait
from plait import WebSocket
from plait.types import Receive, Scope, Send


async def echo(ws: WebSocket) -> None:
    """Send every text message back; the engine closes with 1000 when it returns."""
    await ws.accept()
    async for text in ws.iter_text():
        await ws.send_text(text)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve WebSockets with the engine; answer the lifespan; no HTTP."""
    if scope["type"] == "websocket":
        await plait.serve_connection(
            scope, receive, send, echo, max_message_size=64 * 1024, send_timeout=10
        )
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
