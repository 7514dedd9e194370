"""A chat over a hub: rooms, join and leave, history on reconnect.

``hypercorn -k trio examples.chat:app`` (or plain ``hypercorn examples.chat:app``).
Connect to ``ws://127.0.0.1:8000/chat/{room}?name=ada``; send ``{"text": "hi"}``; every
event arrives as ``{"channel": room, "id": ..., "data": {...}}``. Reconnect with
``&since=<the last id you saw>`` to get what you missed, then live messages.

One route serves both directions at once: a listener publishes what the client says, a
stream pushes what the room says. In one process the hub is in memory; set
``CHAT_REDIS_URL=redis://127.0.0.1:6379`` to share rooms between processes through
Redis.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated

import msgspec

import plait
from plait import Hub, Query
from plait.channels import Backend, ChannelMessage, MemoryBackend

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
) -> AsyncGenerator[ChannelMessage, None]:
    """Everything said in the room: missed messages first when ``since`` is given."""
    async with hub.subscribe(room, since=since, buffer=256, policy="disconnect") as messages:
        async for message in messages:
            yield message


app = plait.App(routes=[chat], hub=Hub(make_backend()))
