"""The examples run: in-process on both backends."""

from __future__ import annotations

import anyio
import pytest
from examples.rooms import app

from _support import closed
from plait.testing import AsyncTestClient, AsyncWebSocketTestSession, WebSocketDenied

pytestmark = pytest.mark.anyio


async def test_rooms_example() -> None:
    async with AsyncTestClient(app) as client:
        async with client.websocket_connect(
            "/rooms/lobby?name=ada&limit=3", headers={"x-token": "secret"}
        ) as ws:
            assert await ws.receive_json() == {
                "room": "lobby",
                "name": "ada",
                "limit": 3,
                "session": "session of ada",
            }
            await ws.send_text("hi")
            assert await ws.receive_text() == "[lobby] ada: hi"
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/rooms/lobby?name=ada"):
                pass
        assert info.value.status_code == 401


@pytest.mark.parametrize("path", ["/dashboard", "/by-hand"])
async def test_dashboard_example(path: str) -> None:
    from examples.dashboard import app as dashboard_app

    async with AsyncTestClient(dashboard_app) as client, client.websocket_connect(path) as ws:
        await ws.send_json({"every": 0.05})
        seen: dict[str, list[object]] = {}
        while len(seen.get("ticker", [])) < 5 or "clock" not in seen or "reply" not in seen:
            item = await ws.receive_json()
            if "every" in item:
                seen.setdefault("reply", []).append(item["every"])
            else:
                seen.setdefault(item["stream"], []).append(item["data"])
    assert seen["reply"] == [0.05]
    ticks = seen["ticker"]
    assert ticks == list(range(len(ticks)))


async def test_chat_example_rooms_presence_and_history() -> None:
    from examples.chat import app as chat_app

    async def subscribed(count: int) -> None:
        with anyio.fail_after(5):
            # polled: the test watches the app from outside, there is no event to await
            while chat_app.hub.statistics()["subscriptions"] < count:  # type: ignore[union-attr]  # noqa: ASYNC110
                await anyio.sleep(0.005)

    async def next_event(ws: AsyncWebSocketTestSession) -> tuple[str, dict[str, str]]:
        message = await ws.receive_json()
        return message["id"], message["data"]

    async with AsyncTestClient(chat_app) as client:
        async with client.websocket_connect("/chat/lobby?name=ada") as ada:
            await subscribed(1)
            async with client.websocket_connect("/chat/lobby?name=bob") as bob:
                assert (await next_event(ada))[1] == {"type": "join", "user": "bob"}
                await subscribed(2)
                await bob.send_json({"text": "hi ada"})
                said = {"type": "message", "user": "bob", "text": "hi ada"}
                last_id, event = await next_event(ada)
                assert event == said
                assert (await next_event(bob))[1] == said
            assert (await next_event(ada))[1] == {"type": "leave", "user": "bob"}
            await ada.send_json({"text": "anyone?"})
        # ada comes back with the last id she saw: what came after it, then live
        async with client.websocket_connect(f"/chat/lobby?name=ada&since={last_id}") as again:
            replayed = [(await next_event(again))[1] for _ in range(4)]
    assert replayed == [
        {"type": "leave", "user": "bob"},
        {"type": "message", "user": "ada", "text": "anyone?"},
        {"type": "leave", "user": "ada"},
        {"type": "join", "user": "ada"},
    ]


async def test_class_listener_example_keeps_state_per_connection() -> None:
    from examples.class_listener import app as counter_app

    async with AsyncTestClient(counter_app) as client:
        for _ in range(2):
            async with client.websocket_connect("/count?name=ada") as ws:
                await ws.send_text("hi")
                await ws.send_text("again")
                assert await ws.receive_text() == "ada #1: hi"
                assert await ws.receive_text() == "ada #2: again"


async def test_serve_connection_example_echoes() -> None:
    from examples.serve_connection import app as engine_app

    async with AsyncTestClient(engine_app) as client, client.websocket_connect("/any") as ws:
        await ws.send_text("hello")
        assert await ws.receive_text() == "hello"


async def test_lobby_example_hooks_and_a_reading_stream() -> None:
    from examples.lobby import app as lobby_app
    from examples.lobby import members

    async with AsyncTestClient(lobby_app) as client:
        async with client.websocket_connect("/lobby?name=ada") as ada:
            assert await ada.receive_json() == {"members": ["ada"]}
            async with client.websocket_connect("/lobby?name=ada") as again:
                assert await again.receive_json() == {"members": ["ada"]}
                assert members["ada"] == 2  # two tabs, one member
            await ada.send_text("hi")
            assert await ada.receive_json() == {"from": "ada", "text": "hi", "members": ["ada"]}
        async with client.websocket_connect("/shout") as ws:
            await ws.send_text("quiet")
            assert await ws.receive_text() == "QUIET"
    assert not members  # on_disconnect ran for every connection


async def test_documented_example_watches_and_unwatches() -> None:
    from examples.documented import app as markets_app

    async with (
        AsyncTestClient(markets_app) as client,
        client.websocket_connect("/markets/nyse?interval=0.1") as ws,
    ):
        await ws.send_json({"type": "watch", "symbol": "ACME"})
        assert await ws.receive_json() == {"symbols": ["ACME"]}  # replies are not tagged
        quote = await ws.receive_json()
        assert quote["stream"] == "prices"
        assert quote["data"]["symbol"] == "ACME"
        await ws.send_json({"type": "watch", "symbol": "not a symbol"})
        assert (await closed(ws)).code == 1007  # the pattern in the Struct is enforced
