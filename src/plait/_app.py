"""The application: routes WebSocket connections, hands HTTP to a fallback app."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from functools import partial
from typing import Any, Final

import anyio

from ._asyncapi import build_document
from ._asyncapi_page import bundled_component, component_paths, docs_page
from ._class_listener import Listener
from ._codec import encode_json
from ._connection import Connection, ConnectionOptions
from ._denial import DenialResponse
from ._documents import IMMUTABLE, Document, client_script
from ._exceptions import WebSocketDisconnect
from ._lifespan import fallback_lifespan
from ._limits import RateLimit
from ._options import StallPolicy
from ._origins import OriginPolicy
from ._otel import Telemetry
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
    own lifespan.

    Shutting down: :meth:`close_connections` closes every open connection with 1001
    (going away) at once, cancels the handlers so that their ``finally`` blocks and
    dependency teardowns run, and cancels what is left after ``shutdown_grace`` seconds.
    Who calls it depends on how the app is run:

    - served with hypercorn's ``serve()`` and ``shutdown_trigger=app.shutdown_trigger``
      (:meth:`shutdown_trigger`): on SIGTERM or SIGINT, before hypercorn stops;
    - under the ``hypercorn`` command: nobody in time. hypercorn tells the app nothing
      when its shutdown starts; it waits ``--graceful-timeout`` seconds, then cancels the
      connections (plait closes them with 1001 and runs the teardowns), and only then
      runs the lifespan shutdown, with no connection left. ``shutdown_grace`` plays no
      part there, and ``hypercorn -w 0 -k trio`` dies on SIGTERM with none of this; see
      the deployment guide;
    - at the lifespan shutdown, for a server that sends it while connections are still
      open.

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
        shutdown_grace: Seconds :meth:`close_connections` waits, after the 1001, for the
            handlers and their teardowns to end before it cancels what is left.
        max_message_size: Largest incoming message (see :func:`serve_connection`).
        send_timeout: Seconds a message may take to leave before the client is deemed
            too slow (see :func:`serve_connection`).
        drain_timeout: Seconds to deliver what is queued after a handler ends, and to
            take what a peer sent before it left (see :func:`serve_connection`).
        stall_timeout: Seconds a full inbound may go untouched before the reader reads
            on (see :func:`serve_connection`).
        on_stall: ``"close"`` (1008) or ``"drop"``: what a message read on does.
        rate_limit: A token bucket on the messages each connection's client sends
            (:class:`RateLimit`); a route's own ``rate_limit`` replaces it.
        max_connections: The most WebSocket connections the App holds at once; a
            handshake past it is refused with HTTP 503 and a JSON body naming the limit
            (a close with 1013 after accepting, where the server has no denial
            responses). A route may set a lower limit of its own. ``None``: no limit.
        allowed_origins: The browser origins allowed to open a WebSocket (exact
            origins, ``"https://*.example.com"``, :data:`plait.SAME_ORIGIN`); a handshake
            from another is refused with 403. ``None`` (default): no check. A route's
            own list replaces it. See the deployment guide's security section.
        client_path: Serve the browser client ``plait.js`` over HTTP at this path
            (``"/plait.js"``); ``None`` (default): not served.
        title: The AsyncAPI document's ``info.title``.
        version: Its ``info.version`` (the application's version).
        description: Its ``info.description``.
        servers: Where the application runs, for the document: ``wss://`` or ``ws://``
            URLs, or a mapping of server names to them.
        asyncapi_path: Serve :meth:`asyncapi` as JSON over HTTP at this path
            (``"/asyncapi.json"``), as FastAPI serves ``/openapi.json``; ``None``
            (default): not served.
        asyncapi_docs_path: Serve a page that renders the document with AsyncAPI's
            React component at this path (``"/asyncapi"``); needs ``asyncapi_path``.
            The component ships with plait and is served below the page
            (``/asyncapi/static/...``), so the page needs no CDN.
        asyncapi_js_url: Where that page loads the component's standalone bundle
            instead (a CDN, or your own copy); ``None`` (default): plait's copy.
        asyncapi_css_url: Where that page loads the component's styles instead;
            ``None`` (default): plait's copy.
        telemetry: Spans and metrics for every connection through OpenTelemetry
            (:class:`plait.otel.Telemetry`, the ``otel`` extra); ``None`` (default):
            none, and no cost.

    Raises:
        RouteConflictError: Two routes have the same path template (but a listener and
            streams built apart with the same options, which are served as one route).
        ValueError: ``max_connections`` is below 1.
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
        rate_limit: RateLimit | None = None,
        max_connections: int | None = None,
        allowed_origins: Sequence[str] | None = None,
        client_path: str | None = None,
        title: str = "plait",
        version: str = "0.1.0",
        description: str | None = None,
        servers: Mapping[str, str] | Sequence[str] = (),
        asyncapi_path: str | None = None,
        asyncapi_docs_path: str | None = None,
        asyncapi_js_url: str | None = None,
        asyncapi_css_url: str | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.routes: list[WebSocketRoute] = []
        self.title, self.version, self.description = title, version, description
        self.servers = servers
        # What is served over HTTP beside the fallback, by path.
        self._documents: dict[str, Document] = {}
        if client_path is not None:
            self._documents[client_path] = Document(client_script, "text/javascript")
        if asyncapi_path is not None:
            self._documents[asyncapi_path] = Document(
                lambda: encode_json(self.asyncapi()), "application/json"
            )
        if asyncapi_docs_path is not None:
            if asyncapi_path is None:
                raise ValueError("asyncapi_docs_path needs asyncapi_path: the page loads it")
            page = partial(
                docs_page,
                title,
                asyncapi_path,
                asyncapi_docs_path,
                asyncapi_js_url,
                asyncapi_css_url,
            )
            self._documents[asyncapi_docs_path] = Document(page, "text/html; charset=utf-8")
            chosen = {"js": asyncapi_js_url, "css": asyncapi_css_url}
            for name, (path, media_type) in component_paths(asyncapi_docs_path).items():
                if chosen[name] is None:
                    self._documents[path] = Document(
                        partial(bundled_component, name), media_type, cache_control=IMMUTABLE
                    )
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
            rate_limit=rate_limit,
        )
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections!r}")
        self.max_connections = max_connections
        # Open connections of each route that has a max_connections.
        self._per_route: dict[WebSocketRoute, int] = {}
        self._origins = None if allowed_origins is None else OriginPolicy(allowed_origins)
        self._connections: set[Connection] = set()
        self._all_closed: anyio.Event | None = None
        self._closing = False  # from close_connections() to the next lifespan startup
        self._grace: anyio.CancelScope | None = None
        self.telemetry = telemetry
        if telemetry is not None and hub is not None:
            telemetry.observe_hub(hub)
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
            for index, existing in enumerate(self.routes):
                if existing.template.key == route.template.key:
                    composed = existing.compose(route)
                    if composed is None:
                        raise RouteConflictError(_conflict(existing, route))
                    self.routes[index] = composed  # what @listener and @stream on one path mean
                    break
            else:
                self.routes.append(route)
        for document in self._documents.values():
            document.reset()  # the AsyncAPI document describes the routes

    def asyncapi(self) -> dict[str, Any]:
        """The AsyncAPI 3.0.0 document describing every WebSocket route, as JSON data.

        Each route is a channel: its address with path parameters, its query and header
        parameters with their types (the ``ws`` channel binding), a listener's message
        and reply as a ``receive`` operation with a ``reply``, each stream's items as a
        ``send`` operation (in the ``{"stream", "data"}`` envelope where the route tags
        them), the heartbeat's ping and pong, subprotocols, cookies and ``since=`` resume
        as ``x-plait-*`` extensions. Schemas come from msgspec and are shared through
        ``components.schemas``. The reference's AsyncAPI page lists the mapping.
        """
        return build_document(
            self.routes,
            self.options,
            title=self.title,
            version=self.version,
            description=self.description,
            servers=self.servers,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif self._documents and (document := self._documents.get(_route_path(scope))):
            await document(scope, receive, send)
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
        else:
            await DenialResponse(b"Not Found", 404, media_type="text/plain")(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = _route_path(scope)
        if self._closing:
            # No await between this check and the connection joining the set, so that
            # close_connections() sees every connection it lets in.
            await _shutting_down(WebSocket(scope, receive, send), path)
            return
        found = self._match(path)
        if found is None and len(path) > 1 and path.endswith("/"):
            # Litestar's mounts pass the path below the mount point with a "/" appended.
            found = self._match(path[:-1])
        if found is None:
            await _not_found(WebSocket(scope, receive, send), path)
            return
        route, params = found
        policy = route.origin_policy or self._origins
        if policy is not None and (refused := _origin_refused(policy, scope)) is not None:
            await _forbidden(WebSocket(scope, receive, send), path, refused)
            return
        full = self._full(route)
        if full is not None:
            await _too_many(WebSocket(scope, receive, send), path, full)
            return
        # Updated in place, as Starlette's router does: a copy of the whole scope would
        # stay with every open connection.
        outer = scope.get("path_params")
        scope["path_params"] = {**outer, **params} if outer else params
        observed = None
        if self.telemetry is not None:
            observed = self.telemetry.observe_connection(route.path, scope, receive, send)
            receive, send = observed.receive, observed.send
        connection = Connection(scope, receive, send, route.connection_options(self.options))
        # What the App provides (its hub) goes to the route directly, not through the
        # scope, where any middleware could read or forge it.
        serve = partial(route.serve, provided=self._provided)
        self._connections.add(connection)
        counted = route.max_connections is not None
        if counted:
            self._per_route[route] = self._per_route.get(route, 0) + 1
        try:
            if observed is None:
                await connection.run(serve)
            else:
                await observed.run(connection, serve)
        finally:
            self._connections.discard(connection)
            if counted:
                self._per_route[route] -= 1
            if not self._connections and self._all_closed is not None:
                self._all_closed.set()

    def _full(self, route: WebSocketRoute) -> dict[str, Any] | None:
        """The denial's body when a connection limit is reached, else ``None``."""
        limit = route.max_connections
        if limit is not None and self._per_route.get(route, 0) >= limit:
            return {"detail": "too many connections", "route": route.path, "max_connections": limit}
        limit = self.max_connections
        if limit is not None and len(self._connections) >= limit:
            return {"detail": "too many connections", "max_connections": limit}
        return None

    def _match(self, path: str) -> tuple[WebSocketRoute, dict[str, Any]] | None:
        for route in self.routes:
            params = route.template.match(path)
            if params is not None:
                return route, params
        return None

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        self._closing = False
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
                # Under hypercorn and uvicorn nothing is left by now: they end the
                # connections first. Other servers may ask while some are open.
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
        """Close every open connection with 1001, wait for them (bounded), cancel the rest.

        Each client gets its 1001 (``server shutting down``) at once, after what was
        already queued for it; each handler is cancelled, so that its ``finally`` blocks
        and dependency teardowns run. After ``shutdown_grace`` seconds whatever is still
        running is cancelled, and this returns. From the call until the next lifespan
        startup, new WebSocket handshakes are refused with 503 (a close before accept,
        which clients see as 403, where the server has no denial responses).
        """
        self._closing = True
        if not self._connections:
            return
        logger.info("closing %d WebSocket connections", len(self._connections))
        self._all_closed = anyio.Event()
        for connection in list(self._connections):
            connection.shut_down()
        with anyio.move_on_after(self.shutdown_grace) as self._grace:
            await self._all_closed.wait()
        self._grace = None
        for connection in list(self._connections):
            connection.cancel()

    async def shutdown_trigger(
        self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Wait for SIGTERM or SIGINT, close the connections, then return.

        hypercorn's ``serve()`` stops the server when its ``shutdown_trigger`` returns,
        so passing this one makes the App's graceful close happen as soon as the signal
        arrives, before hypercorn stops::

            from functools import partial

            import trio
            from hypercorn.config import Config
            from hypercorn.trio import serve

            config = Config()
            config.bind = ["0.0.0.0:8000"]
            trio.run(partial(serve, app, config, shutdown_trigger=app.shutdown_trigger))

        (on asyncio: ``asyncio.run(hypercorn.asyncio.serve(app, config,
        shutdown_trigger=app.shutdown_trigger))``). On the first signal this runs
        :meth:`close_connections`: every client gets 1001 at once, the handlers'
        teardowns run within ``shutdown_grace`` seconds and what is left is then
        cancelled, and new handshakes are refused. A second signal cuts the grace short.
        Then hypercorn stops listening, waits up to its ``graceful_timeout`` for its
        other connections (plain HTTP) and runs the lifespan shutdown.

        The ``hypercorn`` command line accepts no such trigger (see the deployment
        guide for what it does instead). Signals can only be received in the main
        thread.

        Args:
            signals: The signals that start the shutdown.
        """
        with anyio.open_signal_receiver(*signals) as received:
            async for signum in received:
                logger.info("%s: shutting down", _signal_name(signum))
                break
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self._cut_grace_short, received)
                await self.close_connections()
                task_group.cancel_scope.cancel()

    async def _cut_grace_short(self, received: AsyncIterator[int]) -> None:
        async for signum in received:
            logger.warning("%s again: cancelling the connections at once", _signal_name(signum))
            if self._grace is not None:
                self._grace.cancel()

    def connections(self) -> int:
        """How many WebSocket connections are open."""
        return len(self._connections)


def _conflict(existing: WebSocketRoute, route: WebSocketRoute) -> str:
    """Why two routes on the same paths cannot be one, and how to make them one."""
    return (
        f"the routes {existing.path!r} and {route.path!r} match the same paths. A listener "
        "and streams built with the same path and the same options are served as one "
        "route; otherwise (a handler, two listeners, different options) build one "
        "WebSocketRoute and give it a listener and streams:\n"
        f"    route = WebSocketRoute({route.path!r})\n"
        "    @route.listener\n"
        "    @route.stream"
    )


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


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


def _origin_refused(policy: OriginPolicy, scope: Scope) -> str | None:
    """Why the handshake's origin is refused (the detail a 403 gives), or None.

    A browser sends one ``Origin`` and one ``Host``: a handshake with two of either is
    not a browser's, and which one a check read would be a guess an attacker chooses.
    """
    origins: list[str] = []
    hosts: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            origins.append(value.decode("latin-1"))
        elif name == b"host":
            hosts.append(value.decode("latin-1"))
    if len(origins) > 1:
        return "more than one Origin header"
    if len(hosts) > 1:
        return "more than one Host header"
    if not policy.allows(origins[0] if origins else None, hosts[0] if hosts else None):
        return "origin not allowed"
    return None


async def _forbidden(websocket: WebSocket, path: str, detail: str) -> None:
    if detail == "origin not allowed":
        origin = websocket.headers.get("origin", "")
        logger.info("refused %s: origin %s is not allowed", _shown(path), _shown(origin))
    else:
        logger.info("refused %s: %s", _shown(path), detail)
    await deny_handshake(websocket, 403, {"detail": detail})


async def _shutting_down(websocket: WebSocket, path: str) -> None:
    logger.info("refused %s: the server is shutting down", _shown(path))
    await deny_handshake(websocket, 503, {"detail": "server shutting down"})


async def _too_many(websocket: WebSocket, path: str, body: dict[str, Any]) -> None:
    # No Retry-After: nothing tells when a connection will end, and one number for
    # every refused client would bring them back together; their backoff spreads them.
    logger.info("refused %s: %s", _shown(path), body)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await deny_handshake(websocket, 503, body)
        return
    # No denial responses: a close before accept would read as 403, so accept and say
    # "try again later" (1013) instead.
    with contextlib.suppress(WebSocketDisconnect):
        await websocket.accept()
        await websocket.close(1013, "too many connections")


async def _not_found(websocket: WebSocket, path: str) -> None:
    shown = _shown(path)
    logger.info("no WebSocket route for %s", shown)
    await deny_handshake(websocket, 404, {"detail": f"no WebSocket route for {shown}"})
