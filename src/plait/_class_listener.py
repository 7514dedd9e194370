"""Class-based listeners: one instance per connection, with hooks."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from ._connection import Heartbeat
from ._listeners import InvalidMessagePolicy
from ._routing import WebSocketRoute
from ._websocket import WebSocket

__all__ = ("Listener",)


class Listener:
    """A class-based listener: subclass it, set ``path``, override the hooks.

    ::

        class Chat(plait.Listener):
            path = "/chat"

            async def on_accept(self, socket: WebSocket) -> None:
                self.name = socket.query_params["name"]

            async def on_receive(self, data: str, socket: WebSocket) -> str:
                return f"{self.name}: {data}"

        app = plait.App(routes=[Chat])

    Each connection gets its own instance, so ``self`` holds per-connection state.
    ``on_receive``'s ``data`` is decoded to its annotation and its return value is sent
    back, as for :func:`plait.listener` (a plain ``def`` runs in a worker thread). Every
    hook's parameters are injected as a function listener's are: the ``WebSocket``
    (``socket``), path and query parameters, headers, cookies and dependencies, as in
    Litestar (``async def on_accept(self, socket: WebSocket, room: str)``).
    ``on_disconnect`` is always called once the connection was accepted, also when it
    ended by cancellation (shielded, within ``teardown_timeout``), before the
    dependencies' teardowns.

    The class attributes below configure the route.
    """

    path: ClassVar[str]
    """The path template."""
    mode: ClassVar[Literal["text", "binary"] | None] = None
    """``"text"`` or ``"binary"`` sends every reply in that kind of frame; ``None`` goes
    by the reply's type (see :meth:`plait.WebSocketRoute.listener`)."""
    on_invalid: ClassVar[InvalidMessagePolicy] = "close"
    """What to do with a message that does not decode."""
    concurrency: ClassVar[int] = 1
    """Messages handled at once."""
    dependencies: ClassVar[Mapping[str, Any]] = {}
    """Parameters by name and the factories that make them."""
    subprotocols: ClassVar[Sequence[str]] = ()
    """The subprotocols this listener speaks; the first the client offers is chosen."""
    idle_timeout: ClassVar[float | None] = None
    """Close with 1001 when nothing arrived for this long."""
    heartbeat: ClassVar[Heartbeat | None] = None
    """An application-level heartbeat."""
    teardown_timeout: ClassVar[float] = 5.0
    """Seconds ``on_disconnect`` and dependency teardowns may take."""

    _namespace: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Names visible where the class was defined, for string annotations.
        cls._namespace = dict(sys._getframe(1).f_locals)

    async def on_accept(self, socket: WebSocket) -> None:
        """Called once the connection is accepted; parameters are injected."""

    async def on_receive(self, data: Any, socket: WebSocket) -> Any:
        """Called with each message; the return value is sent back (``None``: nothing)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define on_receive")

    async def on_disconnect(self, socket: WebSocket) -> None:
        """Called when the connection ends, however it ends; parameters are injected."""

    @classmethod
    def as_route(cls) -> WebSocketRoute:
        """The route that serves this listener (``App(routes=[Chat])`` calls it)."""
        if not isinstance(getattr(cls, "path", None), str):
            raise TypeError(f"{cls.__qualname__} needs a 'path' class attribute")
        route = WebSocketRoute(
            cls.path,
            dependencies=cls.dependencies,
            teardown_timeout=cls.teardown_timeout,
            idle_timeout=cls.idle_timeout,
            heartbeat=cls.heartbeat,
            subprotocols=cls.subprotocols,
        )
        # Hooks left as they are cost nothing: only the overridden ones are called.
        hooks = {
            name: getattr(cls, name)
            for name in ("on_accept", "on_disconnect")
            if getattr(cls, name) is not getattr(Listener, name)
        }
        route.add_listener(
            cls.on_receive,
            cls._namespace,
            cls.mode,
            cls.on_invalid,
            cls.concurrency,
            listener_class=cls,
            hooks=hooks,
        )
        return route
