"""The seam between the :class:`~plait.WebSocket` and what moves its messages.

A WebSocket makes a handful of calls below its state machine: receive a message, send
one, report counters, hand out a task group, and mark a message as still being worked
on. :class:`Engine` names them. A WebSocket alone holds a :class:`DirectEngine` over the
server's ``receive`` and ``send``; under :func:`plait.serve_connection` it holds the
connection itself. Nothing else differs, so each side can be read and tested alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from anyio import ClosedResourceError

from ._exceptions import WebSocketStateError
from ._types import Message, Receive, Send

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._options import ConnectionStatistics

__all__ = ("DirectEngine", "Engine", "closer", "listener_tracer")

closer: ContextVar[Callable[[int, str], None] | None] = ContextVar("plait_closer", default=None)
"""``close_now(code, reason)`` of the connection whose tasks run in this context: it ends
the connection at once, cutting a send in flight. Set by the engine; a hub subscription
with the ``disconnect`` policy uses it to let go of a subscriber stuck in a send."""

ListenerCall = Callable[[Any], Awaitable[Any]]

listener_tracer: ContextVar[Callable[[ListenerCall], ListenerCall] | None] = ContextVar(
    "plait_listener_tracer", default=None
)
"""What wraps each listener call of the connection whose tasks run in this context (a
span per call). Set by :mod:`plait._otel` around the connection; read by the listener.
Not in the ASGI scope, where middleware and handlers could read or forge it."""


class Engine(Protocol):
    """What a WebSocket needs from whatever moves its messages."""

    @property
    def receive(self) -> Receive:
        """The next ASGI message from the server (the disconnect, once the peer left)."""
        ...

    async def send(self, message: Message) -> None:
        """Hand a message, already checked by the state machine, to the server.

        Raises:
            ClosedResourceError: The connection is over; nothing was sent.
        """
        ...

    @property
    def send_data(self) -> Send:
        """:meth:`send` for ``websocket.send`` while both sides are connected."""
        ...

    async def send_reply(self, message: Message) -> None:
        """Send a listener's reply or a stream's item; drop it when nobody can read it."""
        ...

    def departure(self) -> tuple[int, str] | None:
        """The peer's (code, reason) while the handler may still receive what it sent
        before leaving; None otherwise."""
        ...

    def statistics(self) -> ConnectionStatistics:
        """The connection's counters."""
        ...

    @property
    def task_group(self) -> TaskGroup:
        """A task group whose tasks end with the connection."""
        ...

    def hold(self) -> None:
        """A message taken from ``receive`` is still being worked on (a listener call)."""
        ...

    def release(self) -> None:
        """The work started by :meth:`hold` is over."""
        ...


class DirectEngine:
    """The server's ``receive`` and ``send`` themselves: a WebSocket with no engine."""

    __slots__ = ("_send", "receive", "send_data")

    def __init__(self, receive: Receive, send: Send) -> None:
        self.receive = receive
        self._send = send
        self.send_data = self.send

    async def send(self, message: Message) -> None:
        """Send directly; a transport error means the peer is gone."""
        try:
            await self._send(message)
        except OSError:
            raise ClosedResourceError from None

    async def send_reply(self, message: Message) -> None:
        """Send; a peer that is gone makes it a no-op."""
        with contextlib.suppress(ClosedResourceError):
            await self.send(message)

    def departure(self) -> tuple[int, str] | None:
        """No engine reads ahead: a peer that left is seen by the next receive."""
        return None

    def statistics(self) -> ConnectionStatistics:
        """No engine, no counters."""
        raise WebSocketStateError(
            "statistics() is only available to handlers run by plait.serve_connection()"
        )

    @property
    def task_group(self) -> TaskGroup:
        """No engine, no task group."""
        raise WebSocketStateError(
            "task_group is only available to handlers run by plait.serve_connection()"
        )

    def hold(self) -> None:
        """Nothing to hold: without an engine nobody waits for the work to end."""

    def release(self) -> None:
        """See :meth:`hold`."""
