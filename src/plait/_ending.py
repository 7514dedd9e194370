"""How a connection ends: the close a handler's end calls for, the denial before
accept, and the last words once the connection's tasks are gone."""

from __future__ import annotations

import logging
from typing import Final

import anyio
import anyio.lowlevel
import sniffio
from anyio import ClosedResourceError, get_cancelled_exc_class

from ._backend import YIELD_EVERY
from ._exceptions import MessageDecodeError, MessageTypeError, PlaitError, first_error
from ._outbound import Outbound
from ._state import ConnectionState, WebSocketState, validate_close
from ._types import Message, Receive, Scope, Send

__all__ = (
    "await_disconnect",
    "close_and_drain",
    "close_for",
    "close_for_end",
    "denial",
    "drain_abandoned",
    "send_goodbye",
)

_GOODBYE_TIMEOUT: Final = 1.0
_ABANDONED_QUIET: Final = 0.05  # nothing held: the usual case, over at once
_ABANDONED_IDLE: Final = 0.5  # between messages of a backlog, on a loaded server
_ABANDONED_LIMIT: Final = 30.0

logger = logging.getLogger("plait._connection")


def close_for(exc: BaseException, path: str) -> tuple[int, str]:
    """Choose the close for a handler that raised, and log what deserves it.

    The client's faults (1007, 1003, and plait's errors that close with 1008) are
    logged at INFO, plait's own closing errors (a too slow subscriber: 1013) at
    WARNING, anything else at ERROR with its traceback, closing with 1011 and a reason
    that says nothing of the exception.
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
        # 1008: the client's fault (a malformed resume id, an invalid presence value),
        # as 1007 is; the others (1013) are the server's to look into.
        log = logger.info if code == 1008 else logger.warning
        log("closing %s with %d: %s", path, code, error)
        return (code, validate_close(code, getattr(error, "close_reason", "") or ""))
    if _asyncio_call_under_trio(error):
        # The traceback alone ("no running event loop") does not say what to change.
        logger.error(
            "handler for %s failed: an asyncio-only call in a handler under trio: use anyio "
            "(anyio.sleep, anyio.create_task_group, ...) so the handler runs on both loops",
            path,
            exc_info=error,
        )
    else:
        logger.error("handler for %s failed", path, exc_info=error)
    return (1011, "internal error")


def _asyncio_call_under_trio(error: BaseException) -> bool:
    """Whether ``error`` is what an asyncio-only call raises when trio runs it.

    asyncio's functions raise ``RuntimeError("no running event loop")`` off an asyncio
    loop, sniffio's ``AsyncLibraryNotFoundError`` is the same finding, and trio rejects
    an asyncio future awaited directly (``asyncio.sleep(0)``) with a ``TypeError``.
    """
    try:
        if sniffio.current_async_library() != "trio":
            return False
    except sniffio.AsyncLibraryNotFoundError:
        return False
    if isinstance(error, sniffio.AsyncLibraryNotFoundError):
        return True
    if type(error) is RuntimeError:
        return str(error) == "no running event loop"
    return isinstance(error, TypeError) and "unrecognized yield message" in str(error)


def close_for_end(exc: BaseException, path: str) -> tuple[int, str]:
    """:func:`close_for` a handler's end: an error, or a group of them.

    trio can report a cancellation together with errors raised as the connection ended
    (a task's send after the peer left): the errors are judged as usual and the
    cancellations raised again, to go back to their scope.
    """
    if not isinstance(exc, BaseExceptionGroup) or isinstance(exc, Exception):
        return close_for(exc, path)
    cancelled, rest = exc.split(get_cancelled_exc_class())
    errors, others = rest.split(Exception) if rest is not None else (None, None)
    if others is not None:
        raise exc  # KeyboardInterrupt, SystemExit: not ours to judge
    final = close_for(errors, path) if errors is not None else (1000, "")
    if cancelled is not None:
        raise cancelled from None
    return final


async def close_and_drain(
    state: ConnectionState,
    outbound: Outbound,
    scope: Scope,
    final: tuple[int, str],
    drain_timeout: float,
) -> None:
    """Queue the close the handler's end calls for (a denial before accept), then let
    what is queued leave, for at most ``drain_timeout`` seconds."""
    code, reason = final
    try:
        if state.application is WebSocketState.CONNECTED:
            state.did_send("websocket.close", code=code, reason=reason)
            outbound.finish({"type": "websocket.close", "code": code, "reason": reason})
        elif state.application is WebSocketState.CONNECTING:
            code, messages = denial(scope, internal_error=code == 1011)
            state.application_closed(code, "")
            for message in messages[:-1]:
                outbound.queue.force_nowait(message)
            outbound.finish(messages[-1])
        else:
            outbound.close()
    except ClosedResourceError:
        pass  # closed already (an abort queued its close)
    if not await outbound.drain(drain_timeout):
        logger.warning(
            "%s: queued messages not delivered within %.1f s; dropping them",
            scope.get("path", ""),
            drain_timeout,
        )


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


async def send_goodbye(send: Send, code: int, reason: str) -> bool:
    """Send a close after the connection's tasks are gone (bounded, errors logged).

    Used when the server cancels the connection (1001), and for a client too slow to
    read (1008), whose close the writer could not deliver.

    Returns:
        True if the close left.
    """
    with anyio.move_on_after(_GOODBYE_TIMEOUT):
        try:
            await send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            logger.debug("could not send the close frame", exc_info=True)
            return False
        return True
    return False


async def await_disconnect(receive: Receive) -> bool:
    """After closing: read until the server reports the peer gone (bounded).

    A server whose queue to the application is full (hypercorn's is bounded, and a
    closed connection's reader has stopped) waits for the application to take a
    message before it can see the peer's answer to the close and let the socket go;
    whatever comes now is read and dropped.

    Returns:
        True if the peer was lost without a close (1006): see :func:`drain_abandoned`.
    """
    with anyio.move_on_after(_GOODBYE_TIMEOUT):
        try:
            count = 0
            while (message := await receive())["type"] != "websocket.disconnect":
                count += 1
                if not count % YIELD_EVERY:
                    await anyio.lowlevel.checkpoint()  # a server that never waits: bounded
        except Exception:
            logger.debug("receive failed after the close", exc_info=True)
            return False
        return bool(message.get("code") == 1006)
    return False


async def drain_abandoned(receive: Receive, *, heard: bool) -> None:
    """After a connection lost without a close (1006): take what the server still holds.

    hypercorn's trio worker, when a send to a reset socket fails, queues the disconnect
    ahead of the messages its reader task still puts into the application's bounded
    queue, and never closes that queue when the application returns: an application
    that stops at the disconnect leaves the server's task blocked for good, with what it
    holds. So read on and drop, until nothing comes for a moment, or the server says the
    disconnect again. The moment is short while nothing came, and longer once a backlog
    flows: under a flood, a server task handing over a thousand messages per connection
    may wait a while for its turn. Bounded: what a socket's buffers held takes well
    under the limit.

    Args:
        receive: The server's ``receive``.
        heard: Whether the disconnect was read already (else the first one read here
            is that one, and the messages behind it are still to come).
    """
    with anyio.move_on_after(_ABANDONED_LIMIT):
        try:
            count = 0
            quiet = _ABANDONED_QUIET
            while True:
                with anyio.move_on_after(quiet) as idle:
                    message = await receive()
                if idle.cancelled_caught:
                    return
                if message["type"] == "websocket.disconnect":
                    if heard:
                        return
                    heard = True  # the first: what the server still holds comes behind it
                else:
                    quiet = _ABANDONED_IDLE
                count += 1
                if not count % YIELD_EVERY:
                    await anyio.lowlevel.checkpoint()  # a server that never waits: bounded
        except Exception:
            logger.debug("receive failed after the peer was lost", exc_info=True)
