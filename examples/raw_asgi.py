"""``plait.WebSocket`` alone in a raw ASGI app: ``hypercorn -k trio examples.raw_asgi:app``.

(Or plain ``hypercorn examples.raw_asgi:app`` for the asyncio worker.) No engine, no
routing: the connection object reads and writes the server's ``receive`` and ``send``
directly, as in Starlette or Lilya. Connect to ``ws://127.0.0.1:8000/`` (any path) and
send JSON in binary frames, e.g. ``b'{"n": 1}'``: each comes back in a binary frame as
``{"received": {"n": 1}}``. Send ``"bye"`` and the server closes with 1000; invalid
JSON closes with 1007, a text frame with 1003.
"""

from __future__ import annotations

from plait import MessageDecodeError, MessageTypeError, WebSocket
from plait.types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer the lifespan, serve WebSockets, and refuse plain HTTP with a 404."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
    elif scope["type"] == "websocket":
        await serve_websocket(WebSocket(scope, receive, send))
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"WebSocket only"})


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown: hypercorn's trio worker fails to start otherwise."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve_websocket(ws: WebSocket) -> None:
    """Echo JSON back in binary frames until the client leaves or says ``"bye"``."""
    await ws.accept()
    try:
        async for data in ws.iter_json(mode="binary"):  # ends when the client disconnects
            if data == "bye":
                break
            await ws.send_json({"received": data}, mode="binary")
    except MessageDecodeError:
        await ws.close(1007, "invalid JSON")
    except MessageTypeError:
        await ws.close(1003, "send JSON in binary frames")
    else:
        await ws.close()  # does nothing if the client has already gone
