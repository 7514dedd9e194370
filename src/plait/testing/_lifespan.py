"""The test client's side of the ASGI lifespan protocol."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._exceptions import PlaitError
from .._types import ASGIApp, Message


class LifespanError(PlaitError):
    """The application reported ``lifespan.startup.failed`` or ``lifespan.shutdown.failed``.

    Args:
        message: The message the application gave, possibly empty.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message or "the application's lifespan failed"


class Lifespan:
    """Runs an application's lifespan as a task and walks it through startup and shutdown.

    An application that raises before sending any lifespan message, or returns without
    sending one, does not support lifespan (ASGI spec); that is not an error.

    Args:
        app: The ASGI application.
        timeout: Seconds to wait for each answer of the application.
        raise_server_exceptions: Re-raise what the application raised after it started
            speaking the protocol.
    """

    def __init__(self, app: ASGIApp, timeout: float, raise_server_exceptions: bool) -> None:
        self._app = app
        self._timeout = timeout
        self._raise_server_exceptions = raise_server_exceptions
        self._to_app_send, self._to_app_recv = anyio.create_memory_object_stream[Message](2)
        self._from_app_send, self._from_app_recv = anyio.create_memory_object_stream[Message](2)
        self._done = anyio.Event()
        self._spoke = False
        self._exception: Exception | None = None
        self.supported = False
        self.state: dict[str, Any] = {}

    async def startup(self, task_group: TaskGroup) -> None:
        """Start the application's lifespan task and wait for its startup.

        Args:
            task_group: Where the lifespan task runs.

        Raises:
            LifespanError: The application reported a failed startup.
            TimeoutError: The application did not answer within the timeout.
        """
        task_group.start_soon(self._run)
        await self._to_app_send.send({"type": "lifespan.startup"})
        message = await self._next("startup")
        if message is None:
            self._raise_exception()
            self.close()
            return
        self.supported = True
        self._expect(message, "startup")

    async def shutdown(self) -> None:
        """Send the shutdown event and wait for the answer and for the application to return.

        Raises:
            LifespanError: The application reported a failed shutdown.
            TimeoutError: The application did not answer within the timeout.
        """
        if not self.supported:
            return
        await self._to_app_send.send({"type": "lifespan.shutdown"})
        message = await self._next("shutdown")
        if message is not None:
            self._expect(message, "shutdown")
            with anyio.move_on_after(self._timeout):
                await self._done.wait()
        self._raise_exception()

    def close(self) -> None:
        """Release the streams; the caller cancels the task if it is still running."""
        for stream in (self._to_app_send, self._to_app_recv):
            stream.close()
        self._from_app_send.close()
        self._from_app_recv.close()

    def _expect(self, message: Message, phase: str) -> None:
        if message["type"] == f"lifespan.{phase}.failed":
            raise LifespanError(str(message.get("message") or ""))
        if message["type"] != f"lifespan.{phase}.complete":
            raise RuntimeError(
                f"expected ASGI message 'lifespan.{phase}.complete' or "
                f"'lifespan.{phase}.failed', got {message['type']!r}"
            )

    async def _next(self, phase: str) -> Message | None:
        with anyio.move_on_after(self._timeout):
            try:
                return await self._from_app_recv.receive()
            except anyio.EndOfStream:
                return None
        raise TimeoutError(
            f"the application did not complete its lifespan {phase} within {self._timeout} s"
        )

    def _raise_exception(self) -> None:
        exc, self._exception = self._exception, None
        if exc is not None and self._raise_server_exceptions:
            raise exc

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self._app(scope, self._to_app_recv.receive, self._send)
        except Exception as exc:
            if self._spoke:
                self._exception = exc
        finally:
            self._from_app_send.close()
            self._done.set()

    async def _send(self, message: Message) -> None:
        self._spoke = True
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._from_app_send.send(message)  # unless the client stopped listening
