"""Watchdogs of one connection: a peer that went quiet, and a client that stopped reading.

One :class:`Watchdog` per connection watches for all of them, started at ``accept()`` and
only when an option asks for one. It is no task: a timer (:mod:`plait._timers`) calls it
when the next check of any of them is due, so an idle connection holds a timer, and a
check costs no task's wake-up. Each ends the connection through the engine's ``abort``
(or ``client_too_slow``); the connection stops its watchdog when it ends.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from ._options import ConnectionOptions
from ._timers import Timer, call_at
from ._types import Message

__all__ = ("Watchdog", "start_watchdogs")

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


def start_watchdogs(
    task_group: TaskGroup, connection: Watched, options: ConnectionOptions
) -> Watchdog | None:
    """Start the watchdogs ``options`` ask for (at ``accept()``); None if none is."""
    if options.idle_timeout is None and options.heartbeat is None and options.send_timeout is None:
        return None
    watchdog = Watchdog(connection, options, task_group)
    watchdog.start()
    return watchdog


class Watchdog:
    """The watchdogs of one connection, checked by a timer:

    - **idle** (``idle_timeout``): close with 1001 once nothing arrived for the limit;
      checked four times per limit;
    - **heartbeat**: every interval, ping; close with 1001 when nothing arrived in the
      timeout after it. The next ping is due an interval after the last, and never
      before its answer was checked. The ping is queued, or sent at once; only a send
      that would wait (to a client that stopped reading it may never return) goes on in
      a task of its own, so the timeout is still checked;
    - **slow client** (``send_timeout``): end with 1008 once one send has been in flight
      for the limit; a watchdog rather than a deadline around the call, since a server
      may shield its socket writes (hypercorn's trio worker does) and then only a check
      from outside can act on time. Checked four times per limit, so it fires within
      1.25 limits.

    Args:
        connection: What it watches.
        options: Which watchdogs, and their limits.
        task_group: The connection's task group, for a ping's send that must wait.
    """

    __slots__ = (
        "_answer_due",
        "_connection",
        "_next_idle",
        "_next_ping",
        "_next_send_check",
        "_options",
        "_quiet_since",
        "_seen",
        "_seen_at_ping",
        "_sent_seen",
        "_stuck_since",
        "_task_group",
        "_timer",
    )

    def __init__(
        self, connection: Watched, options: ConnectionOptions, task_group: TaskGroup
    ) -> None:
        self._connection = connection
        self._options = options
        self._task_group = task_group
        self._timer: Timer | None = None
        now = anyio.current_time()
        idle, heartbeat, send_limit = options.idle_timeout, options.heartbeat, options.send_timeout
        self._seen, self._quiet_since = connection.received, now
        self._next_idle = math.inf if idle is None else now + idle / 4
        self._next_ping = math.inf if heartbeat is None else now + heartbeat.interval
        self._answer_due = math.inf
        self._seen_at_ping = 0
        self._next_send_check = math.inf if send_limit is None else now + send_limit / 4
        self._stuck_since: float | None = None
        self._sent_seen = -1

    def start(self) -> None:
        """Schedule the first check."""
        self._schedule()

    def stop(self) -> None:
        """No more checks: the connection is over (or a watchdog ended it)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _schedule(self) -> None:
        # While a ping's answer is due, the next ping waits for its check.
        ping = self._next_ping if self._answer_due == math.inf else self._answer_due
        self._timer = call_at(min(self._next_idle, ping, self._next_send_check), self._check)

    def _check(self) -> None:
        """The timer's callback: every check that is due, then the next timer."""
        if self._timer is None:
            return  # stopped meanwhile
        if self._due(anyio.current_time()):
            self._schedule()
        else:
            self._timer = None

    def _closing(self) -> bool:
        """The connection is closing (idle, or no answer): no more idle checks or pings,
        but a send stuck in flight must still be cut, so the slow-client check goes on
        when it is set. Whether to go on."""
        self._next_idle = self._next_ping = self._answer_due = math.inf
        return self._next_send_check != math.inf

    def _due(self, now: float) -> bool:
        """Run the checks due at ``now``; False once nothing is left to check."""
        connection, options = self._connection, self._options
        if now >= self._next_idle:
            idle = options.idle_timeout
            assert idle is not None
            self._next_idle = now + idle / 4
            if connection.received != self._seen:
                self._seen, self._quiet_since = connection.received, now
            elif now - self._quiet_since >= idle:
                logger.info("closing %s with 1001: idle for %s s", connection.path, idle)
                connection.abort(1001, "idle timeout")
                return self._closing()
        if now >= self._answer_due:
            self._answer_due = math.inf
            if connection.received == self._seen_at_ping:
                logger.info("closing %s with 1001: no answer to the heartbeat", connection.path)
                connection.abort(1001, "heartbeat timeout")
                return self._closing()
        if now >= self._next_ping and self._answer_due == math.inf:
            heartbeat = options.heartbeat
            assert heartbeat is not None
            self._seen_at_ping = connection.received
            rest = connection.send_soon({"type": "websocket.send", "text": heartbeat.ping})
            if rest is not None:
                self._task_group.start_soon(rest)
            self._next_ping = now + heartbeat.interval  # a cadence from the ping
            self._answer_due = now + heartbeat.timeout
        if now >= self._next_send_check:
            send_limit = options.send_timeout
            assert send_limit is not None
            self._next_send_check = now + send_limit / 4
            if not connection.sending:
                self._stuck_since = None
            elif connection.sent != self._sent_seen or self._stuck_since is None:
                self._sent_seen, self._stuck_since = connection.sent, now
            elif now - self._stuck_since >= send_limit:
                connection.client_too_slow()
                return False
        return True
