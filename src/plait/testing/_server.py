"""Run a real hypercorn server on loopback, in a background thread, for integration tests.

hypercorn is an optional dependency, so it is imported only when a server starts.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .._exceptions import PlaitError, missing_extra
from .._types import ASGIApp, Message, Receive, Scope, Send

_STARTUP_TIMEOUT = 10.0
_SHUTDOWN_TIMEOUT = 10.0


@dataclass(frozen=True)
class HypercornServer:
    """Where a server started by :func:`run_hypercorn` listens.

    Attributes:
        host: The IP address, always ``127.0.0.1``.
        port: The TCP port the system chose.
    """

    host: str
    port: int

    def url(self, path: str = "/", scheme: str = "ws") -> str:
        """A URL on this server.

        Args:
            path: The path, optionally with a query string.
            scheme: ``ws``, ``http`` or another scheme.

        Returns:
            For example ``ws://127.0.0.1:40123/chat``.
        """
        return f"{scheme}://{self.host}:{self.port}{path}"


@contextmanager
def run_hypercorn(
    app: ASGIApp, *, worker_class: Literal["asyncio", "trio"] = "asyncio", **config: Any
) -> Iterator[HypercornServer]:
    """Serve ``app`` with hypercorn on ``127.0.0.1`` for the duration of the block.

    The server runs in an event loop of ``worker_class`` on a background thread and
    accepts connections (its lifespan startup done) before the block starts. On leaving
    it shuts down as hypercorn does on a signal: it stops listening, waits up to
    ``graceful_timeout`` (3 s by default) for open connections to end, cancels what is
    left (an :class:`~plait.App` closes those with 1001), then runs the lifespan
    shutdown, as under the ``hypercorn`` command (:meth:`plait.App.shutdown_trigger`
    plays no part). On Python 3.12.1 and later, hypercorn's asyncio worker waits for
    every open connection before its ``graceful_timeout`` even starts (hypercorn#308:
    ``Server.wait_closed()`` waits for them since 3.12.1), so a WebSocket client that
    stays would hold it forever; ``run_hypercorn`` cancels what is left after
    ``graceful_timeout`` itself, on both workers and every Python, which is what
    hypercorn does on 3.11. Access logs are off; errors go to the ``hypercorn.error``
    logger of :mod:`logging`.

    Args:
        app: The ASGI application.
        worker_class: hypercorn's ``"asyncio"`` or ``"trio"`` worker.
        **config: Attributes to set on hypercorn's ``Config``, for example
            ``websocket_max_message_size=1024``.

    Yields:
        The server's address.

    Raises:
        PlaitError: hypercorn stopped before serving (its lifespan startup failed, for
            example); the message says why.
        TimeoutError: The server did not start or stop within 10 s.
        ValueError: An unknown ``worker_class``.
        TypeError: A keyword that is not a hypercorn setting.
    """
    try:
        from hypercorn.config import Config, Sockets
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("hypercorn"):
            raise
        raise missing_extra("hypercorn", "hypercorn", "run_hypercorn()") from exc

    class OwningConfig(Config):
        took_socket = False  # whether hypercorn wrapped the descriptor (and will close it)

        def create_sockets(self) -> Sockets:
            sockets = super().create_sockets()
            self.took_socket = True
            return sockets

    serve = _import_serve(worker_class)
    hypercorn_config = OwningConfig()
    hypercorn_config.accesslog = None
    hypercorn_config.errorlog = logging.getLogger("hypercorn.error")
    for name, value in config.items():
        if name.startswith("_") or not hasattr(hypercorn_config, name) or name == "bind":
            raise TypeError(f"{name!r} is not a hypercorn setting run_hypercorn can change")
        setattr(hypercorn_config, name, value)

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        host, port = sock.getsockname()[:2]
        # hypercorn wraps the descriptor in a socket object of its own, which closes it,
        # so it gets a duplicate.
        fd = os.dup(sock.fileno())
        hypercorn_config.bind = [f"fd://{fd}"]
        try:
            with start_blocking_portal(worker_class) as portal:
                control = portal.call(_Control.create, app)
                future = portal.start_task_soon(_serve, serve, hypercorn_config, control)
                try:
                    _wait_started(portal, control, future)
                except BaseException:
                    future.cancel()
                    raise
                # Not in _serve's task: hypercorn's asyncio serve() leaves cancellations
                # pending on its task, which a task group there would take for its own.
                timeout = hypercorn_config.graceful_timeout
                watchdog = portal.start_task_soon(_graceful_timeout, control, timeout)
                try:
                    yield HypercornServer(host, port)
                finally:
                    try:
                        _stop(portal, control, future)
                    finally:
                        watchdog.cancel()
        finally:
            if not hypercorn_config.took_socket:
                os.close(fd)


class _Control:
    """What the sync side and the server task share; created in the event loop."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.started = anyio.Event()  # serving, or stopped before it could
        self.stop = anyio.Event()
        self.serving = False
        self.startup_failed = False
        self.requests: set[anyio.CancelScope] = set()  # every connection being served

    @classmethod
    async def create(cls, app: ASGIApp) -> _Control:
        return cls(app)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            with anyio.CancelScope() as request:
                self.requests.add(request)
                try:
                    await self._app(scope, receive, send)
                finally:
                    self.requests.discard(request)
            return

        async def watching_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                self.startup_failed = True
            await send(message)

        await self._app(scope, receive, watching_send)

    async def shutdown_trigger(self) -> None:
        # hypercorn awaits this once its sockets listen; returning shuts it down. The trio
        # worker gets here even after a failed lifespan startup, just before it fails.
        if not self.startup_failed:
            self.serving = True
            self.started.set()
        await self.stop.wait()

    async def wait_started(self, delay: float) -> bool:
        with anyio.move_on_after(delay):
            await self.started.wait()
        return self.started.is_set()


async def _serve(serve: Callable[..., Awaitable[None]], config: Any, control: _Control) -> None:
    try:
        await serve(control.app, config, shutdown_trigger=control.shutdown_trigger, mode="asgi")
    finally:
        control.started.set()


async def _graceful_timeout(control: _Control, seconds: float) -> None:
    """Cancel the connections still served ``seconds`` after the stop, as hypercorn does
    on Python 3.11; on 3.12.1+ its asyncio worker would wait for them first (#308)."""
    await control.stop.wait()
    await anyio.sleep(seconds + 0.05)  # hypercorn's own cancellation comes first where it can
    for request in list(control.requests):
        request.cancel()


def _wait_started(portal: BlockingPortal, control: _Control, future: Future[None]) -> None:
    if not portal.call(control.wait_started, _STARTUP_TIMEOUT):
        raise TimeoutError(f"hypercorn did not start within {_STARTUP_TIMEOUT} s")
    if not control.serving:
        try:
            future.result()
        except Exception as exc:
            causes = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in _leaves(exc))
            raise PlaitError(f"hypercorn stopped before it started serving: {causes}") from exc
        raise PlaitError("hypercorn stopped before it started serving")


def _stop(portal: BlockingPortal, control: _Control, future: Future[None]) -> None:
    if not future.done():
        portal.call(control.stop.set)
    try:
        future.result(timeout=_SHUTDOWN_TIMEOUT)
    except TimeoutError:
        future.cancel()
        raise TimeoutError(f"hypercorn did not stop within {_SHUTDOWN_TIMEOUT} s") from None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _import_serve(worker_class: str) -> Callable[..., Awaitable[None]]:
    if worker_class == "asyncio":
        from hypercorn.asyncio import serve as asyncio_serve

        return asyncio_serve
    if worker_class == "trio":
        from hypercorn.trio import serve as trio_serve

        return trio_serve
    raise ValueError(f"worker_class must be 'asyncio' or 'trio', not {worker_class!r}")
