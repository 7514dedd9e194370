"""The asynchronous test client: an ASGI server in-process, on any anyio backend."""

from __future__ import annotations

import base64
import http
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

import anyio
from anyio.abc import TaskGroup

from .._exceptions import PlaitError
from .._types import ASGIApp, Scope
from ._lifespan import Lifespan
from ._session import AsyncWebSocketTestSession, SendAfterDisconnect

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


class WebSocketDenied(PlaitError):
    """The application refused the WebSocket handshake.

    Raised by ``websocket_connect`` (of :class:`TestClient` and :class:`AsyncTestClient`)
    when the application sent a denial response (a :class:`plait.Deny`, the App's 404 for
    an unknown path), closed the connection before accepting it (HTTP 403, as hypercorn
    answers that), or returned without accepting (HTTP 500).

    Attributes:
        status_code: The HTTP status: the denial response's, 403 for a close before
            accept, 500 for a return without accept.
        headers: The denial response's headers as ``(name, value)`` strings, names
            lower-cased; empty for a close or a return.
        body: The denial response's whole body; empty for a close or a return.

    Args:
        status_code: The HTTP status.
        headers: The response headers as ``(name, value)`` strings.
        body: The response body.
    """

    def __init__(
        self, status_code: int, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        self.status_code = status_code
        self.headers = list(headers or [])
        self.body = body
        super().__init__(status_code, self.headers, body)

    def __str__(self) -> str:
        try:
            phrase = http.HTTPStatus(self.status_code).phrase
        except ValueError:
            phrase = ""
        text = f"the application denied the WebSocket connection with HTTP {self.status_code}"
        text = f"{text} {phrase}".rstrip()
        if self.body:
            text += f": {self.body[:200].decode('utf-8', 'replace')}"
        return text


class AsyncTestClient:
    """Drives an ASGI application in-process for WebSocket tests, on asyncio or trio.

    Use it as ``async with AsyncTestClient(app) as client:``. Entering runs the ASGI
    lifespan startup (if the application supports lifespan) and leaving runs its shutdown;
    if the block raised, the application's tasks are cancelled instead.

    Args:
        app: The ASGI 3 application.
        base_url: Gives the scheme (``ws``/``wss``), server and ``host`` header.
        root_path: The ``root_path`` of every scope.
        client: The client's ``(host, port)`` in every scope.
        timeout: Seconds to wait for the application each time, before ``TimeoutError``.
        raise_server_exceptions: Re-raise the application's exceptions in the test.
        send_after_disconnect: What the application's ``send`` does once the client has
            disconnected: ``"drop"`` the message (hypercorn) or ``"raise"`` ``OSError``
            (uvicorn).

    Raises:
        LifespanError: On entering or leaving, if the lifespan startup or shutdown failed.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        base_url: str = "ws://testserver",
        root_path: str = "",
        client: tuple[str, int] = ("testclient", 50000),
        timeout: float = 5.0,
        raise_server_exceptions: bool = True,
        send_after_disconnect: SendAfterDisconnect = "drop",
    ) -> None:
        url = urlsplit(base_url)
        self._scheme = {"http": "ws", "https": "wss"}.get(url.scheme, url.scheme)
        if self._scheme not in ("ws", "wss"):
            raise ValueError(f"base_url must be a ws:// or wss:// URL, not {base_url!r}")
        if send_after_disconnect not in ("drop", "raise"):
            raise ValueError("send_after_disconnect must be 'drop' or 'raise'")
        port = url.port or (443 if self._scheme == "wss" else 80)
        self._server = (url.hostname or "testserver", port)
        self._host_header = url.netloc or "testserver"
        self._app, self._root_path, self._client = app, root_path, client
        self._timeout = timeout
        self._raise_server_exceptions = raise_server_exceptions
        self._send_after_disconnect: SendAfterDisconnect = send_after_disconnect
        self._task_group: TaskGroup | None = None
        self._lifespan: Lifespan | None = None

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("this AsyncTestClient is already running")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        self._lifespan = Lifespan(self._app, self._timeout, self._raise_server_exceptions)
        try:
            await self._lifespan.startup(task_group)
        except BaseException as exc:
            await self._stop(exc)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stop(exc)

    async def _stop(self, exc: BaseException | None) -> None:
        task_group, lifespan = self._task_group, self._lifespan
        assert task_group is not None
        assert lifespan is not None
        self._task_group = self._lifespan = None
        try:
            if exc is None:
                await lifespan.shutdown()
        finally:
            lifespan.close()
            task_group.cancel_scope.cancel()
            # The block's own exception is not handed to the task group, which would wrap
            # it in an exception group.
            await task_group.__aexit__(None, None, None)

    @asynccontextmanager
    async def websocket_connect(
        self,
        path: str,
        subprotocols: Iterable[str] | None = None,
        headers: Headers | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (the API of test clients)
    ) -> AsyncIterator[AsyncWebSocketTestSession]:
        """Open a WebSocket connection to the application.

        On leaving the block the session closes with 1000 (if still open) and waits for
        the application to return.

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
        if self._task_group is None or self._lifespan is None:
            raise RuntimeError("use `async with AsyncTestClient(app) as client:` first")
        session = AsyncWebSocketTestSession(
            self._app,
            self._websocket_scope(path, list(subprotocols or []), headers),
            self._task_group,
            timeout=self._timeout if timeout is None else timeout,
            raise_server_exceptions=self._raise_server_exceptions,
            send_after_disconnect=self._send_after_disconnect,
        )
        denial = await session.open_handshake()
        if denial is not None:
            raise WebSocketDenied(*denial)
        try:
            yield session
        except BaseException as exc:
            await session.exit_block(exc)
            raise
        await session.exit_block(None)

    def _websocket_scope(
        self, path: str, subprotocols: list[str], headers: Headers | None
    ) -> Scope:
        url = urlsplit(path)
        key = base64.b64encode(secrets.token_bytes(16))
        raw_headers = [
            (b"host", self._host_header.encode("latin-1")),
            (b"connection", b"upgrade"),
            (b"upgrade", b"websocket"),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-key", key),
        ]
        if subprotocols:
            raw_headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
        extra = _encode_headers(headers)
        replaced = {name for name, _ in extra}
        raw_headers = [header for header in raw_headers if header[0] not in replaced] + extra
        assert self._lifespan is not None
        return {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self._scheme,
            "server": self._server,
            "client": self._client,
            "path": unquote(url.path or "/"),
            "raw_path": (url.path or "/").encode(),
            "query_string": url.query.encode(),
            "root_path": self._root_path,
            "headers": raw_headers,
            "subprotocols": subprotocols,
            "state": dict(self._lifespan.state),
            "extensions": {"websocket.http.response": {}},
        }


def _encode_headers(headers: Headers | None) -> list[tuple[bytes, bytes]]:
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or [])
    return [(_latin1(name).lower(), _latin1(value)) for name, value in pairs]


def _latin1(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")
