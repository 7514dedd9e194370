"""The handler's task group (``ws.task_group``), made on first use.

A task group of its own would cost every connection a scope, sets and a task group
object, used or not. This stands in for one: its tasks run in the connection's task
group, each in a cancel scope of its own, and it keeps the rules a task group around
the handler kept:

- the tasks end with the handler: when it returns, fails or is cancelled, they are
  cancelled, and the handler's end waits for them (their ``finally`` blocks run first);
- a task that fails cancels the handler and the other tasks, and its error ends the
  connection as the handler's own would (1011, logged);
- when the connection ends (the peer left), they are cancelled with everything else.

It offers what handlers use of a task group: ``start_soon``, ``start``, ``cancel`` and
``cancel_scope`` (the handler's scope: cancelling it cancels the handler, then the
tasks).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio import get_cancelled_exc_class
from anyio.abc import TaskGroup, TaskStatus

__all__ = ("Children",)


class Children:
    """Tasks started by a handler, run in the connection's task group.

    Args:
        host: The connection's task group.
        handler_scope: The cancel scope around the handler.
        late_error: Reports an error raised after the handler's end stopped waiting
            for the tasks (the connection was cancelled meanwhile).
    """

    __slots__ = ("_done", "_host", "_late", "_running", "cancel_scope", "collecting", "errors")

    def __init__(
        self,
        host: TaskGroup,
        handler_scope: anyio.CancelScope,
        late_error: Callable[[Exception], object],
    ) -> None:
        self._host = host
        self.cancel_scope = handler_scope
        self._late = late_error
        self._running: set[anyio.CancelScope] = set()
        self._done: anyio.Event | None = None
        self.errors: list[Exception] = []
        self.collecting = True  # the handler's end still gathers errors

    def start_soon(
        self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None
    ) -> None:
        """Start ``func(*args)`` as a task that ends with the handler."""
        self._host.start_soon(self._run, func, args, None, name=name)

    async def start(
        self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any, name: object = None
    ) -> Any:
        """Start ``func(*args, task_status=...)`` and wait until it reports it started."""
        return await self._host.start(self._run_started, func, args, name=name)

    def cancel(self, reason: str | None = None) -> None:
        """Cancel the handler, and with it these tasks."""
        self.cancel_scope.cancel()

    def cancel_tasks(self) -> None:
        """Cancel every task still running."""
        for scope in self._running:
            scope.cancel()

    async def end(self, *, report: bool) -> None:
        """Cancel the tasks and wait for them: the handler has ended.

        Args:
            report: Log their errors now (the handler's end is an error of its own or
                a cancellation, which their errors cannot join).
        """
        self.cancel_tasks()
        try:
            if self._running:
                self._done = anyio.Event()
                await self._done.wait()
        finally:
            self.collecting = False
            if report:
                for error in self.take_errors():
                    self._late(error)

    def take_errors(self) -> list[Exception]:
        """The errors gathered, handed over once: each one's traceback holds the frame
        of :meth:`_run`, which holds this object, so keeping them would make a
        reference cycle."""
        errors, self.errors = self.errors, []
        return errors

    async def __aenter__(self) -> Children:
        raise RuntimeError("ws.task_group is already open: use it directly")

    async def __aexit__(self, *exc_info: object) -> bool:
        raise RuntimeError("ws.task_group is closed by the engine")

    async def _run_started(
        self,
        func: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        *,
        task_status: TaskStatus[Any],
    ) -> None:
        await self._run(func, args, _Status(task_status))

    async def _run(
        self,
        func: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        task_status: _Status | None,
    ) -> None:
        with anyio.CancelScope() as scope:
            self._running.add(scope)
            try:
                if task_status is None:
                    await func(*args)
                else:
                    await func(*args, task_status=task_status)
            except get_cancelled_exc_class():
                if task_status is not None and not task_status.called:
                    raise  # start() reports it to its caller
                return  # ended with the handler: return (the rule of plait._backend)
            except Exception as exc:
                if task_status is not None and not task_status.called:
                    raise  # start() raises it in the caller, as a task group's does
                if not self.collecting:
                    self._late(exc)  # the handler's end is over: report it on its own
                    return
                self.errors.append(exc)
                self.cancel_scope.cancel()  # the handler fails with it
                self.cancel_tasks()
            finally:
                self._running.discard(scope)
                if not self._running and self._done is not None:
                    self._done.set()


class _Status:
    """A task status that remembers whether ``started()`` was called: until then, a
    failure belongs to the caller of ``start()``, as in a task group."""

    __slots__ = ("_inner", "called")

    def __init__(self, inner: TaskStatus[Any]) -> None:
        self._inner = inner
        self.called = False

    def started(self, value: Any = None) -> None:
        self.called = True
        self._inner.started(value)
