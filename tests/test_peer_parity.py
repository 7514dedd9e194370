"""What Litestar and Starlette users expect of listeners, streams and denials (issue 11).

Each test names the peer behaviour it holds plait to. They run in-process on asyncio and
trio; ``tests/integration/test_peer_parity_hypercorn.py`` runs the same behaviours under
real hypercorn.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Annotated, Any, ClassVar, Literal

import anyio
import pytest

import plait
from _support import closed
from plait import App, Deny, Listener, WebSocket, WebSocketRoute, use
from plait._injection import InjectionError
from plait._paths import RouteConflictError
from plait.testing import AsyncTestClient, WebSocketDenied

pytestmark = pytest.mark.anyio


async def denial(app: App, path: str) -> WebSocketDenied:
    async with AsyncTestClient(app) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect(path):
                pass
    return info.value


def errors_of(denied: WebSocketDenied) -> list[dict[str, str]]:
    body: dict[str, Any] = plait._codec.decode_json(denied.body)
    assert body["detail"] == "invalid parameters"
    errors: list[dict[str, str]] = body["errors"]
    return errors


# -- 1. class-based listener hooks get injection ------------------------------------------


async def test_class_listener_hooks_take_parameters_and_dependencies() -> None:
    """Litestar: ``async def on_accept(self, socket: WebSocket, some: str)`` gets the
    dependency ``some``; so do ``on_disconnect`` and ``on_receive``, with path and query
    parameters and headers, one dependency value per connection, torn down after
    ``on_disconnect``."""
    events: list[str] = []

    def provide_some(room: str) -> Iterator[str]:
        events.append(f"made for {room}")
        yield f"some-{room}"
        events.append("torn down")

    class Room(Listener):
        path = "/rooms/{room}"
        dependencies: ClassVar[dict[str, Any]] = {"some": provide_some}

        async def on_accept(
            self, socket: WebSocket, some: str, user: str, x_client: Annotated[str, plait.Header()]
        ) -> None:
            self.greeting = f"{some}/{user}/{x_client}"
            await socket.send_text(f"hello {self.greeting}")

        async def on_receive(self, data: str, room: str, some: str) -> str:
            return f"{room}:{some}:{data}"

        def on_disconnect(self, socket: WebSocket, room: str, some: str) -> None:
            events.append(f"bye {room} {some} after {self.greeting}")

    headers = {"x-client": "web"}
    async with (
        AsyncTestClient(App(routes=[Room])) as client,
        client.websocket_connect("/rooms/lobby?user=ada", headers=headers) as ws,
    ):
        assert await ws.receive_text() == "hello some-lobby/ada/web"
        await ws.send_text("hi")
        assert await ws.receive_text() == "lobby:some-lobby:hi"
    bye = "bye lobby some-lobby after some-lobby/ada/web"
    assert events == ["made for lobby", bye, "torn down"]


async def test_a_hook_parameter_missing_from_the_handshake_is_a_400() -> None:
    """Litestar answers a missing query parameter of any handler with a 400 naming it;
    plait reads the hooks' parameters with the others', before accepting."""

    class Needs(Listener):
        path = "/needs"

        async def on_accept(self, socket: WebSocket, token: str) -> None:
            raise AssertionError("not reached")

        async def on_receive(self, data: str) -> None:
            raise AssertionError("not reached")

    denied = await denial(App(routes=[Needs]), "/needs")
    assert denied.status_code == 400
    assert errors_of(denied) == [{"source": "query", "name": "token", "message": "missing"}]


# -- 2. function listeners take hooks ------------------------------------------------------


async def test_function_listener_hooks_are_injected_and_on_disconnect_always_runs() -> None:
    """Litestar's ``websocket_listener(path, on_accept=..., on_disconnect=...)``: both hooks
    are injected like the listener, and ``on_disconnect`` runs on a clean close and when
    the handler is cancelled because the client left mid-call."""
    events: list[str] = []
    started = anyio.Event()

    async def on_accept(socket: WebSocket, name: str) -> None:
        events.append(f"accept {name}")
        await socket.send_json({"welcome": name})

    async def on_disconnect(socket: WebSocket, name: str) -> None:
        await anyio.lowlevel.checkpoint()  # may await while the connection is cancelled
        events.append(f"disconnect {name}")

    @plait.listener("/chat", on_accept=on_accept, on_disconnect=on_disconnect)
    async def chat(data: str, name: str) -> str:
        if data == "hang":
            started.set()
            try:
                await anyio.sleep_forever()
            finally:
                events.append("listener cancelled")
        return f"{name}: {data}"

    async with AsyncTestClient(App(routes=[chat])) as client:
        async with client.websocket_connect("/chat?name=ada") as ws:
            assert await ws.receive_json() == {"welcome": "ada"}
            await ws.send_text("hi")
            assert await ws.receive_text() == "ada: hi"
        assert events == ["accept ada", "disconnect ada"]
        events.clear()
        async with client.websocket_connect("/chat?name=bob") as ws:
            await ws.receive_json()
            await ws.send_text("hang")
            await started.wait()
    assert events == ["accept bob", "listener cancelled", "disconnect bob"]


async def test_on_disconnect_runs_when_on_accept_fails_and_a_sync_hook_runs_in_place() -> None:
    """Litestar's connection lifespan calls ``on_disconnect`` in a ``finally`` around
    ``on_accept``: a failing ``on_accept`` closes with 1011 and still tears down."""
    events: list[str] = []

    def on_accept(socket: WebSocket) -> None:
        events.append(f"accept in {threading.current_thread().name}")
        raise RuntimeError("the room is on fire")

    def on_disconnect() -> None:
        events.append("disconnect")

    @plait.listener("/x", on_accept=on_accept, on_disconnect=on_disconnect)
    async def listen(data: str) -> None:
        raise AssertionError("not reached")

    async with (
        AsyncTestClient(App(routes=[listen])) as client,
        client.websocket_connect("/x") as ws,
    ):
        info = await closed(ws)
    assert (info.code, info.reason) == (1011, "internal error")  # no exception text
    assert events == [f"accept in {threading.main_thread().name}", "disconnect"]


async def test_stream_routes_take_hooks_too_and_a_denying_on_accept_closes_1008() -> None:
    """Hooks belong to the route, so a stream route has them as a listener route does; a
    ``Deny`` from ``on_accept`` closes with 1008 and its detail, as from a handler."""
    events: list[str] = []

    async def on_accept(socket: WebSocket, room: str) -> None:
        if room == "closed":
            raise Deny(detail="this room is closed")
        events.append(f"accept {room}")

    async def on_disconnect(room: str) -> None:
        events.append(f"disconnect {room}")

    @plait.stream("/feed/{room}", on_accept=on_accept, on_disconnect=on_disconnect)
    async def feed(room: str) -> AsyncGenerator[str, None]:
        yield f"news for {room}"

    async with AsyncTestClient(App(routes=[feed])) as client:
        async with client.websocket_connect("/feed/lobby") as ws:
            assert await ws.receive_text() == "news for lobby"
            assert (await closed(ws)).code == 1000  # the stream ended
        async with client.websocket_connect("/feed/closed") as ws:
            info = await closed(ws)
    assert (info.code, info.reason) == (1008, "this room is closed")
    assert events == ["accept lobby", "disconnect lobby", "disconnect closed"]


def test_hooks_are_refused_where_they_cannot_run() -> None:
    """A low-level handler accepts and ends the connection itself: hooks there would never
    be called, so the route refuses them when it is built, as do generator hooks."""

    async def hook(socket: WebSocket) -> None: ...

    async def generator_hook(socket: WebSocket) -> AsyncGenerator[None, None]:
        yield

    with pytest.raises(RouteConflictError, match="low-level handler"):
        plait.WebSocketRoute("/h", on_accept=hook).ws_handler(hook)
    with pytest.raises(InjectionError, match="on_disconnect"):

        @plait.listener("/g", on_disconnect=generator_hook)
        async def listen(data: str) -> None: ...


# -- 3. a stream may read its own socket ------------------------------------------------------


async def test_a_stream_reads_its_socket_with_on_receive_stream() -> None:
    """Litestar's ``websocket_stream(..., listen_for_disconnect=False)``: the stream reads
    the socket itself, gets every message in order, and the client leaving still
    cancels it (its ``finally`` runs)."""
    events: list[str] = []

    @plait.stream("/upper", on_receive="stream")
    async def upper(socket: WebSocket) -> AsyncGenerator[str, None]:
        try:
            while True:
                yield (await socket.receive_text()).upper()
        finally:
            events.append("stream ended")

    @plait.stream("/ticks", on_receive="stream")
    async def ticks(socket: WebSocket) -> AsyncGenerator[int, None]:
        try:
            for tick in range(10**6):
                yield tick
                await anyio.sleep(0.01)  # it never reads: only the peer leaving ends it
        finally:
            events.append("ticks cancelled")

    async with AsyncTestClient(App(routes=[upper, ticks])) as client:
        async with client.websocket_connect("/upper") as ws:
            for word in ("a", "b", "c"):
                await ws.send_text(word)
            assert [await ws.receive_text() for _ in range(3)] == ["A", "B", "C"]
        async with client.websocket_connect("/ticks") as ws:
            assert await ws.receive_json() == 0
    assert events == ["stream ended", "ticks cancelled"]


async def test_messages_sent_just_before_the_close_reach_the_reading_stream() -> None:
    """trio-websocket and Starlette hand over every message that arrived before the
    close; a stream that reads its socket gets them too, then the disconnect."""
    got: list[str] = []
    done = anyio.Event()

    @plait.stream("/read", on_receive="stream")
    async def read(socket: WebSocket) -> AsyncGenerator[str, None]:
        try:
            async for text in socket.iter_text():
                got.append(text)
                await anyio.sleep(0.005)  # slower than the client
        finally:
            done.set()
        yield "never"  # pragma: no cover - makes this an async generator

    async with AsyncTestClient(App(routes=[read])) as client:
        async with client.websocket_connect("/read") as ws:
            for n in range(20):
                await ws.send_text(str(n))
        with anyio.fail_after(5):
            await done.wait()
    assert got == [str(n) for n in range(20)]


@pytest.mark.parametrize("kind", ["discard", "close", "listener"])
async def test_a_read_that_would_race_the_route_is_refused_with_a_clear_error(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Litestar's default stream listens for the disconnect itself, and a second reader
    there loses messages silently. plait refuses the read instead: the stream fails
    with an error that says what to do, logged once, and the client gets 1011 with no
    exception text."""
    route = WebSocketRoute("/r", on_receive="close" if kind == "close" else "discard")

    @route.stream
    async def reader(socket: WebSocket) -> AsyncGenerator[str, None]:
        yield await socket.receive_text()

    if kind == "listener":

        @route.listener
        async def echo(data: str) -> str:
            return data

    async with (
        AsyncTestClient(App(routes=[route])) as client,
        client.websocket_connect("/r") as ws,
    ):
        info = await closed(ws)
    assert (info.code, info.reason) == (1011, "internal error")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    hint = "listener's data" if kind == "listener" else "on_receive='stream'"
    assert hint in caplog.text
    assert "reads every incoming message itself" in caplog.text


def test_on_receive_stream_and_a_listener_cannot_share_a_route() -> None:
    """The listener and the streams would split the messages between them."""
    route = WebSocketRoute("/both", on_receive="stream")
    with pytest.raises(RouteConflictError, match="on_receive='stream'"):

        @route.listener
        async def listen(data: str) -> None: ...

    with pytest.raises(ValueError, match="on_receive"):
        WebSocketRoute("/bad", on_receive="read")  # type: ignore[arg-type]


# -- 4. sync listeners and send modes ------------------------------------------------------


async def test_a_plain_def_listener_runs_in_a_worker_thread() -> None:
    """Litestar runs a sync ``websocket_listener`` in a thread rather than refusing it;
    so does plait, with injection, for a class-based listener too, and at
    ``concurrency=2`` two calls overlap."""
    threads: set[int] = set()
    both = threading.Barrier(2, timeout=5)

    @plait.listener("/sync", concurrency=2)
    def shout(data: str, name: str) -> str:
        threads.add(threading.get_ident())
        if data.startswith("pair"):
            both.wait()  # two worker threads at once, or this times out
        return f"{name}: {data.upper()}"

    class Sync(Listener):
        path = "/sync-class"

        def on_receive(self, data: dict[str, int]) -> dict[str, int]:
            threads.add(threading.get_ident())
            return {key: value + 1 for key, value in data.items()}

    async with AsyncTestClient(App(routes=[shout, Sync])) as client:
        async with client.websocket_connect("/sync?name=ada") as ws:
            await ws.send_text("pair one")
            await ws.send_text("pair two")
            replies = {await ws.receive_text(), await ws.receive_text()}
            assert replies == {"ada: PAIR ONE", "ada: PAIR TWO"}
        async with client.websocket_connect("/sync-class") as ws:
            await ws.send_json({"a": 1})
            assert await ws.receive_json() == {"a": 2}
    assert threading.main_thread().ident not in threads
    assert len(threads) >= 2  # the two "pair" calls met at the barrier


async def test_send_modes_choose_the_frame_for_every_reply() -> None:
    """Litestar's ``mode="text"`` sends returned bytes as text and ``mode="binary"`` sends
    text as binary; with no mode plait goes by the reply's type (str text, bytes binary,
    JSON text), for listeners and streams alike."""
    replies: dict[str, Any] = {"str": "héllo", "bytes": "héllo".encode(), "json": {"a": 1}}

    def route(mode: Literal["text", "binary"] | None) -> WebSocketRoute:
        route = WebSocketRoute(f"/{mode}")

        @route.listener(mode=mode)
        async def reply(data: str) -> Any:
            return replies[data]

        return route

    @plait.stream("/stream-text", mode="text")
    async def stream_text() -> AsyncGenerator[bytes, None]:
        yield b"as text"

    routes = [route("text"), route("binary"), route(None), stream_text]
    async with AsyncTestClient(App(routes=routes)) as client:
        frames: dict[str, list[tuple[str, Any]]] = {}
        for mode in ("text", "binary", "None"):
            frames[mode] = []
            async with client.websocket_connect(f"/{mode}") as ws:
                for kind in replies:
                    await ws.send_text(kind)
                    message = await ws.receive()
                    frame = "text" if message.get("text") is not None else "bytes"
                    frames[mode].append((frame, message[frame]))
        async with client.websocket_connect("/stream-text") as ws:
            assert await ws.receive_text() == "as text"
    assert frames["text"] == [("text", "héllo"), ("text", "héllo"), ("text", '{"a":1}')]
    encoded = "héllo".encode()
    assert frames["binary"] == [("bytes", encoded), ("bytes", encoded), ("bytes", b'{"a":1}')]
    assert frames["None"] == [("text", "héllo"), ("bytes", encoded), ("text", '{"a":1}')]


async def test_bytes_that_are_not_utf8_on_a_text_route_are_a_clear_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The application's mistake, not the client's: 1011 with no detail for the client,
    and a log line that says what to change."""

    @plait.listener("/t", mode="text")
    async def reply(data: str) -> bytes:
        return b"\xff\xfe"

    async with (
        AsyncTestClient(App(routes=[reply])) as client,
        client.websocket_connect("/t") as ws,
    ):
        await ws.send_text("go")
        info = await closed(ws)
    assert (info.code, info.reason) == (1011, "internal error")
    assert "bytes that are not UTF-8: return str, or use mode='binary'" in caplog.text


def test_a_generator_listener_is_refused_when_built() -> None:
    """A generator is a stream's shape, not a listener's: say so at build time."""
    with pytest.raises(InjectionError, match="not a generator"):

        @plait.listener("/g")
        async def listen(data: str) -> AsyncGenerator[str, None]:
            yield data


# -- 6. denials that help -------------------------------------------------------------------


async def test_a_parameter_shared_by_a_listener_and_a_stream_is_reported_once() -> None:
    """A dependency shared by the listener and a stream reads ``name`` once: a missing
    ``name`` is one entry in the 400, as FastAPI lists each failing field once."""

    def user(name: str) -> str:
        return name

    route = WebSocketRoute("/both", dependencies={"who": user})

    @route.listener
    async def listen(data: str, who: str) -> str:
        return who

    @route.stream
    async def feed(who: str, limit: int) -> AsyncGenerator[str, None]:
        yield who

    @route.stream
    async def other(who: Annotated[str, use(user)]) -> AsyncGenerator[str, None]:
        yield who

    denied = await denial(App(routes=[route]), "/both?limit=abc")
    assert errors_of(denied) == [
        {"source": "query", "name": "name", "message": "missing"},
        {"source": "query", "name": "limit", "message": 'expected an integer, got "abc"'},
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=abc", 'expected an integer, got "abc"'),
        ("limit=0", 'expected an integer >= 1, got "0"'),
        ("ratio=half", 'expected a number, got "half"'),
        ("flag=maybe", 'expected true or false, got "maybe"'),
        ("color=green", "expected one of 'red', 'blue', got \"green\""),
        ("ids=1&ids=x", 'item 2: expected an integer, got "x"'),
        ("when=soon", 'expected a date (2026-01-31), got "soon"'),
        ("key=nope", 'expected a UUID, got "nope"'),
    ],
)
async def test_a_value_of_the_wrong_type_is_explained_in_words(query: str, message: str) -> None:
    """Every query value is a string, so msgspec's "Expected `int`, got `str`" tells a
    client's author nothing: plait says what was wanted and what came."""
    import datetime
    import uuid

    import msgspec

    @plait.websocket("/q")
    async def handler(
        ws: WebSocket,
        limit: Annotated[int, msgspec.Meta(ge=1)] = 1,
        ratio: float = 1.0,
        flag: bool = False,
        color: Literal["red", "blue"] = "red",
        ids: list[int] | None = None,
        when: datetime.date | None = None,
        key: uuid.UUID | None = None,
    ) -> None:
        raise AssertionError("not reached")

    denied = await denial(App(routes=[handler]), f"/q?{query}")
    [error] = errors_of(denied)
    assert error["message"] == message
