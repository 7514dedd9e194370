"""The examples run: in-process on both backends."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict, deque
from typing import Any

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


class Streams:
    """The items of a connection with tagged streams, sorted by stream as they come
    (untagged replies under ``"reply"``)."""

    def __init__(self, ws: AsyncWebSocketTestSession) -> None:
        self.ws = ws
        self.waiting: dict[str, deque[Any]] = defaultdict(deque)

    async def next(self, stream: str) -> Any:
        while not self.waiting[stream]:
            message = await self.ws.receive_json()
            if isinstance(message, dict) and set(message) == {"stream", "data"}:
                self.waiting[message["stream"]].append(message["data"])
            else:
                self.waiting["reply"].append(message)
        return self.waiting[stream].popleft()

    async def said(self) -> tuple[str, str, str]:
        """The next message of the room: (id, user, text)."""
        item = await self.next("messages")
        data = item["data"]
        assert data["type"] == "message"
        assert abs(data["at"] - time.time()) < 60
        return item["id"], data["user"], data["text"]


async def test_chat_example_members_history_typing_and_resume() -> None:
    from examples.chat import app as chat_app

    room = f"room-{uuid.uuid4().hex[:8]}"
    async with AsyncTestClient(chat_app) as client:
        async with client.websocket_connect(f"/chat/{room}?name=ada") as ada_ws:
            ada = Streams(ada_ws)
            state = await ada.next("members")
            assert (state["type"], list(state["presences"])) == ("presence_state", ["ada"])
            await ada_ws.send_json({"type": "say", "text": "first"})
            first_id, *first = await ada.said()
            assert first == ["ada", "first"]
            async with client.websocket_connect(f"/chat/{room}?name=bob") as bob_ws:
                bob = Streams(bob_ws)
                # a newcomer: the room's history, and everyone in it
                assert await bob.said() == (first_id, "ada", "first")
                assert sorted((await bob.next("members"))["presences"]) == ["ada", "bob"]
                joined = await ada.next("members")
                assert (joined["type"], list(joined["joins"])) == ("presence_diff", ["bob"])
                await bob_ws.send_json({"type": "typing", "typing": True})
                assert await ada.next("typing") == {"user": "bob", "typing": True}
                await bob_ws.send_json({"type": "typing", "typing": False})
                assert await ada.next("typing") == {"user": "bob", "typing": False}
                await bob_ws.send_json({"type": "say", "text": "hi ada"})
                last_id, *said = await ada.said()
                assert said == ["bob", "hi ada"]
            left = await ada.next("members")
            assert left["leaves"]["bob"]["count"] == 0
            await ada_ws.send_json({"type": "say", "text": "anyone?"})
            await ada.said()
        # ada comes back with the last id she saw: only what came after it, then live
        async with client.websocket_connect(f"/chat/{room}?name=ada&since={last_id}") as ws:
            again = Streams(ws)
            assert (await again.said())[1:] == ("ada", "anyone?")
            await ws.send_json({"type": "say", "text": "back"})
            assert (await again.said())[1:] == ("ada", "back")  # no notice, no repeat


async def test_chat_example_newcomers_see_the_last_hundred_without_a_notice() -> None:
    from examples.chat import app as chat_app
    from examples.chat.app import HISTORY

    room = f"room-{uuid.uuid4().hex[:8]}"
    async with AsyncTestClient(chat_app) as client:
        assert chat_app.hub is not None
        for number in range(HISTORY + 5):
            message = {"type": "message", "user": "bot", "text": f"m{number}", "at": 0}
            await chat_app.hub.publish(room, message)
        async with client.websocket_connect(f"/chat/{room}?name=ada") as ws:
            ada = Streams(ws)
            texts = [(await ada.next("messages"))["data"]["text"] for _ in range(HISTORY)]
            assert texts == [f"m{number}" for number in range(5, HISTORY + 5)]
            await ws.send_json({"type": "say", "text": "live"})
            assert (await ada.said())[1:] == ("ada", "live")
            assert "reply" not in ada.waiting  # the trimmed start is no news to a newcomer
        # a resume from before the kept history is told that messages were missed
        async with client.websocket_connect(f"/chat/{room}?name=ada&since=1-0") as ws:
            notice = await Streams(ws).next("messages")
            assert notice == {"recovered": False, "channels": [room]}


async def test_chat_example_limits_a_flood_with_a_reply_and_spares_the_others() -> None:
    from examples.chat import app as chat_app

    room = f"room-{uuid.uuid4().hex[:8]}"
    async with (
        AsyncTestClient(chat_app) as client,
        client.websocket_connect(f"/chat/{room}?name=eve") as eve_ws,
        client.websocket_connect(f"/chat/{room}?name=ada") as ada_ws,
    ):
        eve, ada = Streams(eve_ws), Streams(ada_ws)
        await ada.next("members")
        for number in range(30):
            await eve_ws.send_json({"type": "say", "text": f"flood {number}"})
        # The route's flood guard (past 20 frames, as the reader reads them) and the
        # messages' own budget (past 10, as the listener takes them) may answer in
        # either order: the budget's answer comes, whichever is first.
        replies = [await eve.next("reply")]
        while replies[-1]["detail"] != "at most 5 messages per 1 s, burst 10":
            assert replies[-1]["detail"] == "at most 10 messages per 1 s, burst 20"
            replies.append(await eve.next("reply"))
        assert {reply["error"] for reply in replies} == {"rate limit exceeded"}
        await ada_ws.send_json({"type": "say", "text": "still here"})
        heard = []
        while (said := await ada.said())[1] == "eve":
            heard.append(said[2])
        assert said[1:] == ("ada", "still here")
        assert 10 <= len(heard) < 30
        assert heard == [f"flood {number}" for number in range(len(heard))]
        assert "reply" not in ada.waiting


async def test_chat_example_typing_spends_no_message_budget_and_a_refusal_names_its_ref() -> None:
    from examples.chat import app as chat_app

    room = f"room-{uuid.uuid4().hex[:8]}"
    async with (
        AsyncTestClient(chat_app) as client,
        client.websocket_connect(f"/chat/{room}?name=ada") as ws,
    ):
        ada = Streams(ws)
        await ada.next("members")
        for typing in [True, False] * 4:  # past the typing budget: dropped unsaid
            await ws.send_json({"type": "typing", "typing": typing})
        for number in range(11):
            await ws.send_json({"type": "say", "text": f"m{number}", "ref": f"r{number}"})
        refusal = await ada.next("reply")
        assert refusal["error"] == "rate limit exceeded"
        assert refusal["ref"] == "r10"  # the burst of 10 is the messages' own
        assert refusal["detail"] == "at most 5 messages per 1 s, burst 10"
        assert 0 < refusal["retry_after"] <= 0.2
        refs = [(await ada.next("messages"))["data"]["ref"] for _ in range(10)]
        assert refs == [f"r{number}" for number in range(10)]


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
