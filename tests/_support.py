"""Helpers shared by the tests: task counting and small ASGI apps around handlers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import sniffio

import plait
from plait._types import Message, Receive, Scope, Send
from plait.testing import AsyncTestClient, AsyncWebSocketTestSession

Handler = Callable[[plait.WebSocket], Awaitable[Any]]


def count_tasks() -> int:
    """How many tasks the current event loop runs (asyncio or trio)."""
    if sniffio.current_async_library() == "trio":
        import trio

        def walk(task: trio.lowlevel.Task) -> int:
            return 1 + sum(walk(child) for n in task.child_nurseries for child in n.child_tasks)

        return walk(trio.lowlevel.current_root_task())  # type: ignore[arg-type]
    import asyncio

    return len(asyncio.all_tasks())


def engine_app(
    handler: Handler, **options: Any
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A raw ASGI app that serves every WebSocket connection with ``handler``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "websocket"
        await plait.serve_connection(scope, receive, send, handler, **options)

    return app


class CountingReceive:
    """Wraps an ASGI receive to count how often the app called it."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.calls = 0

    async def __call__(self) -> Message:
        self.calls += 1
        return await self.receive()


@contextlib.asynccontextmanager
async def open_session(
    handler: Handler, path: str = "/", **options: Any
) -> AsyncIterator[AsyncWebSocketTestSession]:
    """Serve ``handler`` on the engine (with ``options``) and connect one test session."""
    async with (
        AsyncTestClient(engine_app(handler, **options)) as client,
        client.websocket_connect(path) as session,
    ):
        yield session


async def closed(session: AsyncWebSocketTestSession) -> plait.WebSocketDisconnect:
    """Receive until the application closes the connection; return how it closed."""
    while True:
        try:
            await session.receive()
        except plait.WebSocketDisconnect as exc:
            return exc


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Answer a server's lifespan scope (startup, then shutdown) for a raw test app."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


def rss() -> int:
    """This process's resident set size in bytes (run_hypercorn serves in this process)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakRSS:
    """Samples the resident set size every 10 ms in a thread; keeps the peak."""

    def __init__(self) -> None:
        self.baseline = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, rss())
