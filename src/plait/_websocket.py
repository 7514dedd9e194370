"""The WebSocket connection object handed to handlers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from anyio import ClosedResourceError
from multidict import CIMultiDictProxy, MultiDictProxy

from ._codec import decode_json, encode_json, encode_json_text
from ._datastructures import (
    URL,
    Address,
    State,
    cookies_from_headers,
    encode_headers,
    headers_from_scope,
    query_params_from_scope,
)
from ._engine import DirectEngine, Engine
from ._exceptions import MessageTypeError, WebSocketDisconnect, WebSocketStateError
from ._state import ConnectionState, WebSocketState, validate_close
from ._types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._options import ConnectionStatistics

__all__ = ("RoutePort", "WebSocket", "check_scope", "run_by", "validate_close")

T = TypeVar("T")

_CONNECTED = WebSocketState.CONNECTED


class WebSocket(Mapping[str, Any]):
    """One WebSocket connection: the handshake's details, and messages both ways.

    A ``WebSocket`` is a read-only mapping over the ASGI ``scope``
    (``websocket["path"]``). It works alone in a raw ASGI app, reading and writing the
    server's ``receive`` and ``send`` directly; under :func:`plait.serve_connection` the
    same API runs over the engine's reader and writer tasks.

    Args:
        scope: The ASGI connection scope (``scope["type"] == "websocket"``).
        receive: The ASGI receive callable.
        send: The ASGI send callable.
    """

    __slots__ = ("__dict__", "_engine", "_reader", "_scope", "_state")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._start(scope, DirectEngine(receive, send), ConnectionState())

    def _start(self, scope: Scope, engine: Engine, state: ConnectionState) -> None:
        check_scope(scope)
        self._scope = scope
        self._state = state
        self._engine: Engine = engine
        # Why the handler may not receive: a route's listener or its discarding reader
        # takes every message (see _check_reader); None lets the handler read.
        self._reader: str | None = None

    # -- the handshake ----------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self._scope[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._scope)

    def __len__(self) -> int:
        return len(self._scope)

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def scope(self) -> Scope:
        """The ASGI connection scope."""
        return self._scope

    @cached_property
    def url(self) -> URL:
        """The URL the client connected to (a ``str`` with ``scheme``, ``path``, ...)."""
        return URL.from_scope(self._scope)

    @cached_property
    def headers(self) -> CIMultiDictProxy[str]:
        """The handshake's headers: case-insensitive, multi-valued (``getall``)."""
        return headers_from_scope(self._scope)

    @cached_property
    def query_params(self) -> MultiDictProxy[str]:
        """The query parameters: multi-valued (``getall``), in order."""
        return query_params_from_scope(self._scope)

    @cached_property
    def cookies(self) -> dict[str, str]:
        """The cookies sent with the handshake."""
        return cookies_from_headers(self.headers.getall("cookie", []))

    @property
    def path_params(self) -> dict[str, Any]:
        """Parameters matched from the path by a router (empty without one)."""
        params: dict[str, Any] = self._scope.get("path_params", {})
        return params

    @property
    def client(self) -> Address | None:
        """The client's address, when the server knows it."""
        client = self._scope.get("client")
        return None if client is None else Address(client[0], client[1])

    @property
    def subprotocols(self) -> list[str]:
        """The subprotocols the client offered, in its order of preference."""
        subprotocols: list[str] = self._scope.get("subprotocols", [])
        return subprotocols

    @cached_property
    def state(self) -> State:
        """Free-form state, stored in the scope's ``"state"`` dictionary."""
        return State(self._scope.setdefault("state", {}))

    @property
    def application_state(self) -> WebSocketState:
        """The state of the application's side of the connection."""
        return self._state.application

    @property
    def client_state(self) -> WebSocketState:
        """The state of the peer's side of the connection."""
        return self._state.peer

    @property
    def close_code(self) -> int | None:
        """The close code, once the connection is over."""
        return self._state.close_code

    @property
    def task_group(self) -> TaskGroup:
        """A task group tied to this connection (only under :func:`serve_connection`).

        Tasks started in it are cancelled when the handler returns, when it fails, and
        when the peer disconnects; none can outlive the connection. An exception in one
        of them ends the connection like an exception in the handler.

        Raises:
            WebSocketStateError: The WebSocket is not run by the engine.
        """
        return self._engine.task_group

    def statistics(self) -> ConnectionStatistics:
        """The engine's counters for this connection (buffers, messages moved).

        Raises:
            WebSocketStateError: The WebSocket is not run by the engine.
        """
        return self._engine.statistics()

    # -- raw messages -------------------------------------------------------------------

    async def receive(self) -> Message:
        """Receive the next raw ASGI message.

        Before ``accept()`` this returns the ``websocket.connect`` message; afterwards
        ``websocket.receive`` messages, then one ``websocket.disconnect``.

        Raises:
            WebSocketDisconnect: The peer was already gone.
            WebSocketStateError: Called before ``accept()`` once the handshake message
                was read, or where the route reads every message itself.
        """
        if self._reader is not None:
            self._check_reader()
        return await self._receive_raw()

    async def _receive_raw(self) -> Message:
        self._state.check_receive(raw=True)
        message = await self._engine.receive()
        self._record_received(message)
        return message

    def _check_reader(self) -> None:
        """Refuse a handler's read that would race the route's own reader: one of the two
        would miss messages without a word."""
        raise WebSocketStateError(
            f"the route {self.url.path!r} reads every incoming message itself "
            f"({self._reader}), so this handler cannot receive them"
        )

    def _record_received(self, message: Message) -> None:
        message_type = message["type"]
        if message_type == "websocket.disconnect":
            code = message.get("code", 1005)
            self._state.did_receive(message_type, code, message.get("reason") or "")
        else:
            self._state.did_receive(message_type)

    async def send(self, message: Message) -> None:
        """Send a raw ASGI message, checked against the connection's state.

        Raises:
            WebSocketClosed: The connection is already closed (either side).
            WebSocketStateError: The message is not allowed in the current state.
        """
        message_type = message["type"]
        code = 1000
        reason = ""
        if message_type == "websocket.close":
            code = message.get("code", 1000)
            reason = validate_close(code, message.get("reason"))
        state = self._state
        more_body = message.get("more_body", False)
        state.check_send(message_type, more_body=more_body)
        # Recorded before the message leaves, so a concurrent sender cannot slip a
        # message in behind a close that is already on its way.
        state.did_send(message_type, more_body=more_body, code=code, reason=reason)
        try:
            await self._engine.send(message)
        except ClosedResourceError:
            raise self._refused(message_type) from None

    def _refused(self, message_type: str) -> WebSocketDisconnect:
        """The error for a send the engine refused: the peer's close while the handler
        still reads what it sent before leaving, else the connection is over."""
        departure = self._engine.departure()
        if departure is not None:
            return WebSocketDisconnect(*departure)
        state = self._state
        state.peer_disconnected(1006, "")  # keeps the code of a close seen before
        return state.closed_error(f"send {message_type!r}")

    # -- handshake ------------------------------------------------------------------------

    async def accept(
        self,
        subprotocol: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] | None = None,
    ) -> None:
        """Accept the handshake.

        Args:
            subprotocol: The subprotocol to agree on; one the client offered.
            headers: Extra response headers, as a mapping or (name, value) pairs.

        Raises:
            WebSocketDisconnect: The client went away during the handshake.
            WebSocketStateError: Already accepted, closed, or denied.
        """
        if self._state.peer is WebSocketState.CONNECTING:
            await self._await_connect()
        message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
        if headers is not None:
            message["headers"] = encode_headers(headers)
        await self.send(message)

    async def _await_connect(self) -> None:
        message = await self._receive_raw()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(self._state.close_code or 1006, self._state.close_reason)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection after what is already queued.

        Before ``accept()`` this denies the handshake (HTTP 403). Closing a connection
        that is already over does nothing, so ``finally: await websocket.close()`` is
        safe.

        Raises:
            ValueError: ``code`` may not be sent (RFC 6455 section 7.4).
        """
        reason = validate_close(code, reason)
        state = self._state
        if state.application is WebSocketState.DISCONNECTED or (
            state.peer is WebSocketState.DISCONNECTED
        ):
            return
        if state.application is WebSocketState.RESPONSE:
            raise WebSocketStateError("cannot close() while a denial response is being sent")
        # The peer being gone makes the close moot: the connection is over either way.
        with contextlib.suppress(WebSocketDisconnect):
            await self.send({"type": "websocket.close", "code": code, "reason": reason})

    async def send_denial_response(self, response: ASGIApp) -> None:
        """Refuse the handshake with an HTTP response instead of a bare 403.

        ``response`` is any ASGI HTTP response callable: :class:`plait.DenialResponse`,
        or a Starlette or Litestar response.

        Raises:
            RuntimeError: The server does not support the
                ``websocket.http.response`` extension.
            WebSocketStateError: The handshake already finished.
        """
        if "websocket.http.response" not in self._scope.get("extensions", {}):
            raise RuntimeError(
                "the server does not support denial responses "
                "(the 'websocket.http.response' ASGI extension)"
            )
        if self._state.application is not WebSocketState.CONNECTING:
            raise WebSocketStateError(
                "cannot send a denial response: the WebSocket is already "
                f"{self._state.application.name}"
            )
        if self._state.peer is WebSocketState.CONNECTING:
            await self._await_connect()

        async def send_prefixed(message: Message) -> None:
            if message["type"] in ("http.response.start", "http.response.body"):
                message = {**message, "type": "websocket." + message["type"]}
            await self.send(message)

        await response(self._scope, self._receive_nothing, send_prefixed)

    @staticmethod
    async def _receive_nothing() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    # -- typed messages -------------------------------------------------------------------

    async def send_text(self, data: str) -> None:
        """Send a text message.

        Raises:
            WebSocketDisconnect: The peer left (with its close code): what it sent
                before leaving can still be received. A :class:`WebSocketClosed` once
                the connection is over.
            WebSocketStateError: Called before ``accept()``.
        """
        state = self._state
        if state.application is _CONNECTED and state.peer is _CONNECTED:
            # _send_data's hot path, inline: the loop most handlers run.
            try:
                await self._engine.send_data({"type": "websocket.send", "text": data})
            except ClosedResourceError:
                raise self._refused("websocket.send") from None
            return
        await self.send({"type": "websocket.send", "text": data})  # explains the state

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message.

        Raises:
            WebSocketDisconnect: The peer left (with its close code): what it sent
                before leaving can still be received. A :class:`WebSocketClosed` once
                the connection is over.
            WebSocketStateError: Called before ``accept()``.
        """
        await self._send_data({"type": "websocket.send", "bytes": data})

    async def _send_data(self, message: Message) -> None:
        state = self._state
        if not (state.application is _CONNECTED and state.peer is _CONNECTED):
            await self.send(message)  # checks and explains the state
            return
        # The hot path: both sides connected, where a data message changes no state.
        try:
            await self._engine.send_data(message)
        except ClosedResourceError:
            raise self._refused("websocket.send") from None

    async def send_json(self, data: Any, mode: Literal["text", "binary"] = "text") -> None:
        """Send ``data`` encoded as JSON, in a text (default) or binary message.

        Raises:
            TypeError: ``data`` cannot be encoded as JSON.
        """
        if mode == "text":
            await self._send_data({"type": "websocket.send", "text": encode_json_text(data)})
        elif mode == "binary":
            await self._send_data({"type": "websocket.send", "bytes": encode_json(data)})
        else:
            raise ValueError(f"mode must be 'text' or 'binary', not {mode!r}")

    async def _receive_data(self) -> Message:
        state = self._state
        if state.application is _CONNECTED and state.peer is _CONNECTED:
            # The hot path: a websocket.receive changes no state when both are connected.
            message = await self._engine.receive()
            if message["type"] != "websocket.receive":
                self._record_received(message)
        else:
            state.check_receive(raw=False)
            message = await self._receive_raw()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(state.close_code or 1005, state.close_reason)
        return message

    async def receive_text(self) -> str:
        """Receive a text message.

        Raises:
            WebSocketDisconnect: The peer disconnected (also while waiting).
            MessageTypeError: A binary message came instead.
            WebSocketStateError: Called before ``accept()``, or where the route reads
                every message itself.
        """
        if self._reader is not None:
            self._check_reader()
        return _text_of(await self._receive_data())

    async def receive_bytes(self) -> bytes:
        """Receive a binary message.

        Raises:
            WebSocketDisconnect: The peer disconnected (also while waiting).
            MessageTypeError: A text message came instead.
            WebSocketStateError: Called before ``accept()``, or where the route reads
                every message itself.
        """
        if self._reader is not None:
            self._check_reader()
        return _bytes_of(await self._receive_data())

    async def receive_json(self, mode: Literal["text", "binary"] = "text") -> Any:
        """Receive a message and decode it as JSON.

        Args:
            mode: Whether JSON arrives in text (default) or binary messages.

        Raises:
            WebSocketDisconnect: The peer disconnected (also while waiting).
            MessageDecodeError: The message is not valid JSON.
            MessageTypeError: The message is of the other kind than ``mode``.
        """
        if mode == "text":
            return decode_json(await self.receive_text())
        if mode == "binary":
            return decode_json(await self.receive_bytes())
        raise ValueError(f"mode must be 'text' or 'binary', not {mode!r}")

    def iter_text(self) -> AsyncIterator[str]:
        """Iterate over text messages until the peer disconnects."""
        if self._reader is not None:
            self._check_reader()
        return _TextMessages(self)

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """Iterate over binary messages until the peer disconnects."""
        return _Messages(self.receive_bytes)

    def iter_json(self, mode: Literal["text", "binary"] = "text") -> AsyncIterator[Any]:
        """Iterate over JSON messages until the peer disconnects."""
        return _Messages(partial(self.receive_json, mode))

    def __repr__(self) -> str:
        return (
            f"<WebSocket {self._scope.get('path', '')!r} application="
            f"{self._state.application.name} peer={self._state.peer.name}>"
        )


class _Messages(AsyncIterator[T]):
    """Messages until the peer disconnects.

    A plain iterator rather than an async generator: leaving the loop early (``break``)
    leaves nothing to finalize.
    """

    __slots__ = ("_receive",)

    def __init__(self, receive: Callable[[], Awaitable[T]]) -> None:
        self._receive = receive

    async def __anext__(self) -> T:
        try:
            return await self._receive()
        except WebSocketDisconnect:
            raise StopAsyncIteration from None


class _TextMessages(AsyncIterator[str]):
    """``iter_text()``, with the connected case inline: the loop most handlers run."""

    __slots__ = ("_websocket",)

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket

    async def __anext__(self) -> str:
        websocket = self._websocket
        state = websocket._state
        if state.application is _CONNECTED and state.peer is _CONNECTED:
            message = await websocket._engine.receive()
            if message["type"] == "websocket.receive":
                return _text_of(message)
            websocket._record_received(message)
            raise StopAsyncIteration
        try:
            return await websocket.receive_text()
        except WebSocketDisconnect:
            raise StopAsyncIteration from None


def _text_of(message: Message) -> str:
    text = message.get("text")
    if text is None:
        raise MessageTypeError(
            "expected a text message, received a binary message "
            f"({len(message.get('bytes') or b'')} bytes)"
        )
    return str(text)


def _bytes_of(message: Message) -> bytes:
    data = message.get("bytes")
    if data is None:
        raise MessageTypeError(
            "expected a binary message, received a text message "
            f"({len(message.get('text') or '')} characters)"
        )
    return bytes(data)


def check_scope(scope: Scope) -> None:
    """Refuse a scope that is not a WebSocket connection's.

    Raises:
        ValueError: ``scope["type"]`` is not ``"websocket"``.
    """
    if scope.get("type") != "websocket":
        raise ValueError(f"expected a 'websocket' scope, got {scope.get('type')!r}")


def run_by(scope: Scope, engine: Engine, state: ConnectionState) -> WebSocket:
    """A WebSocket whose messages ``engine`` moves (the connection engine's), sharing
    ``state`` with it: plait's internal interface for the engine."""
    websocket = WebSocket.__new__(WebSocket)
    websocket._start(scope, engine, state)
    return websocket


class RoutePort:
    """What a route's listener and streams do with the WebSocket they serve: plait's
    internal interface for :mod:`plait._listeners`, below the public API.

    Args:
        websocket: The WebSocket of the connection the route serves.
    """

    __slots__ = ("_websocket", "receive_data", "send_reply")

    def __init__(self, websocket: WebSocket) -> None:
        self._websocket = websocket
        # The calls of every message, bound here: no coroutine of the port's own between
        # the listener and the engine.
        self.receive_data: Callable[[], Awaitable[Message]] = websocket._receive_data
        """The next ``websocket.receive`` message.

        Raises:
            WebSocketDisconnect: The peer left, once what it sent before is taken.
        """
        self.send_reply: Callable[[Message], Awaitable[None]] = websocket._engine.send_reply
        """Send a listener's reply or a stream's item (a ``websocket.send``); dropped
        when nobody can read it (the peer left, or the connection closed)."""

    def claim_reading(self, why: str) -> None:
        """The route reads every incoming message itself: a handler's own read is
        refused with ``why`` (the two readers would each miss messages)."""
        self._websocket._reader = why

    def hold(self) -> None:
        """A taken message is still being worked on: a peer that leaves meanwhile
        waits for it (within ``drain_timeout``)."""
        self._websocket._engine.hold()

    def release(self) -> None:
        """The work started by :meth:`hold` is over."""
        self._websocket._engine.release()
