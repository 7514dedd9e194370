"""Watchdogs of one connection: a peer that went quiet, and a client that stopped reading.

One task in the connection's task group watches for all of them, started at ``accept()``
and only when an option asks for one: it sleeps until the next check any of them is due,
so an idle connection holds one task however many are set. Each ends the connection
through the engine's ``abort`` (or ``client_too_slow``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio
from anyio import get_cancelled_exc_class
from anyio.abc import TaskGroup

from ._options import ConnectionOptions
from ._types import Message

__all__ = ("start_watchdogs", "watch")

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

    def send_soon(self, message: Message) -> Callable[[], Coroutine[Any, Any, None]] | None:
        """Send a data message without waiting where that can be done; else return
        what must still run in a task (see :meth:`plait._outbound.Outbound.send_soon`)."""
        ...


def start_watchdogs(task_group: TaskGroup, connection: Watched, options: ConnectionOptions) -> None:
    """Start the watchdogs ``options`` ask for (at ``accept()``): one task for all."""
    if (
        options.idle_timeout is not None
        or options.heartbeat is not None
        or options.send_timeout is not None
    ):
        task_group.start_soon(watch, connection, options, task_group)


async def watch(connection: Watched, options: ConnectionOptions, task_group: TaskGroup) -> None:
    """Run every watchdog ``options`` set until one ends the connection; return quietly
    when the connection's task group is cancelled (the rule of :mod:`plait._backend`)."""
    with contextlib.suppress(get_cancelled_exc_class()):
        await _watch(connection, options, task_group)


async def _watch(connection: Watched, options: ConnectionOptions, task_group: TaskGroup) -> None:
    """The watchdogs:

    - **idle** (``idle_timeout``): close with 1001 once nothing arrived for the limit;
      checked four times per limit;
    - **heartbeat**: every interval, ping; close with 1001 when nothing arrived in the
      timeout after it. The next ping is due an interval after the last, and never
      before its answer was checked. The ping never holds this task: it is queued, or
      sent at once, and only what would wait (a send to a client that stopped reading
      may never return) goes on in a task of its own, so the timeout is still checked;
    - **slow client** (``send_timeout``): end with 1008 once one send has been in flight
      for the limit; a watchdog rather than a deadline around the call, since a server
      may shield its socket writes (hypercorn's trio worker does) and then only another
      task can act on time. Checked four times per limit, so it fires within 1.25 limits.
    """
    now = anyio.current_time()
    idle, heartbeat, send_limit = options.idle_timeout, options.heartbeat, options.send_timeout
    seen, quiet_since = connection.received, now
    next_idle = math.inf if idle is None else now + idle / 4
    next_ping = math.inf if heartbeat is None else now + heartbeat.interval
    answer_due = math.inf
    seen_at_ping = 0
    ping: Message = {"type": "websocket.send", "text": "" if heartbeat is None else heartbeat.ping}
    next_send_check = math.inf if send_limit is None else now + send_limit / 4
    stuck_since: float | None = None
    sent_seen = -1
    while True:
        await anyio.sleep(max(0.0, min(next_idle, next_ping, answer_due, next_send_check) - now))
        now = anyio.current_time()
        if now >= next_idle:
            assert idle is not None
            next_idle = now + idle / 4
            if connection.received != seen:
                seen, quiet_since = connection.received, now
            elif now - quiet_since >= idle:
                logger.info("closing %s with 1001: idle for %s s", connection.path, idle)
                connection.abort(1001, "idle timeout")
                return
        if now >= answer_due:
            answer_due = math.inf
            if connection.received == seen_at_ping:
                logger.info("closing %s with 1001: no answer to the heartbeat", connection.path)
                connection.abort(1001, "heartbeat timeout")
                return
        if now >= next_ping and answer_due == math.inf:
            assert heartbeat is not None
            seen_at_ping = connection.received
            rest = connection.send_soon(dict(ping))
            if rest is not None:
                task_group.start_soon(rest)
            next_ping = now + heartbeat.interval  # a cadence from the ping
            answer_due = now + heartbeat.timeout
        if now >= next_send_check:
            assert send_limit is not None
            next_send_check = now + send_limit / 4
            if not connection.sending:
                stuck_since = None
            elif connection.sent != sent_seen or stuck_since is None:
                sent_seen, stuck_since = connection.sent, now
            elif now - stuck_since >= send_limit:
                connection.client_too_slow()
                return
