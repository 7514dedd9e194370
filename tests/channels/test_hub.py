"""The hub on the in-memory backend, on asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sniffio

import plait
from _support import closed
from plait import App
from plait.channels import ChannelMessage, Hub, MemoryBackend, SlowSubscriber
from plait.channels._backend import StoredMessage
from plait.testing import AsyncTestClient

pytestmark = pytest.mark.anyio


async def test_publish_and_subscribe_keep_the_kind_of_data() -> None:
    async with Hub() as hub, hub.subscribe("a", "b") as subscription:
        await hub.publish("a", b"\x00bytes")
        await hub.publish("b", "text")
        await hub.publish("a", {"user": "ada", "n": [1, 2]})
        await hub.publish("elsewhere", "not subscribed")
        got = [await subscription.__anext__() for _ in range(3)]
    assert [(m.channel, m.data) for m in got] == [
        ("a", b"\x00bytes"),
        ("b", "text"),
        ("a", {"user": "ada", "n": [1, 2]}),
    ]
    assert [m.id for m in got] == ["1-0", "1-0", "2-0"]  # ids order messages per channel


async def test_every_subscriber_gets_every_message_in_order() -> None:
    async with Hub() as hub, hub.subscribe("room") as first, hub.subscribe("room") as second:
        for i in range(10):
            await hub.publish("room", i)
        for subscription in (first, second):
            assert [(await subscription.__anext__()).data for _ in range(10)] == list(range(10))


async def test_resume_with_since_has_no_gap_and_no_duplicate() -> None:
    async with Hub(MemoryBackend(history=100)) as hub:
        ids = [await hub.publish("room", f"m{i}") for i in range(5)]
        async with hub.subscribe("room", since=ids[1]) as subscription:
            await hub.publish("room", "m5")  # live, while the history is replayed
            got = [(await subscription.__anext__()).data for _ in range(4)]
            await hub.publish("room", "m6")
            got.append((await subscription.__anext__()).data)
    assert got == ["m2", "m3", "m4", "m5", "m6"]


async def test_history_length_and_age_are_bounded() -> None:
    backend = MemoryBackend(history=3, history_age=60)
    async with Hub(backend) as hub:
        for i in range(5):
            await hub.publish("room", i)
        assert [p for _, p in await backend.history("room", None)] == [b"j2", b"j3", b"j4"]
        assert await backend.history("room", "4-0") == [("5-0", b"j4")]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("drop_oldest", [2, 3, 4]), ("drop_newest", [0, 1, 2])],
)
async def test_slow_subscribers_drop_and_count(policy: str, expected: list[int]) -> None:
    async with Hub() as hub, hub.subscribe("room", buffer=3, policy=policy) as slow:  # type: ignore[arg-type]
        for i in range(5):
            await hub.publish("room", i)  # the publisher never waits
        assert [(await slow.__anext__()).data for _ in range(3)] == expected
        assert slow.dropped == 2
        assert slow.statistics() == {"buffered": 0, "dropped": 2, "gaps": 0}


async def test_disconnect_policy_ends_the_subscription() -> None:
    async with Hub() as hub, hub.subscribe("room", buffer=2, policy="disconnect") as slow:
        for i in range(3):
            await hub.publish("room", i)
        with pytest.raises(SlowSubscriber, match="fell 2 messages behind"):
            await slow.__anext__()


async def test_disconnect_policy_counts_what_it_discards() -> None:
    async with Hub() as hub, hub.subscribe("room", buffer=2, policy="disconnect") as slow:
        for i in range(5):
            await hub.publish("room", i)  # 2 queued, the 3rd fails it, 2 more after
        assert slow.statistics() == {"buffered": 0, "dropped": 5, "gaps": 0}
        with pytest.raises(SlowSubscriber):
            await slow.__anext__()


class SlowHistory(MemoryBackend):
    """A memory backend whose history read takes a while, as a Redis round trip does:
    messages published meanwhile reach the subscription live *and* in the history."""

    async def history(self, channel: str, after: str | None) -> Sequence[StoredMessage]:
        await anyio.sleep(0.02)
        return await super().history(channel, after)


async def test_resume_under_live_publishing_has_no_gap_and_no_duplicate() -> None:
    """The subscriber resumes while a publisher keeps going: every message after
    ``since`` exactly once, in order, although replay and live overlap."""
    async with Hub(SlowHistory(history=1000)) as hub:
        published = [await hub.publish("room", f"m{i}") for i in range(20)]
        done = anyio.Event()

        async def publish_on() -> None:
            for i in range(20, 120):
                published.append(await hub.publish("room", f"m{i}"))
                await anyio.sleep(0.001)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_on)
            await anyio.lowlevel.checkpoint()
            async with hub.subscribe("room", since=published[9], buffer=1000) as subscription:
                with anyio.fail_after(5):
                    got = [await anext(subscription) for _ in range(110)]
    assert [m.id for m in got] == published[10:120]
    assert [m.data for m in got] == [f"m{i}" for i in range(10, 120)]


async def test_leaving_or_being_cancelled_leaves_nothing_registered() -> None:
    async with Hub() as hub:
        async with hub.subscribe("a", "b"), hub.subscribe("b"):
            assert hub.statistics() == {"channels": 2, "subscriptions": 2}
        assert hub.statistics() == {"channels": 0, "subscriptions": 0}
        with anyio.move_on_after(0.01):
            async with hub.subscribe("c") as subscription:
                await subscription.__anext__()  # cancelled while waiting
        assert hub.statistics() == {"channels": 0, "subscriptions": 0}
        with anyio.CancelScope() as scope:
            scope.cancel()
            async with hub.subscribe("d"):
                await anyio.sleep(1)
        assert hub.statistics() == {"channels": 0, "subscriptions": 0}


async def test_dynamic_channel_names_do_not_grow_memory() -> None:
    backend = MemoryBackend()
    async with Hub(backend) as hub:
        for i in range(200):
            async with hub.subscribe(f"user-{i}"):
                await hub.publish(f"user-{i}", "hi")
        assert hub.statistics()["channels"] == 0
        assert backend._counter == {}


async def test_a_hub_must_be_running() -> None:
    hub = Hub()
    with pytest.raises(RuntimeError, match="not running"):
        await hub.publish("x", "y")
    with pytest.raises(RuntimeError, match="not running"):
        async with hub.subscribe("x"):
            pass


# -- with the App: injected by type, started by the lifespan ------------------------


def chat_app(hub: Hub) -> App:
    room = plait.WebSocketRoute("/rooms/{room}")

    @room.listener
    async def say(data: str, room: str, hub: Hub) -> None:
        await hub.publish(room, data)

    @room.stream
    async def hear(room: str, hub: Hub) -> AsyncGenerator[ChannelMessage, None]:
        async with hub.subscribe(room, buffer=4, policy="disconnect") as subscription:
            async for message in subscription:
                yield message

    return App(routes=[room], hub=hub)


async def test_the_app_runs_the_hub_and_injects_it() -> None:
    async with (
        AsyncTestClient(chat_app(Hub())) as client,
        client.websocket_connect("/rooms/x") as a,
        client.websocket_connect("/rooms/x") as b,
    ):
        await anyio.sleep(0.05)  # both subscribed
        await a.send_text("hello")
        for session in (a, b):
            got: dict[str, Any] = await session.receive_json()
            assert (got["channel"], got["data"]) == ("x", "hello")


async def test_a_too_slow_subscriber_stream_closes_with_1013() -> None:
    hub = Hub()
    async with (
        AsyncTestClient(chat_app(hub)) as client,
        client.websocket_connect("/rooms/y") as reader,
    ):
        await anyio.sleep(0.05)
        # the client's buffer (64), the outbound queue (16) and the subscription's
        # buffer (4) fill; the publisher never waits, so the subscription overflows
        for i in range(300):
            await hub.publish("y", f"message {i}")
        info = await closed(reader)
    assert (info.code, info.reason) == (1013, "subscriber too slow")


async def test_a_resume_older_than_the_history_says_it_is_incomplete() -> None:
    async with Hub(MemoryBackend(history=3)) as hub:
        ids = [await hub.publish("room", f"m{i}") for i in range(10)]  # keeps m7 m8 m9
        async with hub.subscribe("room", since=ids[2]) as gap:
            assert (gap.recovered, gap.unrecovered) == (False, ("room",))
            assert gap.recovery_notice() == {"recovered": False, "channels": ["room"]}
            assert [(await anext(gap)).data for _ in range(3)] == ["m7", "m8", "m9"]
        for since in (ids[6], ids[8], ids[9]):  # m7.. still kept: nothing was lost
            async with hub.subscribe("room", since=since) as whole:
                assert whole.recovered
                assert whole.recovery_notice() is None
        async with hub.subscribe("room") as live:
            assert live.recovered  # no resume asked: nothing to recover


async def test_a_resume_from_an_id_this_history_never_gave_says_it_is_incomplete() -> None:
    """After a restart an in-memory history starts again at 1-0: a client resuming from
    57-0 saw another history, so it is told (Centrifugo's epoch plays this part)."""
    async with Hub(MemoryBackend(history=100)) as hub:
        ids = [await hub.publish("room", f"m{i}") for i in range(3)]
        async with hub.subscribe("room", since="57-0") as restarted:
            assert restarted.recovery_notice() == {"recovered": False, "channels": ["room"]}
        async with hub.subscribe("room", since=ids[-1]) as current:
            assert current.recovered
        async with hub.subscribe("empty", since="1-0") as never:
            assert not never.recovered


async def test_a_resume_past_the_history_age_says_it_is_incomplete() -> None:
    async with Hub(MemoryBackend(history=100, history_age=0.05)) as hub:
        first = await hub.publish("room", "old")
        await hub.publish("room", "also old")
        await anyio.sleep(0.1)
        async with hub.subscribe("room", since=first) as subscription:
            assert not subscription.recovered


async def test_a_disconnect_policy_subscriber_stuck_in_a_send_is_closed_with_1013(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The client stopped reading: the stream waits in a send that never returns, so it
    never comes back for the subscription's failure. The policy closes it anyway."""
    hub = Hub()
    route = plait.WebSocketRoute("/feed")
    ended = anyio.Event()

    @route.stream()
    async def feed(hub: Hub) -> AsyncGenerator[ChannelMessage, None]:
        try:
            async with hub.subscribe("news", buffer=2, policy="disconnect") as news:
                async for message in news:
                    yield message
        finally:
            ended.set()

    app = plait.App(routes=[route], hub=hub)
    sent: list[dict[str, Any]] = []
    stalled = anyio.Event()
    connected = [False]

    async def receive() -> dict[str, Any]:
        if not connected[0]:
            connected[0] = True
            return {"type": "websocket.connect"}
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.send":
            stalled.set()
            await anyio.sleep_forever()  # the client reads nothing: the socket is full

    scope = {"type": "websocket", "path": "/feed", "headers": [], "query_string": b""}
    async with hub, anyio.create_task_group() as tg:
        tg.start_soon(app, scope, receive, send)
        while hub.statistics()["subscriptions"] == 0:  # noqa: ASYNC110
            await anyio.sleep(0.001)
        await hub.publish("news", "first")  # taken, and stuck in its send
        with anyio.fail_after(1):
            await stalled.wait()
        # Each publish is a checkpoint, so the stream takes what it can between them: on
        # trio its items queue for the stuck writer until the outbound (16) is full, one
        # more waits in the stream's send, 2 fit in the subscription's buffer, and the
        # next one fails the subscriber (sooner if the stream got fewer turns).
        for i in range(16 + 1 + 2 + 1):
            await hub.publish("news", f"more {i}")
        with anyio.fail_after(1):
            await ended.wait()  # the stream was cancelled, its teardown ran
        tg.cancel_scope.cancel()
    closes = [m for m in sent if m["type"] == "websocket.close"]
    if sniffio.current_async_library() == "asyncio":
        # the send in flight was the stream's own (the baton): cut, and the close went
        assert closes == [
            {"type": "websocket.close", "code": 1013, "reason": "subscriber too slow"}
        ]
    assert any("fell 2 messages behind" in r.getMessage() for r in caplog.records)
