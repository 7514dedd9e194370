"""The test's end of one WebSocket connection, and the server's side of the ASGI protocol.

The application runs as a task of the client's task group and talks to the session over
two bounded memory object streams, one per direction, as in Starlette's test client. The
table below plays the server's part of the ASGI WebSocket protocol.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup

from .._codec import decode_json, encode_json
from .._exceptions import MessageTypeError, WebSocketClosed, WebSocketDisconnect
from .._types import ASGIApp, Message, Scope

SendAfterDisconnect = Literal["drop", "raise"]
Denial = tuple[int, list[tuple[str, str]], bytes]

# Messages buffered per direction. A sender facing a full buffer waits (the test side for
# at most its timeout), like a peer facing a full TCP window.
_BUFFER_SIZE = 64

# (application state, message type the application sends) -> next state. Anything else
# is a protocol error, raised in the application as uvicorn does.
_TRANSITIONS: dict[tuple[str, str], str] = {
    ("handshake", "websocket.accept"): "connected",
    ("handshake", "websocket.close"): "closed",
    ("handshake", "websocket.http.response.start"): "response",
    ("response", "websocket.http.response.body"): "response",
    ("connected", "websocket.send"): "connected",
    ("connected", "websocket.close"): "closed",
}


class AsyncWebSocketTestSession:
    """The test's end of one WebSocket connection to the application.

    Created by :meth:`AsyncTestClient.websocket_connect`; not meant to be built directly.
    """

    def __init__(
        self,
        app: ASGIApp,
        scope: Scope,
        task_group: TaskGroup,
        *,
        timeout: float,
        raise_server_exceptions: bool,
        send_after_disconnect: SendAfterDisconnect,
    ) -> None:
        self._app, self._scope, self._task_group = app, scope, task_group
        self._timeout = timeout
        self._raise_server_exceptions = raise_server_exceptions
        self._send_after_disconnect = send_after_disconnect
        self._to_app_send, self._to_app_recv = anyio.create_memory_object_stream[Message](
            _BUFFER_SIZE
        )
        self._from_app_send, self._from_app_recv = anyio.create_memory_object_stream[Message](
            _BUFFER_SIZE
        )
        self._app_scope = anyio.CancelScope()
        self._app_done = anyio.Event()
        self._app_exception: Exception | None = None
        self._app_exception_raised = False
        self._state = "handshake"
        self._disconnect_message: Message | None = None
        self._client_close: tuple[int, str] | None = None
        self._server_close: tuple[int, str] | None = None
        self._subprotocol: str | None = None
        self._accept_headers: list[tuple[str, str]] = []

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the application accepted, or ``None``."""
        return self._subprotocol

    @property
    def accept_headers(self) -> list[tuple[str, str]]:
        """The extra headers the application sent with ``websocket.accept``."""
        return list(self._accept_headers)

    async def send(self, message: Message) -> None:
        """Send a raw ASGI message (usually ``websocket.receive``) to the application.

        A ``websocket.disconnect`` message closes the session like :meth:`close`. Messages
        sent after the application closed the connection or returned are dropped.

        Args:
            message: The ASGI message.

        Raises:
            WebSocketClosed: The client already closed the connection.
            TimeoutError: The application did not take the message within the timeout.
        """
        if self._client_close is not None:
            code, reason = self._client_close
            detail = f"cannot send: the client already closed the connection with code {code}"
            raise WebSocketClosed(code, reason, detail)
        if message.get("type") == "websocket.disconnect":
            await self.close(int(message.get("code", 1000)), message.get("reason"))
            return
        if self._disconnect_message is not None or self._app_done.is_set():
            await anyio.lowlevel.checkpoint()
            return
        with anyio.move_on_after(self._timeout):
            # If the application closed the connection meanwhile, the message is dropped.
            with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                await self._to_app_send.send(message)
            return
        raise TimeoutError(
            f"the application did not receive a message within {self._timeout} s "
            f"({_BUFFER_SIZE} messages were waiting)"
        )

    async def send_text(self, data: str) -> None:
        """Send a text message.

        Args:
            data: The text.
        """
        if not isinstance(data, str):
            raise TypeError(f"send_text() takes a str, not {type(data).__name__}")
        await self.send({"type": "websocket.receive", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message.

        Args:
            data: The payload.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"send_bytes() takes bytes, not {type(data).__name__}")
        await self.send({"type": "websocket.receive", "bytes": bytes(data)})

    async def send_json(self, data: Any, mode: Literal["text", "binary"] = "text") -> None:
        """Send ``data`` encoded as JSON.

        Args:
            data: Anything msgspec can encode.
            mode: Send a text or a binary message.
        """
        payload = encode_json(data)
        if _check_mode(mode) == "text":
            await self.send_text(payload.decode())
        else:
            await self.send_bytes(payload)

    async def receive(self, *, timeout: float | None = None) -> Message:  # noqa: ASYNC109
        """Receive the next raw ASGI message (``websocket.send``) from the application.

        Args:
            timeout: Seconds to wait; the session's timeout if ``None``.

        Returns:
            The message.

        Raises:
            WebSocketDisconnect: The application closed the connection (its code and
                reason), or returned without closing it (1011).
            WebSocketClosed: The client already closed the connection.
            TimeoutError: No message came within the timeout.
        """
        if self._server_close is not None:
            raise WebSocketDisconnect(*self._server_close)
        if self._client_close is not None:
            code, reason = self._client_close
            detail = f"cannot receive: the client closed the connection with code {code}"
            raise WebSocketClosed(code, reason, detail)
        limit = self._timeout if timeout is None else timeout
        message = await self._next_from_app(limit, "no message from the application")
        if message is None:
            self._raise_app_exception()
            if self._app_exception is not None:
                reason = f"the application raised {self._app_exception!r}"
            else:
                reason = "the application returned without closing the connection"
            self._server_close = (1011, reason)
            raise WebSocketDisconnect(*self._server_close)
        if message["type"] == "websocket.close":
            self._server_close = (int(message.get("code") or 1000), message.get("reason") or "")
            raise WebSocketDisconnect(*self._server_close)
        return message

    async def receive_text(self, *, timeout: float | None = None) -> str:  # noqa: ASYNC109
        """Receive a text message.

        Args:
            timeout: Seconds to wait; the session's timeout if ``None``.

        Returns:
            The text.

        Raises:
            MessageTypeError: A binary message came.
        """
        message = await self.receive(timeout=timeout)
        if message.get("text") is None:
            raise MessageTypeError(f"expected a text message, got {_describe(message)}")
        return str(message["text"])

    async def receive_bytes(self, *, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        """Receive a binary message.

        Args:
            timeout: Seconds to wait; the session's timeout if ``None``.

        Returns:
            The payload.

        Raises:
            MessageTypeError: A text message came.
        """
        message = await self.receive(timeout=timeout)
        if message.get("bytes") is None:
            raise MessageTypeError(f"expected a binary message, got {_describe(message)}")
        return bytes(message["bytes"])

    async def receive_json(
        self,
        mode: Literal["text", "binary"] = "text",
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        """Receive a message and decode it as JSON.

        Args:
            mode: Expect a text or a binary message.
            timeout: Seconds to wait; the session's timeout if ``None``.

        Returns:
            The decoded value.

        Raises:
            MessageTypeError: The message was of the other kind.
            MessageDecodeError: The message is not valid JSON.
        """
        if _check_mode(mode) == "text":
            data: str | bytes = await self.receive_text(timeout=timeout)
        else:
            data = await self.receive_bytes(timeout=timeout)
        return decode_json(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection: the application receives ``websocket.disconnect``.

        Closing again does nothing.

        Args:
            code: The close code.
            reason: The close reason.
        """
        if self._client_close is None:
            self._client_close = (code, reason or "")
            self._disconnect(code, reason or "")
            self._from_app_recv.close()
        await anyio.lowlevel.checkpoint()

    async def open_handshake(self) -> Denial | None:
        """Run the handshake; on a denial, wait for the application and return the denial.

        The test client's interface to its session (it enters the session's block).

        :meta private:
        """
        self._to_app_send.send_nowait({"type": "websocket.connect"})
        self._task_group.start_soon(self._run_app)
        try:
            denial = await self._handshake()
        except BaseException:
            await self._finish(wait=False)
            raise
        if denial is not None:
            self._disconnect(1006, "")
            if not await self._finish(wait=True):
                raise TimeoutError(
                    f"the application did not finish within {self._timeout} s after it "
                    f"denied the connection (HTTP {denial[0]})"
                )
            self._raise_app_exception()
        return denial

    async def _handshake(self) -> Denial | None:
        waiting = "the application did not accept or deny the WebSocket connection"
        message = await self._next_from_app(self._timeout, waiting)
        if message is None:
            self._raise_app_exception()
            return (500, [], b"")
        if message["type"] == "websocket.accept":
            self._subprotocol = message.get("subprotocol")
            self._accept_headers = decode_headers(message.get("headers") or [])
            return None
        if message["type"] == "websocket.close":
            return (403, [], b"")
        body = bytearray()
        more_body = True
        while more_body:
            part = await self._next_from_app(self._timeout, "the denial response did not end")
            body += b"" if part is None else part.get("body", b"")
            more_body = part is not None and bool(part.get("more_body", False))
        return (int(message["status"]), decode_headers(message.get("headers") or []), bytes(body))

    async def exit_block(self, exc: BaseException | None) -> None:
        """Leave the session's block: close with 1000 and wait for the application, or,
        on a cancellation, disconnect at once. The test client's interface to its session.

        :meta private:
        """
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            self._disconnect(1006, "")
            await self._finish(wait=False)
            return
        await self.close(1000)
        finished = await self._finish(wait=True)
        if exc is not None:
            return
        if not finished:
            raise TimeoutError(
                f"the application did not finish within {self._timeout} s after the client "
                "disconnected"
            )
        self._raise_app_exception()

    async def _finish(self, *, wait: bool) -> bool:
        """Wait (bounded) for the application; cancel it if needed; release the streams."""
        try:
            if wait:
                with anyio.move_on_after(self._timeout):
                    await self._app_done.wait()
            finished = self._app_done.is_set()
            if not finished:
                self._app_scope.cancel()
                with anyio.move_on_after(self._timeout, shield=True):
                    await self._app_done.wait()
            return finished
        finally:
            for stream in (self._to_app_send, self._to_app_recv):
                stream.close()
            self._from_app_send.close()
            self._from_app_recv.close()

    async def _next_from_app(self, delay: float, waiting: str) -> Message | None:
        with anyio.move_on_after(delay):
            try:
                return await self._from_app_recv.receive()
            except anyio.EndOfStream:
                return None
        raise TimeoutError(f"{waiting} within {delay} s")

    def _disconnect(self, code: int, reason: str) -> None:
        if self._disconnect_message is None:
            self._disconnect_message = {
                "type": "websocket.disconnect",
                "code": code,
                "reason": reason,
            }
            self._to_app_send.close()

    def _raise_app_exception(self) -> None:
        exc = self._app_exception
        if exc is not None and self._raise_server_exceptions and not self._app_exception_raised:
            self._app_exception_raised = True
            raise exc

    async def _run_app(self) -> None:
        try:
            with self._app_scope:
                await self._app(self._scope, self._app_receive, self._app_send)
        except Exception as exc:
            self._app_exception = exc
        finally:
            self._from_app_send.close()
            self._app_done.set()

    async def _app_receive(self) -> Message:
        try:
            return await self._to_app_recv.receive()
        except anyio.EndOfStream:
            assert self._disconnect_message is not None
            return dict(self._disconnect_message)

    async def _app_send(self, message: Message) -> None:
        if self._state == "closed":
            return  # what the application sends after its own close is dropped
        if self._client_close is not None:
            if self._send_after_disconnect == "raise":
                raise OSError("client disconnected")
            return
        kind = message["type"]
        state = _TRANSITIONS.get((self._state, kind))
        if state is None:
            allowed = sorted(repr(k) for (before, k) in _TRANSITIONS if before == self._state)
            raise RuntimeError(f"expected ASGI message {' or '.join(allowed)}, got {kind!r}")
        if kind == "websocket.send":
            _check_send(message)
        if kind == "websocket.http.response.body" and not message.get("more_body", False):
            state = "closed"
        answer_close = self._state == "connected" and state == "closed"
        self._state = state
        try:
            await self._from_app_send.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            if self._send_after_disconnect == "raise":
                raise OSError("client disconnected") from None
        if answer_close:
            # The client answers the close handshake once the close frame has arrived,
            # as a real client does: only then does the application see the disconnect.
            self._disconnect(int(message.get("code") or 1000), message.get("reason") or "")


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """ASGI headers as ``(name, value)`` strings, names lower-cased."""
    return [(bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1")) for k, v in raw]


def _check_mode(mode: str) -> str:
    if mode not in ("text", "binary"):
        raise ValueError(f"mode must be 'text' or 'binary', not {mode!r}")
    return mode


def _check_send(message: Message) -> None:
    text, data = message.get("text"), message.get("bytes")
    if (text is None) == (data is None):
        raise TypeError("a websocket.send message needs exactly one of 'text' and 'bytes'")
    if text is not None and not isinstance(text, str):
        raise TypeError(f"websocket.send 'text' must be str, not {type(text).__name__}")
    if data is not None and not isinstance(data, bytes | bytearray):
        raise TypeError(f"websocket.send 'bytes' must be bytes, not {type(data).__name__}")


def _describe(message: Message) -> str:
    if message.get("text") is not None:
        return f"a text message ({len(message['text'])} characters)"
    return f"a binary message ({len(message.get('bytes') or b'')} bytes)"
