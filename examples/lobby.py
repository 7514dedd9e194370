"""Hooks around a listener, and a stream that reads its own socket.

Run ``hypercorn -k trio examples.lobby:app`` (or plain ``hypercorn examples.lobby:app``):

- ``ws://127.0.0.1:8000/lobby?name=ada`` greets you with who is in the lobby, answers
  each text message with who said it and who is there, and forgets you when you leave,
  however you leave;
- ``ws://127.0.0.1:8000/shout`` sends each text message back upper-cased, from a stream
  that reads the socket itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator
from typing import Any

import plait
from plait import WebSocket

members: Counter[str] = Counter()
"""Who is in the lobby, with how many connections each (this process only)."""


async def joined(socket: WebSocket, name: str) -> None:
    """``on_accept``: injected like the listener (here the socket and ``?name=``)."""
    members[name] += 1
    await socket.send_json({"members": sorted(members)})


def left(name: str) -> None:
    """``on_disconnect``: runs however the connection ended; a plain function is fine."""
    members[name] -= 1
    if not members[name]:
        del members[name]


@plait.listener("/lobby", on_accept=joined, on_disconnect=left)
async def lobby(data: str, name: str) -> dict[str, Any]:
    """Answer each message with who said it and who is there."""
    return {"from": name, "text": data, "members": sorted(members)}


@plait.stream("/shout", on_receive="stream")
async def shout(socket: WebSocket) -> AsyncGenerator[str, None]:
    """Read the socket in the stream (Litestar's ``listen_for_disconnect=False``)."""
    async for text in socket.iter_text():
        yield text.upper()


app = plait.App(routes=[lobby, shout])
