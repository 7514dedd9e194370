"""The backend shim: the one module that touches asyncio and trio directly.

The engine moves every message through two channels, and each hop that has to wait
parks one task and wakes it later. anyio's ``Event`` does this portably but resolves the
backend (through sniffio) and wraps the loop's own event on every use; on the engine's
hot path that was a large part of plait's overhead. The waiters here are the cheapest
one-shot wake-up each loop offers: a bare future on asyncio, and trio's
``wait_task_rescheduled`` (what trio's own channels use) on trio. Cancellation works as
for any other wait: anyio's cancel scopes cancel a waiting task on either backend.

One rule for every task plait starts in a connection's task group: it returns when the
task group cancels it, rather than ending with the cancellation. On asyncio anyio keeps
the cancellation of a task that ends with it in a frame that the exception's own
traceback holds (its ``task_done`` callback): a reference cycle that keeps the task's
frames, and the connection they reach, alive until the cyclic garbage collector runs. A
connection that ended is freed by reference counting alone (``tests/test_cycles.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple

import sniffio

__all__ = ("YIELD_EVERY", "Waiters", "waiters")

YIELD_EVERY = 16
"""Calls of a send or a receive that found room or a message, in a row, after which the
next one yields to the event loop (a cancellation point and a turn for every other
task): a loop of them cannot starve the loop, on asyncio either, where a server's send
may complete without suspending. At about 15 µs a send to hypercorn, the other
connections get a turn every quarter of a millisecond. The count resets whenever a call
really waits, so a ping-pong connection never pays for it (``benchmarks/README.md``)."""


class Waiters(NamedTuple):
    """How to park and wake one task on the running event loop.

    A waiter is created by ``new()``, awaited directly (``await waiter``) by the one task
    that parks on it, and woken at most once by ``wake(waiter)``; ``woken(waiter)`` says
    whether that happened, also after the waiting task was cancelled. ``checkpoint()``
    is the loop's own: a cancellation point that lets every other ready task run first.
    """

    new: Callable[[], Awaitable[None]]
    wake: Callable[[Any], None]
    woken: Callable[[Any], bool]
    checkpoint: Callable[[], Awaitable[None]]


_BUILT: dict[str, Waiters] = {}


def waiters() -> Waiters:
    """Return the waiter operations for the event loop running now.

    They are built once per library and shared by every channel: nothing per
    connection but the waiters themselves.
    """
    library = sniffio.current_async_library()
    built = _BUILT.get(library)
    if built is not None:
        return built
    if library == "asyncio":
        built = _asyncio_waiters()
    elif library == "trio":
        built = _trio_waiters()
    else:  # pragma: no cover
        raise RuntimeError(f"plait runs on asyncio or trio, not {library!r}")
    _BUILT[library] = built
    return built


def _asyncio_waiters() -> Waiters:
    import asyncio

    get_running_loop = asyncio.get_running_loop

    def new() -> asyncio.Future[None]:
        return get_running_loop().create_future()

    def wake(future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_result(None)

    def woken(future: asyncio.Future[None]) -> bool:
        return future.done() and not future.cancelled()

    async def checkpoint() -> None:
        # anyio delivers a cancel scope's cancellation to a task that yields.
        await asyncio.sleep(0)

    return Waiters(new, wake, woken, checkpoint)


def _trio_waiters() -> Waiters:
    import trio

    lowlevel = trio.lowlevel
    current_task, wait_task_rescheduled = lowlevel.current_task, lowlevel.wait_task_rescheduled
    SUCCEEDED = lowlevel.Abort.SUCCEEDED

    class TrioWaiter:
        __slots__ = ("set", "task")

        def __init__(self) -> None:
            self.task: trio.lowlevel.Task | None = None
            self.set = False

        def __await__(self) -> Generator[Any, None, None]:
            # A generator, not a coroutine: one frame less per wait.
            if self.set:
                yield from lowlevel.checkpoint().__await__()
                return
            self.task = current_task()
            yield from wait_task_rescheduled(self._abort).__await__()

        def _abort(self, _: object) -> trio.lowlevel.Abort:
            self.task = None
            return SUCCEEDED

    def wake(waiter: TrioWaiter) -> None:
        if not waiter.set:
            waiter.set = True
            task = waiter.task
            if task is not None:
                waiter.task = None
                lowlevel.reschedule(task)

    def woken(waiter: TrioWaiter) -> bool:
        return waiter.set

    return Waiters(TrioWaiter, wake, woken, lowlevel.checkpoint)
