"""Idle WebSocket apps that count their live handlers, loaded as ``benchmarks.scale_apps:NAME``.

The same idle connections as `benchmarks.memory_apps` (accept, tell the client with one
text frame, then wait for it to leave), for `benchmarks.scale`, which holds 19,000 of them,
kills the clients and times the end of every handler:

- ``raw``: bare ASGI: accept, send ``"ready"``, then ``receive`` until
  ``websocket.disconnect``. The baseline.
- ``raw_heartbeat``: the same with the heartbeat that ``plait_app`` runs, written by hand
  as a raw ASGI app would: a second task (an anyio task group per connection) sleeps for
  the interval, sends ``ping``, and closes with 1001 when no ``pong`` came within the
  timeout. The baseline for what a heartbeat costs at rest, whoever sends it.
- ``plait``: `plait.serve_connection` with a handler that accepts, sends ``"ready"`` and
  loops ``async for _ in ws.iter_text(): pass``.
- ``plait_app``: a `plait.App` route on ``/`` with ``heartbeat=plait.Heartbeat(30, 10)``
  (the engine sends the text ``ping`` every 30 s and closes with 1001 when nothing
  arrives within 10 s after it; the client answers ``pong``), a typed listener that echoes
  ``data: str`` (the echo of the client's message is its "ready") and one idle stream.

Each counts its live handlers in its own ``try``/``finally`` (the stream's, for
``plait_app``: the one part of the route that lives as long as the connection), so the
count costs one integer per process and a clock reading per ending handler, and no
wrapper frame per connection. The handlers are written out here rather than wrapped
around those of `benchmarks.memory_apps` for that reason, and this module imports
neither Litestar nor Starlette (the servers start in half the time).

The count is served over HTTP by the same app, on the same port: ``GET /stats`` answers
JSON with ``live`` (handlers running), ``started``, ``ended``, ``last_finally`` (the
``time.monotonic()`` of the last handler's ``finally``: the same clock in every process of
the machine, so the benchmark subtracts its own reading of the moment it killed the
clients), ``gc_count``, ``gc_stats`` (``gc.get_stats()``: what the automatic collections
of each generation have freed so far) and ``gc_seconds`` (the time they took, by
generation, measured with ``gc.callbacks``); ``GET /stats?collect=1`` adds ``objects``
(``len(gc.get_objects())`` before collecting), ``collected`` (what ``gc.collect()``
returned: the objects that only the collector would have freed), ``objects_after`` and
``garbage``. Nothing is done per
connection to serve it; it is computed when asked.
"""

from __future__ import annotations

import gc
import json
import os
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import anyio

import plait as _plait
from benchmarks._asgi import READY, ASGIApp, Receive, Scope, Send, idle_raw, serve_lifespan
from benchmarks._cpu import CollectorTime

NAMES = ("raw", "raw_heartbeat", "plait", "plait_app")
"""Every scale app, the baseline first."""
STATS_PATH = "/stats"
STATS_TIMEOUT = 30.0
"""Seconds `read_stats` waits (a server tearing down 19,000 connections is slow to answer)."""
HEARTBEAT = _plait.Heartbeat(
    *(float(part) for part in os.environ.get("PLAIT_SCALE_HEARTBEAT", "30,10").split(","))
)
"""``plait_app``'s heartbeat: ``Heartbeat(30, 10)``, or the interval and timeout in
``PLAIT_SCALE_HEARTBEAT`` (``"0.2,0.3"``; the tests use a short one)."""


class _Handlers:
    """How many handlers of this process started and ended, when the last one ended, and
    how long the automatic collections took."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0
        self.last_finally: float | None = None
        self.collector = CollectorTime()
        gc.callbacks.append(self.collector)

    def start(self) -> None:
        self.started += 1

    def end(self) -> None:
        self.ended += 1
        self.last_finally = time.monotonic()

    def snapshot(self, collect: bool) -> dict[str, Any]:
        """The counts as JSON-ready values; with `collect`, run the collector and say what
        it found."""
        stats: dict[str, Any] = {
            "live": self.started - self.ended,
            "started": self.started,
            "ended": self.ended,
            "last_finally": self.last_finally,
            "gc_count": gc.get_count(),
            "gc_stats": gc.get_stats(),
            "gc_seconds": self.collector.seconds,
        }
        if collect:
            stats["objects"] = len(gc.get_objects())
            stats["collected"] = gc.collect()
            stats["objects_after"] = len(gc.get_objects())
            stats["garbage"] = len(gc.garbage)
        return stats


HANDLERS = _Handlers()
"""This process's handlers (hypercorn ``-w 0`` serves in one process)."""


def unavailable_reason(name: str) -> str | None:
    """Say why an app cannot run in this environment.

    Args:
        name: One of `NAMES`.

    Returns:
        A sentence for the report, or None when the app can run.
    """
    if name not in NAMES:
        return f"unknown app {name!r}; choose from {', '.join(NAMES)}"
    if name == "plait" and not hasattr(_plait, "serve_connection"):
        return "plait.serve_connection is not importable"
    if name == "plait_app" and not hasattr(_plait, "Heartbeat"):
        return "plait.Heartbeat is not importable"
    return None


async def serve_stats(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer ``GET /stats`` (``?collect=1`` runs the collector) with JSON, other HTTP
    requests with 404, and the lifespan (as the ``plait_app`` App's fallback).

    Args:
        scope: An HTTP or lifespan scope.
        receive: The ASGI receive callable (the lifespan's; a request's body is not read).
        send: The ASGI send callable.
    """
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["type"] != "http" or scope["path"] != STATS_PATH:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    body = json.dumps(HANDLERS.snapshot(collect=query.get("collect") == ["1"])).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def read_stats(port: int, collect: bool = False, host: str = "127.0.0.1") -> dict[str, Any]:
    """Ask a server of these apps for its ``GET /stats`` (the client side of `serve_stats`).

    Args:
        port: The server's port.
        collect: Ask the server to run ``gc.collect()`` and say what it found.
        host: The server's address.

    Returns:
        The JSON object.
    """
    url = f"http://{host}:{port}{STATS_PATH}" + ("?collect=1" if collect else "")
    with urllib.request.urlopen(url, timeout=STATS_TIMEOUT) as response:
        stats: dict[str, Any] = json.load(response)
        return stats


def _counted_app(serve: ASGIApp, doc: str) -> ASGIApp:
    """An app that serves WebSockets with ``serve``, answers lifespan, and serves the stats."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await serve(scope, receive, send)
        else:
            await serve_stats(scope, receive, send)

    app.__doc__ = doc
    return app


async def _idle_raw(receive: Receive, send: Send) -> None:
    """The memory benchmark's raw idle app, counting its handler."""
    HANDLERS.start()
    try:
        await idle_raw(receive, send)
    finally:
        HANDLERS.end()


raw = _counted_app(
    lambda scope, receive, send: _idle_raw(receive, send),
    "Raw ASGI idle app counting its handlers: the baseline every difference subtracts.",
)


async def _idle_raw_heartbeat(receive: Receive, send: Send) -> None:
    """Accept, say so, ping every interval, close if a pong is late; read until the
    client leaves."""
    if (await receive())["type"] != "websocket.connect":
        return
    HANDLERS.start()
    try:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": READY})
        answered = [True]
        async with anyio.create_task_group() as tasks:

            async def ping() -> None:
                while True:
                    await anyio.sleep(HEARTBEAT.interval)
                    answered[0] = False
                    await send({"type": "websocket.send", "text": HEARTBEAT.ping})
                    await anyio.sleep(HEARTBEAT.timeout)
                    if not answered[0]:
                        await send({"type": "websocket.close", "code": 1001})
                        return

            tasks.start_soon(ping)
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    break
                if message.get("text") == HEARTBEAT.pong:
                    answered[0] = True
            tasks.cancel_scope.cancel()
    finally:
        HANDLERS.end()


raw_heartbeat = _counted_app(
    lambda scope, receive, send: _idle_raw_heartbeat(receive, send),
    "Raw ASGI idle app with a hand-written heartbeat, counting its handlers.",
)


async def _plait_idle(ws: _plait.WebSocket) -> None:
    """Accept, say so, then read text until the client disconnects."""
    HANDLERS.start()
    try:
        await ws.accept()
        await ws.send_text(READY)
        async for _ in ws.iter_text():
            pass
    finally:
        HANDLERS.end()


plait = _counted_app(
    lambda scope, receive, send: _plait.serve_connection(scope, receive, send, _plait_idle),
    "plait idle app counting its handlers: the same through `plait.serve_connection`.",
)


def plait_route_app(heartbeat: _plait.Heartbeat) -> ASGIApp:
    """A plait App route with ``heartbeat``, a typed listener and an idle stream; HTTP goes
    to the stats (``plait_app``, and `benchmarks.heartbeat`'s route)."""
    route = _plait.WebSocketRoute("/", heartbeat=heartbeat)

    @route.listener
    async def echo(data: str) -> str:
        """Each text message sent back (the first one is the client's ready check)."""
        return data

    @route.stream
    async def idle() -> AsyncIterator[str]:
        """Sleep until the connection ends, counted: an idle subscription."""
        HANDLERS.start()
        try:
            await anyio.sleep_forever()
        finally:
            HANDLERS.end()
        yield ""  # never reached; makes this an async generator

    app: ASGIApp = _plait.App(routes=[route], fallback=serve_stats)
    return app


plait_app = plait_route_app(HEARTBEAT)
