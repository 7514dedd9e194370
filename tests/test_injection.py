"""Parameter injection and dependencies through the App, on asyncio and trio."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import pytest

import plait
from plait import (
    App,
    Cookie,
    Deny,
    Header,
    InjectionError,
    Query,
    WebSocket,
    WebSocketDisconnect,
    WebSocketRoute,
    use,
)
from plait.testing import AsyncTestClient, WebSocketDenied
from plait.types import ASGIApp

pytestmark = pytest.mark.anyio


async def reply(app: App, path: str, **options: Any) -> Any:
    """Connect, return the first JSON message the handler sends."""
    async with AsyncTestClient(app) as client, client.websocket_connect(path, **options) as ws:
        return await ws.receive_json()


async def denial(app: ASGIApp, path: str, **options: Any) -> WebSocketDenied:
    async with AsyncTestClient(app) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect(path, **options):
                pass
    return info.value


# -- sources --------------------------------------------------------------------------


async def test_path_query_header_cookie_and_the_websocket() -> None:
    @plait.websocket("/rooms/{room}/users/{uid:int}")
    async def handler(
        ws: WebSocket,
        room: str,
        uid: int,
        limit: int,
        tags: list[str],
        token: Annotated[str, Header("x-token")],
        user_agent: Annotated[str, Header()],
        session: Annotated[str, Cookie()],
        page: Annotated[int, Query(alias="p")] = 1,
        lang: str | None = None,
    ) -> None:
        await ws.accept()
        await ws.send_json(
            {
                "room": room,
                "uid": uid,
                "limit": limit,
                "tags": tags,
                "token": token,
                "agent": user_agent,
                "session": session,
                "page": page,
                "lang": lang,
            }
        )

    got = await reply(
        App(routes=[handler]),
        "/rooms/lobby/users/7?limit=5&tags=a&tags=b&p=3",
        headers={"X-Token": "t0k", "User-Agent": "tests", "Cookie": "session=s1; other=x"},
    )
    assert got == {
        "room": "lobby",
        "uid": 7,
        "limit": 5,
        "tags": ["a", "b"],
        "token": "t0k",
        "agent": "tests",
        "session": "s1",
        "page": 3,
        "lang": None,
    }


async def test_path_parameter_converted_to_the_annotation() -> None:
    @plait.websocket("/v/{version}/{uid:uuid}/{ratio:float}")
    async def handler(ws: WebSocket, version: int, uid: uuid.UUID, ratio: float) -> None:
        await ws.accept()
        await ws.send_json([version * 2, str(uid), ratio])

    uid = uuid.uuid4()
    got = await reply(App(routes=[handler]), f"/v/21/{uid}/0.5")
    assert got == [42, str(uid), 0.5]


async def test_every_failing_parameter_is_named_in_one_400() -> None:
    @plait.websocket("/r/{n}")
    async def handler(
        ws: WebSocket,
        n: int,
        limit: int,
        token: Annotated[str, Header("x-token")],
        session: Annotated[str, Cookie()],
    ) -> None:
        raise AssertionError("not reached")

    denied = await denial(App(routes=[handler]), "/r/abc?limit=lots")
    assert denied.status_code == 400
    body = plait._codec.decode_json(denied.body)
    assert body["detail"] == "invalid parameters"
    assert body["errors"] == [
        {"source": "path", "name": "n", "message": 'expected an integer, got "abc"'},
        {"source": "query", "name": "limit", "message": 'expected an integer, got "lots"'},
        {"source": "header", "name": "x-token", "message": "missing"},
        {"source": "cookie", "name": "session", "message": "missing"},
    ]


async def test_list_parameters_missing_or_defaulted() -> None:
    @plait.websocket("/l")
    async def handler(ws: WebSocket, ids: list[int], tags: list[str] | None = None) -> None:
        await ws.accept()
        await ws.send_json([ids, tags])

    app = App(routes=[handler])
    assert await reply(app, "/l?ids=1&ids=2") == [[1, 2], None]
    denied = await denial(app, "/l?tags=x")
    assert plait._codec.decode_json(denied.body)["errors"] == [
        {"source": "query", "name": "ids", "message": "missing"}
    ]


async def test_bad_input_is_not_logged_as_a_server_error(caplog: pytest.LogCaptureFixture) -> None:
    @plait.websocket("/q")
    async def handler(ws: WebSocket, limit: int) -> None:
        raise AssertionError("not reached")

    assert (await denial(App(routes=[handler]), "/q")).status_code == 400
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


# -- dependencies ---------------------------------------------------------------------


async def test_dependency_graph_with_all_factory_kinds_and_teardown_order() -> None:
    events: list[str] = []

    def settings(region: str = "eu") -> dict[str, str]:
        events.append("settings")
        return {"region": region}

    async def database(cfg: Annotated[dict[str, str], use(settings)]) -> AsyncIterator[str]:
        events.append("db open")
        yield f"db-{cfg['region']}"
        events.append("db close")

    def cache(db: Annotated[str, use(database)]) -> Iterator[str]:
        events.append("cache open")
        yield f"cache({db})"
        events.append("cache close")

    async def user(
        token: Annotated[str, Header("x-token")], db: Annotated[str, use(database)]
    ) -> str:
        events.append("user")
        return f"user-of-{token}@{db}"

    @plait.websocket("/deps")
    async def handler(
        ws: WebSocket,
        c: Annotated[str, use(cache)],
        u: Annotated[str, use(user)],
        cfg: Annotated[dict[str, str], use(settings)],
    ) -> None:
        await ws.accept()
        await ws.send_json([c, u, cfg])

    got = await reply(App(routes=[handler]), "/deps?region=us", headers={"x-token": "t"})
    assert got == ["cache(db-us)", "user-of-t@db-us", {"region": "us"}]
    # reuse=True: settings and database made once; teardown in reverse order of setup
    assert events == [
        "settings", "db open", "cache open", "user", "cache close", "db close"
    ]  # fmt: skip


async def test_reuse_false_calls_the_factory_each_time() -> None:
    calls: list[int] = []

    def counter() -> int:
        calls.append(1)
        return len(calls)

    @plait.websocket("/c")
    async def handler(
        ws: WebSocket,
        a: Annotated[int, use(counter, reuse=False)],
        b: Annotated[int, use(counter, reuse=False)],
        c: Annotated[int, use(counter)],
    ) -> None:
        await ws.accept()
        await ws.send_json([a, b, c])

    assert await reply(App(routes=[handler]), "/c") == [1, 2, 3]


async def test_litestar_mapping_form() -> None:
    async def get_user(token: Annotated[str, Header("authorization")]) -> str:
        return token.removeprefix("Bearer ")

    route = WebSocketRoute("/m", dependencies={"user": get_user})

    @route.ws_handler
    async def handler(ws: WebSocket, user: str) -> None:
        await ws.accept()
        await ws.send_json(user)

    got = await reply(App(routes=[route]), "/m", headers={"Authorization": "Bearer ada"})
    assert got == "ada"


# -- provided by the App ----------------------------------------------------------------


async def test_the_apps_hub_reaches_the_handler_and_not_the_scope() -> None:
    """The hub goes from the App to the route directly: the scope, which middleware
    reads and may rewrite, does not carry it, and a value put there provides nothing."""
    hub = plait.Hub()

    @plait.websocket("/hub")
    async def handler(ws: WebSocket, given: plait.Hub) -> None:
        await ws.accept()
        in_scope = [
            key
            for key, value in ws.scope.items()
            if value is hub or (isinstance(value, dict) and hub in value.values())
        ]
        await ws.send_json({"the app's": given is hub, "in the scope": in_scope})

    app = App(routes=[handler], hub=hub)

    async def forging(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "plait.provided": {"hub": plait.Hub()}}
        await app(scope, receive, send)

    async with AsyncTestClient(forging) as client, client.websocket_connect("/hub") as ws:
        assert await ws.receive_json() == {"the app's": True, "in the scope": []}


async def test_a_hub_parameter_without_the_apps_hub_fails_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @plait.websocket("/hub")
    async def handler(ws: WebSocket, hub: plait.Hub) -> None:
        raise AssertionError("not reached")

    app = App(routes=[handler])

    async def forging(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "plait.provided": {"hub": plait.Hub()}}
        await app(scope, receive, send)

    assert (await denial(forging, "/hub")).status_code == 500
    assert "nothing provides Hub for the parameter 'hub'" in caplog.text


@pytest.mark.parametrize("status", [401, 403])
async def test_a_dependency_can_deny(status: int) -> None:
    def auth(token: Annotated[str | None, Header("x-token")] = None) -> str:
        if token != "good":
            raise Deny(status, "bad token", headers={"WWW-Authenticate": "Bearer"})
        return token

    @plait.websocket("/auth")
    async def handler(ws: WebSocket, user: Annotated[str, use(auth)]) -> None:
        await ws.accept()
        await ws.send_json(user)

    app = App(routes=[handler])
    denied = await denial(app, "/auth", headers={"x-token": "bad"})
    assert denied.status_code == status
    assert denied.body == b'{"detail":"bad token"}'
    assert ("www-authenticate", "Bearer") in denied.headers
    assert await reply(app, "/auth", headers={"x-token": "good"}) == "good"


@pytest.mark.parametrize("ending", ["disconnect", "error", "return"])
async def test_teardowns_run_however_the_connection_ends(ending: str) -> None:
    torn_down = anyio.Event()
    order: list[str] = []

    async def first() -> AsyncIterator[str]:
        try:
            yield "first"
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()  # teardown may await, even when cancelled
            order.append("first")
            torn_down.set()

    def second(f: Annotated[str, use(first)]) -> Iterator[str]:
        try:
            yield "second"
        finally:
            order.append("second")

    @plait.websocket("/t")
    async def handler(ws: WebSocket, s: Annotated[str, use(second)]) -> None:
        await ws.accept()
        await ws.send_text("ready")
        if ending == "error":
            raise RuntimeError("boom")
        if ending == "disconnect":
            await anyio.sleep_forever()

    async with AsyncTestClient(App(routes=[handler])) as client:
        async with client.websocket_connect("/t") as ws:
            assert await ws.receive_text() == "ready"
            if ending == "disconnect":
                await ws.close()
            else:
                with pytest.raises(WebSocketDisconnect):
                    await ws.receive_text()
        with anyio.fail_after(2):
            await torn_down.wait()
    assert order == ["second", "first"]


def test_dependency_cycles_are_found_when_the_route_is_built() -> None:
    def f(g_value: int) -> int:
        return g_value

    def g(f_value: Annotated[int, use(f)]) -> int:
        return f_value

    f.__annotations__["g_value"] = Annotated[int, use(g)]  # f -> g -> f
    route = WebSocketRoute("/cycle")

    async def handler(ws: WebSocket, x: Annotated[int, use(f)]) -> None:
        raise AssertionError

    with pytest.raises(InjectionError, match=r"dependency cycle: .*f -> .*g -> .*f"):
        route.ws_handler(handler)


def test_handlers_must_be_async_and_parameters_injectable() -> None:
    route = WebSocketRoute("/x/{a}")

    def sync_handler(ws: WebSocket) -> None:
        raise AssertionError

    with pytest.raises(InjectionError, match="must be an async function"):
        route.ws_handler(sync_handler)

    async def star(ws: WebSocket, *args: Any) -> None:
        raise AssertionError

    with pytest.raises(InjectionError, match=r"\*args cannot be injected"):
        route.ws_handler(star)

    async def wrong_path(ws: WebSocket, b: Annotated[str, plait.Path()]) -> None:
        raise AssertionError

    with pytest.raises(InjectionError, match="no parameter 'b'"):
        route.ws_handler(wrong_path)


async def test_a_route_without_a_handler_fails_loudly(caplog: pytest.LogCaptureFixture) -> None:
    denied = await denial(App(routes=[WebSocketRoute("/empty")]), "/empty")
    assert denied.status_code == 500
    assert "no handler was registered" in caplog.text


async def test_without_the_denial_extension_refusals_close_before_accept() -> None:
    @plait.websocket("/q")
    async def handler(ws: WebSocket, limit: int) -> None:
        raise AssertionError("not reached")

    inner = App(routes=[handler])

    async def no_extension(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "extensions": {}}
        await inner(scope, receive, send)

    for path in ("/q", "/missing"):  # bad parameters, then an unknown path
        async with AsyncTestClient(no_extension) as client:
            with pytest.raises(WebSocketDenied) as info:
                async with client.websocket_connect(path):
                    pass
        assert info.value.status_code == 403


async def test_code_after_yield_runs_when_the_peer_leaves() -> None:
    events: list[str] = []

    async def resource() -> AsyncIterator[str]:
        events.append("open")
        yield "r"
        events.append("closed without try/finally")  # a peer leaving is a normal end

    @plait.websocket("/r")
    async def handler(ws: WebSocket, r: Annotated[str, use(resource)]) -> None:
        await ws.accept()
        await ws.send_text(r)
        await anyio.sleep_forever()

    async with AsyncTestClient(App(routes=[handler])) as client:
        async with client.websocket_connect("/r") as ws:
            assert await ws.receive_text() == "r"
        await anyio.wait_all_tasks_blocked()
    assert events == ["open", "closed without try/finally"]


async def test_a_handler_error_is_thrown_into_generator_dependencies() -> None:
    seen: list[str] = []

    async def resource() -> AsyncIterator[str]:
        try:
            yield "r"
        except RuntimeError as exc:
            seen.append(f"saw {exc}")
            raise

    @plait.websocket("/e")
    async def handler(ws: WebSocket, r: Annotated[str, use(resource)]) -> None:
        await ws.accept()
        raise RuntimeError("boom")

    async with (
        AsyncTestClient(App(routes=[handler])) as client,
        client.websocket_connect("/e") as ws,
    ):
        with pytest.raises(WebSocketDisconnect):
            await ws.receive_text()
    assert seen == ["saw boom"]


async def test_msgspec_constraints_on_parameters_are_enforced() -> None:
    import msgspec

    @plait.websocket("/m")
    async def handler(
        ws: WebSocket,
        interval: Annotated[float, msgspec.Meta(ge=0.05)] = 1.0,
        tag: Annotated[str, Query(), msgspec.Meta(max_length=3)] = "a",
    ) -> None:
        await ws.accept()
        await ws.send_json([interval, tag])

    app = App(routes=[handler])
    assert await reply(app, "/m?interval=0.5&tag=abc") == [0.5, "abc"]
    denied = await denial(app, "/m?interval=0.01&tag=abcd")
    assert plait._codec.decode_json(denied.body)["errors"] == [
        {"source": "query", "name": "interval", "message": 'expected a number >= 0.05, got "0.01"'},
        {"source": "query", "name": "tag", "message": 'expected text of length <= 3, got "abcd"'},
    ]


async def test_deny_from_a_listener_closes_with_1008() -> None:
    @plait.listener("/l")
    async def guarded(data: str) -> str:
        if data == "forbidden":
            raise Deny(403, "not allowed")
        return data

    async with (
        AsyncTestClient(App(routes=[guarded])) as client,
        client.websocket_connect("/l") as ws,
    ):
        await ws.send_text("ok")
        assert await ws.receive_text() == "ok"
        await ws.send_text("forbidden")
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
    assert (info.value.code, info.value.reason) == (1008, "not allowed")


async def test_deny_from_a_stream_closes_with_1008_and_ends_the_route() -> None:
    route = plait.WebSocketRoute("/s")
    ended: list[str] = []

    @route.stream()
    async def guarded() -> AsyncGenerator[str, None]:
        yield "first"
        raise Deny(403, "no more for you")

    @route.stream()
    async def other() -> AsyncGenerator[str, None]:
        try:
            await anyio.sleep_forever()
            yield ""
        finally:
            ended.append("other")

    async with (
        AsyncTestClient(App(routes=[route])) as client,
        client.websocket_connect("/s") as ws,
    ):
        assert await ws.receive_text() == "first"
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
    assert (info.value.code, info.value.reason) == (1008, "no more for you")
    assert ended == ["other"]
