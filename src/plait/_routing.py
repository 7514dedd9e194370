"""Routes: path templates (``/rooms/{room}/users/{id:int}``) and WebSocket routes."""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any, Final, TypeVar

from ._connection import ConnectionOptions, Heartbeat
from ._denial import DenialResponse
from ._exceptions import PlaitError
from ._injection import (
    InjectionError,
    InvalidParameters,
    Plan,
    Resolver,
    close_shielded,
    plan_callable,
)
from ._params import Deny
from ._state import WebSocketState
from ._websocket import WebSocket, validate_close

__all__ = ("CONVERTERS", "PathTemplate", "RouteConflictError", "WebSocketRoute", "websocket")

logger = logging.getLogger(__name__)

HandlerT = TypeVar("HandlerT", bound=Callable[..., Awaitable[Any]])


@dataclass(frozen=True)
class Converter:
    """How one kind of path parameter is matched and converted."""

    regex: str
    convert: Callable[[str], Any]


CONVERTERS: Final[dict[str, Converter]] = {
    "str": Converter(r"[^/]+", str),
    "int": Converter(r"-?[0-9]+", int),
    "float": Converter(r"-?[0-9]+(?:\.[0-9]+)?", float),
    "uuid": Converter(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        uuid.UUID,
    ),
    "path": Converter(r".*", str),
}

_PARAM = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")


class RouteConflictError(PlaitError, ValueError):
    """Two routes match the same paths, or a path template is malformed."""


class PathTemplate:
    """A compiled path template.

    ``{name}`` matches one path segment; ``{name:int}``, ``{name:float}``,
    ``{name:uuid}`` and ``{name:str}`` convert it; ``{name:path}`` matches the rest of the
    path, slashes included. The leading slash is optional.

    Args:
        template: The template, for example ``"/rooms/{room}/users/{id:int}"``.

    Raises:
        RouteConflictError: Unknown converter, repeated name, or malformed braces.
    """

    __slots__ = ("converters", "key", "param_names", "regex", "template")

    def __init__(self, template: str) -> None:
        self.template = "/" + template.lstrip("/")
        pattern = "^"
        key = ""
        position = 0
        self.converters: dict[str, Callable[[str], Any]] = {}
        self.param_names: tuple[str, ...] = ()
        for match in _PARAM.finditer(self.template):
            literal = self.template[position : match.start()]
            if "{" in literal or "}" in literal:
                raise RouteConflictError(f"unbalanced braces in path {template!r}")
            name, kind = match.group(1), match.group(2) or "str"
            if not name.isidentifier():
                raise RouteConflictError(
                    f"path parameter {name!r} in {template!r} is not a valid identifier"
                )
            if name in self.converters:
                raise RouteConflictError(f"path parameter {name!r} repeats in {template!r}")
            converter = CONVERTERS.get(kind)
            if converter is None:
                raise RouteConflictError(
                    f"unknown converter {kind!r} in {template!r}; "
                    f"use one of {', '.join(sorted(CONVERTERS))}"
                )
            pattern += re.escape(literal) + f"(?P<{name}>{converter.regex})"
            key += literal + "{" + kind + "}"
            self.converters[name] = converter.convert
            position = match.end()
        rest = self.template[position:]
        if "{" in rest or "}" in rest:
            raise RouteConflictError(f"unbalanced braces in path {template!r}")
        self.regex = re.compile(pattern + re.escape(rest) + "$")
        self.key = key + rest
        self.param_names = tuple(self.converters)

    def match(self, path: str) -> dict[str, Any] | None:
        """Match ``path``; return the converted parameters, or None."""
        found = self.regex.match(path)
        if found is None:
            return None
        try:
            return {name: convert(found[name]) for name, convert in self.converters.items()}
        except ValueError:  # e.g. an int too large for a float, or a malformed value
            return None

    def __repr__(self) -> str:
        return f"PathTemplate({self.template!r})"


class WebSocketRoute:
    """A WebSocket endpoint: a path template and the handler that serves it.

    ::

        route = WebSocketRoute("/rooms/{room}")

        @route.ws_handler
        async def room(ws: WebSocket, room: str, max_users: int = 10) -> None: ...

    The handler's parameters are planned when it is registered (not per connection):
    a ``WebSocket`` parameter gets the connection, a parameter named like a path
    parameter gets it, others are query parameters, and ``Annotated[T, Header(...)]``,
    ``Query(...)``, ``Cookie(...)`` and ``use(factory)`` say otherwise explicitly.

    Args:
        path: The path template; the leading slash is optional.
        dependencies: Parameters by name and the factories that make them
            (``{"user": get_user}``), as Litestar spells it.
        teardown_timeout: Seconds the generator dependencies' teardowns may take once the
            connection ended (they run even when it ended by cancellation).
        idle_timeout: Close with 1001 when nothing arrived for this long (seconds).
        heartbeat: An application-level heartbeat; see :class:`Heartbeat`.

    Raises:
        RouteConflictError: The template is malformed.
    """

    def __init__(
        self,
        path: str,
        *,
        dependencies: Mapping[str, Any] | None = None,
        teardown_timeout: float = 5.0,
        idle_timeout: float | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.template = PathTemplate(path)
        self.idle_timeout = idle_timeout
        self.heartbeat = heartbeat
        self.path = self.template.template
        self.dependencies = dict(dependencies or {})
        self.teardown_timeout = teardown_timeout
        self.handler: Callable[..., Awaitable[Any]] | None = None
        self._plan: Plan | None = None

    def ws_handler(self, handler: HandlerT) -> HandlerT:
        """Register the route's handler (a decorator); returns it unchanged.

        Raises:
            InjectionError: The handler is not async, or a parameter cannot be injected.
        """
        self._register(handler, sys._getframe(1).f_locals)
        return handler

    def _register(
        self, handler: Callable[..., Awaitable[Any]], namespace: Mapping[str, Any]
    ) -> None:
        plan = plan_callable(
            handler, self.template.param_names, self.dependencies, namespace=namespace
        )
        if plan.kind != "coroutine":
            raise InjectionError(f"the WebSocket handler {handler!r} must be an async function")
        self.handler, self._plan = handler, plan
        self._request_parameters = plan.request_parameters()

    async def serve(self, websocket: WebSocket) -> None:
        """Run the handler for one connection: resolve its parameters, call it, tear down.

        Bad handshake parameters and :class:`Deny` refuse the connection; dependency
        teardowns run however the connection ends.
        """
        plan = self._plan
        if plan is None:
            raise PlaitError(f"no handler was registered for the route {self.path!r}")
        stack = AsyncExitStack()
        resolver = Resolver(websocket, stack)
        try:
            try:
                resolver.read_handshake(self._request_parameters)
                await resolver.call(plan)
            except InvalidParameters as exc:
                await _refuse(
                    websocket, 400, {"detail": "invalid parameters", "errors": exc.errors}
                )
            except Deny as exc:
                await _refuse(websocket, exc.status_code, {"detail": exc.detail}, exc.headers)
        except BaseException as exc:
            await close_shielded(stack, exc, self.teardown_timeout)
            raise
        await close_shielded(stack, None, self.teardown_timeout)

    def connection_options(self, base: ConnectionOptions) -> ConnectionOptions:
        """The engine options for this route's connections: the App's, with the route's
        ``idle_timeout`` and ``heartbeat`` where it sets them."""
        changes: dict[str, Any] = {}
        if self.idle_timeout is not None:
            changes["idle_timeout"] = self.idle_timeout
        if self.heartbeat is not None:
            changes["heartbeat"] = self.heartbeat
        return replace(base, **changes) if changes else base

    def __repr__(self) -> str:
        name = getattr(self.handler, "__qualname__", None)
        return f"WebSocketRoute({self.path!r}, handler={name})"


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
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(DenialResponse(body, status_code, headers))
        else:
            await websocket.close()
    elif state is WebSocketState.CONNECTED:
        await websocket.close(1008, validate_close(1008, str(body.get("detail", ""))))


def websocket(
    path: str,
    *,
    dependencies: Mapping[str, Any] | None = None,
    teardown_timeout: float = 5.0,
) -> Callable[[Callable[..., Awaitable[Any]]], WebSocketRoute]:
    """Make a route from a handler in one line: ``@plait.websocket("/ws")``.

    The decorated name becomes the :class:`WebSocketRoute`, ready for
    ``App(routes=[...])``.
    """

    def decorate(handler: Callable[..., Awaitable[Any]]) -> WebSocketRoute:
        route = WebSocketRoute(path, dependencies=dependencies, teardown_timeout=teardown_timeout)
        route._register(handler, sys._getframe(1).f_locals)
        return route

    return decorate
