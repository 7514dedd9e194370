"""Fan-out apps that hypercorn loads as ``benchmarks.fanout_apps:NAME``.

Every app serves the same broadcast on any path (plait and Litestar on ``/fanout``, which is
where the client connects): each connection subscribes to one channel, ``bench``, and every
text message a connection sends is published on it, so it goes to every connected client,
the sender included, as a text frame. One publish is one delivery per subscriber.

- ``raw``: bare ASGI; a module-level set of the connections' ``send`` callables, and the
  publishing connection's task awaits ``send`` for each of them in turn. The least work a
  broadcast can do: the baseline.
- ``plait``: a `plait.WebSocketRoute` with a stream (``hub.subscribe``, buffer 256,
  ``drop_oldest``) and a listener (``hub.publish``) on a `plait.channels.Hub` with the
  in-memory backend, which the App starts in its lifespan.
- ``litestar``: Litestar's `ChannelsPlugin` on `MemoryChannelsBackend`, as its own
  generated handlers use it: ``channels.start_subscription`` with
  ``subscriber.run_in_background(socket.send_text)``, and ``channels.publish`` for each
  received message. Each subscriber's backlog is bounded like plait's: 256 messages,
  ``dropleft`` (Litestar's default is unbounded).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from litestar import Litestar, websocket
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.connection import WebSocket as LitestarWebSocket

import plait as _plait
from benchmarks.apps import serve_lifespan
from plait.channels import Hub, MemoryBackend

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PATH = "/fanout"
"""Where the client connects (the raw app answers on any path)."""
CHANNEL = "bench"
BUFFER = 256
"""Messages queued per subscriber before the slow-consumer policy drops the oldest."""
NAMES = ("raw", "plait", "litestar")
"""Every fan-out app, the baseline first."""
ASYNCIO_ONLY = {"litestar"}
"""Apps that cannot run on hypercorn's trio worker."""


def unavailable_reason(name: str, worker: str) -> str | None:
    """Say why an app cannot run on a hypercorn worker class.

    Args:
        name: One of `NAMES`.
        worker: hypercorn's worker class (``asyncio``, ``uvloop``, ``trio``).

    Returns:
        A sentence for the report, or None when the app can run.
    """
    if name not in NAMES:
        return f"unknown app {name!r}; choose from {', '.join(NAMES)}"
    if name in ASYNCIO_ONLY and worker == "trio":
        return (
            "Litestar's channels plugin is asyncio-only (asyncio.create_task and "
            "asyncio.Queue in ChannelsPlugin and Subscriber): it cannot start on trio"
        )
    return None


_raw_subscribers: set[Send] = set()
"""The ``send`` of every open connection of the raw app (one server process)."""


async def _broadcast_raw(receive: Receive, send: Send) -> None:
    """Subscribe this connection; send whatever it publishes to every connection."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    _raw_subscribers.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                break
            text = message.get("text")
            if text is None:
                continue
            outgoing = {"type": "websocket.send", "text": text}
            for subscriber in tuple(_raw_subscribers):
                await subscriber(outgoing)
    finally:
        _raw_subscribers.discard(send)
    if message["type"] != "websocket.disconnect":
        # hypercorn turns a return while connected into a 1011 close: close normally.
        await send({"type": "websocket.close", "code": 1000})


async def raw(scope: Scope, receive: Receive, send: Send) -> None:
    """Raw ASGI broadcaster: the baseline."""
    if scope["type"] == "websocket":
        await _broadcast_raw(receive, send)
    elif scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"websocket only"})


def _plait_app() -> _plait.App:
    """plait's broadcast: one stream and one listener on a route, one in-memory hub."""
    room = _plait.WebSocketRoute(PATH)

    @room.stream
    async def feed(hub: Hub) -> AsyncIterator[Any]:
        """Every message of the channel, as it comes (str: a text frame)."""
        async with hub.subscribe(CHANNEL, buffer=BUFFER, policy="drop_oldest") as subscription:
            async for message in subscription:
                yield message.data

    @room.listener
    async def publish(data: str, hub: Hub) -> None:
        """One client message, one publish."""
        await hub.publish(CHANNEL, data)

    return _plait.App(routes=[room], hub=Hub(MemoryBackend()))


plait = _plait_app()


@websocket(PATH)
async def _litestar_fanout(
    socket: LitestarWebSocket[Any, Any, Any], channels: ChannelsPlugin
) -> None:
    """Subscribe while connected (sent by a background task); publish what arrives.

    ``join=False``: once the client has gone, what is still queued cannot be sent (Litestar
    raises on a send after the disconnect, and the join would then wait forever).
    """
    await socket.accept()
    async with (
        channels.start_subscription(CHANNEL) as subscriber,
        subscriber.run_in_background(socket.send_text, join=False),
    ):
        while True:
            message = await socket.receive()
            if message["type"] != "websocket.receive":
                break
            if message.get("text") is not None:
                channels.publish(message["text"], CHANNEL)


litestar = Litestar(
    route_handlers=[_litestar_fanout],
    plugins=[
        ChannelsPlugin(
            backend=MemoryChannelsBackend(),
            channels=[CHANNEL],
            subscriber_max_backlog=BUFFER,
            subscriber_backlog_strategy="dropleft",
        )
    ],
)
