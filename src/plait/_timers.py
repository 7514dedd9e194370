"""Timers: a callback at a time, without a task per connection.

A watchdog checks a connection a few times a minute. As a task per connection it cost
every idle connection a task, its frames and a cancel scope, and every check a wake-up
of that task; on trio every sleep's end is a ``Cancelled`` raised and caught, and their
garbage made the collector run often (issue 19: 633 pings a second for 19,000
connections took half of a trio worker). A timer is a callback the event loop calls at
a time: on asyncio the loop's own ``call_at`` (no task at all); on trio one system task
per run sleeps until the earliest timer and calls every one that is due.

A callback runs outside every connection's tasks: it must not block (it is a plain
function) and must not raise (an error is logged, never passed to the loop: on trio it
would crash the run). A connection cancels its timer when it ends, so nothing of it
outlives it.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from typing import Any, Protocol

import sniffio

__all__ = ("TASK_NAME", "Timer", "call_at")

logger = logging.getLogger(__name__)


class Timer(Protocol):
    """A callback due at a time; ``cancel()`` makes sure it is not called."""

    def cancel(self) -> None:
        """Do not call the callback (a no-op once it ran)."""
        ...


def call_at(when: float, callback: Callable[[], object]) -> Timer:
    """Call ``callback()`` once, at ``when`` on the running loop's clock
    (:func:`anyio.current_time`), from outside any task of the caller's. anyio works
    in the callback as in a task (sniffio is told the library)."""
    if sniffio.current_async_library() == "trio":
        return _trio_timers().call_at(when, callback)
    import asyncio

    return asyncio.get_running_loop().call_at(when, _asyncio_guarded, callback)


def _asyncio_guarded(callback: Callable[[], object]) -> None:
    # A loop callback runs in no task, where sniffio cannot tell asyncio unless told
    # (anyio.run tells it for the whole run, a server such as hypercorn does not).
    token = sniffio.current_async_library_cvar.set("asyncio")
    try:
        _guarded(callback)
    finally:
        sniffio.current_async_library_cvar.reset(token)


def _guarded(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("a timer's callback failed")


class _TrioTimer:
    """One entry of the trio heap."""

    __slots__ = ("callback", "owner", "when")

    def __init__(self, when: float, callback: Callable[[], object], owner: _TrioTimers) -> None:
        self.when = when
        self.callback: Callable[[], object] | None = callback
        self.owner = owner

    def __lt__(self, other: _TrioTimer) -> bool:
        return self.when < other.when

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None  # left in the heap, skipped when due
            self.owner.settled()


class _TrioTimers:
    """The timers of one trio run: a heap, and a system task that calls what is due.

    The task runs only while a timer is pending: it ends when the last one ran or was
    cancelled, and the next timer starts it again.
    """

    __slots__ = ("_heap", "_pending", "_running", "_scope")

    def __init__(self) -> None:
        self._heap: list[_TrioTimer] = []
        self._pending = 0  # timers neither run nor cancelled
        self._scope: Any = None  # the task's sleep, whose deadline is the earliest timer
        self._running = False

    def call_at(self, when: float, callback: Callable[[], object]) -> _TrioTimer:
        import trio

        timer = _TrioTimer(when, callback, self)
        heapq.heappush(self._heap, timer)
        self._pending += 1
        if not self._running:
            self._running = True
            trio.lowlevel.spawn_system_task(self._run, name=TASK_NAME)
        elif self._scope is not None and when < self._scope.deadline:
            self._scope.deadline = when
        return timer

    def settled(self) -> None:
        """A timer ran or was cancelled: with none pending, the task ends now."""
        self._pending -= 1
        if not self._pending and self._scope is not None:
            self._scope.cancel()

    async def _run(self) -> None:
        import trio

        heap = self._heap
        try:
            while self._pending:
                with trio.CancelScope(deadline=heap[0].when) as self._scope:
                    await trio.sleep_forever()
                self._scope = None
                now = trio.current_time()
                while heap and heap[0].when <= now:
                    timer = heapq.heappop(heap)
                    callback = timer.callback
                    if callback is not None:
                        timer.callback = None
                        self._pending -= 1
                        _guarded(callback)
                if len(heap) > 64 and self._pending * 2 < len(heap):
                    # Mostly cancelled timers (connections that ended): keep it small.
                    heap[:] = [t for t in heap if t.callback is not None]
                    heapq.heapify(heap)
        finally:
            self._scope = None
            self._running = False
            if not self._pending:
                heap.clear()


TASK_NAME = "plait timers"
"""The name of trio's timer task (a system task of the run, while a timer is pending)."""


def _trio_timers() -> _TrioTimers:
    """The timers of the running trio run, made on first use."""
    global _TIMERS
    if _TIMERS is None:
        import trio

        _TIMERS = trio.lowlevel.RunVar("plait_timers")
    timers: _TrioTimers | None = _TIMERS.get(None)
    if timers is None:
        timers = _TrioTimers()
        _TIMERS.set(timers)
    return timers


_TIMERS: Any = None  # a trio RunVar, made when trio first asks (trio is imported lazily)
