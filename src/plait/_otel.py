"""The implementation of :mod:`plait.otel` (spans and metrics through OpenTelemetry)."""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from anyio import get_cancelled_exc_class

from ._engine import listener_tracer
from ._exceptions import missing_extra
from ._types import Message, Receive, Scope, Send
from .channels._hub import Hub

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Span, TracerProvider

    from ._connection import Connection, Handler
    from ._websocket import WebSocket

__all__ = ("Telemetry",)

_LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
"""Bucket boundaries of ``plait.websocket.cancel.latency``, in seconds: the engine's
figure is a millisecond or so, the drain grace five seconds."""


class Telemetry:
    """Spans and metrics for an :class:`~plait.App`'s connections, through OpenTelemetry.

    ::

        app = plait.App(routes=[...], telemetry=plait.otel.Telemetry())

    Each connection gets a span of kind ``SERVER`` named after its route's template
    (``WebSocket /chat/{room}``), from the handshake to the end of the connection
    however it ends, with the route, the path parameters by name, the close code, who
    closed, and the connection's message and byte counts. Its status is an error when
    the connection closed with 1011 (the handler failed; the exception is recorded).
    With ``listener_spans=True``, each call of a route's listener gets a child span too.

    The metrics, all under ``plait.websocket.``: the connections open now, opened and
    closed (by close code and who closed), messages and bytes in and out, messages over
    a rate limit, the time from a client's close to its handler's end, and the messages
    each hub's slow-subscriber policy dropped. Counts of messages and bytes are added
    when each connection ends. The deployment guide lists every name, unit and
    attribute.

    Cost: when an App has no telemetry, none (one ``is None`` for each connection).
    With it, each connection pays a span and a few counter updates at its start and
    end, and each message one function call that counts it and its bytes.

    Args:
        tracer_provider: Where spans go; ``None``: the global tracer provider.
        meter_provider: Where metrics go; ``None``: the global meter provider.
        listener_spans: Also a span for each call of a listener
            (``plait.listener /chat/{room}``).

    Raises:
        ImportError: The ``otel`` extra (``opentelemetry-api``) is not installed.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        listener_spans: bool = False,
    ) -> None:
        try:
            from opentelemetry import context, metrics, trace
        except ImportError as exc:
            raise missing_extra("opentelemetry-api", "otel", "plait.otel.Telemetry") from exc
        from importlib.metadata import version

        self._context, self._trace = context, trace
        self._tracer = trace.get_tracer("plait", version("plait"), tracer_provider=tracer_provider)
        self.listener_spans = listener_spans
        meter = metrics.get_meter("plait", version("plait"), meter_provider=meter_provider)
        prefix = "plait.websocket."
        self._open = meter.create_up_down_counter(
            prefix + "connections.open", "{connection}", "WebSocket connections open now"
        )
        self._opened = meter.create_counter(
            prefix + "connections.opened", "{connection}", "WebSocket connections opened"
        )
        self._closed = meter.create_counter(
            prefix + "connections.closed", "{connection}", "WebSocket connections closed"
        )
        self._messages_in = meter.create_counter(
            prefix + "messages.received", "{message}", "Data messages from clients"
        )
        self._messages_out = meter.create_counter(
            prefix + "messages.sent", "{message}", "Data messages to clients"
        )
        self._bytes_in = meter.create_counter(
            prefix + "bytes.received", "By", "Payload bytes of the messages from clients"
        )
        self._bytes_out = meter.create_counter(
            prefix + "bytes.sent", "By", "Payload bytes of the messages to clients"
        )
        self._limited = meter.create_counter(
            prefix + "rate_limit.decisions",
            "{message}",
            "Messages over a rate limit, by what was done with them",
        )
        self._latency = meter.create_histogram(
            prefix + "cancel.latency",
            "s",
            "Time from a client's close reaching the application to its handler's end",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
        )
        self._hubs: weakref.WeakSet[Hub] = weakref.WeakSet()
        meter.create_observable_counter(
            prefix + "hub.messages.dropped",
            [self._observe_drops],
            "{message}",
            "Messages a hub's slow-subscriber policy dropped",
        )

    def observe_hub(self, hub: Hub) -> None:
        """Count the messages ``hub`` drops for slow subscribers, by policy.

        The App does it for its own ``hub``; call it for a hub used without one.
        """
        self._hubs.add(hub)

    def _observe_drops(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        totals: dict[str, int] = {}
        for hub in list(self._hubs):
            for policy, count in hub.dropped_by_policy().items():
                totals[policy] = totals.get(policy, 0) + count
        return [Observation(count, {"plait.hub.policy": p}) for p, count in totals.items()]

    def observe_connection(
        self, route: str | None, scope: Scope, receive: Receive, send: Send
    ) -> _Observed:
        """The observer of one connection: plait's internal interface for the App and
        :func:`plait.serve_connection`, which run the connection through it.

        :meta private:
        """
        return _Observed(self, route, scope, receive, send)

    def _listener_tracing(
        self, route: str
    ) -> Callable[[Callable[[Any], Awaitable[Any]]], Callable[[Any], Awaitable[Any]]]:
        tracer, trace = self._tracer, self._trace
        name = f"plait.listener {route}".rstrip()
        attributes = {"plait.route": route} if route else {}

        def wrap(call: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
            async def traced(data: Any) -> Any:
                span = tracer.start_span(name, attributes=attributes)
                with trace.use_span(
                    span, end_on_exit=True, record_exception=False, set_status_on_exception=False
                ):
                    try:
                        return await call(data)
                    except Exception as exc:
                        _fail(trace, span, exc)
                        raise

            return traced

        return wrap


def _fail(trace: Any, span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))


def _size(message: Message) -> int:
    data = message.get("bytes")
    if data is not None:
        return len(data)
    text: str = message.get("text") or ""
    return len(text) if text.isascii() else len(text.encode())


class _Observed:
    """One connection seen by :class:`Telemetry`: its ASGI calls counted, its span."""

    __slots__ = (
        "_receive",
        "_send",
        "attributes",
        "by_engine",
        "bytes_in",
        "bytes_out",
        "ended_at",
        "error",
        "peer_closed_at",
        "received",
        "route",
        "sent",
        "telemetry",
    )

    def __init__(
        self, telemetry: Telemetry, route: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.telemetry, self.route = telemetry, route
        self._receive, self._send = receive, send
        self.received = self.sent = self.bytes_in = self.bytes_out = 0
        self.peer_closed_at: float | None = None
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self.by_engine = False
        self.attributes = _span_attributes(route, scope)

    async def receive(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            self.received += 1
            self.bytes_in += _size(message)
        elif kind == "websocket.disconnect" and self.peer_closed_at is None:
            self.peer_closed_at = time.perf_counter()
        return message

    async def send(self, message: Message) -> None:
        await self._send(message)
        if message["type"] == "websocket.send":
            self.sent += 1
            self.bytes_out += _size(message)

    async def run(self, connection: Connection, handler: Handler) -> None:
        """Run the connection inside its span, and record it when it ends."""
        telemetry = self.telemetry
        trace = telemetry._trace
        name = "WebSocket" if self.route is None else f"WebSocket {self.route}"
        span = telemetry._tracer.start_span(
            name, kind=trace.SpanKind.SERVER, attributes=self.attributes
        )
        token = telemetry._context.attach(trace.set_span_in_context(span))
        route = {} if self.route is None else {"plait.route": self.route}
        telemetry._open.add(1, route)
        telemetry._opened.add(1, route)

        async def handle(websocket: WebSocket) -> None:
            try:
                await handler(websocket)
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                self.ended_at = time.perf_counter()
                # Who ended the handler: the engine cancels it when it closes for a
                # limit, a timeout, a slow client or a shutdown (and when the peer left).
                self.by_engine = (
                    isinstance(self.error, get_cancelled_exc_class())
                    or connection.cancelled_handler
                )

        tracing = None
        if telemetry.listener_spans:  # a span per listener call, through the engine
            tracing = listener_tracer.set(telemetry._listener_tracing(self.route or ""))
        try:
            await connection.run(handle)
        finally:
            if tracing is not None:
                listener_tracer.reset(tracing)
            try:
                telemetry._open.add(-1, route)
                self._end(connection, span, route)
            finally:
                self.error = None  # its traceback holds handle(), which holds self
                telemetry._context.detach(token)

    def _end(self, connection: Connection, span: Span, route: Mapping[str, str]) -> None:
        telemetry = self.telemetry
        code, by = connection.closed_with()
        closed_by = "client" if by == "peer" else "engine" if self.by_engine else "server"
        statistics = connection.statistics()
        dropped, limited = statistics.messages_dropped, statistics.messages_limited
        span.set_attributes(
            {
                "websocket.close.code": code,
                "plait.closed_by": closed_by,
                "plait.messages.received": self.received,
                "plait.messages.sent": self.sent,
                "plait.bytes.received": self.bytes_in,
                "plait.bytes.sent": self.bytes_out,
                "plait.messages.dropped": dropped,
                "plait.messages.limited": limited,
            }
        )
        if code == 1011:
            error = self.error
            if isinstance(error, Exception):
                span.record_exception(error)
            trace = telemetry._trace
            span.set_status(trace.Status(trace.StatusCode.ERROR, "the handler failed"))
        span.end()
        telemetry._closed.add(
            1, {**route, "websocket.close.code": code, "plait.closed_by": closed_by}
        )
        if self.received:
            telemetry._messages_in.add(self.received, route)
            telemetry._bytes_in.add(self.bytes_in, route)
        if self.sent:
            telemetry._messages_out.add(self.sent, route)
            telemetry._bytes_out.add(self.bytes_out, route)
        if limited:
            policy = connection.options.rate_limit
            on_exceed = "close" if policy is None else policy.on_exceed
            decision = "closed" if on_exceed == "close" else "dropped"
            telemetry._limited.add(
                limited,
                {
                    **route,
                    "plait.rate_limit.decision": decision,
                    "plait.rate_limit.on_exceed": on_exceed,
                },
            )
        peer_closed_at, ended_at = self.peer_closed_at, self.ended_at
        if closed_by == "client" and peer_closed_at is not None and ended_at is not None:
            telemetry._latency.record(max(0.0, ended_at - peer_closed_at), route)


def _span_attributes(route: str | None, scope: Scope) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "network.protocol.name": "websocket",
        "url.path": scope.get("path", ""),
        "url.scheme": scope.get("scheme", "ws"),
    }
    if route is not None:
        attributes["plait.route"] = route
    server = scope.get("server")
    if server:
        attributes["server.address"] = server[0]
        if server[1] is not None:
            attributes["server.port"] = server[1]
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
        attributes["client.port"] = client[1]
    for name, value in (scope.get("path_params") or {}).items():
        ok = isinstance(value, str | bool | int | float)
        attributes[f"plait.path_param.{name}"] = value if ok else str(value)
    return attributes
