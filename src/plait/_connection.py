"""The connection engine: one task group per connection, reader, writer and handler.

::

    ASGI receive -> reader -> inbound channel (bounded) -> handler (ws.receive_*)
    ASGI send    <- writer <- outbound channel (bounded) <- handler and any other sender

Only the reader calls ASGI ``receive``; only the writer calls ASGI ``send`` while the
connection's task group runs. When the peer goes (the reader sees
``websocket.disconnect``, or the writer's ``send`` fails) the task group is cancelled:
the handler and every task it started stop at their next checkpoint, and a
``receive_*`` pending at that moment raises :class:`WebSocketDisconnect` with the
peer's code and reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import anyio
from anyio import ClosedResourceError, EndOfStream, get_cancelled_exc_class
from anyio.abc import TaskGroup

from ._channel import Channel
from ._exceptions import MessageDecodeError, MessageTypeError, PlaitError, first_error
from ._state import WebSocketState
from ._types import Message, Receive, Scope, Send
from ._websocket import WebSocket, validate_close

__all__ = (
    "ConnectionOptions",
    "ConnectionStatistics",
    "Handler",
    "Heartbeat",
    "serve_connection",
)

logger = logging.getLogger(__name__)

Handler = Callable[[WebSocket], Awaitable[Any]]
"""A connection handler: an async function taking the :class:`WebSocket`."""

_CONNECTED: Final = WebSocketState.CONNECTED
_CONNECTING: Final = WebSocketState.CONNECTING
_GOODBYE_TIMEOUT: Final = 1.0


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
    """How the engine runs a connection; see :func:`serve_connection` for each field."""

    max_message_size: int | None = 1024 * 1024
    inbound_capacity: int = 16
    outbound_capacity: int = 16
    send_timeout: float | None = None
    drain_timeout: float = 5.0
    idle_timeout: float | None = None
    heartbeat: Heartbeat | None = None

    def __post_init__(self) -> None:
        if self.inbound_capacity < 1 or self.outbound_capacity < 1:
            raise ValueError("inbound_capacity and outbound_capacity must be at least 1")


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


async def serve_connection(
    scope: Scope,
    receive: Receive,
    send: Send,
    handler: Handler,
    *,
    max_message_size: int | None = 1024 * 1024,
    inbound_capacity: int = 16,
    outbound_capacity: int = 16,
    send_timeout: float | None = None,
    drain_timeout: float = 5.0,
    idle_timeout: float | None = None,
    heartbeat: Heartbeat | None = None,
) -> None:
    """Run ``handler(websocket)`` for one connection, as reader, writer and handler tasks.

    Call it from a raw ASGI app for a ``websocket`` scope::

        async def app(scope, receive, send):
            await plait.serve_connection(scope, receive, send, handler)

    The handler gets a :class:`WebSocket` and decides when to ``accept()``. When it
    returns, the connection closes with 1000 once what it queued is delivered (waiting
    at most ``drain_timeout``). When it raises, the error is logged with its traceback
    and the connection closes with 1011 and a generic reason (an HTTP 500 before the
    handshake); :class:`MessageDecodeError` closes with 1007 and
    :class:`MessageTypeError` with 1003, as the client's fault. When the peer leaves,
    the handler is cancelled.

    Args:
        scope: The ASGI ``websocket`` scope.
        receive: The ASGI receive callable; only the reader task calls it.
        send: The ASGI send callable; only the writer task calls it.
        handler: The async function that runs the connection.
        max_message_size: Largest incoming message in bytes (``None``: no limit);
            a larger one closes the connection with 1009.
        inbound_capacity: Messages read ahead of the handler; when they are not
            taken, the reader stops reading and the server's flow control pushes
            back on the client.
        outbound_capacity: Messages queued for the writer before senders wait.
        send_timeout: Seconds one message may take to leave before the client is
            deemed too slow and the connection closes with 1008 (``None``: wait).
        drain_timeout: Seconds to deliver queued messages after the handler ends.
        idle_timeout: Close with 1001 once nothing arrived from the peer for this many
            seconds after the handshake (``None``: never).
        heartbeat: Ping the peer at the application level and close with 1001 when it
            stops answering; see :class:`Heartbeat`.
    """
    options = ConnectionOptions(
        max_message_size=max_message_size,
        inbound_capacity=inbound_capacity,
        outbound_capacity=outbound_capacity,
        send_timeout=send_timeout,
        drain_timeout=drain_timeout,
        idle_timeout=idle_timeout,
        heartbeat=heartbeat,
    )
    await Connection(scope, receive, send, options).run(handler)


class Connection:
    """The engine's side of one connection; see :func:`serve_connection`."""

    def __init__(
        self, scope: Scope, receive: Receive, send: Send, options: ConnectionOptions
    ) -> None:
        self._asgi_receive = receive
        self._asgi_send = send
        self._options = options
        self._inbound: Channel[Message] = Channel(options.inbound_capacity)
        self.outbound: Channel[Message] = Channel(options.outbound_capacity)
        self._max_message_size = options.max_message_size
        self._send_timeout = options.send_timeout
        self._drain_timeout = options.drain_timeout
        self._writer_done = anyio.Event()
        # Set once the connection is over from the engine's point of view; a receive
        # pending in the handler returns it instead of being cancelled.
        self._disconnect: Message | None = None
        self._goodbye: tuple[int, str] | None = None
        self._task_group: TaskGroup | None = None
        self._handler_scope: anyio.CancelScope | None = None
        self._received = 0
        self._sent = 0
        self._close_written = False
        self._peer_left = False
        self.children: TaskGroup | None = None
        self.websocket = WebSocket(scope, self._receive_message, send)
        self.websocket._connection = self
        self._state = self.websocket._state

    def statistics(self) -> ConnectionStatistics:
        """Return the connection's counters."""
        inbound = self._inbound.statistics()
        outbound = self.outbound.statistics()
        return ConnectionStatistics(
            inbound.buffered,
            inbound.capacity,
            outbound.buffered,
            outbound.capacity,
            self._received,
            self._sent,
        )

    # -- the lifecycle ---------------------------------------------------------------

    def shut_down(self, code: int = 1001, reason: str = "server shutting down") -> None:
        """Close with ``code`` after what is queued, and cancel the handler."""
        if self._task_group is not None and not self._peer_left:
            self._abort(code, reason)

    def cancel(self) -> None:
        """Cancel everything the connection runs, at once."""
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    async def run(self, handler: Handler) -> None:
        """Run the connection until the handler is done and the writer has drained."""
        path = self.websocket.scope.get("path", "")
        logger.debug("connection opened: %s", path)
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                task_group.start_soon(self._read_loop)
                task_group.start_soon(self._write_loop)
                final = await self._run_handler(handler)
                await self._finish(final)
                task_group.cancel_scope.cancel()
        except get_cancelled_exc_class():
            # Cancelled from outside (the server is shutting down): say so to the peer.
            with anyio.CancelScope(shield=True):
                await self._say_goodbye(1001, "server shutting down")
            raise
        if self._goodbye is not None:
            await self._say_goodbye(*self._goodbye)
        logger.debug(
            "connection closed: %s with code %s by the %s",
            path,
            self._state.close_code,
            self._state.closed_by,
        )

    async def _run_handler(self, handler: Handler) -> tuple[int, str]:
        """Run the handler; return the close (code, reason) its end calls for."""
        try:
            with anyio.CancelScope() as self._handler_scope:
                async with anyio.create_task_group() as children:
                    self.children = children
                    await handler(self.websocket)
                    children.cancel_scope.cancel()
        except Exception as exc:  # an ExceptionGroup too; never a cancellation
            return self._close_for(exc)
        except BaseExceptionGroup as group:
            # trio can report a cancellation together with errors raised as the
            # connection ended (a child's send after the peer left): the
            # cancellations go back to their scope, the errors are judged as usual.
            cancelled, rest = group.split(get_cancelled_exc_class())
            errors, others = rest.split(Exception) if rest is not None else (None, None)
            if others is not None:
                raise  # KeyboardInterrupt, SystemExit: not ours to judge
            final = self._close_for(errors) if errors is not None else (1000, "")
            if cancelled is not None:
                raise cancelled from None
            return final
        return (1000, "")

    def _close_for(self, exc: Exception) -> tuple[int, str]:
        """Choose the close for a handler that raised, and log what deserves it."""
        error = first_error(exc)
        path = self.websocket.scope.get("path", "")
        if error is None:
            return (1000, "")
        if isinstance(error, MessageDecodeError):
            logger.info("closing %s with 1007: the client sent %s", path, error)
            return (1007, validate_close(1007, str(error)))
        if isinstance(error, MessageTypeError):
            logger.info("closing %s with 1003: %s", path, error)
            return (1003, validate_close(1003, str(error)))
        code = getattr(error, "close_code", None)
        if isinstance(error, PlaitError) and isinstance(code, int):
            # plait's own errors that say how to close (a too slow subscriber: 1013)
            logger.warning("closing %s with %d: %s", path, code, error)
            return (code, validate_close(code, getattr(error, "close_reason", "") or ""))
        logger.error("handler for %s failed", path, exc_info=error)
        return (1011, "internal error")

    async def _finish(self, final: tuple[int, str]) -> None:
        """Queue the close the handler's end calls for, then let the writer drain."""
        state = self._state
        if self._peer_left:
            return  # the task group is cancelled: nothing can be said any more
        code, reason = final
        if state.application is _CONNECTED:
            state.did_send("websocket.close", WebSocketState.DISCONNECTED, code, reason)
            self.outbound.force_nowait({"type": "websocket.close", "code": code, "reason": reason})
        elif state.application is _CONNECTING:
            self._deny(internal_error=code == 1011)
        self.outbound.close()
        with anyio.move_on_after(self._drain_timeout) as scope:
            await self._writer_done.wait()
        if scope.cancelled_caught:
            logger.warning(
                "%s: queued messages not delivered within %.1f s; dropping them",
                self.websocket.scope.get("path", ""),
                self._drain_timeout,
            )

    def _deny(self, *, internal_error: bool) -> None:
        """End a connection whose handler never accepted it."""
        state = self._state
        extensions = self.websocket.scope.get("extensions") or {}
        if internal_error and "websocket.http.response" in extensions:
            body = b"Internal Server Error"
            start = {
                "type": "websocket.http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"21")],
            }
            state.did_send("websocket.http.response.body", WebSocketState.DISCONNECTED, 1011, "")
            self.outbound.force_nowait(start)
            self.outbound.force_nowait({"type": "websocket.http.response.body", "body": body})
        else:
            state.did_send("websocket.close", WebSocketState.DISCONNECTED, 1000, "")
            self.outbound.force_nowait({"type": "websocket.close", "code": 1000, "reason": ""})

    async def _say_goodbye(self, code: int, reason: str) -> None:
        """Send a close after the task group is gone (the writer is gone: one sender).

        Used when the server cancels the connection (1001), and for a client too slow
        to read (1008), whose close the writer could not deliver.
        """
        state = self._state
        if self._close_written or self._peer_left:
            return
        if state.application is _CONNECTED:
            state.did_send("websocket.close", WebSocketState.DISCONNECTED, code, reason)
        elif self._goodbye is None:
            return
        self._close_written = True
        with anyio.move_on_after(_GOODBYE_TIMEOUT):
            try:
                await self._asgi_send({"type": "websocket.close", "code": code, "reason": reason})
            except Exception:
                logger.debug("could not send the close frame", exc_info=True)

    # -- the handler's side ------------------------------------------------------------

    async def _receive_message(self) -> Message:
        ended = self._ended()
        if ended is not None:
            return ended
        try:
            return await self._inbound.receive()
        except EndOfStream:
            return self._ended() or {"type": "websocket.disconnect", "code": 1006}
        except get_cancelled_exc_class():
            # A receive pending when the connection ended reports the disconnect; the
            # scope stays cancelled, so the handler's next checkpoint is cancelled.
            ended = self._ended()
            if ended is not None:
                return ended
            raise

    def _ended(self) -> Message | None:
        """The disconnect message once the engine ended the connection, else None."""
        return self._disconnect

    async def send_message(self, message: Message) -> None:
        """Queue a message already checked by the WebSocket's state machine."""
        if message["type"] == "websocket.accept":
            self._start_watchdogs()
        try:
            if message["type"] == "websocket.close":
                self.outbound.force_nowait(message)  # a close never waits for room
            else:
                await self.outbound.send(message)
        except ClosedResourceError:
            raise self._state.closed_error(f"send {message['type']!r}") from None

    # -- ends decided by the engine --------------------------------------------------------

    def _peer_gone(self, code: int, reason: str) -> None:
        """The peer disconnected: cancel everything the connection runs."""
        self._peer_left = True
        self._state.peer_disconnected(code, reason)
        self._end()
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()

    def _abort(self, code: int, reason: str) -> None:
        """Close from the engine's side: queue the close, cancel the handler only."""
        state = self._state
        if state.application is _CONNECTED:
            state.did_send("websocket.close", WebSocketState.DISCONNECTED, code, reason)
            self.outbound.force_nowait({"type": "websocket.close", "code": code, "reason": reason})
        self._end()
        if self._handler_scope is not None:
            self._handler_scope.cancel()

    def _end(self) -> None:
        state = self._state
        code = state.close_code if state.close_code is not None else 1006
        self._disconnect = {
            "type": "websocket.disconnect",
            "code": code,
            "reason": state.close_reason,
        }
        self._inbound.close()
        self.outbound.close()

    # -- dead peers -----------------------------------------------------------------------

    def _start_watchdogs(self) -> None:
        options, task_group = self._options, self._task_group
        if task_group is None:
            return
        if options.idle_timeout is not None:
            task_group.start_soon(self._watch_idle, options.idle_timeout)
        if options.heartbeat is not None:
            task_group.start_soon(self._beat, options.heartbeat)

    async def _watch_idle(self, limit: float) -> None:
        """Close with 1001 once nothing arrived for ``limit`` seconds (checked 4x per limit)."""
        seen, quiet_since = self._received, anyio.current_time()
        while True:
            await anyio.sleep(limit / 4)
            now = anyio.current_time()
            if self._received != seen:
                seen, quiet_since = self._received, now
            elif now - quiet_since >= limit:
                logger.info("closing %s with 1001: idle for %s s", self._path(), limit)
                self._abort(1001, "idle timeout")
                return

    async def _beat(self, heartbeat: Heartbeat) -> None:
        """Ping every interval; close with 1001 when nothing arrives in the timeout after."""
        ping: Message = {"type": "websocket.send", "text": heartbeat.ping}
        next_ping = anyio.current_time() + heartbeat.interval
        while True:
            await anyio.sleep(max(0.0, next_ping - anyio.current_time()))
            seen = self._received
            try:
                await self.outbound.send(ping)
            except ClosedResourceError:
                return
            next_ping = anyio.current_time() + heartbeat.interval  # a cadence from the ping
            await anyio.sleep(heartbeat.timeout)
            if self._received == seen:
                logger.info("closing %s with 1001: no answer to the heartbeat", self._path())
                self._abort(1001, "heartbeat timeout")
                return

    def _path(self) -> str:
        path: str = self.websocket.scope.get("path", "")
        return path

    # -- the tasks ------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        receive = self._asgi_receive
        inbound = self._inbound
        limit = self._max_message_size
        pong = None if self._options.heartbeat is None else self._options.heartbeat.pong
        try:
            while True:
                message = await receive()
                message_type = message["type"]
                if message_type == "websocket.receive":
                    self._received += 1
                    if pong is not None and message.get("text") == pong:
                        continue  # the heartbeat's answer: alive, and nothing to deliver
                    text = message.get("text")
                    if (
                        limit is not None
                        and (text is None or len(text) * 4 > limit)
                        and _size_over(message, limit)
                    ):
                        logger.info(
                            "closing %s with 1009: a message exceeds %d bytes",
                            self.websocket.scope.get("path", ""),
                            limit,
                        )
                        self._abort(1009, "message too big")
                        return
                    await inbound.send(message)
                elif message_type == "websocket.disconnect":
                    self._peer_gone(message.get("code", 1005), message.get("reason") or "")
                    return
                else:
                    await inbound.send(message)
        except ClosedResourceError:
            return  # the engine ended the connection: nothing more to read
        except Exception:
            logger.exception("the server's receive() failed; treating the peer as gone")
            self._peer_gone(1006, "")

    async def _write_loop(self) -> None:
        send = self._asgi_send
        outbound = self.outbound
        timeout = self._send_timeout
        try:
            while True:
                try:
                    message = await outbound.receive()
                except EndOfStream:
                    return
                if self._close_written:
                    continue  # nothing may follow a close
                if timeout is None:
                    await send(message)
                else:
                    with anyio.move_on_after(timeout) as scope:
                        await send(message)
                    if scope.cancelled_caught:
                        self._client_too_slow()
                        return
                self._sent += 1
                message_type = message["type"]
                if message_type == "websocket.close" or (
                    message_type == "websocket.http.response.body" and not message.get("more_body")
                ):
                    self._close_written = True
        except OSError:
            logger.debug("send failed: the peer is gone", exc_info=True)
            self._peer_gone(1006, "")
        except Exception:
            logger.exception("the server's send() failed; treating the peer as gone")
            self._peer_gone(1006, "")
        finally:
            self._writer_done.set()

    def _client_too_slow(self) -> None:
        logger.warning(
            "closing %s with 1008: the client read nothing for %s s",
            self.websocket.scope.get("path", ""),
            self._send_timeout,
        )
        code, reason = self._goodbye = (1008, "client too slow")
        self._state.did_send("websocket.close", WebSocketState.DISCONNECTED, code, reason)
        self._end()
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()


def _size_over(message: Message, limit: int) -> bool:
    data = message.get("bytes")
    if data is not None:
        return len(data) > limit
    text: str = message.get("text") or ""
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False  # even at four bytes a character it fits
    return len(text.encode()) > limit
