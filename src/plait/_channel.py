"""A bounded FIFO channel between the engine's tasks.

anyio's memory object streams would do, but they yield to the event loop on every send
and receive, even when an item is ready; on the engine's hops per message that is
two extra loop iterations. This channel parks a task only when it must (empty on
receive, full on send), with the cheapest wake-up of the running loop
(:mod:`plait._backend`).

A call that completes without waiting is not a cancellation point (like trio's
``*_nowait``): the engine does not rely on it, since a connection that ended closes its
channels and the WebSocket refuses further use; a call that waits is one.

Any number of senders and receivers may wait; each waiter is woken at most once, and a
waiter cancelled after being woken passes its turn on, so no wake-up is lost.
"""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, TypeVar

from anyio import ClosedResourceError, EndOfStream, WouldBlock

from ._backend import waiters

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

    Create it inside the event loop that will use it.

    Args:
        capacity: How many items may wait before ``send`` blocks (at least 1).
    """

    # Lists, not deques: a channel holds a handful of items, and an empty deque costs
    # ten times an empty list in every idle connection.
    __slots__ = ("_receivers", "_senders", "_waiters", "capacity", "closed", "items")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        # Plain attributes, read on the engine's path of every message (a property or
        # len() would be a call): the capacity, what waits, oldest first (read, never
        # change it), and whether close() was called.
        self.items: list[T] = []
        self._senders: list[Any] = []
        self._receivers: list[Any] = []
        self.closed = False
        self._waiters = waiters()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def full(self) -> bool:
        """True while ``send`` would wait."""
        return len(self.items) >= self.capacity

    def statistics(self) -> ChannelStatistics:
        """Return the channel's counters."""
        return ChannelStatistics(
            len(self.items), self.capacity, len(self._senders), len(self._receivers)
        )

    # -- sending --------------------------------------------------------------------

    def send_nowait(self, item: T) -> None:
        """Queue ``item`` without waiting.

        Raises:
            WouldBlock: The channel is full.
            ClosedResourceError: The channel is closed.
        """
        if self.closed:
            raise ClosedResourceError
        if len(self.items) >= self.capacity:
            raise WouldBlock
        self.items.append(item)
        if self._receivers:
            self._waiters.wake(self._receivers.pop(0))

    def force_nowait(self, item: T) -> None:
        """Queue ``item`` past the capacity (for one final control message).

        Raises:
            ClosedResourceError: The channel is closed.
        """
        if self.closed:
            raise ClosedResourceError
        self.items.append(item)
        if self._receivers:
            self._waiters.wake(self._receivers.pop(0))

    async def send(self, item: T) -> None:
        """Queue ``item``, waiting while the channel is full.

        Raises:
            ClosedResourceError: The channel is closed.
        """
        items = self.items
        while True:
            if self.closed:
                raise ClosedResourceError
            if len(items) < self.capacity:
                items.append(item)
                if self._receivers:
                    self._waiters.wake(self._receivers.pop(0))
                return
            await self._wait(self._senders)

    # -- receiving ------------------------------------------------------------------

    def take(self) -> T:
        """Take the oldest item; the caller saw one there (``items`` is not empty)."""
        item = self.items.pop(0)
        if self._senders:
            self._waiters.wake(self._senders.pop(0))
        return item

    def receive_nowait(self) -> T:
        """Take the oldest item without waiting.

        Raises:
            WouldBlock: The channel is empty.
            EndOfStream: The channel is empty and closed.
        """
        if self.items:
            item = self.items.pop(0)
            if self._senders:
                self._waiters.wake(self._senders.pop(0))
            return item
        if self.closed:
            raise EndOfStream
        raise WouldBlock

    async def receive(self) -> T:
        """Take the oldest item, waiting while the channel is empty.

        Raises:
            EndOfStream: The channel is empty and closed.
        """
        items = self.items
        while True:
            if items:
                item = items.pop(0)
                if self._senders:
                    self._waiters.wake(self._senders.pop(0))
                return item
            if self.closed:
                raise EndOfStream
            # Inline rather than through _wait(): one coroutine less per message.
            waiters, receivers = self._waiters, self._receivers
            waiter = waiters.new()
            receivers.append(waiter)
            try:
                await waiter
            except BaseException:
                self._abandon(receivers, waiter)
                raise

    # -- closing --------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel: senders fail, receivers drain what is queued, then stop."""
        self.closed = True
        for queue in (self._senders, self._receivers):
            while queue:
                self._waiters.wake(queue.pop(0))

    async def _wait(self, queue: list[Any]) -> None:
        waiter = self._waiters.new()
        queue.append(waiter)
        try:
            await waiter
        except BaseException:
            self._abandon(queue, waiter)
            raise

    def _abandon(self, queue: list[Any], waiter: Any) -> None:
        """A waiter's task was cancelled (or failed) while it waited."""
        waiters = self._waiters
        if waiters.woken(waiter):
            # Woken, then cancelled before running: hand the turn to the next waiter.
            if queue:
                waiters.wake(queue.pop(0))
        else:
            queue.remove(waiter)
