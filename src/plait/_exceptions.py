"""plait's exceptions: one base class, and the errors a handler can meet.

Errors of the libraries plait builds on (msgspec, the ASGI server, the event loop) are
converted at the boundary into these, so user code only ever catches plait's own types.
"""

from __future__ import annotations

from anyio import get_cancelled_exc_class

__all__ = (
    "MessageDecodeError",
    "MessageTypeError",
    "PlaitError",
    "WebSocketClosed",
    "WebSocketDisconnect",
    "WebSocketStateError",
    "first_error",
)


class PlaitError(Exception):
    """Base class of every exception plait raises on purpose."""


class WebSocketDisconnect(PlaitError):
    """The connection is over: the peer went away or the connection was closed.

    Raised by a pending or later ``receive_*`` once the peer has disconnected, and by any
    ``send_*`` or ``receive_*`` attempted after the connection closed.

    Args:
        code: The WebSocket close code (RFC 6455, section 7.4).
        reason: The close reason, possibly empty.
    """

    def __init__(self, code: int = 1000, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason or ""
        super().__init__(code, self.reason)

    def __str__(self) -> str:
        if self.reason:
            return f"WebSocket disconnected with code {self.code}: {self.reason}"
        return f"WebSocket disconnected with code {self.code}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"


class WebSocketClosed(WebSocketDisconnect):
    """A send or receive was attempted on a connection that is already closed.

    A subclass of :class:`WebSocketDisconnect`, so code that handles a gone peer handles
    this too; its message says who closed the connection and with which code.

    Args:
        code: The close code the connection ended with.
        reason: The close reason, possibly empty.
        detail: What was attempted and who closed the connection.
    """

    def __init__(self, code: int, reason: str | None, detail: str) -> None:
        super().__init__(code, reason)
        self.detail = detail
        self.args = (code, self.reason, detail)  # what pickling calls __init__ with

    def __str__(self) -> str:
        return self.detail


class WebSocketStateError(PlaitError, RuntimeError):
    """An operation that the connection's current state does not allow.

    For example receiving before ``accept()``, accepting twice, or sending a denial
    response after the handshake completed. The message names the state.
    """


class MessageTypeError(PlaitError, TypeError):
    """A message of the wrong kind arrived: text was asked for and bytes came, or the
    other way round."""


class MessageDecodeError(PlaitError, ValueError):
    """A received message could not be decoded (for example invalid JSON).

    When a handler lets it escape, the engine closes the connection with 1007 (invalid
    payload data) and logs it as the client's error, not the server's.
    """


def first_error(exc: BaseException) -> BaseException | None:
    """The error that ended something, looking through exception groups.

    A disconnect (the peer left, or the connection was closed) and a cancellation are
    how connections end, not errors: the result is None when there is nothing else.
    """
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_error(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, WebSocketDisconnect | get_cancelled_exc_class()):
        return None
    return exc


def missing_extra(module: str, extra: str, needed_for: str) -> ImportError:
    """The error for an optional dependency that is not installed, naming the extra."""
    return ImportError(
        f'{needed_for} needs {module}, which is not installed: pip install "plait[{extra}]"'
    )
