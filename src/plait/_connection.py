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
from typing import Any, cast

import anyio
from anyio import ClosedResourceError, EndOfStream, get_cancelled_exc_class
from anyio.abc import TaskGroup

from ._backend import YIELD_EVERY
from ._channel import Channel
from ._children import Children
from ._ending import (
    await_disconnect,
    close_and_drain,
    close_for,
    close_for_end,
    drain_abandoned,
    send_goodbye,
)
from ._engine import closer
from ._exceptions import WebSocketStateError
from ._lifecycle import Action, Event, Phase, transition
from ._options import ConnectionOptions, ConnectionStatistics, Heartbeat
from ._outbound import Outbound, baton_allowed
from ._reader import read
from ._state import ConnectionState, WebSocketState
from ._types import Message, Receive, Scope, Send
from ._watchdogs import Watchdog, start_watchdogs
from ._websocket import WebSocket, check_scope, run_by

__all__ = ("Connection", "ConnectionOptions", "ConnectionStatistics", "Handler", "Heartbeat")

logger = logging.getLogger(__name__)

Handler = Callable[[WebSocket], Awaitable[Any]]
"""A connection handler: an async function taking the :class:`WebSocket`."""


class Connection:
    """The engine's side of one connection; see :func:`serve_connection`.

    It is the :class:`~plait._engine.Engine` its WebSocket holds. Its life is the
    table of :mod:`plait._lifecycle`: every decision goes through :meth:`_on`, which
    looks the transition up and carries out its actions.
    """

    __slots__ = (
        "_asgi_receive",
        "_asgi_send",
        "_asked",
        "_children",
        "_disconnect",
        "_goodbye",
        "_handler_scope",
        "_heard",
        "_holds",
        "_lost",
        "_outbound",
        "_scope",
        "_state",
        "_task_group",
        "_timer",
        "_watchdog",
        "dropped",
        "inbound",
        "limited",
        "options",
        "phase",
        "received",
        "send_data",
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
            final_sent=partial(self._on, Event.CLOSE_SENT),
        )
        # The hot path of data messages: straight to the outbound side.
        self.send_data = self._outbound.send_data
        self.phase = Phase.HANDSHAKE
        self._task_group: TaskGroup | None = None
        self._handler_scope: anyio.CancelScope | None = None
        self._timer: anyio.CancelScope | None = None
        self._children: Children | None = None
        self._watchdog: Watchdog | None = None
        self.received = self.dropped = self.limited = 0
        # While the peer's leaving: work on taken messages not done yet (a listener's
        # concurrent calls), and whether the handler asked past the last message.
        self._holds = 0
        self._asked = False
        # What a receive gets once the inbound is closed and empty.
        self._disconnect: Message | None = None
        self._goodbye: tuple[int, str] | None = None
        self._lost = False  # the peer left without a close (1006): see drain_abandoned
        self._heard = False  # the server's disconnect was read
        # Only the WebSocket holds the connection, not the other way round: a
        # connection that ended is freed by reference counting (see _let_go).
        check_scope(scope)
        self._scope = scope
        self._state = ConnectionState()

    # -- the engine interface of the WebSocket ---------------------------------------

    async def receive(self) -> Message:
        """The next message the reader read; the disconnect once they are all taken.

        A checkpoint: one that waits is a wait like any other; one that finds a
        message counts with the sends that did not suspend, and after
        :data:`~plait._backend.YIELD_EVERY` of them in a row yields to the other tasks
        first, so that a loop of them cannot starve the event loop.
        """
        outbound, inbound = self._outbound, self.inbound
        if inbound.items:
            ticks = outbound.ticks + 1
            if ticks >= YIELD_EVERY:
                ticks = 0
                await outbound.checkpoint()
            elif self.phase is not Phase.LEAVING:
                # The hot path: a message is there, no turn is due; take it here.
                outbound.ticks = ticks
                return inbound.take()
            outbound.ticks = ticks
        else:
            outbound.ticks = 0  # it waits (or the connection is over)
        try:
            message = await inbound.receive()
        except EndOfStream:
            return self._take_disconnect()
        except get_cancelled_exc_class():
            # A receive pending when the connection ended reports the disconnect; the
            # scope stays cancelled, so the handler's next checkpoint is cancelled.
            if self._disconnect is not None:
                return self._disconnect
            raise
        if (
            self.phase is Phase.LEAVING
            and message["type"] == "websocket.connect"
            and not len(self.inbound)
        ):
            self._take_disconnect()  # the handshake's client left right after it
        return message

    async def send(self, message: Message) -> None:
        """Send a message already checked by the WebSocket's state machine.

        Raises:
            ClosedResourceError: The connection is over, or the peer left.
        """
        if message["type"] == "websocket.accept":
            self._on(Event.ACCEPTED)
        await self._outbound.send(message)

    def send_soon(self, message: Message) -> Callable[[], Coroutine[Any, Any, None]] | None:
        """See :meth:`plait._outbound.Outbound.send_soon` (the heartbeat's ping)."""
        return self._outbound.send_soon(message)

    async def send_reply(self, message: Message) -> None:
        """Send a listener's reply or a stream's item (a ``websocket.send``); dropped when
        nobody can read it."""
        try:  # noqa: SIM105 - contextlib.suppress() would be an object per reply
            await self._outbound.send_data(message)
        except ClosedResourceError:
            pass

    def departure(self) -> tuple[int, str] | None:
        """The peer's close while the handler still takes what it sent before leaving."""
        if self.phase is Phase.LEAVING or self.phase is Phase.BROKEN:
            return (self._state.close_code or 1005, self._state.close_reason)
        return None

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
        if self._asked and not self._holds:
            self._on(Event.DRAINED)

    # -- what the watchdogs and telemetry see -------------------------------------------

    @property
    def path(self) -> str:
        """The connection's path, for the log."""
        path: str = self._scope.get("path", "")
        return path

    @property
    def sent(self) -> int:
        """Messages handed to the server's ``send``."""
        return self._outbound.sent

    @property
    def sending(self) -> bool:
        """True while a call to the server's ``send`` is in flight."""
        return self._outbound.busy

    @property
    def cancelled_handler(self) -> bool:
        """True once the engine cancelled the handler (a limit, a timeout, a slow
        client, a shutdown, or the peer leaving)."""
        handler_scope, task_group = self._handler_scope, self._task_group
        return (handler_scope is not None and handler_scope.cancel_called) or (
            task_group is not None and task_group.cancel_scope.cancel_called
        )

    def closed_with(self) -> tuple[int, str | None]:
        """The close code (1006 when none was recorded), and who closed: ``"peer"``,
        ``"application"``, or None while open."""
        state = self._state
        code = state.close_code if state.close_code is not None else 1006
        return (code, state.closed_by)

    # -- the lifecycle ---------------------------------------------------------------

    def shut_down(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close with ``code`` after what is queued, and cancel the handler."""
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
                    final = await self._run_handler(handler, run_by(self._scope, self, self._state))
                    if self._timer is not None:
                        self._timer.cancel()  # the handler ended within its bound
                    self._on(Event.HANDLER_ENDED)
                    if self.phase is Phase.CLOSING:
                        await close_and_drain(
                            self._state,
                            self._outbound,
                            self._scope,
                            final,
                            self.options.drain_timeout,
                        )
                    # What did not leave within the drain never will: a send still in
                    # flight (a baton holder's, shielded) is cut with the rest.
                    self._outbound.abort()
                    task_group.cancel_scope.cancel()
                finally:
                    closer.reset(token)
                    self._stop_watchdog()  # nothing may start a task past this point
        except get_cancelled_exc_class():
            # Cancelled from outside (the server is shutting down): say so to the peer.
            self._on(Event.CANCELLED, 1001, "server shutting down")
            self._let_go()
            with anyio.CancelScope(shield=True):
                await self._say_goodbye()
            raise
        finally:
            self._let_go()
        await self._say_goodbye()
        state = self._state
        if self.phase is Phase.CLOSED and state.accepted:
            self._lost = await await_disconnect(self._asgi_receive)
            self._heard = True
        if self._lost:
            await drain_abandoned(self._asgi_receive, heard=self._heard)
        logger.debug(
            "connection closed: %s with code %s by the %s", path, state.close_code, state.closed_by
        )

    async def _run_handler(self, handler: Handler, websocket: WebSocket) -> tuple[int, str]:
        """Run the handler; return the close (code, reason) its end calls for."""
        try:
            try:
                with anyio.CancelScope() as self._handler_scope:
                    await handler(websocket)
            except BaseException:
                if self._children is not None:
                    await self._children.end(report=True)
                raise
            if self._children is not None:
                await self._children.end(report=False)
                errors = self._children.take_errors()
                if errors:
                    raise ExceptionGroup("a task of the handler failed", errors)
        except (Exception, BaseExceptionGroup) as exc:  # never a bare cancellation
            return close_for_end(exc, self.path)
        return (1000, "")

    async def _say_goodbye(self) -> None:
        """Send the close the engine owes once the task group is gone (the writer is
        gone: one sender): after a cut (a client too slow to read, 1008) or a
        cancellation from outside (1001)."""
        goodbye = self._goodbye
        if goodbye is None or self.phase is not Phase.CUT:
            return
        self._goodbye = None
        if await send_goodbye(self._asgi_send, *goodbye):
            self._on(Event.CLOSE_SENT)

    def _let_go(self) -> None:
        """The task group is over: stop the watchdog's timer, and drop the outbound's
        and the watchdog's calls back into the connection (the reference cycles a
        connection has while it runs), so that reference counting frees it."""
        self._outbound.detach()
        self._stop_watchdog()

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.stop()

    def _start(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        assert self._task_group is not None
        self._task_group.start_soon(task)

    # -- events ------------------------------------------------------------------------

    def peer_left(self, disconnect: Message) -> None:
        """The server reported the peer gone: the handler takes what it sent first."""
        event = Event.PEER_LEFT_UNREAD if len(self.inbound) else Event.PEER_LEFT
        code = disconnect.get("code", 1005)
        self._lost = self._lost or code == 1006
        self._heard = True
        self._on(event, code, disconnect.get("reason") or "")

    def _send_failed(self, exc: BaseException) -> None:
        """The server's send raised: the peer is gone."""
        # hypercorn's trio worker raises trio.BusyResourceError when the app sends while
        # it answers the peer's close: the peer leaving, not a server fault. And h11's
        # LocalProtocolError when the client broke the handshake (data right behind the
        # upgrade request, hypercorn#225): hypercorn answered it with a 400 already.
        name = type(exc).__name__
        if isinstance(exc, OSError) or name == "BusyResourceError":
            logger.debug("send failed: the peer is gone", exc_info=exc)
        elif name == "LocalProtocolError":
            logger.info("%s: the server refused a send (%s); the client is gone", self.path, exc)
        else:
            logger.error("the server's send() failed; treating the peer as gone", exc_info=exc)
        self._lost = True
        self._on(Event.SEND_FAILED, 1006, "")

    def abort(self, code: int, reason: str) -> None:
        """Close from the engine's side: queue the close, cancel the handler only."""
        self._on(Event.ENGINE_CLOSE, code, reason)

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
        self._on(Event.CLOSE_NOW, code, reason)

    def _take_disconnect(self) -> Message:
        """The handler asks past the last message: the disconnect, or how it ended."""
        if self.phase is Phase.LEAVING:
            self._asked = True
            leaving = self._disconnect
            if not self._holds:
                self._on(Event.DRAINED)
            assert leaving is not None
            return leaving
        return self._disconnect or {"type": "websocket.disconnect", "code": 1006}

    async def _time_out(self, timer: anyio.CancelScope) -> None:
        try:
            with timer:
                await anyio.sleep(self.options.drain_timeout)
                self._on(Event.DRAIN_TIMEOUT)
        except get_cancelled_exc_class():
            pass  # the connection ended: return (the rule of plait._backend)

    def _on(self, event: Event, code: int = 1000, reason: str = "") -> None:
        """Move the lifecycle on ``event`` and carry out the transition's actions.

        Args:
            event: What happened.
            code: The close code the event brings (the peer's, or the engine's).
            reason: Its reason.
        """
        if self._task_group is None:
            return  # not running yet: nothing to end
        step = transition(self.phase, event)
        self.phase = step.phase
        state = self._state
        for action in step.actions:
            if action is Action.STOP_SENDING:
                self._outbound.abort()
            elif action is Action.CANCEL_ALL:
                self._task_group.cancel_scope.cancel()
            elif action is Action.RECORD_PEER_CLOSE:
                state.peer_closing(code, reason)
            elif action is Action.END_RECEIVES:
                self._disconnect = {
                    "type": "websocket.disconnect",
                    "code": state.close_code if state.close_code is not None else 1006,
                    "reason": state.close_reason,
                }
                self.inbound.close()
            elif action is Action.PEER_GONE:
                state.peer_disconnected(code, reason)
            elif action is Action.START_DRAIN_TIMER:
                self._timer = anyio.CancelScope()
                self._task_group.start_soon(self._time_out, self._timer)
            elif action is Action.QUEUE_CLOSE:
                state.application_closed(code, reason)
                # A close may be on its way already (the handler's own).
                with contextlib.suppress(ClosedResourceError):
                    self._outbound.finish(
                        {"type": "websocket.close", "code": code, "reason": reason}
                    )
            elif action is Action.CANCEL_HANDLER:
                if self._handler_scope is not None:
                    self._handler_scope.cancel()
            elif action is Action.SAY_GOODBYE:
                if state.application is not WebSocketState.DISCONNECTED:
                    state.application_closed(code, reason)
                    self._goodbye = (code, reason)
                elif state.closed_by == "application" and state.close_code is not None:
                    self._goodbye = (state.close_code, state.close_reason)
            else:  # Action.START_WATCHDOGS
                self._watchdog = start_watchdogs(self._task_group, self, self.options)
