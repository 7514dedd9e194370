"""The application: routes WebSocket connections, hands HTTP to a fallback app."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Final

import anyio

from ._class_listener import Listener
from ._connection import Connection, ConnectionOptions
from ._denial import DenialResponse
from ._lifespan import fallback_lifespan
from ._options import StallPolicy
from ._origins import OriginPolicy
from ._paths import RouteConflictError
from ._routing import WebSocketRoute, deny_handshake
from ._types import ASGIApp, Receive, Scope, Send
from ._websocket import WebSocket
from .channels._hub import Hub

__all__ = ("App",)

logger = logging.getLogger(__name__)

Lifespan = Callable[["App"], AbstractAsyncContextManager[Mapping[str, Any] | None]]


class App:
    """An ASGI 3 application serving WebSocket routes.

    ::

        app = App(routes=[chat], fallback=starlette_app)

    WebSocket connections go to the first route whose path template matches; an unknown
    path is refused with 404 (or a close before accept where the server has no denial
    responses). HTTP requests go to ``fallback`` (any ASGI app: Starlette, FastAPI,
    Litestar), or get a plain 404. The lifespan runs ``lifespan(app)`` and the fallback's
    own lifespan. On shutdown, open connections are closed with 1001 (going away), their
    handlers cancelled and their dependencies torn down; after ``shutdown_grace`` seconds
    what is left is cancelled.

    An App also works mounted inside Starlette, FastAPI or Litestar: it routes on the
    path below the mount point (the scope's ``root_path``). A path that matches no route
    but ends in ``/`` is tried without it, since Litestar's mounts append one.

    Args:
        routes: The WebSocket routes, and class-based listeners (:class:`Listener`).
        fallback: The ASGI app for HTTP requests.
        lifespan: ``lifespan(app)`` returns an async context manager entered at startup
            and left at shutdown; a mapping it yields is added to the lifespan state.
        hub: A :class:`plait.Hub`, started and stopped with the lifespan; a handler
            parameter annotated ``Hub`` gets it.
        shutdown_grace: Seconds to wait for handlers to finish at shutdown.
        max_message_size: Largest incoming message (see :func:`serve_connection`).
        send_timeout: Seconds a message may take to leave before the client is deemed
            too slow (see :func:`serve_connection`).
        drain_timeout: Seconds to deliver what is queued after a handler ends, and to
            take what a peer sent before it left (see :func:`serve_connection`).
        stall_timeout: Seconds a full inbound may go untouched before the reader reads
            on (see :func:`serve_connection`).
        on_stall: ``"close"`` (1008) or ``"drop"``: what a message read on does.
        allowed_origins: The browser origins allowed to open a WebSocket (exact
            origins, ``"https://*.example.com"``, :data:`plait.SAME_ORIGIN`); a handshake
            from another is refused with 403. ``None`` (default): no check. A route's
            own list replaces it. See the deployment guide's security section.

    Raises:
        RouteConflictError: Two routes have the same path template.
    """

    def __init__(
        self,
        routes: Iterable[WebSocketRoute | type[Listener]] = (),
        *,
        fallback: ASGIApp | None = None,
        lifespan: Lifespan | None = None,
        hub: Hub | None = None,
        shutdown_grace: float = 5.0,
        max_message_size: int | None = 1024 * 1024,
        send_timeout: float | None = None,
        drain_timeout: float = 5.0,
        stall_timeout: float | None = 10.0,
        on_stall: StallPolicy = "close",
        allowed_origins: Sequence[str] | None = None,
    ) -> None:
        self.routes: list[WebSocketRoute] = []
        self.fallback = fallback
        self.lifespan = lifespan
        self.hub = hub
        self._provided: dict[str, Any] = {} if hub is None else {"hub": hub}
        self.shutdown_grace = shutdown_grace
        self.options = ConnectionOptions(
            max_message_size=max_message_size,
            send_timeout=send_timeout,
            drain_timeout=drain_timeout,
            stall_timeout=stall_timeout,
            on_stall=on_stall,
        )
        self._origins = None if allowed_origins is None else OriginPolicy(allowed_origins)
        self._connections: set[Connection] = set()
        self._all_closed: anyio.Event | None = None
        self.include_routes(*routes)

    def include_routes(self, *routes: WebSocketRoute | type[Listener]) -> None:
        """Add routes.

        Raises:
            RouteConflictError: A route's path template is already served.
        """
        for item in routes:
            route = (
                item.as_route() if isinstance(item, type) and issubclass(item, Listener) else item
            )
            if not isinstance(route, WebSocketRoute):
                raise TypeError(f"expected a WebSocketRoute or a Listener class, got {route!r}")
            for existing in self.routes:
                if existing.template.key == route.template.key:
                    raise RouteConflictError(
                        f"the routes {existing.path!r} and {route.path!r} match the same paths"
                    )
            self.routes.append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        else:
            await DenialResponse(b"Not Found", 404, media_type="text/plain")(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = _route_path(scope)
        found = self._match(path)
        if found is None and len(path) > 1 and path.endswith("/"):
            # Litestar's mounts pass the path below the mount point with a "/" appended.
            found = self._match(path[:-1])
        if found is None:
            await _not_found(WebSocket(scope, receive, send), path)
            return
        route, params = found
        policy = route.origin_policy or self._origins
        if policy is not None and not _origin_allowed(policy, scope):
            await _forbidden(WebSocket(scope, receive, send), path)
            return
        # Updated in place, as Starlette's router does: a copy of the whole scope would
        # stay with every open connection.
        outer = scope.get("path_params")
        scope["path_params"] = {**outer, **params} if outer else params
        scope["plait.provided"] = self._provided
        connection = Connection(scope, receive, send, route.connection_options(self.options))
        self._connections.add(connection)
        try:
            await connection.run(route.serve)
        finally:
            self._connections.discard(connection)
            if not self._connections and self._all_closed is not None:
                self._all_closed.set()

    def _match(self, path: str) -> tuple[WebSocketRoute, dict[str, Any]] | None:
        for route in self.routes:
            params = route.template.match(path)
            if params is not None:
                return route, params
        return None

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        started = False
        try:
            # One exit stack, left in LIFO order however the lifespan ends (also when
            # the server cancels it): the hub's task group must unwind in its own task.
            async with AsyncExitStack() as stack:
                try:
                    state = await self._start(stack, scope)
                except Exception as exc:
                    logger.exception("the application's startup failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                if state:
                    scope.setdefault("state", {}).update(state)
                await send({"type": "lifespan.startup.complete"})
                started = True
                try:
                    await receive()
                except (anyio.ClosedResourceError, anyio.EndOfStream):
                    # the server dropped the lifespan instead of asking for shutdown
                    logger.info("the lifespan ended without a shutdown message")
                    started = False
                await self.close_connections()
        except Exception as exc:
            logger.exception("the application's shutdown failed")
            if started:
                await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
            return
        if started:
            await send({"type": "lifespan.shutdown.complete"})

    async def _start(self, stack: AsyncExitStack, scope: Scope) -> Mapping[str, Any] | None:
        if self.hub is not None:
            await stack.enter_async_context(self.hub)
        if self.fallback is not None:
            fallback_scope = {**scope, "state": scope.setdefault("state", {})}
            await stack.enter_async_context(fallback_lifespan(self.fallback, fallback_scope, 30))
        if self.lifespan is not None:
            return await stack.enter_async_context(self.lifespan(self))
        return None

    async def close_connections(self) -> None:
        """Close every open connection with 1001, wait for them (bounded), cancel the rest."""
        if not self._connections:
            return
        logger.info("closing %d WebSocket connections", len(self._connections))
        self._all_closed = anyio.Event()
        for connection in list(self._connections):
            connection.shut_down()
        with anyio.move_on_after(self.shutdown_grace):
            await self._all_closed.wait()
        for connection in list(self._connections):
            connection.cancel()

    def connections(self) -> int:
        """How many WebSocket connections are open."""
        return len(self._connections)


def _route_path(scope: Scope) -> str:
    """The path below the mount point: Starlette keeps ``root_path`` in ``path``."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and (path == root or path.startswith(root.rstrip("/") + "/")):
        path = path[len(root.rstrip("/")) :]
    return path if path.startswith("/") else "/" + path


_SHOWN_PATH: Final = 100
"""How much of an unknown path a 404 names (a client chooses its length)."""


def _shown(path: str) -> str:
    """The path as a 404 names it: at most ``_SHOWN_PATH`` characters, printable."""
    shown = path[:_SHOWN_PATH].encode("unicode_escape").decode("ascii")
    if len(shown) > _SHOWN_PATH or len(path) > _SHOWN_PATH:
        return shown[:_SHOWN_PATH] + "..."
    return shown


def _origin_allowed(policy: OriginPolicy, scope: Scope) -> bool:
    origin = host = None
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    return policy.allows(origin, host)


async def _forbidden(websocket: WebSocket, path: str) -> None:
    origin = websocket.headers.get("origin", "")
    logger.info("refused %s: origin %s is not allowed", _shown(path), _shown(origin))
    await deny_handshake(websocket, 403, {"detail": "origin not allowed"})


async def _not_found(websocket: WebSocket, path: str) -> None:
    shown = _shown(path)
    logger.info("no WebSocket route for %s", shown)
    await deny_handshake(websocket, 404, {"detail": f"no WebSocket route for {shown}"})
