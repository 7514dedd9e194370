"""How the engine runs a connection, and what it counts: plain values, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from ._limits import RateLimit

__all__ = ("ConnectionOptions", "ConnectionStatistics", "Heartbeat", "StallPolicy")

StallPolicy = Literal["close", "drop"]
"""What the reader does with a message that arrives while the handler has stopped
reading (see ``stall_timeout``): ``"close"`` with 1008, or ``"drop"`` it and count it."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An application-level heartbeat: detects a peer that vanished without a close.

    hypercorn can send WebSocket pings but never checks the pongs, and ASGI gives the
    application no ping of its own; so every ``interval`` seconds the engine sends the
    text message ``ping``, and closes with 1001 when nothing at all arrived from the peer
    in the ``timeout`` seconds after it. The client answers with the text message
    ``pong``, which the engine consumes: handlers never see it.

    Args:
        interval: Seconds between pings.
        timeout: Seconds the peer has to show it is alive after a ping.
        ping: The text the engine sends.
        pong: The text the client answers with.
    """

    interval: float
    timeout: float
    ping: str = "ping"
    pong: str = "pong"


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """How the engine runs a connection; see :func:`plait.serve_connection` for each field."""

    max_message_size: int | None = 1024 * 1024
    inbound_capacity: int = 16
    outbound_capacity: int = 16
    send_timeout: float | None = None
    drain_timeout: float = 5.0
    idle_timeout: float | None = None
    heartbeat: Heartbeat | None = None
    stall_timeout: float | None = 10.0
    on_stall: StallPolicy = "close"
    rate_limit: RateLimit | None = None

    def __post_init__(self) -> None:
        if self.inbound_capacity < 1 or self.outbound_capacity < 1:
            raise ValueError("inbound_capacity and outbound_capacity must be at least 1")
        if self.on_stall not in ("close", "drop"):
            raise ValueError(f"on_stall must be 'close' or 'drop', not {self.on_stall!r}")


class ConnectionStatistics(NamedTuple):
    """Counters of one connection, from :meth:`WebSocket.statistics`."""

    inbound_buffered: int
    """Messages read from the server that the handler has not taken yet."""
    inbound_capacity: int
    """How many messages the reader reads ahead before it stops calling ``receive``."""
    outbound_buffered: int
    """Messages queued for the writer."""
    outbound_capacity: int
    """How many messages may be queued before senders wait."""
    messages_received: int
    """``websocket.receive`` messages read from the server."""
    messages_sent: int
    """Messages handed to the server's ``send``."""
    messages_dropped: int = 0
    """Messages read while the handler had stopped reading, dropped (``on_stall="drop"``)."""
    messages_limited: int = 0
    """Messages over the connection's :class:`RateLimit`: dropped (``"drop"``,
    ``"reply"``), or the one that closed the connection (``"close"``)."""
