"""How a connection ends: the close a handler's end calls for, and the denial before accept.

Pure decisions, no I/O: the engine sends what these return.
"""

from __future__ import annotations

import logging

from ._exceptions import MessageDecodeError, MessageTypeError, PlaitError, first_error
from ._types import Message, Scope
from ._websocket import validate_close

__all__ = ("close_for", "denial")

logger = logging.getLogger("plait._connection")


def close_for(exc: BaseException, path: str) -> tuple[int, str]:
    """Choose the close for a handler that raised, and log what deserves it.

    The client's faults (1007, 1003) are logged at INFO, plait's own closing errors
    (a too slow subscriber: 1013) at WARNING, anything else at ERROR with its
    traceback, closing with 1011 and a reason that says nothing of the exception.
    """
    error = first_error(exc)
    if error is None:
        return (1000, "")
    if isinstance(error, MessageDecodeError):
        logger.info("closing %s with 1007: the client sent %s", path, error)
        return (1007, validate_close(1007, str(error)))
    if isinstance(error, MessageTypeError):
        logger.info("closing %s with 1003: %s", path, error)
        return (1003, validate_close(1003, str(error)))
    code = getattr(error, "close_code", None)
    if isinstance(error, PlaitError) and isinstance(code, int):
        logger.warning("closing %s with %d: %s", path, code, error)
        return (code, validate_close(code, getattr(error, "close_reason", "") or ""))
    logger.error("handler for %s failed", path, exc_info=error)
    return (1011, "internal error")


def denial(scope: Scope, *, internal_error: bool) -> tuple[int, list[Message]]:
    """The messages that end a connection whose handler never accepted it.

    Returns:
        The close code to record, then the messages: an HTTP 500 for an internal error
        where the server takes denial responses, else a close before accept (403).
    """
    extensions = scope.get("extensions") or {}
    if internal_error and "websocket.http.response" in extensions:
        start: Message = {
            "type": "websocket.http.response.start",
            "status": 500,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"21")],
        }
        body: Message = {"type": "websocket.http.response.body", "body": b"Internal Server Error"}
        return (1011, [start, body])
    return (1000, [{"type": "websocket.close", "code": 1000, "reason": ""}])
