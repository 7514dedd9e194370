"""A low-level echo handler: ``hypercorn -k trio examples.echo:app``.

(Or plain ``hypercorn examples.echo:app`` for the asyncio worker.) Connect to
``ws://127.0.0.1:8000/echo`` and send text messages: each comes back as it was sent.
"""

from __future__ import annotations

import plait
from plait import WebSocket


@plait.websocket("/echo")
async def echo(ws: WebSocket) -> None:
    """Send every text message back; returning closes with 1000."""
    await ws.accept()
    async for text in ws.iter_text():  # ends when the client disconnects
        await ws.send_text(text)


app = plait.App(routes=[echo])
