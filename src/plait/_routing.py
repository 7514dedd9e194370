"""Routes: path templates (``/rooms/{room}/users/{id:int}``) and WebSocket routes."""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar, overload

import anyio

from ._connection import ConnectionOptions, Heartbeat
from ._denial import DenialResponse
from ._exceptions import PlaitError, first_error
from ._injection import (
    InjectionError,
    InvalidParameters,
    Parameter,
    Plan,
    Resolver,
    close_shielded,
    plan_callable,
    request_parameters,
)
from ._limits import RateLimit
from ._listeners import (
    InvalidMessagePolicy,
    ListenerSpec,
    OnReceive,
    StreamSpec,
    negotiate_subprotocol,
    serve_composed,
)
from ._origins import OriginPolicy
from ._params import Deny
from ._paths import PathTemplate, RouteConflictError
from ._state import WebSocketState
from ._websocket import WebSocket, validate_close

__all__ = (
    "RouteDescription",
    "WebSocketRoute",
    "listener",
    "stream",
    "websocket",
)

logger = logging.getLogger(__name__)

HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[Any]])
ListenerT = TypeVar("ListenerT", bound=Callable[..., Any])
StreamT = TypeVar("StreamT", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class RouteDescription:
    """What a route serves, as :meth:`WebSocketRoute.describe` tells it: plait's internal
    interface for the AsyncAPI builder, which reads routes through it and nothing else.

    A snapshot: registering a listener or a stream afterwards changes the route, not a
    description already taken.
    """

    path: str
    """The path template, converters included (``/users/{id:int}``)."""
    options: ConnectionOptions
    """The engine options the route's connections get: the App's, with the route's own."""
    handler: Callable[..., Awaitable[Any]] | None
    """The low-level handler, if the route has one."""
    listener: ListenerSpec | None
    """The listener as planned, if the route has one."""
    listener_class: type[Any] | None
    """The :class:`~plait.Listener` subclass the listener comes from, if it does."""
    streams: tuple[StreamSpec, ...]
    """The streams as planned, in the order they were registered."""
    request_parameters: tuple[Parameter, ...]
    """Every parameter read from the handshake (path, query, header, cookie), once,
    whichever of the route's functions and dependencies asks for it."""
    on_receive: OnReceive
    """What the route does with incoming messages when it has streams and no listener."""
    tag_streams: bool
    """Whether stream items go out as ``{"stream": name, "data": item}``."""
    subprotocols: tuple[str, ...]
    """The subprotocols the route speaks, in its order of preference."""
    receives: Any
    """For a low-level handler, the declared type of the messages it receives."""
    sends: Any
    """For a low-level handler, the declared type of the messages it sends."""
    max_connections: int | None
    """The route's own connection limit."""


class WebSocketRoute:
    """A WebSocket endpoint: a path template and what serves it.

    Either a low-level handler (:meth:`ws_handler`, or ``endpoint``), or at most one listener
    (:meth:`listener`) and any number of streams (:meth:`stream`), which then all run at
    once on each connection::

        route = WebSocketRoute("/rooms/{room}")

        @route.ws_handler
        async def room(ws: WebSocket, room: str, max_users: int = 10) -> None: ...

    Every handler's parameters are planned when it is registered (not per connection):
    a ``WebSocket`` parameter gets the connection, a parameter named like a path
    parameter gets it, others are query parameters, and ``Annotated[T, Header(...)]``,
    ``Query(...)``, ``Cookie(...)`` and ``use(factory)`` say otherwise explicitly.

    Args:
        path: The path template; the leading slash is optional.
        endpoint: The low-level handler, as Starlette's ``WebSocketRoute("/ws",
            endpoint)`` takes it: the same as :meth:`ws_handler`. Its parameter named
            ``websocket`` (or annotated :class:`WebSocket`) gets the connection.
        dependencies: Parameters by name and the factories that make them
            (``{"user": get_user}``), as Litestar spells it.
        teardown_timeout: Seconds the generator dependencies' teardowns may take once the
            connection ended (they run even when it ended by cancellation).
        idle_timeout: Close with 1001 when nothing arrived for this long (seconds).
        heartbeat: An application-level heartbeat; see :class:`Heartbeat`.
        connection_accept_handler: For listeners and streams: an async function that
            accepts the connection its own way (headers, a subprotocol) or refuses it;
            its parameters are injected like a handler's.
        subprotocols: For listeners and streams accepted by default: the subprotocols
            this route speaks; the first one the client offers is chosen.
        tag_streams: Send each stream item as ``{"stream": name, "data": item}``.
        on_receive: For a route with streams and no listener: ``"discard"`` incoming
            messages, ``"close"`` the connection (1003) when one arrives, or leave them
            to a ``"stream"`` that takes the ``WebSocket`` and reads it (Litestar's
            ``listen_for_disconnect=False``; the peer leaving still cancels the
            streams). Where the route reads, a handler's read raises
            :class:`WebSocketStateError` rather than race it.
        on_accept: For listeners and streams: called once the connection is accepted,
            its parameters injected like a handler's (Litestar's ``on_accept``). Async,
            or a plain function called in place.
        on_disconnect: Called once the accepted connection ended, however it ended
            (also by cancellation: shielded, within ``teardown_timeout``), injected the
            same way, before the dependencies' teardowns.
        receives: For a low-level handler, the type of the messages it receives, for
            the AsyncAPI document (listeners and streams are described by their
            annotations).
        sends: For a low-level handler, the type of the messages it sends.
        allowed_origins: The browser origins allowed to connect (exact,
            ``"https://*.example.com"``, or :data:`plait.SAME_ORIGIN`); others are
            refused with 403. ``None``: the App's list. See the deployment guide.
        rate_limit: A token bucket on the messages each connection's client sends
            (:class:`RateLimit`), in place of the App's; ``None``: the App's.
        max_connections: The most connections this route holds at once; a handshake
            past it is refused with HTTP 503 and a JSON body naming the limit (a close
            with 1013 after accepting, where the server has no denial responses).
            ``None``: no limit but the App's.

    Raises:
        RouteConflictError: The template is malformed, or an ``endpoint`` comes with
            ``on_accept`` or ``on_disconnect``.
        InjectionError: The ``endpoint`` is not async, or a parameter cannot be injected.
        ValueError: An allowed origin is not an origin, ``on_receive`` is unknown, or
            ``max_connections`` is below 1.
    """

    def __init__(
        self,
        path: str,
        endpoint: Callable[..., Awaitable[Any]] | None = None,
        *,
        dependencies: Mapping[str, Any] | None = None,
        teardown_timeout: float = 5.0,
        idle_timeout: float | None = None,
        heartbeat: Heartbeat | None = None,
        connection_accept_handler: Callable[..., Awaitable[Any]] | None = None,
        subprotocols: Sequence[str] = (),
        tag_streams: bool = False,
        on_receive: OnReceive = "discard",
        allowed_origins: Sequence[str] | None = None,
        on_accept: Callable[..., Any] | None = None,
        on_disconnect: Callable[..., Any] | None = None,
        receives: Any = None,
        sends: Any = None,
        rate_limit: RateLimit | None = None,
        max_connections: int | None = None,
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections!r}")
        if on_receive not in ("discard", "close", "stream"):
            raise ValueError(
                f"on_receive must be 'discard', 'close' or 'stream', not {on_receive!r}"
            )
        self.template = PathTemplate(path)
        self._allowed_origins = None if allowed_origins is None else tuple(allowed_origins)
        self.origin_policy = None if allowed_origins is None else OriginPolicy(allowed_origins)
        self.path = self.template.template
        self.dependencies = dict(dependencies or {})
        self.teardown_timeout = teardown_timeout
        self.idle_timeout = idle_timeout
        self.heartbeat = heartbeat
        self.rate_limit = rate_limit
        self.max_connections = max_connections
        self.subprotocols = tuple(subprotocols)
        self.tag_streams = tag_streams
        self.on_receive = on_receive
        self.receives = receives
        self.sends = sends
        self.handler: Callable[..., Awaitable[Any]] | None = None
        self._plan: Plan | None = None
        self._listener: ListenerSpec | None = None
        self._streams: list[StreamSpec] = []
        self._accept_plan: Plan | None = None
        self._accept_handler = connection_accept_handler
        self._listener_class: type[Any] | None = None
        # on_accept and on_disconnect: the functions, then their plans once planned.
        self._hook_funcs = {
            name: func
            for name, func in (("on_accept", on_accept), ("on_disconnect", on_disconnect))
            if func is not None
        }
        self._hooks: dict[str, Plan] = {}
        self._request_parameters: list[Parameter] = []
        # Made by @plait.listener or @plait.stream, so no one adds to it later: an App
        # may compose it with another such route on the same path.
        self._one_line = False
        # Where the route was built; the accept handler is planned when a listener or a
        # stream is added, with the names visible there too (decorators build routes).
        self._namespace: Mapping[str, Any] = sys._getframe(1).f_locals
        if endpoint is not None:
            self._register(endpoint, self._namespace)

    # -- registering ------------------------------------------------------------------

    def ws_handler(self, handler: HandlerT) -> HandlerT:
        """Register the route's low-level handler (a decorator); returns it unchanged.

        Raises:
            InjectionError: The handler is not async, or a parameter cannot be injected.
            RouteConflictError: The route already has a handler, listener or stream.
        """
        self._register(handler, sys._getframe(1).f_locals)
        return handler

    def _register(
        self, handler: Callable[..., Awaitable[Any]], namespace: Mapping[str, Any]
    ) -> None:
        if self.handler is not None or self._listener is not None or self._streams:
            raise RouteConflictError(f"the route {self.path!r} already has a handler")
        if self._hook_funcs:
            raise RouteConflictError(
                f"the route {self.path!r}: on_accept and on_disconnect are for listeners and "
                "streams; a low-level handler accepts and ends the connection itself"
            )
        plan = self._plan_for(handler, namespace)
        if plan.kind != "coroutine":
            raise InjectionError(f"the WebSocket handler {handler!r} must be an async function")
        self.handler, self._plan = handler, plan
        self._refresh(namespace)

    @overload
    def listener(self, func: ListenerT, /) -> ListenerT: ...

    @overload
    def listener(
        self,
        func: None = None,
        /,
        *,
        mode: Literal["text", "binary"] | None = None,
        on_invalid: InvalidMessagePolicy = "close",
        concurrency: int = 1,
    ) -> Callable[[ListenerT], ListenerT]: ...

    def listener(
        self,
        func: ListenerT | None = None,
        /,
        *,
        mode: Literal["text", "binary"] | None = None,
        on_invalid: InvalidMessagePolicy = "close",
        concurrency: int = 1,
    ) -> ListenerT | Callable[[ListenerT], ListenerT]:
        """Register the route's listener: called once per message, its result sent back.

        Use as ``@route.listener`` or ``@route.listener(mode="binary", ...)``. Its
        ``data`` parameter receives each message decoded to its annotation (``str``,
        ``bytes``, ``dict``, a msgspec ``Struct`` or tagged union of them, a dataclass, a
        ``TypedDict``); other parameters are injected. A returned ``str`` goes out as
        text, ``bytes`` as binary, ``None`` as nothing, anything else as JSON text.
        An async function runs in the connection's task; a plain ``def`` runs in a
        worker thread (``anyio.to_thread``), as Litestar runs it.

        Args:
            func: The function (when used without arguments).
            mode: ``"text"`` or ``"binary"`` sends every reply in that kind of frame
                (bytes decoded as UTF-8 for text, text encoded for binary), as
                Litestar's ``mode`` does; ``None`` (default) goes by the reply's type.
            on_invalid: What to do with a message that does not decode.
            concurrency: Messages handled at once; above 1, replies may come out of order.

        Raises:
            RouteConflictError: The route has a low-level handler or a listener already.
        """
        namespace = sys._getframe(1).f_locals

        def register(listener_func: ListenerT) -> ListenerT:
            self.add_listener(listener_func, namespace, mode, on_invalid, concurrency)
            return listener_func

        return register if func is None else register(func)

    def add_listener(
        self,
        func: Callable[..., Any],
        namespace: Mapping[str, Any],
        mode: str | None,
        on_invalid: InvalidMessagePolicy,
        concurrency: int,
        listener_class: type[Any] | None = None,
        hooks: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        """Give the route its listener: plait's internal interface for
        :meth:`listener`, :func:`plait.listener` and class-based listeners.

        :meta private:
        """
        if self.handler is not None or self._listener is not None:
            raise RouteConflictError(f"the route {self.path!r} already has a handler or a listener")
        if self.on_receive == "stream":
            raise RouteConflictError(
                f"the route {self.path!r} has on_receive='stream' (its streams read the "
                "messages), so it cannot have a listener too: the two would split them"
            )
        self._listener = ListenerSpec.build(
            func,
            self.template.param_names,
            self.dependencies,
            namespace,
            mode=mode,
            on_invalid=on_invalid,
            concurrency=concurrency,
            skip=("self",) if listener_class is not None else (),
        )
        self._listener_class = listener_class
        self._hook_funcs.update(hooks or {})
        self._refresh(namespace)

    @overload
    def stream(self, func: StreamT, /) -> StreamT: ...

    @overload
    def stream(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        mode: Literal["text", "binary"] | None = None,
    ) -> Callable[[StreamT], StreamT]: ...

    def stream(
        self,
        func: StreamT | None = None,
        /,
        *,
        name: str | None = None,
        mode: Literal["text", "binary"] | None = None,
    ) -> StreamT | Callable[[StreamT], StreamT]:
        """Register a stream: an async generator whose items are pushed to the client.

        Use as ``@route.stream`` or ``@route.stream(name=..., mode=...)``; a route may
        have several, all running at once with its listener.

        Args:
            func: The async generator function (when used without arguments).
            name: The stream's name in tagged items; the function's name by default.
            mode: ``"text"`` or ``"binary"`` sends every item in that kind of frame;
                ``None`` (default) goes by the item's type, as for a listener.

        Raises:
            RouteConflictError: The route has a low-level handler.
        """
        namespace = sys._getframe(1).f_locals

        def register(stream_func: StreamT) -> StreamT:
            self._add_stream(stream_func, namespace, name, mode)
            return stream_func

        return register if func is None else register(func)

    def _add_stream(
        self,
        func: Callable[..., Any],
        namespace: Mapping[str, Any],
        name: str | None,
        mode: str | None,
    ) -> None:
        if self.handler is not None:
            raise RouteConflictError(f"the route {self.path!r} has a low-level handler")
        spec = StreamSpec.build(
            func, self.template.param_names, self.dependencies, namespace, name=name, mode=mode
        )
        if any(existing.name == spec.name for existing in self._streams):
            raise RouteConflictError(f"the route {self.path!r} already has a stream {spec.name!r}")
        self._streams.append(spec)
        self._refresh(namespace)

    def compose(self, other: WebSocketRoute) -> WebSocketRoute | None:
        """One route serving this route's listener and streams and ``other``'s, for an
        App given ``@plait.listener("/chat")`` and ``@plait.stream("/chat")``: plait's
        internal interface, not part of the public API.

        Returns:
            A new route, or None where the two cannot be one: either is not made by
            those decorators (a handler, a class-based listener), two listeners, two
            streams of one name, or a difference in the template's spelling or in any
            route option.

        :meta private:
        """
        if (
            self.template.template != other.template.template
            or self._setup() != other._setup()
            or not (self._one_line and other._one_line)
            or (self._listener is not None and other._listener is not None)
            or {s.name for s in self._streams} & {s.name for s in other._streams}
        ):
            return None
        composed = copy.copy(self)
        composed._listener = self._listener or other._listener
        composed._streams = [*self._streams, *other._streams]
        composed._hooks = dict(self._hooks)
        if composed._listener is not None and composed.on_receive == "stream":
            return None  # the streams read the messages: a listener would split them
        composed._refresh(composed._namespace)
        return composed

    def _setup(self) -> tuple[Any, ...]:
        """The options a route was built with, but for what serves it."""
        return (
            self.dependencies,
            self.teardown_timeout,
            self.idle_timeout,
            self.heartbeat,
            self._accept_handler,
            self.subprotocols,
            self.tag_streams,
            self.on_receive,
            self._allowed_origins,
            self._hook_funcs,
            self.receives,
            self.sends,
            self.rate_limit,
            self.max_connections,
        )

    def _plan_for(
        self, func: Callable[..., Any], namespace: Mapping[str, Any], skip: tuple[str, ...] = ()
    ) -> Plan:
        return plan_callable(
            func, self.template.param_names, self.dependencies, namespace=namespace, skip=skip
        )

    def _refresh(self, namespace: Mapping[str, Any]) -> None:
        namespace = {**self._namespace, **namespace}
        if self._accept_handler is not None and self._accept_plan is None:
            self._accept_plan = self._plan_for(self._accept_handler, namespace)
        for name, func in self._hook_funcs.items():
            if name not in self._hooks:
                skip = ("self",) if self._listener_class is not None else ()
                plan = self._plan_for(func, namespace, skip)
                if plan.kind not in ("coroutine", "function"):
                    raise InjectionError(f"{name} ({plan.func!r}) must be a function, async or not")
                self._hooks[name] = plan
        plans = [self._plan, self._accept_plan, *(s.plan for s in self._streams)]
        if self._listener is not None:
            plans.append(self._listener.plan)
        self._request_parameters = request_parameters([*plans, *self._hooks.values()])

    # -- serving ----------------------------------------------------------------------

    async def serve(
        self, websocket: WebSocket, *, provided: Mapping[str, Any] | None = None
    ) -> None:
        """Serve one connection: resolve parameters, run the handler(s), tear down.

        Bad handshake parameters and :class:`Deny` refuse the connection; dependency
        teardowns run however the connection ends.

        Args:
            websocket: The connection.
            provided: What the App provides to parameters by their type (its hub, for
                a parameter annotated ``Hub``), passed here by the App itself: never
                read from the ASGI scope, where middleware could set anything.
        """
        if self._plan is None and self._listener is None and not self._streams:
            raise PlaitError(f"no handler was registered for the route {self.path!r}")
        stack = AsyncExitStack()
        resolver = Resolver(websocket, stack, provided)
        try:
            try:
                resolver.read_handshake(self._request_parameters)
                await self._run(websocket, resolver)
            except InvalidParameters as exc:
                body = {"detail": "invalid parameters", "errors": exc.errors}
                await _refuse(websocket, 400, body)
            except (Deny, BaseExceptionGroup) as exc:
                # A listener's or a stream's Deny comes wrapped in their task group.
                deny = _find_deny(exc)
                if deny is None:
                    raise
                await _refuse(websocket, deny.status_code, {"detail": deny.detail}, deny.headers)
        except BaseException as exc:
            # For a WebSocket, cancellation and disconnects (the peer left, the server
            # is stopping) are how connections end: teardowns run as after a normal
            # end, so the code after a dependency's `yield` runs. Real errors are
            # thrown in at the `yield`.
            # No local holds the error: its traceback holds this frame.
            await close_shielded(stack, first_error(exc), self.teardown_timeout)
            raise
        await close_shielded(stack, None, self.teardown_timeout)

    async def _run(self, websocket: WebSocket, resolver: Resolver) -> None:
        if self._plan is not None:
            await resolver.call(self._plan)
            return
        # A class-based listener gets one instance per connection, passed as `self`.
        bound = (self._listener_class(),) if self._listener_class is not None else ()
        listen_call = None
        if self._listener is not None:
            listen_call = self._listener.bind(bound, await resolver.arguments(self._listener.plan))
        hooks = self._hooks
        accepted = False

        async def accept() -> None:
            nonlocal accepted
            if self._accept_plan is not None:
                await resolver.call(self._accept_plan)
            else:
                subprotocol = negotiate_subprotocol(websocket.subprotocols, self.subprotocols)
                await websocket.accept(subprotocol=subprotocol)
            if websocket.application_state is WebSocketState.CONNECTED:
                accepted = True  # on_disconnect runs from here on, even if on_accept fails
                if "on_accept" in hooks:
                    await _call_hook(resolver, hooks["on_accept"], bound)

        try:
            await serve_composed(
                websocket,
                resolver,
                accept=accept,
                listener=self._listener,
                listen_call=listen_call,
                streams=self._streams,
                tag_streams=self.tag_streams,
                on_receive=self.on_receive,
            )
        finally:
            if accepted and "on_disconnect" in hooks:
                with anyio.move_on_after(self.teardown_timeout, shield=True):
                    await _call_hook(resolver, hooks["on_disconnect"], bound)

    def describe(self, base: ConnectionOptions) -> RouteDescription:
        """What this route serves, for plait's AsyncAPI builder: plait's internal
        interface, not part of the public API.

        Args:
            base: The App's connection options, which the route's own complete.

        :meta private:
        """
        return RouteDescription(
            path=self.path,
            options=self.connection_options(base),
            handler=self.handler,
            listener=self._listener,
            listener_class=self._listener_class,
            streams=tuple(self._streams),
            request_parameters=tuple(self._request_parameters),
            on_receive=self.on_receive,
            tag_streams=self.tag_streams,
            subprotocols=self.subprotocols,
            receives=self.receives,
            sends=self.sends,
            max_connections=self.max_connections,
        )

    def connection_options(self, base: ConnectionOptions) -> ConnectionOptions:
        """The engine options for this route's connections: the App's, with the route's
        ``idle_timeout``, ``heartbeat`` and ``rate_limit`` where it sets them."""
        changes: dict[str, Any] = {}
        if self.idle_timeout is not None:
            changes["idle_timeout"] = self.idle_timeout
        if self.heartbeat is not None:
            changes["heartbeat"] = self.heartbeat
        if self.rate_limit is not None:
            changes["rate_limit"] = self.rate_limit
        return replace(base, **changes) if changes else base

    def __repr__(self) -> str:
        name = getattr(self.handler, "__qualname__", None)
        return f"WebSocketRoute({self.path!r}, handler={name})"


async def _call_hook(resolver: Resolver, plan: Plan, bound: tuple[Any, ...]) -> None:
    """Call on_accept or on_disconnect with its injected arguments (``self`` first for a
    class-based listener); a plain function is called in place."""
    result = plan.func(*bound, **await resolver.arguments(plan))
    if plan.kind == "coroutine":
        await result


def _find_deny(exc: BaseException) -> Deny | None:
    if isinstance(exc, Deny):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_deny(inner)
            if found is not None:
                return found
    return None


async def _refuse(
    websocket: WebSocket,
    status_code: int,
    body: dict[str, Any],
    headers: Any = None,
) -> None:
    """Refuse with an HTTP response before accept, or close with 1008 after it."""
    path = websocket.url.path
    logger.info("refused %s with %s: %s", path, status_code, body)
    state = websocket.application_state
    if state is WebSocketState.CONNECTING:
        await deny_handshake(websocket, status_code, body, headers)
    elif state is WebSocketState.CONNECTED:
        await websocket.close(1008, validate_close(1008, str(body.get("detail", ""))))


async def deny_handshake(
    websocket: WebSocket, status_code: int, body: dict[str, Any], headers: Any = None
) -> None:
    """Refuse the handshake with an HTTP response, or a close before accept (HTTP 403)
    where the server has no denial responses."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(DenialResponse(body, status_code, headers))
    else:
        await websocket.close()


def websocket(
    path: str,
    *,
    dependencies: Mapping[str, Any] | None = None,
    teardown_timeout: float = 5.0,
    receives: Any = None,
    sends: Any = None,
) -> Callable[[Callable[..., Awaitable[Any]]], WebSocketRoute]:
    """Make a route from a handler in one line: ``@plait.websocket("/ws")``.

    The decorated name becomes the :class:`WebSocketRoute`, ready for
    ``App(routes=[...])``. ``receives`` and ``sends`` declare the types of the messages
    the handler receives and sends, for the AsyncAPI document
    (``@plait.websocket("/ws", receives=Command, sends=Event)``); they change nothing
    else.
    """

    def decorate(handler: Callable[..., Awaitable[Any]]) -> WebSocketRoute:
        route = WebSocketRoute(
            path,
            dependencies=dependencies,
            teardown_timeout=teardown_timeout,
            receives=receives,
            sends=sends,
        )
        route._register(handler, sys._getframe(1).f_locals)
        return route

    return decorate


def listener(
    path: str,
    *,
    mode: Literal["text", "binary"] | None = None,
    on_invalid: InvalidMessagePolicy = "close",
    concurrency: int = 1,
    **route_options: Any,
) -> Callable[[Callable[..., Awaitable[Any]]], WebSocketRoute]:
    """Make a listener route in one line: ``@plait.listener("/echo")``.

    ``route_options`` are :class:`WebSocketRoute`'s (``dependencies``,
    ``connection_accept_handler``, ``subprotocols``, ``idle_timeout``, ``heartbeat``...);
    the others are :meth:`WebSocketRoute.listener`'s. The decorated name becomes the
    route.
    """

    def decorate(func: Callable[..., Awaitable[Any]]) -> WebSocketRoute:
        route = WebSocketRoute(path, **route_options)
        route.add_listener(func, sys._getframe(1).f_locals, mode, on_invalid, concurrency)
        route._one_line = True
        return route

    return decorate


def stream(
    path: str,
    *,
    name: str | None = None,
    mode: Literal["text", "binary"] | None = None,
    **route_options: Any,
) -> Callable[[Callable[..., Any]], WebSocketRoute]:
    """Make a stream route in one line: ``@plait.stream("/time")``.

    ``route_options`` are :class:`WebSocketRoute`'s; the others are
    :meth:`WebSocketRoute.stream`'s. The decorated name becomes the route.
    """

    def decorate(func: Callable[..., Any]) -> WebSocketRoute:
        route = WebSocketRoute(path, **route_options)
        route._add_stream(func, sys._getframe(1).f_locals, name, mode)
        route._one_line = True
        return route

    return decorate
