"""The Origin check that stops cross-site WebSocket hijacking (CSWSH).

Browsers send cookies with a WebSocket handshake whatever page opened it, and the
same-origin policy does not apply to WebSockets: a page on ``https://evil.example`` can
open a socket to your app with your user's cookies. What the browser does not let that
page forge is the ``Origin`` header. An allow-list of origins on the App or a route
refuses such handshakes with a 403 before the handler runs.

Entries are exact origins (``"https://app.example.com"``, a port where it is not the
scheme's default), wildcard subdomains (``"https://*.example.com"``: any subdomain, not
the bare domain) or :data:`SAME_ORIGIN`, which allows the origin whose host is the one
the client connected to (the ``Host`` header). A handshake without an ``Origin`` header
does not come from a browser (browsers always send it), so it cannot be hijacked: it is
allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

__all__ = ("SAME_ORIGIN", "OriginPolicy")

SAME_ORIGIN: Final = "same-origin"
"""An allowed-origins entry: the origin whose host is the ``Host`` the client connected to."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_MAX_ORIGIN: Final = 2048


def _normalize(origin: str) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of an origin, lowercased, default port dropped; None when
    it is not an origin (``null``, a path, garbage)."""
    if len(origin) > _MAX_ORIGIN:
        return None
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not scheme or not host or parts.path not in ("", "/") or parts.query or parts.username:
        return None
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return scheme, host, port


class OriginPolicy:
    """Which ``Origin`` headers a route accepts; built once, from the allow-list.

    Args:
        origins: Exact origins, ``scheme://*.domain`` wildcards, or :data:`SAME_ORIGIN`.

    Raises:
        ValueError: An entry is not an origin.
    """

    __slots__ = ("_exact", "_same_origin", "_wildcards")

    def __init__(self, origins: Iterable[str]) -> None:
        self._exact: set[tuple[str, str, int | None]] = set()
        self._wildcards: list[tuple[str, str, int | None]] = []
        self._same_origin = False
        for entry in origins:
            if entry == SAME_ORIGIN:
                self._same_origin = True
                continue
            wildcard = "://*." in entry
            parsed = _normalize(entry.replace("://*.", "://", 1) if wildcard else entry)
            if parsed is None:
                raise ValueError(
                    f"{entry!r} is not an origin: use 'https://host[:port]', "
                    f"'https://*.domain' or {SAME_ORIGIN!r}"
                )
            (self._wildcards.append(parsed) if wildcard else self._exact.add(parsed))

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a handshake with this ``Origin`` (and ``Host``) header may proceed."""
        if origin is None:
            return True  # not a browser: nothing to hijack
        parsed = _normalize(origin)
        if parsed is None:
            return False
        if parsed in self._exact:
            return True
        scheme, name, port = parsed
        for w_scheme, domain, w_port in self._wildcards:
            if scheme == w_scheme and port == w_port and name.endswith("." + domain):
                return True
        if self._same_origin and host:
            target = _normalize(f"{scheme}://{host}")
            return target is not None and target[1:] == parsed[1:]
        return False
