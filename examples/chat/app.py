"""A chat over a hub: rooms, join and leave, history on reconnect.

``hypercorn -k trio examples.chat:app`` (or plain ``hypercorn examples.chat:app``).
Connect to ``ws://127.0.0.1:8000/chat/{room}?name=ada``; send ``{"text": "hi"}``; every
event arrives as ``{"channel": room, "id": ..., "data": {...}}``. Reconnect with
``&since=<the last id you saw>`` to get what you missed, then live messages.

One route serves both directions at once: a listener publishes what the client says, a
stream pushes what the room says. In one process the hub is in memory; set
``CHAT_REDIS_URL=redis://127.0.0.1:6379`` to share rooms between processes through
Redis.

The same app serves a browser page for the chat at ``http://127.0.0.1:8000/``: plain HTML
and JavaScript from ``static/``, answered by a few lines of ASGI passed to the App as its
HTTP ``fallback``, and plait's browser client at ``/plait.js`` (``client_path``), which
reconnects and resumes with ``since``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec

import plait
from plait import Hub, Query
from plait.channels import Backend, ChannelMessage, MemoryBackend
from plait.types import Receive, Scope, Send

HISTORY = 100


def make_backend() -> Backend:
    """Memory by default; Redis when ``CHAT_REDIS_URL`` is set."""
    url = os.environ.get("CHAT_REDIS_URL")
    if not url:
        return MemoryBackend(history=HISTORY)
    from plait.channels import RedisBackend  # needs the 'redis' extra (coredis)

    return RedisBackend(url, history=HISTORY)


class Say(msgspec.Struct):
    """What a client sends."""

    text: str


async def presence(room: str, name: str, hub: Hub) -> AsyncIterator[str]:
    """Announce the user; the code after ``yield`` runs however the connection ends."""
    await hub.publish(room, {"type": "join", "user": name})
    yield name
    await hub.publish(room, {"type": "leave", "user": name})


chat = plait.WebSocketRoute("/chat/{room}")


@chat.listener
async def say(data: Say, room: str, user: Annotated[str, plait.use(presence)], hub: Hub) -> None:
    """Publish what the user said to the room (nothing is sent back directly)."""
    await hub.publish(room, {"type": "message", "user": user, "text": data.text[:500]})


@chat.stream
async def hear(
    room: str,
    hub: Hub,
    user: Annotated[str, plait.use(presence)],
    since: Annotated[str | None, Query()] = None,
) -> AsyncGenerator[ChannelMessage | dict[str, Any], None]:
    """Everything said in the room: missed messages first when ``since`` is given, after
    ``{"recovered": false, ...}`` when the history no longer held all of them."""
    async with hub.subscribe(room, since=since, buffer=256, policy="disconnect") as messages:
        notice = messages.recovery_notice()
        if notice is not None:
            yield notice
        async for message in messages:
            yield message


CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}
STATIC = Path(__file__).parent / "static"
# Only the files found here at import can be served: no path from a request reaches the disk.
PAGES = {f"/{file.name}": file for file in STATIC.iterdir() if file.suffix in CONTENT_TYPES}
PAGES["/"] = STATIC / "index.html"


async def static_files(scope: Scope, receive: Receive, send: Send) -> None:
    """HTTP for the page: ``GET /`` and the files of ``static/``; 404 for anything else."""
    if scope["type"] != "http":
        return  # no lifespan to run: returning at once says so
    file = PAGES.get(scope["path"])
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if file is None:
        status, body = 404, b"Not Found"
    elif scope["method"] not in ("GET", "HEAD"):
        status, body = 405, b"Method Not Allowed"
        headers.append((b"allow", b"GET, HEAD"))
    else:
        status, body = 200, await anyio.Path(file).read_bytes()  # read again: edits show
        headers = [(b"content-type", CONTENT_TYPES[file.suffix]), (b"cache-control", b"no-cache")]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


# The page is served from this App, so only pages of its own origin may open the chat:
# a page elsewhere cannot use a visitor's cookies to join (cross-site hijacking).
app = plait.App(
    routes=[chat],
    hub=Hub(make_backend()),
    fallback=static_files,
    allowed_origins=[plait.SAME_ORIGIN],
    client_path="/plait.js",
)
