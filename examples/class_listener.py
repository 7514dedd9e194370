"""A class-based listener: ``hypercorn -k trio examples.class_listener:app``.

Connect to ``ws://127.0.0.1:8000/count?name=ada`` and send text: each message comes back
numbered, ``ada #1: hi``. The instance lives as long as the connection.
"""

from __future__ import annotations

import logging

import plait
from plait import WebSocket

logger = logging.getLogger(__name__)


class Counter(plait.Listener):
    """One instance per connection: ``self`` holds that connection's state."""

    path = "/count"

    async def on_accept(self, socket: WebSocket) -> None:
        self.name = socket.query_params.get("name", "anonymous")
        self.count = 0

    async def on_receive(self, data: str, socket: WebSocket) -> str:
        self.count += 1
        return f"{self.name} #{self.count}: {data}"

    async def on_disconnect(self, socket: WebSocket) -> None:
        logger.info("%s left after %d messages", self.name, self.count)


app = plait.App(routes=[Counter])
