"""What an App serves over HTTP beside its fallback: fixed documents such as the AsyncAPI
document, the page that renders it and the component it loads, and the browser client
``plait.js``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib.resources import files
from typing import Final

from ._types import Receive, Scope, Send

__all__ = ("IMMUTABLE", "Document", "client_script")

_METHODS: Final = ("GET", "HEAD")
IMMUTABLE: Final = "public, max-age=31536000, immutable"
"""Keep it for a year without asking again: for a path that names its version."""


def client_script() -> bytes:
    """The browser client, ``plait.js``, as shipped in the package."""
    return files("plait").joinpath("static", "plait.js").read_bytes()


class Document:
    """One document served at one path: made on the first request, then kept.

    It answers ``GET`` and ``HEAD`` (405 otherwise) with an ``ETag``, and 304 to a
    client that already has it; ``cache-control: no-cache`` (the default) makes browsers
    ask again, so a new deployment is picked up at once.

    Args:
        make: Returns the body (called once, on the first request).
        media_type: The ``content-type``.
        cache_control: The ``cache-control``: ``IMMUTABLE`` for a document whose path
            changes whenever its content does.
    """

    __slots__ = ("_body", "_etag", "_make", "cache_control", "media_type")

    def __init__(
        self, make: Callable[[], bytes], media_type: str, *, cache_control: str = "no-cache"
    ) -> None:
        self._make = make
        self.media_type = media_type
        self.cache_control = cache_control
        self._body: bytes | None = None
        self._etag = b""

    def body(self) -> bytes:
        """The document (made now if it was not yet)."""
        if self._body is None:
            self._body = self._make()
            self._etag = b'"' + hashlib.sha256(self._body).hexdigest()[:32].encode() + b'"'
        return self._body

    def reset(self) -> None:
        """Make the document again on the next request (the routes changed)."""
        self._body = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the document (an ASGI HTTP app)."""
        method = scope.get("method", "GET")
        if method not in _METHODS:
            headers = [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 405, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        body = self.body()
        headers = [(b"etag", self._etag), (b"cache-control", self.cache_control.encode())]
        asked = [value for name, value in scope.get("headers", ()) if name == b"if-none-match"]
        if any(self._etag in value or value.strip() == b"*" for value in asked):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers += [
            (b"content-type", self.media_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
