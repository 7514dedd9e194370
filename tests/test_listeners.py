"""Listeners, streams, composition, class-based listeners, accepting, dead peers."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any, TypedDict

import anyio
import anyio.lowlevel
import msgspec
import pytest

import plait
from _support import closed
from plait import App, Heartbeat, Listener, WebSocket, WebSocketRoute
from plait.testing import AsyncTestClient, WebSocketDenied

pytestmark = pytest.mark.anyio


class Chat(msgspec.Struct, tag="chat"):
    user: str
    content: str


class Join(msgspec.Struct, tag="join"):
    room: str


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int


# -- 1. typed listeners -----------------------------------------------------------------


async def test_listener_types_and_reply_encodings() -> None:
    @plait.listener("/str")
    async def text(data: str) -> str:
        return data.upper()

    @plait.listener("/bytes")
    async def raw(data: bytes) -> bytes:
        return data[::-1]

    @plait.listener("/dict")
    async def mapping(data: dict[str, int]) -> dict[str, int]:
        return {k: v * 2 for k, v in data.items()}

    @plait.listener("/union")
    async def dispatch(data: Chat | Join) -> Any:
        if isinstance(data, Join):
            return {"joined": data.room}
        return Chat(user="bot", content=f"re: {data.content}")

    @plait.listener("/dataclass", mode="binary")
    async def point(data: Point) -> Point:
        return Point(data.y, data.x)

    @plait.listener("/typeddict")
    async def movie(data: Movie) -> None:
        return None  # sends nothing

    app = App(routes=[text, raw, mapping, dispatch, point, movie])
    async with AsyncTestClient(app) as client:
        async with client.websocket_connect("/str") as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "HI"
        async with client.websocket_connect("/bytes") as ws:
            await ws.send_bytes(b"abc")
            assert await ws.receive_bytes() == b"cba"
        async with client.websocket_connect("/dict") as ws:
            await ws.send_json({"a": 1})
            assert await ws.receive_json() == {"a": 2}
        async with client.websocket_connect("/union") as ws:
            await ws.send_json({"type": "join", "room": "lobby"})
            assert await ws.receive_json() == {"joined": "lobby"}
            await ws.send_json({"type": "chat", "user": "ada", "content": "hello"})
            assert await ws.receive_json() == {
                "type": "chat",
                "user": "bot",
                "content": "re: hello",
            }
        async with client.websocket_connect("/dataclass") as ws:
            await ws.send_json({"x": 1, "y": 2}, mode="binary")
            assert await ws.receive_json(mode="binary") == {"x": 2, "y": 1}
        async with client.websocket_connect("/typeddict") as ws:
            await ws.send_json({"title": "Alien", "year": 1979})
            with pytest.raises(TimeoutError):
                await ws.receive(timeout=0.1)


async def test_invalid_message_closes_with_1007_naming_the_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @plait.listener("/chat")
    async def chat(data: Chat | Join) -> None:
        raise AssertionError("not reached")

    async with (
        AsyncTestClient(App(routes=[chat])) as client,
        client.websocket_connect("/chat") as ws,
    ):
        await ws.send_json({"type": "chat", "user": "ada", "content": 5})
        info = await closed(ws)
        assert info.code == 1007
        assert info.reason == "invalid message: Expected `str`, got `int` - at `$.content`"
        async with client.websocket_connect("/chat") as ws:
            await ws.send_text("{oops")
            assert (await closed(ws)).code == 1007
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_invalid_message_reply_and_hook_policies() -> None:
    seen: list[str] = []

    async def hook(socket: WebSocket, error: plait.MessageDecodeError) -> None:
        seen.append(str(error))
        await socket.send_text("try again")

    @plait.listener("/reply", on_invalid="reply")
    async def reply(data: Join) -> str:
        return f"joined {data.room}"

    @plait.listener("/hook", on_invalid=hook)
    async def hooked(data: Join) -> str:
        return "ok"

    async with AsyncTestClient(App(routes=[reply, hooked])) as client:
        async with client.websocket_connect("/reply") as ws:
            await ws.send_json({"type": "join"})
            assert await ws.receive_json() == {
                "error": "invalid message",
                "detail": "invalid message: Object missing required field `room`",
            }
            await ws.send_json({"type": "join", "room": "a"})
            assert await ws.receive_text() == "joined a"  # still connected
        async with client.websocket_connect("/hook") as ws:
            await ws.send_text("nope")
            assert await ws.receive_text() == "try again"
    assert len(seen) == 1
    assert seen[0].startswith("invalid JSON message: JSON is malformed")


# -- 2. concurrency ---------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_listener_concurrency_is_bounded(concurrency: int) -> None:
    in_flight = peak = 0
    release = anyio.Event()

    @plait.listener("/work", concurrency=concurrency)
    async def work(data: str) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        return data

    async with (
        AsyncTestClient(App(routes=[work])) as client,
        client.websocket_connect("/work") as ws,
    ):
        for i in range(6):
            await ws.send_text(str(i))
        await anyio.wait_all_tasks_blocked()
        assert peak == concurrency
        release.set()
        replies = [await ws.receive_text() for _ in range(6)]
    assert sorted(replies) == [str(i) for i in range(6)]
    if concurrency == 1:
        assert replies == [str(i) for i in range(6)]  # in order


async def test_concurrent_handlers_are_cancelled_on_disconnect() -> None:
    cancelled: list[str] = []

    @plait.listener("/slow", concurrency=4)
    async def slow(data: str) -> str:
        try:
            await anyio.sleep(600)
        finally:
            cancelled.append(data)
        return data

    async with (
        AsyncTestClient(App(routes=[slow])) as client,
        client.websocket_connect("/slow") as ws,
    ):
        for i in range(4):
            await ws.send_text(str(i))
        await anyio.wait_all_tasks_blocked()
    assert sorted(cancelled) == ["0", "1", "2", "3"]


# -- 3. streams ---------------------------------------------------------------------------


async def test_a_stream_sleeping_for_minutes_is_cancelled_at_disconnect() -> None:
    finished = anyio.Event()

    @plait.stream("/news")
    async def news() -> AsyncGenerator[str, None]:
        try:
            yield "first"
            await anyio.sleep(600)
            yield "never"
        finally:
            finished.set()

    async with AsyncTestClient(App(routes=[news])) as client:
        async with client.websocket_connect("/news") as ws:
            assert await ws.receive_text() == "first"
        # the client left: the generator, asleep for ten minutes, is cancelled now
        with anyio.fail_after(1):
            await finished.wait()


async def test_stream_only_routes_discard_or_refuse_incoming_messages() -> None:
    @plait.stream("/discard")
    async def counter(n: int = 3) -> AsyncGenerator[int, None]:
        for i in range(n):
            yield i
            await anyio.sleep(0.01)

    @plait.stream("/strict", on_receive="close")
    async def forever() -> AsyncGenerator[str, None]:
        while True:
            yield "tick"
            await anyio.sleep(0.01)

    async with AsyncTestClient(App(routes=[counter, forever])) as client:
        async with client.websocket_connect("/discard?n=3") as ws:
            await ws.send_text("ignored")
            assert [await ws.receive_json() for _ in range(3)] == [0, 1, 2]
            assert (await closed(ws)).code == 1000  # the stream ended: so does the socket
        async with client.websocket_connect("/strict") as ws:
            assert await ws.receive_text() == "tick"
            await ws.send_text("not allowed")
            info = await closed(ws)
        assert (info.code, info.reason) == (1003, "this endpoint does not accept messages")


# -- 4. composition -----------------------------------------------------------------------


def dashboard(fail_after: int | None = None) -> WebSocketRoute:
    route = WebSocketRoute("/dash", tag_streams=True)
    events: list[str] = []
    route.events = events  # type: ignore[attr-defined]

    @route.stream
    async def fast() -> AsyncGenerator[int, None]:
        try:
            i = 0
            while True:
                yield i
                i += 1
                if fail_after is not None and i == fail_after:
                    raise RuntimeError("the fast feed broke")
                await anyio.sleep(0.01)
        finally:
            events.append("fast done")

    @route.stream(name="slow")
    async def slow_feed() -> AsyncGenerator[str, None]:
        try:
            while True:
                yield "beat"
                await anyio.sleep(0.05)
        finally:
            events.append("slow done")

    @route.listener
    async def commands(data: dict[str, str]) -> dict[str, str]:
        return {"ack": data["cmd"]}

    return route


async def test_streams_and_a_listener_run_at_once_on_one_socket() -> None:
    route = dashboard()
    async with (
        AsyncTestClient(App(routes=[route])) as client,
        client.websocket_connect("/dash") as ws,
    ):
        await ws.send_json({"cmd": "hello"})
        got: list[Any] = [await ws.receive_json() for _ in range(25)]
    names = {item.get("stream", "reply") for item in got}
    assert names == {"fast", "slow", "reply"}
    assert {"ack": "hello"} in got
    fast = [item["data"] for item in got if item.get("stream") == "fast"]
    assert fast == list(range(len(fast)))  # each stream's order is kept
    assert sorted(route.events) == ["fast done", "slow done"]  # type: ignore[attr-defined]


async def test_one_failing_stream_closes_with_1011_and_cancels_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = dashboard(fail_after=5)
    async with (
        AsyncTestClient(App(routes=[route])) as client,
        client.websocket_connect("/dash") as ws,
    ):
        info = await closed(ws)
    assert (info.code, info.reason) == (1011, "internal error")
    assert sorted(route.events) == ["fast done", "slow done"]  # type: ignore[attr-defined]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "the fast feed broke" in caplog.text


# -- 5. class-based listeners --------------------------------------------------------------


async def test_class_based_listener_state_and_hooks() -> None:
    events: list[str] = []

    class Counter(Listener):
        path = "/count/{room}"

        async def on_accept(self, socket: WebSocket) -> None:
            self.count = 0
            events.append(f"accept {socket.path_params['room']}")

        async def on_receive(self, data: str, socket: WebSocket, room: str) -> str:
            self.count += 1
            return f"{room}#{self.count}: {data}"

        async def on_disconnect(self, socket: WebSocket) -> None:
            await anyio.lowlevel.checkpoint()  # may await, even when cancelled
            events.append(f"disconnect after {self.count}")

    async with AsyncTestClient(App(routes=[Counter])) as client:
        for _ in range(2):  # one instance per connection: counts start again
            async with client.websocket_connect("/count/lobby") as ws:
                await ws.send_text("a")
                await ws.send_text("b")
                assert await ws.receive_text() == "lobby#1: a"
                assert await ws.receive_text() == "lobby#2: b"
    assert events == ["accept lobby", "disconnect after 2"] * 2


# -- 6. accepting ------------------------------------------------------------------------


async def test_custom_accept_and_subprotocol_negotiation() -> None:
    async def custom_accept(socket: WebSocket) -> None:
        await socket.accept(headers=[(b"x-custom", b"value")], subprotocol="chat-v1")

    @plait.listener("/custom", connection_accept_handler=custom_accept)
    async def custom(data: str) -> str:
        return data

    @plait.listener("/negotiated", subprotocols=["chat-v2", "chat-v1"])
    async def negotiated(data: str, socket: WebSocket) -> str:
        return f"{socket.subprotocols} -> {data}"

    async def refuse(socket: WebSocket) -> None:
        await socket.close(code=4001, reason="Invalid token")

    @plait.stream("/refused", connection_accept_handler=refuse)
    async def refused() -> AsyncGenerator[str, None]:
        raise AssertionError("not reached")
        yield  # pragma: no cover

    app = App(routes=[custom, negotiated, refused])
    async with AsyncTestClient(app) as client:
        async with client.websocket_connect("/custom") as ws:
            assert ws.subprotocol == "chat-v1"
            assert ("x-custom", "value") in ws.accept_headers
        async with client.websocket_connect("/negotiated", subprotocols=["chat-v1", "x"]) as ws:
            assert ws.subprotocol == "chat-v1"
        async with client.websocket_connect("/negotiated", subprotocols=["other"]) as ws:
            assert ws.subprotocol is None
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/refused"):
                pass
        assert info.value.status_code == 403


# -- 7. dead peers (short real timeouts, both backends) -----------------------------------


async def test_idle_timeout_closes_with_1001() -> None:
    @plait.listener("/idle", idle_timeout=0.2)
    async def idle(data: str) -> str:
        return data

    async with (
        AsyncTestClient(App(routes=[idle])) as client,
        client.websocket_connect("/idle") as ws,
    ):
        for _ in range(4):  # talking keeps it open past the timeout
            await anyio.sleep(0.1)
            await ws.send_text("x")
            assert await ws.receive_text() == "x"
        started = anyio.current_time()
        info = await closed(ws)
    assert (info.code, info.reason) == (1001, "idle timeout")
    assert 0.15 <= anyio.current_time() - started <= 1.0


async def test_heartbeat_keeps_a_live_client_and_drops_a_silent_one() -> None:
    @plait.listener("/beat", heartbeat=Heartbeat(interval=0.1, timeout=0.1))
    async def beat(data: str) -> str:
        return f"got {data}"

    async with (
        AsyncTestClient(App(routes=[beat])) as client,
        client.websocket_connect("/beat") as ws,
    ):
        for _ in range(4):
            assert await ws.receive_text() == "ping"
            await ws.send_text("pong")  # consumed by the engine: no "got pong"
        await ws.send_text("real")
        assert await ws.receive_text() in ("got real", "ping")
        async with client.websocket_connect("/beat") as ws:
            assert await ws.receive_text() == "ping"
            info = await closed(ws)
    assert (info.code, info.reason) == (1001, "heartbeat timeout")


# -- 8. errors --------------------------------------------------------------------------


async def test_listener_exception_is_logged_once_and_closes_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @plait.listener("/boom")
    async def boom(data: str) -> str:
        raise ValueError(f"secret {data}")

    async with (
        AsyncTestClient(App(routes=[boom])) as client,
        client.websocket_connect("/boom") as ws,
    ):
        await ws.send_text("s3cr3t")
        info = await closed(ws)
    assert (info.code, info.reason) == (1011, "internal error")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "s3cr3t" not in info.reason


def test_registration_errors() -> None:
    route = WebSocketRoute("/r")

    @route.listener
    async def first(data: str) -> None: ...

    with pytest.raises(plait.RouteConflictError, match="already has a handler or a listener"):

        @route.listener
        async def second(data: str) -> None: ...

    with pytest.raises(plait.RouteConflictError):

        @route.ws_handler
        async def low(ws: WebSocket) -> None: ...

    with pytest.raises(plait.InjectionError, match="needs a 'data' parameter"):

        @plait.listener("/x")
        async def no_data(payload: str) -> None: ...

    with pytest.raises(plait.InjectionError, match="async generator"):

        @plait.stream("/y")
        async def not_a_generator() -> None: ...

    class NoPath(Listener):
        async def on_receive(self, data: str, socket: WebSocket) -> None: ...

    with pytest.raises(TypeError, match="needs a 'path'"):
        NoPath.as_route()


def test_accept_handler_annotations_resolve_where_the_decorator_is_used() -> None:
    def token() -> str:
        return "t"

    async def accept(socket: WebSocket, tok: Annotated[str, plait.use(token)]) -> None:
        await socket.accept(subprotocol=None)

    async def echo(data: str) -> str:
        return data

    route = plait.listener("/y", connection_accept_handler=accept)(echo)
    assert route.path == "/y"  # planning the accept handler found the local 'token'
