"""The engine's front door: :func:`serve_connection`, for a raw ASGI app."""

from __future__ import annotations

from ._connection import Connection, Handler
from ._limits import RateLimit
from ._options import ConnectionOptions, Heartbeat, StallPolicy
from ._otel import Telemetry
from ._types import Receive, Scope, Send

__all__ = ("serve_connection",)


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
    stall_timeout: float | None = 10.0,
    on_stall: StallPolicy = "close",
    rate_limit: RateLimit | None = None,
    telemetry: Telemetry | None = None,
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
    the handler still gets the messages it sent before leaving, then is cancelled.

    Args:
        scope: The ASGI ``websocket`` scope.
        receive: The ASGI receive callable; only the reader task calls it.
        send: The ASGI send callable, called one message at a time.
        handler: The async function that runs the connection.
        max_message_size: Largest incoming message in bytes (``None``: no limit);
            a larger one closes the connection with 1009.
        inbound_capacity: Messages read ahead of the handler; when they are not
            taken, the reader stops reading and the server's flow control pushes
            back on the client.
        outbound_capacity: Messages queued for the writer before senders wait.
        send_timeout: Seconds one message may take to leave before the client is
            deemed too slow and the connection closes with 1008 (``None``: wait).
        drain_timeout: Seconds to deliver queued messages after the handler ends, and
            seconds the handler has to take what the peer sent before it left.
        idle_timeout: Close with 1001 once nothing arrived from the peer for this many
            seconds after the handshake (``None``: never).
        heartbeat: Ping the peer at the application level and close with 1001 when it
            stops answering; see :class:`Heartbeat`.
        stall_timeout: Seconds the inbound may stay full with nothing taken before the
            reader reads on, so that a handler that stopped reading still sees the
            peer leave (``None``: wait for room forever).
        on_stall: What a message read on after ``stall_timeout`` does: ``"close"``
            the connection with 1008, or ``"drop"`` the message (counted in
            :meth:`WebSocket.statistics`).
        rate_limit: A token bucket on the messages the client sends, checked before
            they are queued for the handler; what a message over it does (a close with
            1008, a drop, a drop with a reply) is the limit's ``on_exceed``. See
            :class:`RateLimit`. ``None``: no limit, and no cost.
        telemetry: A span and metrics for the connection through OpenTelemetry
            (:class:`plait.otel.Telemetry`); with no route, the span is named
            ``WebSocket``. ``None``: none, and no cost.
    """
    options = ConnectionOptions(
        max_message_size=max_message_size,
        inbound_capacity=inbound_capacity,
        outbound_capacity=outbound_capacity,
        send_timeout=send_timeout,
        drain_timeout=drain_timeout,
        idle_timeout=idle_timeout,
        heartbeat=heartbeat,
        stall_timeout=stall_timeout,
        on_stall=on_stall,
        rate_limit=rate_limit,
    )
    if telemetry is None:
        await Connection(scope, receive, send, options).run(handler)
        return
    observed = telemetry.observe_connection(None, scope, receive, send)
    await observed.run(Connection(scope, observed.receive, observed.send, options), handler)
