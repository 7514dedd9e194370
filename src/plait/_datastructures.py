"""Read-only views of the handshake: URL, headers, query parameters, client, state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any, NamedTuple
from urllib.parse import SplitResult, parse_qsl, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from ._types import Scope

__all__ = ("URL", "Address", "State", "headers_from_scope", "query_params_from_scope")

_DEFAULT_PORTS = {"ws": 80, "http": 80, "wss": 443, "https": 443}


class URL(str):
    """The connection's URL: a ``str`` that also exposes its parts.

    ``URL("ws://example.com:8000/chat?room=1").port == 8000``.
    """

    __slots__ = ("_parts",)

    _parts: SplitResult

    def __new__(cls, url: str) -> URL:
        self = super().__new__(cls, url)
        self._parts = urlsplit(url)
        return self

    @classmethod
    def from_scope(cls, scope: Scope) -> URL:
        """Build the URL of an ASGI connection scope (host from the Host header)."""
        scheme = scope.get("scheme", "ws")
        path = scope.get("root_path", "") + scope.get("path", "/")
        query = scope.get("query_string", b"")
        host = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")
                break
        if host is None:
            server = scope.get("server")
            if server is None:
                host = ""
            else:
                host_name, port = server[0], server[1]
                host = host_name
                if port is not None and _DEFAULT_PORTS.get(scheme) != port:
                    host = f"{host_name}:{port}"
        url = f"{scheme}://{host}{path}"
        if query:
            url += "?" + query.decode("latin-1")
        return cls(url)

    @property
    def scheme(self) -> str:
        """The scheme: ``ws`` or ``wss`` for a WebSocket."""
        return self._parts.scheme

    @property
    def netloc(self) -> str:
        """``host[:port]`` as written in the URL."""
        return self._parts.netloc

    @property
    def hostname(self) -> str | None:
        """The host name, lower-cased, without the port."""
        return self._parts.hostname

    @property
    def port(self) -> int | None:
        """The explicit port, or ``None`` when the URL gives none."""
        return self._parts.port

    @property
    def path(self) -> str:
        """The path, starting with ``/``."""
        return self._parts.path

    @property
    def query(self) -> str:
        """The raw query string, without the ``?``."""
        return self._parts.query

    @property
    def fragment(self) -> str:
        """The fragment, without the ``#`` (always empty for a request URL)."""
        return self._parts.fragment

    @property
    def is_secure(self) -> bool:
        """True for ``wss`` and ``https``."""
        return self.scheme in ("wss", "https")


class Address(NamedTuple):
    """A network peer: host and port."""

    host: str
    """The peer's IP address or host name."""
    port: int
    """The peer's port."""


class State:
    """Attribute access over a dictionary, for per-connection (or lifespan) state.

    ``websocket.state.user = user`` stores into the scope's ``"state"`` dictionary.
    """

    __slots__ = ("_state",)

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_state", {} if state is None else state)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._state[name]
        except KeyError:
            raise AttributeError(f"state has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._state[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self._state[name]
        except KeyError:
            raise AttributeError(f"state has no attribute {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._state

    def __repr__(self) -> str:
        return f"State({self._state!r})"


def headers_from_scope(scope: Scope) -> CIMultiDictProxy[str]:
    """The handshake's headers: case-insensitive and multi-valued, decoded as latin-1."""
    headers: CIMultiDict[str] = CIMultiDict(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope.get("headers", ())
    )
    return CIMultiDictProxy(headers)


def query_params_from_scope(scope: Scope) -> MultiDictProxy[str]:
    """The query parameters, multi-valued, in order, blank values kept."""
    query = scope.get("query_string", b"").decode("latin-1")
    return MultiDictProxy(MultiDict(parse_qsl(query, keep_blank_values=True)))


def cookies_from_headers(values: Iterable[str]) -> dict[str, str]:
    """Parse ``Cookie`` header values into a dictionary; malformed pairs are skipped."""
    cookies: dict[str, str] = {}
    for value in values:
        for chunk in value.split(";"):
            name, sep, val = chunk.partition("=")
            name = name.strip()
            if not sep or not name:
                continue
            try:
                parsed = SimpleCookie(f"{name}={val.strip()}")
            except CookieError:
                cookies[name] = val.strip()
                continue
            morsel = parsed.get(name)
            cookies[name] = morsel.value if morsel is not None else val.strip()
    return cookies


def encode_headers(
    headers: Mapping[str, str] | Iterable[tuple[Any, Any]] | None,
) -> list[tuple[bytes, bytes]]:
    """Turn user-supplied headers into ASGI's list of lower-cased byte pairs."""
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[bytes, bytes]] = []
    for name, value in items:
        raw_name = name if isinstance(name, bytes) else str(name).encode("latin-1")
        raw_value = value if isinstance(value, bytes) else str(value).encode("latin-1")
        out.append((raw_name.lower(), raw_value))
    return out
