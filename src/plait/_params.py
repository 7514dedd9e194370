"""What a handler parameter asks for: markers used inside ``Annotated[...]``.

``Annotated[str, Header("x-token")]`` reads a header, ``Annotated[int, Query(alias="n")]``
a query parameter, ``Annotated[str, Cookie("session")]`` a cookie,
``Annotated[User, use(get_user)]`` a dependency. A plain parameter is a path parameter
when a path parameter has its name, else a query parameter.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeAlias, TypeVar

from ._exceptions import PlaitError

__all__ = (
    "AsyncResource",
    "Cookie",
    "Deny",
    "Dependency",
    "Header",
    "Ignore",
    "Path",
    "Query",
    "Source",
    "use",
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a parameter's value comes from in the handshake."""

    kind: Literal["path", "query", "header", "cookie"]
    """The part of the handshake."""
    alias: str | None = None
    """The name to look up there, when it is not the parameter's name."""


def Query(alias: str | None = None) -> Any:
    """Read the parameter from the query string (``?name=value``).

    Args:
        alias: The query parameter's name, when it differs from the handler's.
    """
    return Source("query", alias)


def Header(alias: str | None = None) -> Any:
    """Read the parameter from a handshake header (case-insensitive).

    Args:
        alias: The header's name; by default the parameter's name with ``_`` as ``-``
            (``x_token`` reads ``x-token``).
    """
    return Source("header", alias)


def Cookie(alias: str | None = None) -> Any:
    """Read the parameter from a cookie sent with the handshake.

    Args:
        alias: The cookie's name, when it differs from the parameter's.
    """
    return Source("cookie", alias)


def Path(alias: str | None = None) -> Any:
    """Read the parameter from the path template (``/rooms/{room}``) explicitly.

    Args:
        alias: The path parameter's name, when it differs from the handler's.
    """
    return Source("path", alias)


@dataclass(frozen=True, slots=True)
class Dependency:
    """A value made by a factory for the connection; see :func:`use`."""

    factory: Callable[..., Any]
    """A sync or async function, or a sync or async generator function."""
    reuse: bool = True
    """Share one value per connection with everything else that asks for it."""


def use(factory: Callable[..., Any], reuse: bool = True) -> Any:
    """Inject the value ``factory`` makes: ``Annotated[Db, use(open_db)]``.

    The factory's own parameters are injected like a handler's (path, query, headers,
    cookies, the WebSocket, other dependencies). A generator factory yields its value and
    its code after the ``yield`` runs when the connection ends, in reverse order of
    setup: also when the peer left or the server stopped (cancellation is how WebSocket
    connections end, so it is not thrown into the generator); an exception from the
    handler is thrown in at the ``yield``, as ``contextlib`` does.

    Args:
        factory: A sync or async function, or a sync or async generator function.
        reuse: One value per connection for everything that asks for this factory
            (default), or a fresh call for each.
    """
    return Dependency(factory, reuse)


class _IgnoreMarker:
    """Marks an annotation as not being a parameter source (lihil's ``Ignore``)."""

    def __repr__(self) -> str:
        return "Ignore"


Ignore: TypeAlias = Annotated[T, _IgnoreMarker()]
"""``Ignore[T]``: ``T``, with no special meaning for injection (lihil compatibility)."""

AsyncResource: TypeAlias = AsyncGenerator[T, None]
"""``AsyncResource[T]``: what an async generator factory that yields a ``T`` returns."""


class Deny(PlaitError):
    """Raise from a dependency or a handler to refuse the client.

    Before ``accept()`` the client gets an HTTP response with ``status_code`` and the
    JSON body ``{"detail": detail}`` (a close before accept where the server lacks the
    denial extension). After it (from a handler, a listener or a stream) the connection
    closes with 1008 (policy violation) and ``detail`` as the reason. It is the client's
    error, so it is logged at INFO, never as a server error.

    Args:
        status_code: The HTTP status, for example 401 or 403.
        detail: What to tell the client; anything JSON can encode.
        headers: Extra response headers.
    """

    def __init__(
        self,
        status_code: int = 403,
        detail: Any = "Forbidden",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers
