"""Several streams and a listener on one socket: ``hypercorn -k trio examples.dashboard:app``.

``/dashboard`` is declarative: two streams and a listener on one route, each item tagged
with its stream's name. ``/by-hand`` does the same with a low-level handler and an
anyio task group, to show what the route does for you: everything runs in the
connection's task group, so when the client leaves, every part is cancelled.

``http://127.0.0.1:8000/`` is a page that shows both feeds, each in its own list, with
plait's browser client (served at ``/plait.js``): ``dashboard_static/``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Annotated

import anyio
import msgspec

import plait
from plait import WebSocket
from plait.types import Receive, Scope, Send


class Command(msgspec.Struct):
    """What the client may send: change the ticker's speed."""

    every: float


class Settings:
    """Per-connection settings shared by the listener and the streams."""

    def __init__(self) -> None:
        self.every = 0.5


def settings() -> Settings:
    """One Settings per connection (a reused dependency)."""
    return Settings()


dashboard = plait.WebSocketRoute("/dashboard", tag_streams=True)


@dashboard.stream
async def ticker(s: Annotated[Settings, plait.use(settings)]) -> AsyncGenerator[int, None]:
    """A counter at the speed the client chose."""
    for n in itertools.count():
        yield n
        await anyio.sleep(s.every)


@dashboard.stream(name="clock")
async def clock() -> AsyncGenerator[float, None]:
    """The server's wall clock, once a second: seconds since the epoch, which the page
    shows as a time of day (``anyio.current_time()`` is monotonic: no time of day)."""
    while True:
        yield round(time.time(), 3)
        await anyio.sleep(1)


@dashboard.listener
async def control(data: Command, s: Annotated[Settings, plait.use(settings)]) -> dict[str, float]:
    """Change the ticker's speed; answer with the new setting."""
    s.every = max(0.05, data.every)
    return {"every": s.every}


@plait.websocket("/by-hand")
async def by_hand(ws: WebSocket) -> None:
    """The same dashboard, written by hand with a task group."""
    await ws.accept()
    every = 0.5

    async def ticker() -> None:
        for n in itertools.count():
            await ws.send_json({"stream": "ticker", "data": n})
            await anyio.sleep(every)

    async def clock() -> None:
        while True:
            await ws.send_json({"stream": "clock", "data": round(time.time(), 3)})
            await anyio.sleep(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        tg.start_soon(clock)
        async for command in ws.iter_json():
            every = max(0.05, float(command["every"]))
            await ws.send_json({"every": every})
        tg.cancel_scope.cancel()  # the client left: stop the streams


PAGE = Path(__file__).parent / "dashboard_static"
FILES = {"/": ("index.html", b"text/html"), "/dashboard.js": ("dashboard.js", b"text/javascript")}


async def page(scope: Scope, receive: Receive, send: Send) -> None:
    """HTTP for the page: ``/`` and its script; 404 for anything else."""
    if scope["type"] != "http":
        return  # no lifespan to run: returning at once says so
    found = FILES.get(scope["path"])
    if found is None:
        status, media_type, body = 404, b"text/plain", b"Not Found"
    elif scope["method"] not in ("GET", "HEAD"):
        status, media_type, body = 405, b"text/plain", b"Method Not Allowed"
    else:
        status, media_type = 200, found[1]
        body = await anyio.Path(PAGE / found[0]).read_bytes()
    headers = [
        (b"content-type", media_type + b"; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


app = plait.App(routes=[dashboard, by_hand], fallback=page, client_path="/plait.js")
