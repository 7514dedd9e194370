"""The App: routing, the HTTP fallback, the lifespan and shutdown, on asyncio and trio.

No ``from __future__ import annotations`` here: the handlers' annotations name local
dependency factories, and are evaluated where the handlers are defined.
"""

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import plait
from plait import App, WebSocket, WebSocketDisconnect, WebSocketRoute
from plait._types import ASGIApp, Message, Receive, Scope, Send
from plait.testing import AsyncTestClient, LifespanError, WebSocketDenied

pytestmark = pytest.mark.anyio


# -- helpers ----------------------------------------------------------------------------


def echo_route(path: str = "/echo/{name}") -> WebSocketRoute:
    """A route that greets by its path parameters, then echoes text until the peer goes."""
    route = WebSocketRoute(path)

    @route.ws_handler
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(" ".join(["hello", *map(str, ws.path_params.values())]))
        async for text in ws.iter_text():
            await ws.send_text(text)

    return route


async def call_http(app: ASGIApp, path: str = "/hello") -> tuple[int, dict[str, str], bytes]:
    """Call ``app`` as an ASGI server would for ``GET path``; return the response."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("testclient", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    requested = False
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await anyio.sleep_forever()  # the client never goes away during the response
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        await app(scope, receive, send)
    assert [m["type"] for m in sent][:1] == ["http.response.start"]
    start, bodies = sent[0], sent[1:]
    assert all(m["type"] == "http.response.body" for m in bodies)
    assert not bodies[-1].get("more_body", False)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in bodies)


@contextlib.asynccontextmanager
async def serve_lifespan(app: ASGIApp) -> AsyncIterator[dict[str, Any]]:
    """Play a server's part of the lifespan: startup on entering, shutdown on leaving.

    Yields:
        The lifespan state, which a server copies into every connection's scope.
    """
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    to_app, app_inbox = anyio.create_memory_object_stream[Message](2)
    app_outbox, from_app = anyio.create_memory_object_stream[Message](2)

    async def run() -> None:
        async with app_inbox, app_outbox:
            await app(scope, app_inbox.receive, app_outbox.send)

    async with anyio.create_task_group() as task_group, to_app, from_app:
        task_group.start_soon(run)
        await to_app.send({"type": "lifespan.startup"})
        with anyio.fail_after(5):
            assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        yield scope["state"]
        await to_app.send({"type": "lifespan.shutdown"})
        with anyio.fail_after(5):
            assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"


def without_lifespan(app: ASGIApp) -> ASGIApp:
    """``app``, refusing the lifespan protocol (so the test client does not run it)."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)

    return wrapper


def starlette_fallback(events: list[str] | None = None, *, fail: bool = False) -> Starlette:
    """A Starlette app with one HTTP route and, when ``events`` is given, a lifespan."""

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello from starlette", headers={"x-from": "starlette"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert events is not None
        events.append("fallback startup")
        if fail:
            raise RuntimeError("the fallback cannot start")
        try:
            yield
        finally:
            events.append("fallback shutdown")

    return Starlette(routes=[Route("/hello", hello)], lifespan=None if events is None else lifespan)


def sleeper_app(events: list[str], **options: Any) -> App:
    """An App whose ``/sleep`` handler holds a generator dependency and sleeps."""

    async def resource() -> AsyncIterator[str]:
        events.append("resource open")
        try:
            yield "resource"
        finally:
            events.append("resource closed")

    route = WebSocketRoute("/sleep")

    @route.ws_handler
    async def sleeper(ws: WebSocket, res: Annotated[str, plait.use(resource)]) -> None:
        await ws.accept()
        await ws.send_text(res)
        try:
            await anyio.sleep_forever()
        finally:
            events.append("handler finally")

    return App([route], **options)


# -- routing ----------------------------------------------------------------------------


async def test_each_route_is_reached_with_its_path_parameters() -> None:
    other = WebSocketRoute("/rooms/{room:int}")

    @other.ws_handler
    async def room(ws: WebSocket, room: int, nick: str = "anon") -> None:
        await ws.accept()
        await ws.send_json({"room": room, "nick": nick})

    app = App([echo_route(), other])
    async with AsyncTestClient(app) as client:
        async with client.websocket_connect("/echo/alice") as session:
            assert await session.receive_text() == "hello alice"
            await session.send_text("ping")
            assert await session.receive_text() == "ping"
        async with client.websocket_connect("/rooms/7?nick=bob") as session:
            assert await session.receive_json() == {"room": 7, "nick": "bob"}


async def test_an_unknown_path_is_denied_with_404_naming_the_path() -> None:
    async with AsyncTestClient(App([echo_route()])) as client:
        for path in ("/nowhere", "/echo/alice/extra", "/rooms/x"):
            with pytest.raises(WebSocketDenied) as info:
                async with client.websocket_connect(path):
                    pytest.fail("an unknown path was accepted")
            assert info.value.status_code == 404
            assert ("content-type", "application/json") in info.value.headers
            assert json.loads(info.value.body) == {"detail": f"no WebSocket route for {path}"}


async def test_an_unknown_path_closes_before_accept_without_denial_responses() -> None:
    scope: Scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/nowhere",
        "raw_path": b"/nowhere",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "subprotocols": [],
        "extensions": {},  # no websocket.http.response
    }
    incoming = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        await App([echo_route()])(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.close"]


async def test_routes_match_the_path_below_root_path() -> None:
    # Starlette's Mount keeps the mount point in both root_path and path.
    async with (
        AsyncTestClient(App([echo_route()]), root_path="/mounted") as client,
        client.websocket_connect("/mounted/echo/carol") as session,
    ):
        assert await session.receive_text() == "hello carol"


async def test_routes_with_the_same_template_conflict() -> None:
    first, second = echo_route("/a/{x}"), echo_route("/a/{y}")
    with pytest.raises(plait.RouteConflictError, match="/a/"):
        App([first, second])

    app = App([first])
    with pytest.raises(plait.RouteConflictError, match="/a/"):
        app.include_routes(second)
    app.include_routes(echo_route("/b/{x}"))  # a different template is welcome
    async with AsyncTestClient(app) as client:
        for path, greeting in (("/a/1", "hello 1"), ("/b/2", "hello 2")):
            async with client.websocket_connect(path) as session:
                assert await session.receive_text() == greeting


# -- the HTTP fallback ------------------------------------------------------------------


async def test_http_goes_to_the_fallback() -> None:
    app = App([echo_route()], fallback=starlette_fallback())
    status, headers, body = await call_http(app, "/hello")
    assert (status, body) == (200, b"hello from starlette")
    assert headers["x-from"] == "starlette"
    status, _, _ = await call_http(app, "/missing")
    assert status == 404  # Starlette's own 404


async def test_http_without_a_fallback_is_a_plain_404() -> None:
    status, headers, body = await call_http(App([echo_route()]), "/hello")
    assert (status, body) == (404, b"Not Found")
    assert headers["content-type"] == "text/plain"
    assert headers["content-length"] == "9"


# -- the lifespan -----------------------------------------------------------------------


async def test_lifespan_runs_and_its_state_reaches_handlers() -> None:
    events: list[str] = []
    seen: list[App] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        seen.append(app)
        events.append("startup")
        try:
            yield {"db": "ready"}
        finally:
            events.append("shutdown")

    route = WebSocketRoute("/db")

    @route.ws_handler
    async def db(ws: WebSocket) -> None:
        await ws.accept()
        events.append("connection")
        await ws.send_text(ws.state.db)

    app = App([route], lifespan=lifespan)
    async with AsyncTestClient(app) as client:
        assert events == ["startup"]
        async with client.websocket_connect("/db") as session:
            assert await session.receive_text() == "ready"
    assert events == ["startup", "connection", "shutdown"]
    assert seen == [app]


async def test_lifespan_state_is_in_the_asgi_lifespan_scope() -> None:
    # What a server copies into every connection's scope.
    @contextlib.asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[dict[str, str]]:
        yield {"db": "ready"}

    async with serve_lifespan(App(lifespan=lifespan)) as state:
        assert state == {"db": "ready"}


async def test_the_fallback_lifespan_runs_inside_the_app_lifespan() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        events.append("app startup")
        try:
            yield
        finally:
            events.append("app shutdown")

    app = App([echo_route()], fallback=starlette_fallback(events), lifespan=lifespan)
    async with AsyncTestClient(app) as client:
        assert sorted(events) == ["app startup", "fallback startup"]
        async with client.websocket_connect("/echo/dave") as session:
            assert await session.receive_text() == "hello dave"
    # both stopped, in the reverse order of their startups
    starts = [event.split()[0] for event in events[:2]]
    assert events[2:] == [f"{name} shutdown" for name in reversed(starts)]


async def test_a_failing_lifespan_startup_raises_in_the_test_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    app = App([echo_route()], fallback=starlette_fallback(events), lifespan=lifespan)
    with pytest.raises(LifespanError, match="no database"):
        async with AsyncTestClient(app):
            pytest.fail("the client started although the lifespan failed")
    assert "the application's startup failed" in caplog.text
    # a fallback that had started was shut down again
    assert events.count("fallback startup") == events.count("fallback shutdown")


async def test_a_failing_fallback_startup_raises_in_the_test_client() -> None:
    events: list[str] = []
    app = App([echo_route()], fallback=starlette_fallback(events, fail=True))
    with pytest.raises(LifespanError, match="the fallback cannot start"):
        async with AsyncTestClient(app):
            pytest.fail("the client started although the fallback's lifespan failed")
    assert events == ["fallback startup"]


async def test_a_fallback_without_lifespan_support_is_fine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    async def http_only(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"unsupported scope type {scope['type']!r}")
        await PlainTextResponse("raw")(scope, receive, send)

    @contextlib.asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = App([echo_route()], fallback=http_only, lifespan=lifespan)
    caplog.set_level(logging.DEBUG, logger="plait")
    async with AsyncTestClient(app) as client:
        async with client.websocket_connect("/echo/erin") as session:
            assert await session.receive_text() == "hello erin"
        assert (await call_http(app, "/"))[2] == b"raw"
    assert events == ["startup", "shutdown"]
    assert "does not run the lifespan" in caplog.text


# -- shutdown ---------------------------------------------------------------------------


async def test_close_connections_closes_with_1001_and_tears_down() -> None:
    events: list[str] = []
    app = sleeper_app(events)
    async with AsyncTestClient(app) as client, client.websocket_connect("/sleep") as session:
        assert await session.receive_text() == "resource"
        assert app.connections() == 1
        with anyio.fail_after(2):
            await app.close_connections()
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text()
        assert (info.value.code, info.value.reason) == (1001, "server shutting down")
        assert events == ["resource open", "handler finally", "resource closed"]
        assert app.connections() == 0


async def test_lifespan_shutdown_closes_open_connections_with_1001() -> None:
    events: list[str] = []
    app = sleeper_app(events)
    # The test client serves the connection; the lifespan is driven separately, so that
    # it can end while the connection is open, as a server's shutdown does.
    async with (
        AsyncTestClient(without_lifespan(app)) as client,
        client.websocket_connect("/sleep") as session,
    ):
        async with serve_lifespan(app):
            assert await session.receive_text() == "resource"
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text()
        assert (info.value.code, info.value.reason) == (1001, "server shutting down")
        assert events == ["resource open", "handler finally", "resource closed"]


async def test_after_close_connections_handshakes_are_refused_until_the_next_startup() -> None:
    app = App([echo_route()])
    async with AsyncTestClient(without_lifespan(app)) as client:
        async with client.websocket_connect("/echo/ann") as session:
            assert await session.receive_text() == "hello ann"
        await app.close_connections()
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/echo/bob"):
                pytest.fail("a handshake was accepted while the app shuts down")
        assert info.value.status_code == 503
        assert json.loads(info.value.body) == {"detail": "server shutting down"}
        # served again: a new lifespan, a new start
        async with serve_lifespan(app), client.websocket_connect("/echo/cat") as session:
            assert await session.receive_text() == "hello cat"


async def test_a_handler_that_ignores_shutdown_is_cancelled_after_the_grace() -> None:
    events: list[str] = []
    torn_down = anyio.Event()

    async def resource() -> AsyncIterator[str]:
        try:
            yield "resource"
        finally:
            events.append("resource closed")
            torn_down.set()

    route = WebSocketRoute("/stubborn")

    @route.ws_handler
    async def stubborn(ws: WebSocket, res: Annotated[str, plait.use(resource)]) -> None:
        await ws.accept()
        await ws.send_text(res)
        try:
            await anyio.sleep_forever()
        finally:
            events.append("asked to stop")
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.6)  # ignores the shutdown for a while
            try:
                await anyio.sleep(10)
            except anyio.get_cancelled_exc_class():
                events.append("cancelled")
                raise

    app = App([route], shutdown_grace=0.2)
    async with AsyncTestClient(app) as client, client.websocket_connect("/stubborn") as session:
        assert await session.receive_text() == "resource"
        started = anyio.current_time()
        await app.close_connections()
        waited = anyio.current_time() - started
        # the client hears of the shutdown at once, whatever the handler does
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text(timeout=0.1)
        assert info.value.code == 1001
        assert 0.2 <= waited < 0.5  # the grace, not the handler's 0.6 s
        assert events == ["asked to stop"]
        with anyio.fail_after(2):
            await torn_down.wait()
        assert anyio.current_time() - started < 1.0  # cancelled as soon as it could be
    assert events == ["asked to stop", "cancelled", "resource closed"]
    assert app.connections() == 0


async def test_a_listener_and_streams_made_apart_on_one_path_are_one_route() -> None:
    @plait.listener("/chat/{room}")
    async def chat(data: str, room: str) -> str:
        return f"{room}: {data}"

    @plait.stream("/chat/{room}")
    async def news(room: str) -> AsyncIterator[str]:
        yield f"news for {room}"

    @plait.stream("/chat/{room}", name="weather")
    async def weather() -> AsyncIterator[str]:
        yield "sunny"

    app = App([news, chat, weather])
    assert len(app.routes) == 1
    async with AsyncTestClient(app) as client, client.websocket_connect("/chat/lobby") as session:
        await session.send_text("hi")
        received = {await session.receive_text() for _ in range(3)}
    assert received == {"lobby: hi", "news for lobby", "sunny"}
    assert {s.name for s in news._streams} == {"news"}  # the user's routes are untouched


def test_routes_on_one_path_that_cannot_be_one_say_how_to_make_them_one() -> None:
    async def reply(data: str) -> str:
        return data

    async def items() -> AsyncIterator[str]:
        yield "item"

    first, second = plait.listener("/chat")(reply), plait.listener("/chat")(reply)
    different = plait.stream("/chat", idle_timeout=5)(items)
    handler = echo_route("/chat")
    for pair in ([first, second], [first, different], [handler, plait.stream("/chat")(items)]):
        with pytest.raises(plait.RouteConflictError) as info:
            App(pair)
        message = str(info.value)
        assert "match the same paths" in message
        assert "route = WebSocketRoute('/chat')" in message
        assert "@route.listener" in message
        assert "@route.stream" in message


async def test_a_starlette_style_route_takes_its_endpoint() -> None:
    async def endpoint(websocket) -> None:  # type: ignore[no-untyped-def]  # as in Starlette
        await websocket.accept()
        await websocket.send_text(f"hello {websocket.path_params['name']}")

    async def annotated(ws: WebSocket, name: str) -> None:
        await ws.accept()
        await ws.send_text(f"hi {name}")

    app = App([WebSocketRoute("/ws/{name}", endpoint), WebSocketRoute("/plait/{name}", annotated)])
    async with AsyncTestClient(app) as client:
        async with client.websocket_connect("/ws/ada") as session:
            assert await session.receive_text() == "hello ada"
        async with client.websocket_connect("/plait/bob") as session:
            assert await session.receive_text() == "hi bob"


def test_a_starlette_style_route_refuses_what_a_handler_refuses() -> None:
    def not_async(websocket: WebSocket) -> None: ...

    with pytest.raises(plait.InjectionError, match="must be an async function"):
        WebSocketRoute("/ws", not_async)  # type: ignore[arg-type]
