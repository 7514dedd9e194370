"""Idle WebSocket apps that hypercorn loads as ``benchmarks.memory_apps:NAME``.

Every app accepts a connection on ``/``, tells the client so with one text frame, reads the
client's one text message and then holds the connection idle until the client leaves.
`benchmarks.memory` measures the server's resident memory per connection held this way.

- ``raw``: bare ASGI: accept, send ``"ready"``, then ``receive`` until
  ``websocket.disconnect``. The baseline.
- ``plait``: `plait.serve_connection` with a handler that accepts, sends ``"ready"`` and
  loops ``async for _ in ws.iter_text(): pass``.
- ``plait_app``: a `plait.App` with one `plait.WebSocketRoute` on ``/``: a listener that
  echoes ``data: str`` (the echo of the client's message is its "ready") and one stream
  that sleeps forever before yielding anything. Reader, writer, listener and stream: the
  tasks a typical plait route runs per connection, all idle.
- ``starlette``: a Starlette ``WebSocketRoute``: accept, ``send_text("ready")``, then
  ``receive_text`` until `WebSocketDisconnect`.
- ``litestar``: a Litestar ``@websocket`` handler doing the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
from litestar import Litestar, websocket
from litestar.connection import WebSocket as LitestarWebSocket
from litestar.exceptions import WebSocketDisconnect as LitestarDisconnect
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect as StarletteDisconnect

import plait as _plait
from benchmarks._asgi import READY, idle_raw
from benchmarks.apps import ASGIApp, _websocket_app

NAMES = ("raw", "plait", "plait_app", "starlette", "litestar")
"""Every idle app, the baseline first."""


def unavailable_reason(name: str) -> str | None:
    """Say why an app cannot run in this environment.

    Args:
        name: One of `NAMES`.

    Returns:
        A sentence for the report, or None when the app can run.
    """
    if name not in NAMES:
        return f"unknown app {name!r}; choose from {', '.join(NAMES)}"
    if name == "plait" and not hasattr(_plait, "serve_connection"):
        return "plait.serve_connection is not importable"
    if name == "plait_app" and not hasattr(_plait, "App"):
        return "plait.App is not importable"
    return None


raw = _websocket_app(
    lambda scope, receive, send: idle_raw(receive, send),
    "Raw ASGI idle app: the baseline every difference subtracts.",
)


async def _plait_idle(ws: _plait.WebSocket) -> None:
    """Accept, say so, then read text until the client disconnects."""
    await ws.accept()
    await ws.send_text(READY)
    async for _ in ws.iter_text():
        pass


plait = _websocket_app(
    lambda scope, receive, send: _plait.serve_connection(scope, receive, send, _plait_idle),
    "plait idle app: the same through `plait.serve_connection`.",
)


def _plait_app() -> ASGIApp:
    """A plait App route with a listener and one stream that never yields."""
    route = _plait.WebSocketRoute("/")

    @route.listener
    async def echo(data: str) -> str:
        """Each text message sent back (the first one is the client's ready check)."""
        return data

    @route.stream
    async def idle() -> AsyncIterator[str]:
        """Sleep until the connection ends: an idle stream, as a subscription waiting."""
        await anyio.sleep_forever()
        yield ""  # never reached; makes this an async generator

    app: ASGIApp = _plait.App(routes=[route])
    return app


plait_app = _plait_app()


async def _starlette_idle(ws: StarletteWebSocket) -> None:
    """Accept, say so, then receive text until the client disconnects."""
    await ws.accept()
    await ws.send_text(READY)
    try:
        while True:
            await ws.receive_text()
    except StarletteDisconnect:
        pass


starlette = Starlette(routes=[WebSocketRoute("/", _starlette_idle)])


@websocket("/")
async def _litestar_idle(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    """Accept, say so, then receive text until the client disconnects (``@websocket``)."""
    await socket.accept()
    await socket.send_text(READY)
    try:
        while True:
            await socket.receive_text()
    except LitestarDisconnect:
        pass


litestar = Litestar(route_handlers=[_litestar_idle])
