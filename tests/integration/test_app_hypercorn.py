"""The App under real hypercorn (asyncio and trio workers), driven by `websockets` and urllib.

Mounted in Starlette, FastAPI and Litestar; alone with an HTTP fallback; shut down
while a client is connected; with a lifespan. The server runs in a background thread
of this process, so handlers record what happened where the test can see it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, Literal

import anyio
import pytest
from fastapi import FastAPI
from litestar import Litestar, asgi, get
from litestar.types import Receive as LitestarReceive
from litestar.types import Scope as LitestarScope
from litestar.types import Send as LitestarSend
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

import plait
from plait import App, WebSocket
from plait.testing import HypercornServer, run_hypercorn
from plait.types import ASGIApp

pytestmark = pytest.mark.integration

WorkerClass = Literal["asyncio", "trio"]


class Events:
    """What handlers and lifespans report, appended from the server's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[str] = []

    def add(self, event: str) -> None:
        with self._lock:
            self._events.append(event)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self._events)


def open_client(address: str) -> ClientConnection:
    return connect(address, open_timeout=5, close_timeout=5)


def http_get(address: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(address, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


# -- one plait App, mounted in three frameworks ------------------------------------------


@plait.websocket("/echo/{name}")
async def echo(ws: WebSocket, name: str) -> None:
    await ws.accept()
    await ws.send_text(f"hello {name}")
    async for text in ws.iter_text():
        await ws.send_text(text)


PLAIT_APP = App([echo])


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("starlette home")


def starlette_host() -> ASGIApp:
    return Starlette(routes=[Route("/", home), Mount("/ws", app=PLAIT_APP)])


def fastapi_host() -> ASGIApp:
    host = FastAPI()

    @host.get("/")
    async def fastapi_home() -> dict[str, str]:
        return {"home": "fastapi"}

    host.mount("/ws", PLAIT_APP)
    return host


def litestar_host() -> ASGIApp:
    @get("/", sync_to_thread=False)
    def litestar_home() -> str:
        return "litestar home"

    # Litestar hands a mount every scope type below its path, with scope["path"] cut
    # to the part below the mount point (plus a trailing "/") and root_path untouched.
    @asgi("/ws", is_mount=True, copy_scope=True)
    async def plait_mount(
        scope: LitestarScope, receive: LitestarReceive, send: LitestarSend
    ) -> None:
        await PLAIT_APP(scope, receive, send)  # type: ignore[arg-type]

    return Litestar([litestar_home, plait_mount])


HOSTS: dict[str, tuple[Callable[[], ASGIApp], bytes]] = {
    "starlette": (starlette_host, b"starlette home"),
    "fastapi": (fastapi_host, b'{"home":"fastapi"}'),
    "litestar": (litestar_host, b"litestar home"),
}


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def worker_class(request: pytest.FixtureRequest) -> WorkerClass:
    worker: WorkerClass = request.param
    return worker


@pytest.fixture(scope="module", params=list(HOSTS))
def host(
    request: pytest.FixtureRequest, worker_class: WorkerClass
) -> Iterator[tuple[str, HypercornServer]]:
    make, _ = HOSTS[request.param]
    with run_hypercorn(make(), worker_class=worker_class) as running:
        yield request.param, running


def test_websocket_through_the_mount_gets_the_path_parameter(
    host: tuple[str, HypercornServer],
) -> None:
    _, server = host
    with open_client(server.url("/ws/echo/alice")) as ws:
        assert ws.recv(timeout=5) == "hello alice"
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"


def test_an_unknown_path_below_the_mount_is_404(host: tuple[str, HypercornServer]) -> None:
    _, server = host
    with pytest.raises(InvalidStatus) as info:
        open_client(server.url("/ws/nowhere"))
    assert info.value.response.status_code == 404
    assert b"no WebSocket route for /nowhere" in info.value.response.body


def test_the_host_frameworks_http_route_still_answers(host: tuple[str, HypercornServer]) -> None:
    name, server = host
    assert http_get(server.url("/", scheme="http")) == (200, HOSTS[name][1])


# -- an App with (or without) an HTTP fallback ------------------------------------------------


def fallback_app() -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        yield {"greeting": "hello from starlette"}

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.state.greeting)

    return Starlette(routes=[Route("/hello", hello)], lifespan=lifespan)


@pytest.fixture(scope="module")
def with_fallback(worker_class: WorkerClass) -> Iterator[HypercornServer]:
    with run_hypercorn(App([echo], fallback=fallback_app()), worker_class=worker_class) as running:
        yield running


@pytest.fixture(scope="module")
def without_fallback(worker_class: WorkerClass) -> Iterator[HypercornServer]:
    with run_hypercorn(App([echo]), worker_class=worker_class) as running:
        yield running


def test_http_goes_to_the_fallback_with_its_lifespan_state(
    with_fallback: HypercornServer,
) -> None:
    # The greeting comes from the fallback's own lifespan, run by the App's.
    assert http_get(with_fallback.url("/hello", scheme="http")) == (200, b"hello from starlette")
    assert http_get(with_fallback.url("/missing", scheme="http"))[0] == 404
    with open_client(with_fallback.url("/echo/bob")) as ws:
        assert ws.recv(timeout=5) == "hello bob"


def test_http_without_a_fallback_is_404(without_fallback: HypercornServer) -> None:
    assert http_get(without_fallback.url("/hello", scheme="http")) == (404, b"Not Found")


# -- shutdown and lifespan, one server per test ---------------------------------------------


def recording_app(events: Events, **options: Any) -> App:
    """An App with a lifespan, whose ``/sleep`` handler holds a generator dependency."""

    @contextlib.asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        events.add("startup")
        try:
            yield {"db": "ready"}
        finally:
            events.add(f"shutdown with {app.connections()} connections")

    async def resource() -> AsyncIterator[str]:
        events.add("resource open")
        try:
            yield "resource"
        finally:
            events.add("resource closed")

    @plait.websocket("/sleep")
    async def sleeper(ws: WebSocket, res: Annotated[str, plait.use(resource)]) -> None:
        await ws.accept()
        await ws.send_text(f"{res} {ws.state.db}")
        try:
            await anyio.sleep(600)
        finally:
            events.add("handler finally")

    return App([sleeper], lifespan=lifespan, **options)


def test_server_shutdown_closes_with_1001_and_tears_down(worker_class: WorkerClass) -> None:
    events = Events()
    # hypercorn waits graceful_timeout for connections to end, then cancels them; the
    # engine answers the cancellation with a 1001 close.
    with contextlib.ExitStack() as stack:
        app = recording_app(events)
        with run_hypercorn(app, worker_class=worker_class, graceful_timeout=0.3) as server:
            ws = stack.enter_context(open_client(server.url("/sleep")))
            assert ws.recv(timeout=5) == "resource ready"
            left_at = time.monotonic()
        stopped_in = time.monotonic() - left_at
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "server shutting down")
    assert 0.3 <= stopped_in < 2.0
    assert events.snapshot() == [
        "startup",
        "resource open",
        "handler finally",
        "resource closed",
        "shutdown with 0 connections",  # hypercorn ends connections before the lifespan
    ]


def test_lifespan_starts_before_the_first_connection_and_stops_at_exit(
    worker_class: WorkerClass,
) -> None:
    events = Events()
    with run_hypercorn(recording_app(events), worker_class=worker_class) as server:
        assert events.snapshot() == ["startup"]
        with open_client(server.url("/sleep")) as ws:
            assert ws.recv(timeout=5) == "resource ready"  # the lifespan's state
        deadline = time.monotonic() + 5
        while "resource closed" not in events.snapshot() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "shutdown with 0 connections" not in events.snapshot()
    assert events.snapshot() == [
        "startup",
        "resource open",
        "handler finally",
        "resource closed",
        "shutdown with 0 connections",
    ]
