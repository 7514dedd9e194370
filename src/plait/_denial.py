"""A small HTTP response for refusing a WebSocket handshake."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._codec import encode_json
from ._datastructures import encode_headers
from ._types import Receive, Scope, Send

__all__ = ("DenialResponse",)


class DenialResponse:
    """An HTTP response to send instead of accepting a handshake.

    Pass it to :meth:`WebSocket.send_denial_response`. ``content`` that is ``bytes`` or
    ``str`` is sent as it is (``text/plain`` for ``str``); anything else is encoded as
    JSON (``application/json``).

    Args:
        content: The response body.
        status_code: The HTTP status, 403 by default.
        headers: Extra headers, as a mapping or (name, value) pairs.
        media_type: The ``content-type``, when the default does not fit.
    """

    def __init__(
        self,
        content: Any = b"",
        status_code: int = 403,
        headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] | None = None,
        media_type: str | None = None,
    ) -> None:
        if isinstance(content, bytes):
            body, default_type = content, "application/octet-stream"
        elif isinstance(content, str):
            body, default_type = content.encode(), "text/plain; charset=utf-8"
        else:
            body, default_type = encode_json(content), "application/json"
        self.status_code = status_code
        self.body = body
        raw = encode_headers(headers)
        names = {name for name, _ in raw}
        if b"content-type" not in names and body:
            raw.append((b"content-type", (media_type or default_type).encode("latin-1")))
        raw.append((b"content-length", str(len(body)).encode()))
        self.headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the response through an ASGI ``send`` (an ASGI HTTP app)."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.headers}
        )
        await send({"type": "http.response.body", "body": self.body})

    def __repr__(self) -> str:
        return f"DenialResponse(status_code={self.status_code}, body={self.body[:40]!r})"
