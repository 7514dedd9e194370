"""The ASGI WebSocket state machine: who may send or receive what, and when.

Everything that affects the connection's state lives here, and nothing here does I/O
(the approach of h11's ``_state.py``). Both sides of the connection are tracked:

* the application side moves on what the application *sends*
  (``websocket.accept``, ``websocket.send``, ``websocket.close``, denial responses);
* the peer side moves on what the server *delivers* (``websocket.connect``,
  ``websocket.receive``, ``websocket.disconnect``).

The tables below are the whole protocol; the methods only look them up and explain a
refusal in words that name the state.
"""

from __future__ import annotations

import enum
from typing import Final

from ._exceptions import WebSocketClosed, WebSocketStateError

__all__ = ("ConnectionState", "WebSocketState", "validate_close")

# RFC 6455 section 7.4: codes an endpoint may send in a Close frame.
_SENDABLE_CODES: Final = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)
_MAX_REASON_BYTES: Final = 123


def validate_close(code: int, reason: str | None) -> str:
    """Check a close code and cut the reason to the 123 bytes RFC 6455 allows.

    Returns:
        The reason, cut on a character boundary to fit.

    Raises:
        ValueError: ``code`` may not be sent in a Close frame.
    """
    if not (code in _SENDABLE_CODES or 3000 <= code <= 4999):
        raise ValueError(
            f"invalid close code {code}: use 1000-1003, 1007-1014 or 3000-4999 (RFC 6455)"
        )
    if not reason:
        return ""
    raw = reason.encode()
    if len(raw) <= _MAX_REASON_BYTES:
        return reason
    return raw[:_MAX_REASON_BYTES].decode(errors="ignore")


class WebSocketState(enum.Enum):
    """The state of one side of a WebSocket connection."""

    CONNECTING = "connecting"
    """The handshake has not finished."""
    CONNECTED = "connected"
    """The handshake was accepted; messages flow."""
    RESPONSE = "response"
    """The application is sending an HTTP denial response instead of accepting."""
    DISCONNECTED = "disconnected"
    """This side is finished: closed, denied, or gone."""


_S = WebSocketState

# (application state, message type) -> next application state.
_APP_SEND: Final[dict[tuple[WebSocketState, str], WebSocketState]] = {
    (_S.CONNECTING, "websocket.accept"): _S.CONNECTED,
    (_S.CONNECTING, "websocket.close"): _S.DISCONNECTED,
    (_S.CONNECTING, "websocket.http.response.start"): _S.RESPONSE,
    (_S.RESPONSE, "websocket.http.response.body"): _S.RESPONSE,
    (_S.RESPONSE, "websocket.http.response.body.final"): _S.DISCONNECTED,
    (_S.CONNECTED, "websocket.send"): _S.CONNECTED,
    (_S.CONNECTED, "websocket.close"): _S.DISCONNECTED,
}

# (peer state, message type) -> next peer state.
_PEER_RECEIVE: Final[dict[tuple[WebSocketState, str], WebSocketState]] = {
    (_S.CONNECTING, "websocket.connect"): _S.CONNECTED,
    (_S.CONNECTED, "websocket.receive"): _S.CONNECTED,
    # The engine reads ahead: a message read before the disconnect is still data, and
    # a handshake whose client left right after it is still the handshake.
    (_S.DISCONNECTED, "websocket.receive"): _S.DISCONNECTED,
    (_S.DISCONNECTED, "websocket.connect"): _S.DISCONNECTED,
    (_S.CONNECTING, "websocket.disconnect"): _S.DISCONNECTED,
    (_S.CONNECTED, "websocket.disconnect"): _S.DISCONNECTED,
}

_ABNORMAL_CLOSURE: Final = 1006


class ConnectionState:
    """Both sides of one connection, and the close code once it is over.

    Attributes:
        application: The application side's state.
        peer: The peer side's state.
        close_code: The code the connection closed with, once closed.
        close_reason: The reason the connection closed with, once closed.
        closed_by: ``"application"``, ``"peer"``, or ``None`` while open.
        accepted: True once the application sent ``websocket.accept``.
    """

    __slots__ = ("accepted", "application", "close_code", "close_reason", "closed_by", "peer")

    def __init__(self) -> None:
        self.accepted = False
        self.application = _S.CONNECTING
        self.peer = _S.CONNECTING
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by: str | None = None

    @property
    def is_open(self) -> bool:
        """True while both sides are connected (messages can flow both ways)."""
        return self.application is _S.CONNECTED and self.peer is _S.CONNECTED

    def _record_close(self, code: int, reason: str, by: str) -> None:
        if self.closed_by is None:
            self.close_code = code
            self.close_reason = reason
            self.closed_by = by

    def closed_error(self, attempted: str) -> WebSocketClosed:
        """Build the error for an operation attempted after the connection ended."""
        code = self.close_code if self.close_code is not None else _ABNORMAL_CLOSURE
        who = "the peer" if self.closed_by == "peer" else "the application"
        if self.closed_by == "application" and self.application is _S.DISCONNECTED:
            detail = f"cannot {attempted}: the application already closed the WebSocket"
        else:
            detail = f"cannot {attempted}: the WebSocket was closed by {who}"
        return WebSocketClosed(code, self.close_reason, f"{detail} (code {code})")

    # -- what the application sends -------------------------------------------------

    def check_send(self, message_type: str, *, more_body: bool = False) -> WebSocketState:
        """Validate a message the application wants to send; return the state it leads to.

        The state is not changed: call :meth:`did_send` once the message is on its way.

        Raises:
            WebSocketClosed: The connection is already over.
            WebSocketStateError: The message is not allowed in the current state.
        """
        key = message_type
        if message_type == "websocket.http.response.body" and not more_body:
            key = "websocket.http.response.body.final"
        nxt = _APP_SEND.get((self.application, key))
        if nxt is None:
            if self.application is _S.DISCONNECTED or (
                self.peer is _S.DISCONNECTED and message_type != "websocket.close"
            ):
                raise self.closed_error(f"send {message_type!r}")
            raise WebSocketStateError(self._explain_send(message_type))
        if self.peer is _S.DISCONNECTED and message_type in ("websocket.send", "websocket.accept"):
            raise self.closed_error(f"send {message_type!r}")
        return nxt

    def did_send(
        self, message_type: str, *, more_body: bool = False, code: int = 1000, reason: str = ""
    ) -> None:
        """Record that the application sent a message validated by :meth:`check_send`.

        The next state comes from the table; ``code`` and ``reason`` are recorded when
        the message ends the application's side (a close, a denial's last body).
        """
        key = message_type
        if message_type == "websocket.http.response.body" and not more_body:
            key = "websocket.http.response.body.final"
        nxt = _APP_SEND[self.application, key]
        if message_type == "websocket.accept":
            self.accepted = True
        self.application = nxt
        if nxt is _S.DISCONNECTED:
            self._record_close(code, reason, "application")

    def application_closed(self, code: int, reason: str) -> None:
        """Record a close the engine sends on the application's behalf (a limit, a
        timeout, a slow client, a shutdown). Nothing changes once it is closed."""
        if self.application is not _S.DISCONNECTED:
            self.application = _S.DISCONNECTED
            self._record_close(code, reason, "application")

    def _explain_send(self, message_type: str) -> str:
        state = self.application
        if state is _S.CONNECTING:
            if message_type == "websocket.send":
                return "cannot send a message before accept(): the handshake is not finished"
            return f"cannot send {message_type!r} before accept()"
        if state is _S.CONNECTED:
            if message_type == "websocket.accept":
                return "cannot accept(): the WebSocket is already accepted"
            return f"cannot send {message_type!r} after accept(): the handshake is over"
        if state is _S.RESPONSE:
            return f"cannot send {message_type!r} while a denial response is being sent"
        return f"cannot send {message_type!r} in state {state.name}"  # pragma: no cover

    # -- what the application receives ----------------------------------------------

    def check_receive(self, *, raw: bool) -> None:
        """Validate that the application may wait for a message now.

        Args:
            raw: True for the raw ``receive()``, which may also read the
                ``websocket.connect`` message before ``accept()``.

        Raises:
            WebSocketClosed: The connection is over (the peer left, or the application
                closed it): a :class:`WebSocketDisconnect` with the close code.
            WebSocketStateError: The handshake is not finished.
        """
        if self.peer is _S.DISCONNECTED:
            raise self.closed_error("receive")
        if self.application is _S.DISCONNECTED:
            raise self.closed_error("receive")
        if self.application is not _S.CONNECTED and not (raw and self.peer is _S.CONNECTING):
            raise WebSocketStateError(
                "cannot receive before accept(): the WebSocket is in state "
                f"{self.application.name}; call accept() first"
            )

    def did_receive(self, message_type: str, code: int = 1000, reason: str = "") -> None:
        """Record a message the server delivered.

        Raises:
            WebSocketStateError: The server delivered a message the protocol does not
                allow now (a server bug).
        """
        if message_type == "websocket.disconnect":
            self.peer_disconnected(code, reason)
            return
        nxt = _PEER_RECEIVE.get((self.peer, message_type))
        if nxt is None:
            raise WebSocketStateError(
                f"the server delivered {message_type!r} while the peer is {self.peer.name}"
            )
        self.peer = nxt

    def peer_closing(self, code: int, reason: str) -> None:
        """Record the peer's close code while what it sent before may still be read:
        the peer's side stays as it is until the disconnect is delivered. The first
        close recorded is kept."""
        self._record_close(code, reason, "peer")

    def peer_disconnected(self, code: int, reason: str) -> None:
        """Record that the peer is gone. Idempotent: the first close code is kept."""
        self.peer = _S.DISCONNECTED
        self._record_close(code, reason, "peer")
