"""Who is in the room: presence over a hub.

``hypercorn -k trio examples.presence:app`` (or plain ``hypercorn examples.presence:app``).
Connect to ``ws://127.0.0.1:8000/presence/{room}?name=ada``: you are present for as long
as you stay connected, and you receive ``{"type": "presence_state", ...}`` with everyone
in the room, then a ``{"type": "presence_diff", ...}`` for every join, leave and status
change. Send ``{"status": "away"}`` to change yours. Connect twice with the same name (two
tabs): one member with a count of two.

In one process presence is in memory. Set ``PRESENCE_REDIS_URL=redis://127.0.0.1:6379``
to share it between processes through Redis; the users of a process that dies without
cleaning up are then removed within ``PRESENCE_TTL`` seconds (10 by default) and a half.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Literal

import msgspec

import plait
from plait import Hub
from plait.channels import Backend, MemoryBackend, PresenceEvent, Tracking


def make_backend() -> Backend:
    """Memory by default; Redis when ``PRESENCE_REDIS_URL`` is set."""
    url = os.environ.get("PRESENCE_REDIS_URL")
    if not url:
        return MemoryBackend()
    from plait.channels import RedisBackend  # needs the 'redis' extra (coredis)

    ttl = float(os.environ.get("PRESENCE_TTL", "10"))
    return RedisBackend(url, presence_ttl=ttl)  # swept every ttl / 2


class Status(msgspec.Struct):
    """What a client sends: only these statuses, so a client cannot put just anything
    in its meta."""

    status: Literal["online", "away", "busy"]


async def present(room: str, name: str, hub: Hub) -> AsyncIterator[Tracking]:
    """Present in the room while the connection lasts, however it ends: the tracking
    ends when this dependency is torn down, even by a cancellation."""
    async with hub.presence(room).track(name, {"status": "online"}) as tracking:
        yield tracking


room = plait.WebSocketRoute("/presence/{room}")


@room.stream
async def who(
    room: str, hub: Hub, me: Annotated[Tracking, plait.use(present)]
) -> AsyncGenerator[PresenceEvent, None]:
    """Everyone in the room (with this connection already in it), then every change."""
    async with hub.presence(room).subscribe() as events:
        async for event in events:
            yield event


@room.listener
async def status(data: Status, me: Annotated[Tracking, plait.use(present)]) -> None:
    """Change this connection's status: the others see its meta leave and come back."""
    await me.update({"status": data.status})


app = plait.App(routes=[room], hub=Hub(make_backend()))
