"""The app the plait.js tests drive: routes that misbehave on request, and the probe page.

``/`` is ``probe.html``, which connects plait.js to the route named by ``?ws=`` and shows
what the client reports; ``/plait.js`` is the client itself.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio

import plait
from plait import Heartbeat, Hub, WebSocket
from plait.channels import MemoryBackend
from plait.types import Receive, Scope, Send

PAGE = Path(__file__).with_name("probe.html")
IDLE_TIMEOUT = 1.0
"""Seconds ``/idle`` lets a silent client stay; its heartbeat pings four times as often."""

feed = plait.WebSocketRoute("/feed/{names}")


@feed.ws_handler
async def serve_feed(
    ws: WebSocket,
    hub: Hub,
    names: str,
    since: list[str] | None = None,
    drop_after: int = 0,
    overlap: int = 0,
) -> None:
    """The channels ``names`` (comma-separated) as ``{"channel", "id", "data"}``, resumed
    from ``since=<id>`` or ``since=<channel>:<id>`` for each channel.

    ``drop_after``: close with 1012 after that many messages, as a restarting server
    would. ``overlap``: resume that many ids early, as an at-least-once server might.
    """
    resume = _resume_from(since, overlap)
    async with hub.subscribe(*names.split(","), since=resume, buffer=1000) as messages:
        await ws.accept()  # subscribed first: what is published once the page is open reaches it
        notice = messages.recovery_notice()
        if notice is not None:
            await ws.send_json(notice)
        for sent in itertools.count(1):
            message = await anext(messages)
            await ws.send_json({"channel": message.channel, "id": message.id, "data": message.data})
            if sent == drop_after:
                await ws.close(1012, "service restart")
                return


def _resume_from(since: list[str] | None, overlap: int) -> str | dict[str, str] | None:
    if not since:
        return None

    def early(message_id: str) -> str:
        return f"{max(0, int(message_id.partition('-')[0]) - overlap)}-0"

    if len(since) == 1 and ":" not in since[0]:
        return early(since[0])
    return {channel: early(last) for channel, _, last in (item.rpartition(":") for item in since)}


@plait.websocket("/publish/{names}")
async def publish(ws: WebSocket, hub: Hub, names: str, count: int, every: float) -> None:
    """Publish ``m0``, ``m1``, ... on the channels ``names`` in turn, one every ``every``
    seconds, then say ``published``."""
    await ws.accept()
    channels = names.split(",")
    for number in range(count):
        await hub.publish(channels[number % len(channels)], f"m{number}")
        await anyio.sleep(every)
    await ws.send_text("published")


idle = plait.WebSocketRoute(
    "/idle",
    idle_timeout=IDLE_TIMEOUT,
    heartbeat=Heartbeat(interval=IDLE_TIMEOUT / 4, timeout=IDLE_TIMEOUT / 2),
)


@idle.ws_handler
async def stay(ws: WebSocket) -> None:
    """Nothing to say: only the heartbeat keeps the client connected."""
    await ws.accept()
    async for _ in ws.iter_text():
        pass


@plait.websocket("/closer")
async def closer(ws: WebSocket) -> None:
    """Echo JSON; ``{"code": ..., "reason": ...}`` closes the connection with them."""
    await ws.accept()
    async for request in ws.iter_json():
        if "code" in request:
            await ws.close(request["code"], request["reason"])
            return
        await ws.send_json(request)


@plait.websocket("/scripted")
async def scripted(ws: WebSocket, since: str | None = None) -> None:
    """Channel messages as a server might send them: first a duplicate id; then, resumed
    after a restart that lost the history, ``recovered: false`` and ids that start over
    (as a restarted in-memory hub counts from 1 again)."""
    await ws.accept()
    if since is None:
        ids = ["5-0", "6-0", "6-0", "7-0"]
    else:
        await ws.send_json({"since": since})
        await ws.send_json({"recovered": False, "channels": ["c"]})
        ids = ["1-0", "2-0", "2-0"]
    for message_id in ids:
        await ws.send_json({"channel": "c", "id": message_id, "data": message_id})
    if since is None:
        await ws.close(1012, "service restart")
        return
    async for _ in ws.iter_text():
        pass


async def page(scope: Scope, receive: Receive, send: Send) -> None:
    """HTTP: the probe page at ``/``, 404 elsewhere."""
    if scope["type"] != "http":
        return
    found = scope["path"] == "/"
    body = await anyio.Path(PAGE).read_bytes() if found else b"Not Found"
    media_type = b"text/html; charset=utf-8" if found else b"text/plain"
    headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200 if found else 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def probe_app() -> plait.App:
    """A new App with a new in-memory hub (history kept for resumes)."""
    return plait.App(
        routes=[feed, publish, idle, closer, scripted],
        hub=Hub(MemoryBackend(history=1000)),
        fallback=page,
        client_path="/plait.js",
    )
