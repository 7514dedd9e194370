"""A chat over a hub: rooms, who is there, recent history, typing, resume after a drop.

``hypercorn -k trio examples.chat:app`` (or plain ``hypercorn examples.chat:app``), then
open ``http://127.0.0.1:8000/``. In one process the rooms are in memory; set
``CHAT_REDIS_URL=redis://127.0.0.1:6379`` to share them (messages, history and who is
there) between processes through Redis.

One WebSocket per user, ``ws://127.0.0.1:8000/chat/{room}?name=ada``, carries three
streams at once, each item tagged ``{"stream": name, "data": ...}``:

- ``messages``: the room's recent history (the last 100 messages), then what is said,
  each as ``{"channel": room, "id": ..., "data": {"type": "message", "user", "text",
  "at"}}`` (``at``: seconds since the epoch). Reconnect with ``&since=<the last id you
  saw>`` to get only what you missed; ``{"recovered": false, ...}`` comes first when
  the history no longer held all of it, and in the place of any gap later (Redis
  came back without all that was said meanwhile).
- ``typing``: ``{"user": ..., "typing": true}`` while someone types, ``false`` when
  they stop.
- ``members``: presence, ``{"type": "presence_state", ...}`` with everyone in the
  room (you included), then a ``{"type": "presence_diff", ...}`` per join and leave.

The client sends ``{"type": "say", "text": "hi", "ref": "a1"}`` (``ref``, optional, comes
back in the message's ``data``) and ``{"type": "typing", "typing": true}``. Each kind has
a budget of its own per connection, so typing never costs a message its place: at most 5
messages a second (bursts of 10), past which a message is not said and the client is
told ``{"error": "rate limit exceeded", "ref": "a1", "retry_after": ..., "detail":
...}``; typing notices past 1 a second (bursts of 4) are dropped unsaid. In front of
both, the route's own limit of 10 frames a second (bursts of 20) stops a flood before
anything decodes it, with a reply that names no ``ref``. The server pings ``ping``
every 20 s; answer ``pong``.

The page is plain HTML and JavaScript from ``static/``, answered by a few lines of ASGI
passed to the App as its HTTP ``fallback``, with plait's browser client at ``/plait.js``
(``client_path``), which answers the pings, reconnects and resumes with ``since``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec

import plait
from plait import Heartbeat, Hub, Query, RateLimit
from plait.channels import (
    Backend,
    ChannelMessage,
    MemoryBackend,
    PresenceEvent,
    RecoveryNotice,
    Tracking,
)
from plait.types import Receive, Scope, Send

HISTORY = 100
"""Messages kept per room: what a newcomer sees, and how far back a resume reaches."""


def make_backend() -> Backend:
    """Memory by default; Redis when ``CHAT_REDIS_URL`` is set."""
    url = os.environ.get("CHAT_REDIS_URL")
    if not url:
        return MemoryBackend(history=HISTORY)
    from plait.channels import RedisBackend  # needs the 'redis' extra (coredis)

    return RedisBackend(url, history=HISTORY)


def typing_channel(room: str) -> str:
    """Typing goes on a channel of its own: it is not history, and must not look like it."""
    return f"{room}/typing"


class Say(msgspec.Struct, tag="say"):
    """Say something to the room; ``ref``, the client's name for the message, is in the
    message the room gets and in a refusal, so that the client knows which it was."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    ref: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class Typing(msgspec.Struct, tag="typing"):
    """Start (``true``) or stop (``false``) typing."""

    typing: bool = True


Name = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]

SAYING = RateLimit(messages=5, per=1.0, burst=10)
"""What one connection may say."""
TYPING = RateLimit(messages=1, per=1.0, burst=4)
"""How often one connection may say that it types: the page sends far fewer."""


class Bucket:
    """A token bucket of one connection for one kind of message, as ``limit`` says.

    The route's :class:`plait.RateLimit` counts every frame alike, before anything
    decodes it; typing notices counted there would spend what the messages need.
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._interval = limit.per / limit.messages  # seconds for one token to come back
        self._due = -math.inf  # when the bucket would be empty again: -inf, it is full

    def take(self) -> float:
        """Take a token: 0 if there was one, else the seconds until there is one."""
        now = anyio.current_time()
        due = max(self._due, now) + self._interval
        wait = due - now - self.limit.capacity * self._interval
        if wait > self._interval / 1000:  # float rounding never costs a burst its last
            return wait
        self._due = due
        return 0.0


@dataclass(frozen=True, slots=True)
class Budget:
    """One connection's buckets: one for what it says, one for its typing notices."""

    saying: Bucket
    typing: Bucket


def fresh_budget() -> Budget:
    """Fresh buckets, once per connection (as every dependency is made)."""
    return Budget(saying=Bucket(SAYING), typing=Bucket(TYPING))


MyBudget = Annotated[Budget, plait.use(fresh_budget)]


async def present(room: str, name: Name, hub: Hub) -> AsyncIterator[Tracking]:
    """In the room's member list while the connection lasts, however it ends: the
    tracking ends when this dependency is torn down, even by a cancellation."""
    async with hub.presence(room).track(name, {"joined": round(time.time())}) as tracking:
        yield tracking


Me = Annotated[Tracking, plait.use(present)]

chat = plait.WebSocketRoute(
    "/chat/{room}",
    tag_streams=True,
    heartbeat=Heartbeat(interval=20, timeout=10),
    # A flood guard, above both budgets together: what a person sends never meets it.
    rate_limit=RateLimit(messages=10, per=1.0, burst=20, on_exceed="reply"),
)


@chat.listener
async def hear(
    data: Say | Typing,
    room: str,
    me: Me,
    hub: Hub,
    budget: MyBudget,
) -> dict[str, Any] | None:
    """Publish what the user says, or that they type, each within its budget; a message
    over its budget is answered with a refusal that names its ``ref``."""
    if isinstance(data, Typing):
        if not budget.typing.take():  # over it: dropped, a lost "is typing" is no news
            await hub.publish(typing_channel(room), {"user": me.key, "typing": data.typing})
        return None
    wait = budget.saying.take()
    if wait:
        return {
            "error": "rate limit exceeded",
            "ref": data.ref,
            "retry_after": math.ceil(wait * 1000) / 1000,
            "detail": f"at most {SAYING.describe()}",
        }
    message = {"type": "message", "user": me.key, "text": data.text, "at": time.time()}
    if data.ref is not None:
        message["ref"] = data.ref
    await hub.publish(room, message)
    return None


@chat.stream
async def messages(
    room: str, hub: Hub, since: Annotated[str | None, Query()] = None
) -> AsyncGenerator[ChannelMessage | RecoveryNotice | dict[str, Any], None]:
    """The room's recent history, then what is said in it; after ``since`` only what
    came after that id, led by ``{"recovered": false, ...}`` if some of it is gone (and
    the same marker where messages were lost later on)."""
    # "0-0", before any id: a newcomer gets everything the history keeps. That the
    # history no longer holds the room's first messages is no news to a newcomer.
    start = "0-0" if since is None else since
    async with hub.subscribe(room, since=start, buffer=2 * HISTORY, policy="disconnect") as said:
        notice = said.recovery_notice()
        if notice is not None and since is not None:
            yield notice
        async for message in said:
            yield message


@chat.stream
async def typing(room: str, hub: Hub) -> AsyncGenerator[Any, None]:
    """Who starts or stops typing: ``{"user", "typing"}``. Nothing is replayed."""
    async with hub.subscribe(typing_channel(room), buffer=16) as typed:  # drop_oldest
        async for message in typed:
            if isinstance(message, ChannelMessage):  # a lost "is typing" is no news
                yield message.data


@chat.stream
async def members(room: str, hub: Hub, me: Me) -> AsyncGenerator[PresenceEvent, None]:
    """Everyone in the room (this connection already among them), then who comes and
    goes."""
    async with hub.presence(room).subscribe() as events:
        async for event in events:
            yield event


CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
STATIC = Path(__file__).parent / "static"
# Only the files found here at import can be served: no path from a request reaches the disk.
PAGES = {f"/{file.name}": file for file in STATIC.iterdir() if file.suffix in CONTENT_TYPES}
PAGES["/"] = STATIC / "index.html"
PAGES["/favicon.ico"] = STATIC / "favicon.svg"  # asked for by name whatever the page says


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
