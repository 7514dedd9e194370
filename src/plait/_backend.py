"""The backend shim: the one module that touches asyncio and trio directly.

The engine moves every message through two channels, and each hop that has to wait
parks one task and wakes it later. anyio's ``Event`` does this portably but resolves the
backend (through sniffio) and wraps the loop's own event on every use; on the engine's
hot path that was a large part of plait's overhead. A :class:`Waiter` here is the
cheapest one-shot wake-up each loop offers: a bare future on asyncio, and trio's
``wait_task_rescheduled`` (what trio's own channels use) on trio. Cancellation works as
for any other wait: anyio's cancel scopes cancel a waiting task on either backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import sniffio

__all__ = ("Waiter", "waiter_factory")


class Waiter(Protocol):
    """A one-shot wake-up for one waiting task."""

    def set(self) -> None:
        """Wake the waiting task (or let a later ``wait`` return at once)."""

    def is_set(self) -> bool:
        """Whether :meth:`set` was called."""

    async def wait(self) -> None:
        """Wait until :meth:`set` is called; a cancellation point."""


def waiter_factory() -> Callable[[], Waiter]:
    """Return the constructor of waiters for the event loop running now."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        return _asyncio_waiter_factory()
    if library == "trio":
        return _trio_waiter_factory()
    raise RuntimeError(f"plait runs on asyncio or trio, not {library!r}")  # pragma: no cover


def _asyncio_waiter_factory() -> Callable[[], Waiter]:
    import asyncio

    get_loop = asyncio.get_running_loop

    class AsyncioWaiter:
        __slots__ = ("_future",)

        def __init__(self) -> None:
            self._future: asyncio.Future[None] = get_loop().create_future()

        def set(self) -> None:
            if not self._future.done():
                self._future.set_result(None)

        def is_set(self) -> bool:
            future = self._future
            return future.done() and not future.cancelled()

        async def wait(self) -> None:
            await self._future

    return AsyncioWaiter


def _trio_waiter_factory() -> Callable[[], Waiter]:
    import trio

    lowlevel = trio.lowlevel

    class TrioWaiter:
        __slots__ = ("_set", "_task")

        def __init__(self) -> None:
            self._task: trio.lowlevel.Task | None = None
            self._set = False

        def set(self) -> None:
            if not self._set:
                self._set = True
                task = self._task
                if task is not None:
                    self._task = None
                    lowlevel.reschedule(task)

        def is_set(self) -> bool:
            return self._set

        async def wait(self) -> None:
            if self._set:
                await lowlevel.checkpoint()
                return
            self._task = lowlevel.current_task()

            def abort(_: object) -> trio.lowlevel.Abort:
                self._task = None
                return lowlevel.Abort.SUCCEEDED

            await lowlevel.wait_task_rescheduled(abort)

    return TrioWaiter
