"""The reader: the one task that calls ASGI ``receive``.

It reads at most ``inbound_capacity`` messages ahead of the handler, then waits for
room, so that the server's own flow control pushes back on the client. It reads until
the server reports the peer gone, also once the engine closed the connection (what comes
then is dropped): the peer's departure is what ends a handler stuck in a send. It never waits
forever: once the inbound has been full with nothing taken for ``stall_timeout``, the
handler has stopped reading, and the reader reads on. The one message in its hand is
kept (one past the capacity); a disconnect is then seen as always; a further data
message closes the connection with 1008 or is dropped and counted (``on_stall``).

With a :class:`~plait.RateLimit`, every data message but the heartbeat's pong takes a
token before it is queued and before anything decodes it; one that finds none closes
the connection (1008), is dropped, or is dropped with a bounded reply (``on_exceed``).
Without one, the cost on the path of a message is one ``is not None``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

import anyio
from anyio import ClosedResourceError, get_cancelled_exc_class

from ._channel import Channel
from ._limits import Limiter
from ._options import ConnectionOptions, ConnectionStatistics
from ._types import Message, Receive

__all__ = ("Reading", "read")

logger = logging.getLogger("plait._connection")


class Reading(Protocol):
    """What the reader reads into and tells on a connection."""

    options: ConnectionOptions
    inbound: Channel[Message]
    received: int
    dropped: int
    limited: int

    @property
    def path(self) -> str:
        """The connection's path, for the log."""
        ...

    def abort(self, code: int, reason: str) -> None:
        """Close from the engine's side and cancel the handler."""
        ...

    def statistics(self) -> ConnectionStatistics:
        """The connection's counters."""
        ...

    async def send_data(self, message: Message) -> None:
        """Send as any other sender does."""
        ...

    def peer_left(self, disconnect: Message) -> None:
        """The server reported the peer gone."""
        ...


async def read(connection: Reading, receive: Receive) -> None:
    """Read from the server until the peer leaves or the connection ends."""
    inbound, options = connection.inbound, connection.options
    limit = options.max_message_size
    pong = None if options.heartbeat is None else options.heartbeat.pong
    limiter = None if options.rate_limit is None else Limiter(options.rate_limit)
    overflowing = False  # the handler stopped reading: reading on to see the peer
    try:
        while True:
            message = await receive()
            message_type = message["type"]
            if message_type == "websocket.receive":
                if inbound.closed:
                    continue  # the engine closed the connection: waiting for the peer
                connection.received += 1
                if pong is not None and message.get("text") == pong:
                    continue  # the heartbeat's answer: alive, and nothing to deliver
                text = message.get("text")
                if (
                    limit is not None
                    and (text is None or len(text) * 4 > limit)
                    and _size_over(message, limit)
                ):
                    logger.info(
                        "closing %s with 1009: a message exceeds %d bytes", connection.path, limit
                    )
                    connection.abort(1009, "message too big")
                    continue
                if limiter is not None and not limiter.take():
                    _over_limit(connection, limiter)  # counted, and logged the first time
                    if limiter.closes:
                        continue
                    if limiter.reply_due():
                        await _reply(connection, limiter)
                    continue
                if not inbound.full:
                    overflowing = False
                    inbound.send_nowait(message)
                elif not overflowing:
                    overflowing = not await _wait_for_room(connection, message)
                elif options.on_stall == "close":
                    logger.warning(
                        "closing %s with 1008: the handler took no message for %s s",
                        connection.path,
                        options.stall_timeout,
                    )
                    connection.abort(1008, "messages not read")
                    continue
                else:
                    connection.dropped += 1
            elif message_type == "websocket.disconnect":
                connection.peer_left(message)
                return
            else:
                with contextlib.suppress(ClosedResourceError):  # the engine closed
                    await inbound.send(message)
    except Exception:
        logger.exception("the server's receive() failed; treating the peer as gone")
        connection.peer_left({"type": "websocket.disconnect", "code": 1006})
    except get_cancelled_exc_class():
        pass  # the connection ended: return (the rule of plait._backend)
    finally:
        if limiter is not None and connection.limited and not limiter.closes:
            logger.info(
                "%s: the rate limit dropped %d of %d messages%s",
                connection.path,
                connection.limited,
                connection.received,
                f" (replies: {limiter.replies})" if limiter.replying else "",
            )


def _over_limit(connection: Reading, limiter: Limiter) -> None:
    """Count a message that found no token; close for it, or log the first."""
    connection.limited += 1
    limit = limiter.limit
    if limiter.closes:
        logger.info(
            "closing %s with 1008: rate limit exceeded (%s)", connection.path, limit.describe()
        )
        connection.abort(1008, "rate limit exceeded")
    elif connection.limited == 1:
        logger.info(
            "%s: rate limit exceeded (%s); dropping what is over it%s",
            connection.path,
            limit.describe(),
            " with a reply" if limiter.replying else "",
        )


async def _reply(connection: Reading, limiter: Limiter) -> None:
    """Tell the client it is over the limit, into room that is there: the reader never
    waits for the client to read."""
    statistics = connection.statistics()
    if statistics.outbound_buffered < statistics.outbound_capacity:
        # The handler may have closed the connection meanwhile: then say nothing.
        with contextlib.suppress(ClosedResourceError):
            await connection.send_data({"type": "websocket.send", "text": limiter.reply()})


async def _wait_for_room(connection: Reading, message: Message) -> bool:
    """Queue ``message`` once there is room; False if the handler stopped taking."""
    inbound, options = connection.inbound, connection.options
    stall = options.stall_timeout
    try:
        if stall is None:
            await inbound.send(message)
            return True
        with anyio.move_on_after(stall):
            await inbound.send(message)
            return True
    except ClosedResourceError:
        return True  # the engine closed the connection meanwhile: dropped
    # Nothing taken for stall_timeout: keep this one (one past the capacity) and read
    # on, so that the peer's leaving is seen however long the handler sleeps.
    inbound.force_nowait(message)
    logger.warning(
        "%s: the handler took no message for %s s; reading on (on_stall=%r)",
        connection.path,
        stall,
        options.on_stall,
    )
    return False


def _size_over(message: Message, limit: int) -> bool:
    data = message.get("bytes")
    if data is not None:
        return len(data) > limit
    text: str = message.get("text") or ""
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False  # even at four bytes a character it fits
    return len(text.encode()) > limit
