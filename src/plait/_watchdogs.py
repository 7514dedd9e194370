"""Watchdogs of one connection: a peer that went quiet, and a client that stopped reading.

Each runs as a task in the connection's task group, started at ``accept()`` and only
when its option is set; each ends the connection through the engine's ``abort``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

import anyio
from anyio import ClosedResourceError
from anyio.abc import TaskGroup

from ._options import ConnectionOptions, Heartbeat
from ._types import Message

__all__ = ("beat", "start_watchdogs", "watch_idle", "watch_sends")

logger = logging.getLogger("plait._connection")


class Watched(Protocol):
    """What the watchdogs read and call on a connection."""

    @property
    def path(self) -> str:
        """The connection's path, for the log."""
        ...

    @property
    def received(self) -> int:
        """Messages read from the server so far."""
        ...

    @property
    def sent(self) -> int:
        """Messages handed to the server's ``send`` so far."""
        ...

    @property
    def sending(self) -> bool:
        """True while a call to the server's ``send`` is in flight."""
        ...

    def abort(self, code: int, reason: str) -> None:
        """Close from the engine's side and cancel the handler."""
        ...

    def client_too_slow(self) -> None:
        """End the connection with 1008, dropping what is queued."""
        ...

    async def send(self, message: Message) -> None:
        """Send as any other sender does."""
        ...


def start_watchdogs(task_group: TaskGroup, connection: Watched, options: ConnectionOptions) -> None:
    """Start the watchdogs ``options`` ask for (at ``accept()``)."""
    if options.idle_timeout is not None:
        task_group.start_soon(watch_idle, connection, options.idle_timeout)
    if options.heartbeat is not None:
        task_group.start_soon(beat, connection, options.heartbeat, task_group)
    if options.send_timeout is not None:
        task_group.start_soon(watch_sends, connection, options.send_timeout)


async def watch_idle(connection: Watched, limit: float) -> None:
    """Close with 1001 once nothing arrived for ``limit`` seconds (checked 4x per limit)."""
    seen, quiet_since = connection.received, anyio.current_time()
    while True:
        await anyio.sleep(limit / 4)
        now = anyio.current_time()
        if connection.received != seen:
            seen, quiet_since = connection.received, now
        elif now - quiet_since >= limit:
            logger.info("closing %s with 1001: idle for %s s", connection.path, limit)
            connection.abort(1001, "idle timeout")
            return


async def _ping(connection: Watched, ping: Message) -> None:
    with contextlib.suppress(ClosedResourceError):
        await connection.send(ping)


async def beat(connection: Watched, heartbeat: Heartbeat, task_group: TaskGroup) -> None:
    """Ping every interval; close with 1001 when nothing arrives in the timeout after.

    The ping is sent from a task of its own: a send to a client that stopped reading
    may never return, and the timeout must still be checked.
    """
    ping: Message = {"type": "websocket.send", "text": heartbeat.ping}
    next_ping = anyio.current_time() + heartbeat.interval
    while True:
        await anyio.sleep(max(0.0, next_ping - anyio.current_time()))
        seen = connection.received
        task_group.start_soon(_ping, connection, dict(ping))
        next_ping = anyio.current_time() + heartbeat.interval  # a cadence from the ping
        await anyio.sleep(heartbeat.timeout)
        if connection.received == seen:
            logger.info("closing %s with 1001: no answer to the heartbeat", connection.path)
            connection.abort(1001, "heartbeat timeout")
            return


async def watch_sends(connection: Watched, limit: float) -> None:
    """End with 1008 once one send has been in flight for ``limit`` seconds.

    A watchdog rather than a deadline around the call: a server may shield its socket
    writes (hypercorn's trio worker does), and then only another task can act on time.
    Checked four times per ``limit``, so it fires within 1.25 ``limit``.
    """
    step = limit / 4
    stuck_since: float | None = None
    seen = -1
    while True:
        await anyio.sleep(step)
        now = anyio.current_time()
        if not connection.sending:
            stuck_since = None
            continue
        if connection.sent != seen or stuck_since is None:
            seen, stuck_since = connection.sent, now
        elif now - stuck_since >= limit:
            connection.client_too_slow()
            return
