"""The in-memory backend: one process, with the same history semantics as Redis."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import anyio
from anyio.abc import TaskStatus

from ._backend import Deliver, Lost, StoredMessage
from ._memory_presence import MemoryPresence

__all__ = ("MemoryBackend",)


class MemoryBackend:
    """Channels within one process.

    Args:
        history: Messages kept per channel for subscribers that resume (0: none).
        history_age: Seconds a kept message stays (``None``: until pushed out).
    """

    def __init__(self, history: int = 0, history_age: float | None = None) -> None:
        if history < 0:
            raise ValueError("history must be 0 or more")
        self.history_length = history
        self.history_age = history_age
        self._deliver: Deliver | None = None
        self._kept: dict[str, deque[tuple[int, bytes, float]]] = {}
        self._counter: dict[str, int] = {}
        self._trimmed: dict[str, int] = {}  # per channel: the newest number dropped

    async def run(self, deliver: Deliver, lost: Lost, *, task_status: TaskStatus[None]) -> None:
        """Deliver published messages to the hub until cancelled (in one process,
        nothing is ever lost: ``lost`` is never called)."""
        self._deliver = deliver
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            self._deliver = None

    async def publish(self, channel: str, payload: bytes) -> str:
        """Keep (with history) and deliver at once; return the message's id."""
        if self._deliver is None:
            raise RuntimeError("the memory backend is not running")
        number = self._counter.get(channel, 0) + 1
        self._counter[channel] = number
        if self.history_length:
            kept = self._kept.setdefault(channel, deque(maxlen=self.history_length))
            if len(kept) == self.history_length:
                self._trimmed[channel] = kept[0][0]  # the deque drops it now
            kept.append((number, payload, anyio.current_time()))
        message_id = f"{number}-0"
        self._deliver(channel, message_id, payload)
        # A cancellation point, but no yield to the loop: a publisher with several
        # messages at hand publishes them all before the subscribers' tasks run, and
        # each of those then sends them in one go (one wake-up for the batch).
        await anyio.lowlevel.checkpoint_if_cancelled()
        return message_id

    async def listen(self, channel: str) -> None:
        """Nothing to do in one process."""

    async def unlisten(self, channel: str) -> None:
        """Forget a channel with no subscribers and no history, so names do not pile up."""
        if not self.history_length:
            self._counter.pop(channel, None)

    async def history(self, channel: str, after: str | None) -> Sequence[StoredMessage]:
        """Kept messages of ``channel`` after the id ``after``, oldest first."""
        kept = self._kept.get(channel)
        if not kept:
            return []
        oldest = anyio.current_time() - self.history_age if self.history_age else None
        start = self.id_key(after)[0] if after else 0
        return [
            (f"{number}-0", payload)
            for number, payload, stamp in kept
            if number > start and (oldest is None or stamp >= oldest)
        ]

    async def history_covers(self, channel: str, after: str) -> bool:
        """Whether nothing published after ``after`` was dropped from the history."""
        start = self.id_key(after)[0]
        if start > self._counter.get(channel, 0):
            # An id this history never gave out: the client saw another history (the
            # process restarted and its ids began again), so what it missed is unknown.
            return False
        if not self.history_length:
            return self._counter.get(channel, 0) <= start  # nothing kept: nothing missed?
        if self._trimmed.get(channel, 0) > start:
            return False
        if self.history_age:
            oldest = anyio.current_time() - self.history_age
            kept = self._kept.get(channel) or ()
            return all(stamp >= oldest for number, _, stamp in kept if number > start)
        return True

    def presence_store(self) -> MemoryPresence:
        """A store for the hub's presence, in this process."""
        return MemoryPresence()

    def id_key(self, message_id: str) -> tuple[int, ...]:
        """``"17-0"`` sorts as ``(17, 0)``."""
        first, _, second = message_id.partition("-")
        return (int(first), int(second or 0))
