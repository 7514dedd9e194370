"""The synchronous test client: the asynchronous one, driven through a blocking portal.

Every call runs the :class:`AsyncTestClient` method of the same name in an event loop on
a background thread, so both clients share one implementation of the protocol.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .._exceptions import missing_extra
from .._types import ASGIApp, Message
from ._client import AsyncTestClient, Headers
from ._session import AsyncWebSocketTestSession, SendAfterDisconnect


class WebSocketTestSession:
    """The test's end of one WebSocket connection, with blocking methods.

    Created by :meth:`TestClient.websocket_connect`; every method behaves like the
    :class:`AsyncWebSocketTestSession` method of the same name.
    """

    def __init__(self, portal: BlockingPortal, session: AsyncWebSocketTestSession) -> None:
        self._portal = portal
        self._session = session

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the application accepted, or ``None``."""
        return self._session.subprotocol

    @property
    def accept_headers(self) -> list[tuple[str, str]]:
        """The extra headers the application sent with ``websocket.accept``."""
        return self._session.accept_headers

    def send(self, message: Message) -> None:
        """Send a raw ASGI message to the application.

        Args:
            message: The ASGI message, usually ``websocket.receive``.
        """
        self._portal.call(self._session.send, message)

    def send_text(self, data: str) -> None:
        """Send a text message.

        Args:
            data: The text.
        """
        self._portal.call(self._session.send_text, data)

    def send_bytes(self, data: bytes) -> None:
        """Send a binary message.

        Args:
            data: The payload.
        """
        self._portal.call(self._session.send_bytes, data)

    def send_json(self, data: Any, mode: Literal["text", "binary"] = "text") -> None:
        """Send ``data`` encoded as JSON.

        Args:
            data: Anything msgspec can encode.
            mode: Send a text or a binary message.
        """
        self._portal.call(self._session.send_json, data, mode)

    def receive(self, *, timeout: float | None = None) -> Message:
        """Receive the next raw ASGI message from the application.

        Args:
            timeout: Seconds to wait; the session's timeout if ``None``.

        Returns:
            The message.
        """
        return self._portal.call(partial(self._session.receive, timeout=timeout))

    def receive_text(self, *, timeout: float | None = None) -> str:
        """Receive a text message.

        Args:
            timeout: Seconds to wait; the session's timeout if ``None``.

        Returns:
            The text.
        """
        return self._portal.call(partial(self._session.receive_text, timeout=timeout))

    def receive_bytes(self, *, timeout: float | None = None) -> bytes:
        """Receive a binary message.

        Args:
            timeout: Seconds to wait; the session's timeout if ``None``.

        Returns:
            The payload.
        """
        return self._portal.call(partial(self._session.receive_bytes, timeout=timeout))

    def receive_json(
        self, mode: Literal["text", "binary"] = "text", *, timeout: float | None = None
    ) -> Any:
        """Receive a message and decode it as JSON.

        Args:
            mode: Expect a text or a binary message.
            timeout: Seconds to wait; the session's timeout if ``None``.

        Returns:
            The decoded value.
        """
        return self._portal.call(partial(self._session.receive_json, mode, timeout=timeout))

    def close(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the connection: the application receives ``websocket.disconnect``.

        Args:
            code: The close code.
            reason: The close reason.
        """
        self._portal.call(self._session.close, code, reason)


class TestClient:
    """Drives an ASGI application for WebSocket tests from synchronous code.

    Use it as ``with TestClient(app, backend="trio") as client:``; the application runs
    in an event loop of the chosen backend on a background thread.

    Args:
        app: The ASGI 3 application.
        backend: The anyio backend: ``"asyncio"`` or ``"trio"``.
        backend_options: Passed to :func:`anyio.run` (for example ``{"use_uvloop": True}``).
        base_url: As for :class:`AsyncTestClient`.
        root_path: As for :class:`AsyncTestClient`.
        client: As for :class:`AsyncTestClient`.
        timeout: As for :class:`AsyncTestClient`.
        raise_server_exceptions: As for :class:`AsyncTestClient`.
        send_after_disconnect: As for :class:`AsyncTestClient`.
    """

    __test__ = False  # not a test class, despite the name

    def __init__(
        self,
        app: ASGIApp,
        backend: Literal["asyncio", "trio"] = "asyncio",
        backend_options: dict[str, Any] | None = None,
        *,
        base_url: str = "ws://testserver",
        root_path: str = "",
        client: tuple[str, int] = ("testclient", 50000),
        timeout: float = 5.0,
        raise_server_exceptions: bool = True,
        send_after_disconnect: SendAfterDisconnect = "drop",
    ) -> None:
        self._backend = backend
        self._backend_options = backend_options
        self._client = AsyncTestClient(
            app,
            base_url=base_url,
            root_path=root_path,
            client=client,
            timeout=timeout,
            raise_server_exceptions=raise_server_exceptions,
            send_after_disconnect=send_after_disconnect,
        )
        self._portal: BlockingPortal | None = None
        self._exit_stack = ExitStack()

    def __enter__(self) -> Self:
        with ExitStack() as stack:
            if self._backend == "trio" and importlib.util.find_spec("trio") is None:
                raise missing_extra("trio", "trio", 'TestClient(backend="trio")')
            portal = stack.enter_context(
                start_blocking_portal(self._backend, self._backend_options)
            )
            stack.enter_context(portal.wrap_async_context_manager(self._client))
            self._portal = portal
            self._exit_stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._portal = None
        self._exit_stack.__exit__(exc_type, exc, traceback)

    @contextmanager
    def websocket_connect(
        self,
        path: str,
        subprotocols: Iterable[str] | None = None,
        headers: Headers | None = None,
        *,
        timeout: float | None = None,
    ) -> Iterator[WebSocketTestSession]:
        """Open a WebSocket connection to the application.

        Args:
            path: The path, optionally with a query string.
            subprotocols: Subprotocols the client offers.
            headers: Extra request headers; they replace default headers of the same name.
            timeout: Overrides the client's timeout for this connection.

        Yields:
            The open session.

        Raises:
            WebSocketDenied: The application refused the handshake.
            TimeoutError: The application did not answer the handshake, or did not return
                within the timeout after the client disconnected.
        """
        if self._portal is None:
            raise RuntimeError("use `with TestClient(app) as client:` first")
        connect = self._client.websocket_connect(path, subprotocols, headers, timeout=timeout)
        with self._portal.wrap_async_context_manager(connect) as session:
            yield WebSocketTestSession(self._portal, session)
