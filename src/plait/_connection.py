"""The connection engine: one task group per connection, reader, writer and handler.

Only the reader (:mod:`plait._reader`) calls ASGI ``receive``; ASGI ``send`` is called
one message at a time, in order, by the writer or a sender holding the baton
(:mod:`plait._outbound`). When the peer goes, the handler first gets what the peer sent
before it left, then the task group is cancelled (:doc:`/discussion/closing`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, Final, cast

import anyio
from anyio import ClosedResourceError, EndOfStream, get_cancelled_exc_class
from anyio.abc import TaskGroup

from ._channel import Channel
from ._children import Children
from ._ending import await_disconnect, close_and_drain, close_for, close_for_end, send_goodbye
from ._engine import closer
from ._exceptions import WebSocketStateError
from ._options import ConnectionOptions, ConnectionStatistics, Heartbeat
from ._outbound import Outbound, baton_allowed
from ._reader import read
from ._state import WebSocketState
from ._types import Message, Receive, Scope, Send
from ._watchdogs import start_watchdogs
from ._websocket import WebSocket

__all__ = ("Connection", "ConnectionOptions", "ConnectionStatistics", "Handler", "Heartbeat")

logger = logging.getLogger(__name__)

Handler = Callable[[WebSocket], Awaitable[Any]]
"""A connection handler: an async function taking the :class:`WebSocket`."""

_CONNECTED: Final = WebSocketState.CONNECTED
_CONNECTING: Final = WebSocketState.CONNECTING


class Connection:
    """The engine's side of one connection; see :func:`serve_connection`.

    It is the :class:`~plait._engine.Engine` its WebSocket holds.
    """

    __slots__ = (
        "_accepted",
        "_asgi_receive",
        "_asgi_send",
        "_children",
        "_disconnect",
        "_drained",
        "_goodbye",
        "_handler_scope",
        "_holding",
        "_holds",
        "_leaving",
        "_outbound",
        "_peer_left",
        "_state",
        "_task_group",
        "dropped",
        "inbound",
        "limited",
        "options",
        "received",
        "send_data",
        "websocket",
    )

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, options: ConnectionOptions
    ) -> None:
        self._asgi_receive = receive
        self._asgi_send = send
        self.options = options
        self.inbound: Channel[Message] = Channel(options.inbound_capacity)
        self._outbound = Outbound(
            send,
            options.outbound_capacity,
            baton=baton_allowed(),
            start_writer=self._start,
            failed=self._send_failed,
        )
        # The hot path of data messages: straight to the outbound side.
        self.send_data = self._outbound.send
        self._task_group: TaskGroup | None = None
        self._handler_scope: anyio.CancelScope | None = None
        self._children: Children | None = None
        self.received = self.dropped = self.limited = 0
        # The handler took a message and has not asked for the next one yet; or it
        # holds messages that it still works on (a listener's concurrent calls).
        self._holding = False
        self._holds = 0
        # The peer's disconnect while the handler still takes what came before it.
        self._leaving: Message | None = None
        self._drained: anyio.Event | None = None
        # Set once the connection is over from the engine's point of view; a receive
        # pending in the handler returns it instead of being cancelled.
        self._disconnect: Message | None = None
        self._goodbye: tuple[int, str] | None = None
        self._peer_left = False
        self._accepted = False
        self.websocket = WebSocket._run_by(scope, self)
        self._state = self.websocket._state

    # -- the engine interface of the WebSocket ---------------------------------------

    async def receive(self) -> Message:
        """The next message the reader read; the disconnect once they are all taken."""
        self._holding = False
        try:
            message = await self.inbound.receive()
        except EndOfStream:
            return self._take_disconnect()
        except get_cancelled_exc_class():
            # A receive pending when the connection ended reports the disconnect; the
            # scope stays cancelled, so the handler's next checkpoint is cancelled.
            if self._disconnect is not None:
                return self._disconnect
            raise
        if message["type"] == "websocket.receive":
            self._holding = True
        elif self._leaving is not None:
            self._check_drained()  # the handshake's message, taken after the peer left
        return message

    async def send(self, message: Message) -> None:
        """Send a message already checked by the WebSocket's state machine.

        Raises:
            ClosedResourceError: The connection is over.
        """
        if message["type"] == "websocket.accept":
            self._accepted = True
            if self._task_group is not None:
                start_watchdogs(self._task_group, self, self.options)
        await self._outbound.send(message)

    def statistics(self) -> ConnectionStatistics:
        """Return the connection's counters."""
        options, outbound = self.options, self._outbound
        return ConnectionStatistics(
            len(self.inbound),
            options.inbound_capacity,
            len(outbound.queue),
            options.outbound_capacity,
            self.received,
            outbound.sent,
            self.dropped,
            self.limited,
        )

    @property
    def task_group(self) -> TaskGroup:
        """The handler's task group, made on first use: its tasks end with the handler."""
        children = self._children
        if children is None:
            if self._task_group is None or self._handler_scope is None:
                raise WebSocketStateError("the handler is not running")
            children = self._children = Children(
                self._task_group, self._handler_scope, partial(close_for, path=self.path)
            )
        return cast("TaskGroup", children)

    def hold(self) -> None:
        """A taken message is still being worked on: the drain at the close waits."""
        self._holds += 1

    def release(self) -> None:
        """Work started by :meth:`hold` is over."""
        self._holds -= 1
        if self._leaving is not None:
            self._check_drained()

    # -- what the watchdogs see --------------------------------------------------------

    @property
    def path(self) -> str:
        """The connection's path, for the log."""
        path: str = self.websocket.scope.get("path", "")
        return path

    @property
    def sent(self) -> int:
        """Messages handed to the server's ``send``."""
        return self._outbound.sent

    @property
    def sending(self) -> bool:
        """True while a call to the server's ``send`` is in flight."""
        return self._outbound.busy

    # -- the lifecycle ---------------------------------------------------------------

    def shut_down(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close with ``code`` after what is queued, and cancel the handler."""
        if self._task_group is not None and not self._peer_left:
            self.abort(code, reason)

    def cancel(self) -> None:
        """Cancel everything the connection runs, at once."""
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    async def run(self, handler: Handler) -> None:
        """Run the connection until the handler is done and what it queued has left."""
        path = self.path
        logger.debug("connection opened: %s", path)
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                token = closer.set(self.close_now)  # for the hub's slow-subscriber policy
                try:
                    task_group.start_soon(read, self, self._asgi_receive)
                    final = await self._run_handler(handler)
                    await self._finish(final)
                    task_group.cancel_scope.cancel()
                finally:
                    closer.reset(token)
        except get_cancelled_exc_class():
            # Cancelled from outside (the server is shutting down): say so to the peer.
            with anyio.CancelScope(shield=True):
                await self._say_goodbye(*(self._goodbye or (1001, "server shutting down")))
            raise
        if self._goodbye is not None:
            await self._say_goodbye(*self._goodbye)
        if not self._peer_left and self._outbound.final_sent and self._accepted:
            await await_disconnect(self._asgi_receive)
        state = self._state
        logger.debug(
            "connection closed: %s with code %s by the %s", path, state.close_code, state.closed_by
        )

    async def _run_handler(self, handler: Handler) -> tuple[int, str]:
        """Run the handler; return the close (code, reason) its end calls for."""
        try:
            try:
                with anyio.CancelScope() as self._handler_scope:
                    await handler(self.websocket)
            except BaseException:
                if self._children is not None:
                    await self._children.end(report=True)
                raise
            if self._children is not None:
                await self._children.end(report=False)
                if self._children.errors:
                    raise ExceptionGroup("a task of the handler failed", self._children.errors)
        except (Exception, BaseExceptionGroup) as exc:  # never a bare cancellation
            return close_for_end(exc, self.path)
        return (1000, "")

    async def _finish(self, final: tuple[int, str]) -> None:
        """Queue the close the handler's end calls for, then let the writer drain."""
        if self._peer_left:
            return  # the task group is cancelled: nothing can be said any more
        if self._leaving is not None:
            self.peer_gone(self._leaving)  # the handler ended while the peer's left
            return
        await close_and_drain(
            self._state, self._outbound, self.websocket.scope, final, self.options.drain_timeout
        )

    async def _say_goodbye(self, code: int, reason: str) -> None:
        """Send a close after the task group is gone (the writer is gone: one sender).

        Used when the server cancels the connection (1001), and for a client too slow
        to read (1008), whose close the writer could not deliver.
        """
        state = self._state
        if self._outbound.final_sent or self._peer_left:
            return
        if state.application is _CONNECTED:
            state.did_send("websocket.close", WebSocketState.DISCONNECTED, code, reason)
        elif self._goodbye is None:
            return
        self._outbound.final_sent = True
        await send_goodbye(self._asgi_send, code, reason)

    def _start(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(task)

    # -- ends decided by the engine --------------------------------------------------------

    def _take_disconnect(self) -> Message:
        """The handler asks past the last message: the disconnect, or how it ended."""
        leaving = self._leaving
        if leaving is not None and not self._peer_left:
            self._check_drained()
            return leaving
        return self._disconnect or {"type": "websocket.disconnect", "code": 1006}

    def _check_drained(self) -> None:
        leaving = self._leaving
        if leaving is not None and not (len(self.inbound) or self._holding or self._holds):
            self.peer_gone(leaving)

    def peer_gone(self, disconnect: Message) -> None:
        """The peer disconnected: cancel everything the connection runs."""
        if self._peer_left:
            return
        self._peer_left = True
        self._state.peer_disconnected(disconnect.get("code", 1005), disconnect.get("reason") or "")
        self._end()
        self._outbound.abort()
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        if self._drained is not None:
            self._drained.set()

    def _send_failed(self, exc: BaseException) -> bool:
        """The server's send raised: the peer is gone. True if the handler drains first
        (then the failed message counts as dropped, like any other sent meanwhile)."""
        # hypercorn's trio worker raises trio.BusyResourceError when the app sends while
        # it answers the peer's close: the peer leaving, not a server fault.
        if isinstance(exc, OSError) or type(exc).__name__ == "BusyResourceError":
            logger.debug("send failed: the peer is gone", exc_info=exc)
        else:
            logger.error("the server's send() failed; treating the peer as gone", exc_info=exc)
        if self._begin_leaving({"type": "websocket.disconnect", "code": 1006}):
            assert self._task_group is not None
            self._task_group.start_soon(self._wait_drained)
            return True
        return self._leaving is not None and not self._peer_left

    def abort(self, code: int, reason: str) -> None:
        """Close from the engine's side: queue the close, cancel the handler only."""
        state = self._state
        if state.application is _CONNECTED:
            state.did_send("websocket.close", WebSocketState.DISCONNECTED, code, reason)
            with contextlib.suppress(ClosedResourceError):  # a close is on its way already
                self._outbound.finish({"type": "websocket.close", "code": code, "reason": reason})
        self._end()
        if self._handler_scope is not None:
            self._handler_scope.cancel()

    def client_too_slow(self) -> None:
        """End with 1008: drop what is queued, cancel everything, close when allowed."""
        logger.warning(
            "closing %s with 1008: the client read nothing for %s s",
            self.path,
            self.options.send_timeout,
        )
        self.close_now(1008, "client too slow")

    def close_now(self, code: int, reason: str) -> None:
        """End at once, also cutting a send in flight: drop what is queued, cancel
        everything, and send the close as soon as the server allows."""
        if self._peer_left or self._goodbye is not None or self._task_group is None:
            return
        self._goodbye = (code, reason)
        if self._state.application is _CONNECTED:
            self._state.did_send("websocket.close", WebSocketState.DISCONNECTED, code, reason)
        self._outbound.abort()
        self._end()
        self._task_group.cancel_scope.cancel()

    def _end(self) -> None:
        state = self._state
        code = state.close_code if state.close_code is not None else 1006
        self._disconnect = {
            "type": "websocket.disconnect",
            "code": code,
            "reason": state.close_reason,
        }
        self.inbound.close()

    async def peer_leaves(self, disconnect: Message) -> None:
        """The peer left: let the handler take what it sent first, for a bounded time."""
        if self._begin_leaving(disconnect):
            await self._wait_drained()

    def _begin_leaving(self, disconnect: Message) -> bool:
        """Start the drain; False when there is nothing to drain (or it is under way)."""
        if self._leaving is not None or self._peer_left:
            return False
        self._leaving = disconnect
        self._outbound.dropping = True  # nobody can read what the handler sends now
        if not len(self.inbound):
            self.peer_gone(disconnect)  # nothing left unread: cancel at once
            return False
        self._drained = anyio.Event()
        self.inbound.close()  # a receive waiting on an empty inbound gets the disconnect
        return True

    async def _wait_drained(self) -> None:
        assert self._drained is not None
        assert self._leaving is not None
        with anyio.move_on_after(self.options.drain_timeout):
            await self._drained.wait()
        self.peer_gone(self._leaving)
