"""A bounded FIFO channel between the engine's tasks.

anyio's memory object streams would do, but they yield to the event loop on every send
and receive, even when an item is ready; on the engine's two hops per message that is
two extra loop iterations. This channel waits only when it must (empty on receive, full
on send) and otherwise checks for cancellation without yielding, so a busy connection
moves queued messages without a round trip through the scheduler, while a cancelled task
still stops at its next call.

Any number of senders and receivers may wait; each waiter is woken at most once, and a
waiter cancelled after being woken passes its turn on, so no wake-up is lost.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, NamedTuple, TypeVar

from anyio import ClosedResourceError, EndOfStream, Event, WouldBlock
from anyio.lowlevel import checkpoint_if_cancelled

__all__ = ("Channel", "ChannelStatistics")

T = TypeVar("T")


class ChannelStatistics(NamedTuple):
    """A snapshot of a channel's counters."""

    buffered: int
    """Items waiting to be received."""
    capacity: int
    """How many items fit before senders wait."""
    waiting_senders: int
    """Tasks blocked in ``send``."""
    waiting_receivers: int
    """Tasks blocked in ``receive``."""


class Channel(Generic[T]):
    """A bounded, closable FIFO queue shared by tasks of one event loop.

    Args:
        capacity: How many items may wait before ``send`` blocks (at least 1).
    """

    __slots__ = ("_capacity", "_closed", "_items", "_receivers", "_senders")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._senders: deque[Event] = deque()
        self._receivers: deque[Event] = deque()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def statistics(self) -> ChannelStatistics:
        """Return the channel's counters."""
        return ChannelStatistics(
            len(self._items), self._capacity, len(self._senders), len(self._receivers)
        )

    # -- sending --------------------------------------------------------------------

    def send_nowait(self, item: T) -> None:
        """Queue ``item`` without waiting.

        Raises:
            WouldBlock: The channel is full.
            ClosedResourceError: The channel is closed.
        """
        if self._closed:
            raise ClosedResourceError
        if len(self._items) >= self._capacity:
            raise WouldBlock
        self._items.append(item)
        if self._receivers:
            self._receivers.popleft().set()

    def force_nowait(self, item: T) -> None:
        """Queue ``item`` past the capacity (for one final control message).

        Raises:
            ClosedResourceError: The channel is closed.
        """
        if self._closed:
            raise ClosedResourceError
        self._items.append(item)
        if self._receivers:
            self._receivers.popleft().set()

    async def send(self, item: T) -> None:
        """Queue ``item``, waiting while the channel is full.

        Raises:
            ClosedResourceError: The channel is closed.
        """
        await checkpoint_if_cancelled()
        while True:
            try:
                self.send_nowait(item)
            except WouldBlock:
                await self._wait(self._senders)
            else:
                return

    # -- receiving ------------------------------------------------------------------

    def receive_nowait(self) -> T:
        """Take the oldest item without waiting.

        Raises:
            WouldBlock: The channel is empty.
            EndOfStream: The channel is empty and closed.
        """
        if self._items:
            item = self._items.popleft()
            if self._senders:
                self._senders.popleft().set()
            return item
        if self._closed:
            raise EndOfStream
        raise WouldBlock

    async def receive(self) -> T:
        """Take the oldest item, waiting while the channel is empty.

        Raises:
            EndOfStream: The channel is empty and closed.
        """
        await checkpoint_if_cancelled()
        while True:
            try:
                return self.receive_nowait()
            except WouldBlock:
                await self._wait(self._receivers)

    # -- closing --------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel: senders fail, receivers drain what is queued, then stop."""
        self._closed = True
        for waiters in (self._senders, self._receivers):
            while waiters:
                waiters.popleft().set()

    async def _wait(self, waiters: deque[Event]) -> None:
        event = Event()
        waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                # Woken, then cancelled before running: hand the turn to the next waiter.
                if waiters:
                    waiters.popleft().set()
            else:
                waiters.remove(event)
            raise
