"""The Redis backend through the hub, against a real Redis, on asyncio and trio.

Redis is taken from ``PLAIT_REDIS_URL`` (default ``redis://127.0.0.1:6379``); without
one the tests fail. Each test has its own key prefix and removes its keys. The fault
tests run their own redis-server (``redis-server`` must be installed) on a free port.
"""

from __future__ import annotations

import gc
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import coredis
import pytest
from _redis_server import free_port, open_redis_server

from plait.channels import (
    ChannelMessage,
    ChannelUnavailable,
    Hub,
    RecoveryNotice,
    RedisBackend,
    Subscription,
)

pytestmark = [
    pytest.mark.anyio,
    # coredis 6.9 never closes the memory streams of a connection that failed to
    # connect, and anyio warns when they are garbage-collected: see `collect_leaks`.
    pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning"),
]

REDIS_URL = os.environ.get("PLAIT_REDIS_URL", "redis://127.0.0.1:6379")


@pytest.fixture(autouse=True)
def collect_leaks() -> Iterator[None]:
    """Collect what coredis leaked while this module's warning filter holds, so that
    no other test meets the warning."""
    yield
    gc.collect()


async def _unreachable(url: str) -> str | None:
    """Why Redis does not answer at ``url``, or None when it does."""
    try:
        with anyio.fail_after(3):
            async with coredis.Redis.from_url(url) as client:
                await client.ping()
    except Exception as exc:
        while isinstance(exc, ExceptionGroup):
            exc = exc.exceptions[0]
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture
async def redis() -> AsyncIterator[coredis.Redis[bytes]]:
    """A plain client of the test Redis, to look at what the backend did."""
    problem = await _unreachable(REDIS_URL)
    if problem is not None:
        pytest.fail(
            f"no Redis answers at {REDIS_URL} ({problem}): start redis-server, "
            "or point PLAIT_REDIS_URL at one",
            pytrace=False,
        )
    async with coredis.Redis.from_url(REDIS_URL) as client:
        yield client


@pytest.fixture
async def prefix(redis: coredis.Redis[bytes]) -> AsyncIterator[str]:
    """A key prefix of this test alone; its keys are removed afterwards."""
    prefix = f"plait-test:{uuid.uuid4().hex}:"
    yield prefix
    keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
    if keys:
        await redis.delete(keys)


async def receive(subscription: Subscription, count: int) -> list[ChannelMessage]:
    with anyio.fail_after(5):
        return [await anext(subscription) for _ in range(count)]


async def wait_until(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while True:
            if condition():
                return
            await anyio.sleep(0.01)


async def subscribers(redis: coredis.Redis[bytes], topic: str) -> int:
    counts = await redis.pubsub_numsub(topic)
    return counts.get(topic.encode(), 0)


async def test_bytes_str_and_json_arrive_as_published(prefix: str) -> None:
    async with (
        Hub(RedisBackend(REDIS_URL, key_prefix=prefix)) as hub,
        hub.subscribe("room") as subscription,
    ):
        ids = [
            await hub.publish("room", message)
            for message in (b"\x00\xffraw", "text é", {"user": "ada", "n": [1, 2]})
        ]
        received = await receive(subscription, 3)
    assert [m.data for m in received] == [b"\x00\xffraw", "text é", {"user": "ada", "n": [1, 2]}]
    assert [m.id for m in received] == ids
    assert {m.channel for m in received} == {"room"}


@pytest.mark.parametrize("history", [0, 10])
async def test_hubs_sharing_redis_agree_on_order(prefix: str, history: int) -> None:
    """Two publishing hubs, one receiving: ids grow in the order Redis delivers."""
    backends = [RedisBackend(REDIS_URL, history=history, key_prefix=prefix) for _ in range(3)]
    sent: dict[str, list[str]] = {"a": [], "b": []}
    async with (
        Hub(backends[0]) as hub_a,
        Hub(backends[1]) as hub_b,
        Hub(backends[2]) as receiver,
        receiver.subscribe("feed", buffer=100) as subscription,
    ):

        async def publish(hub: Hub, name: str) -> None:
            for i in range(40):
                sent[name].append(await hub.publish("feed", f"{name}{i}"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish, hub_a, "a")
            tg.start_soon(publish, hub_b, "b")
        received = await receive(subscription, 80)

    keys = [backends[2].id_key(m.id) for m in received]
    assert keys == sorted(keys)
    assert len(set(keys)) == 80
    for name in ("a", "b"):
        mine = [m for m in received if m.data.startswith(name)]
        assert [m.data for m in mine] == [f"{name}{i}" for i in range(40)]
        assert [m.id for m in mine] == sent[name]


async def test_since_replays_kept_messages_then_live(prefix: str) -> None:
    async with (
        Hub(RedisBackend(REDIS_URL, history=3, key_prefix=prefix)) as publisher,
        Hub(RedisBackend(REDIS_URL, history=3, key_prefix=prefix)) as hub,
    ):
        ids = [await publisher.publish("chat", i) for i in range(6)]
        async with hub.subscribe("chat", since=ids[3]) as subscription:
            live = await publisher.publish("chat", 6)
            received = await receive(subscription, 3)
            assert [(m.id, m.data) for m in received] == [(ids[4], 4), (ids[5], 5), (live, 6)]
        # More missed than kept: the newest `history` come back.
        async with hub.subscribe("chat", since=ids[0]) as subscription:
            received = await receive(subscription, 3)
            assert [m.data for m in received] == [4, 5, 6]
            assert subscription.statistics()["buffered"] == 0


async def test_without_history_since_gives_live_messages_only(prefix: str) -> None:
    async with Hub(RedisBackend(REDIS_URL, key_prefix=prefix)) as hub:
        first = await hub.publish("chat", "old")
        async with hub.subscribe("chat", since=first) as subscription:
            await hub.publish("chat", "new")
            assert [m.data for m in await receive(subscription, 1)] == ["new"]
        assert await hub.backend.history("chat", None) == []


async def test_history_age_drops_old_messages(prefix: str, redis: coredis.Redis[bytes]) -> None:
    backend = RedisBackend(REDIS_URL, history=10, history_age=0.3, key_prefix=prefix)
    async with Hub(backend) as hub:
        old = [await hub.publish("news", i) for i in range(3)]
        await anyio.sleep(0.4)
        new = await hub.publish("news", 3)
        async with hub.subscribe("news", since=old[0]) as subscription:
            assert [(m.id, m.data) for m in await receive(subscription, 1)] == [(new, 3)]
            assert subscription.statistics()["buffered"] == 0
        await anyio.sleep(0.4)
        assert await backend.history("news", None) == []
        # The stream expires with its last message: idle channel names do not pile up.
        assert await redis.exists([f"{prefix}history:news"]) == 0


async def test_slow_subscriber_policy_is_the_hubs(prefix: str) -> None:
    async with (
        Hub(RedisBackend(REDIS_URL, key_prefix=prefix)) as hub,
        hub.subscribe("fast", buffer=2, policy="drop_oldest") as subscription,
    ):
        for i in range(5):
            await hub.publish("fast", i)
        await wait_until(lambda: subscription.statistics()["dropped"] == 3)
        assert [m.data for m in await receive(subscription, 2)] == [3, 4]


async def test_last_subscriber_leaving_unsubscribes(
    prefix: str, redis: coredis.Redis[bytes]
) -> None:
    topic = f"{prefix}room"
    async with Hub(RedisBackend(REDIS_URL, key_prefix=prefix)) as hub:
        async with hub.subscribe("room"):
            async with hub.subscribe("room"):
                assert await subscribers(redis, topic) == 1
            assert await subscribers(redis, topic) == 1
        assert await subscribers(redis, topic) == 0
        assert hub.backend.statistics()["channels"] == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("history", [0, 10])
async def test_cancelled_subscribers_leave_nothing_listened(
    prefix: str, redis: coredis.Redis[bytes], history: int
) -> None:
    backend = RedisBackend(REDIS_URL, history=history, key_prefix=prefix)
    async with Hub(backend) as hub:
        with anyio.CancelScope() as scope:
            async with hub.subscribe("a", "b") as subscription:
                await hub.publish("a", 1)
                await receive(subscription, 1)
                scope.cancel()
                await anyio.sleep_forever()
        with anyio.CancelScope() as scope:
            scope.cancel()  # cancelled while subscribing
            async with hub.subscribe("c", "d"):
                pytest.fail("the subscription should have been cancelled")
        assert hub.statistics() == {"channels": 0, "subscriptions": 0}
        assert backend.statistics()["channels"] == 0
        for channel in "abcd":
            assert await subscribers(redis, f"{prefix}{channel}") == 0


async def test_foreign_messages_do_not_stop_delivery(
    prefix: str, redis: coredis.Redis[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        Hub(RedisBackend(REDIS_URL, key_prefix=prefix)) as hub,
        hub.subscribe("room") as subscription,
    ):
        with caplog.at_level(logging.ERROR, logger="plait.channels._redis"):
            await redis.publish(f"{prefix}room", b"not a plait frame")
            await redis.publish(f"{prefix}room", b"1-0 jnot json")
            await hub.publish("room", "fine")
            assert [m.data for m in await receive(subscription, 1)] == ["fine"]
        assert "could not deliver message 1-0" in caplog.text


async def test_message_ids(prefix: str) -> None:
    backend = RedisBackend(REDIS_URL, history=5, key_prefix=prefix)
    assert backend.id_key("1700000000000-3") == (1700000000000, 3)
    assert backend.id_key("17") == (17, 0)
    assert backend.id_key(f"{2**64 - 1}-{2**64 - 2}") == (2**64 - 1, 2**64 - 2)
    too_big = (f"{2**64}-0", f"0-{2**64}", "99999999999999999999999-0", f"{2**64 - 1}-{2**64 - 1}")
    for bad in ("", "x-1", "1-x", "-1", "1-2-3", " 1-0", "\u0661-0", *too_big):
        with pytest.raises(ValueError, match="not a message id"):
            backend.id_key(bad)
    async with Hub(backend) as hub:
        with pytest.raises(ValueError, match="not a message id"):
            async with hub.subscribe("room", since="yesterday"):
                pass


async def test_unreachable_redis_fails_the_start() -> None:
    backend = RedisBackend(f"redis://:secret@127.0.0.1:{free_port()}")
    with pytest.raises(ChannelUnavailable, match=r"cannot reach Redis at redis://:\*\*\*@"):
        await backend.run(lambda *_: None, lambda _: None, task_status=anyio.TASK_STATUS_IGNORED)


async def test_unreachable_redis_fails_the_hub_start() -> None:
    with pytest.raises(ChannelUnavailable, match="cannot reach Redis"):
        async with Hub(RedisBackend(f"redis://127.0.0.1:{free_port()}")):
            pass


async def test_lost_pubsub_connection_loses_nothing(tmp_path: Path) -> None:
    """Publishers keep reaching Redis while the subscriber's pub/sub connection is
    killed twice: it reconnects and fills the gap from history, in order, once."""
    count = 300
    async with open_redis_server(tmp_path) as server, coredis.Redis.from_url(server.url) as admin:
        backend = RedisBackend(server.url, history=1000)
        sent: list[str] = []
        received: list[ChannelMessage] = []
        async with (
            Hub(RedisBackend(server.url, history=1000)) as publisher,
            Hub(backend) as hub,
            hub.subscribe("feed", buffer=count) as subscription,
        ):

            async def publish_all() -> None:
                for i in range(count):
                    sent.append(await publisher.publish("feed", i))
                    await anyio.sleep(0.002)

            async with anyio.create_task_group() as tg:
                tg.start_soon(publish_all)
                with anyio.move_on_after(10):
                    async for message in subscription:
                        received.append(message)
                        if len(received) in (count // 3, 2 * count // 3):
                            assert await admin.client_kill(type_=coredis.PureToken.PUBSUB) >= 1
                        if len(received) == count:
                            break
        assert [m.data for m in received] == list(range(count))
        assert [m.id for m in received] == sent
        statistics = backend.statistics()
        assert statistics["reconnects"] == 2
        assert statistics["recovered"] > 0  # the gap was real, and filled


async def test_redis_restart(tmp_path: Path) -> None:
    """Redis stops and starts again: publishing fails meanwhile with a plait error;
    the hub keeps running and its subscriber gets what is published afterwards."""
    async with open_redis_server(tmp_path) as server:
        backend = RedisBackend(server.url, history=10)
        async with Hub(backend) as hub, hub.subscribe("feed") as subscription:
            await hub.publish("feed", "before")
            assert [m.data for m in await receive(subscription, 1)] == ["before"]
            await server.stop()
            with pytest.raises(ChannelUnavailable, match="could not publish on 'feed'"):
                await hub.publish("feed", "during")
            await server.start()
            with anyio.fail_after(5):
                while True:
                    try:
                        await hub.publish("feed", "after")
                        break
                    except ChannelUnavailable:
                        await anyio.sleep(0.05)
            # Redis came back empty (no persistence): whether it lost a message
            # published before it went, nobody can tell, so the subscriber is told first.
            notice, after = await receive(subscription, 2)
            assert notice == RecoveryNotice(("feed",))
            assert isinstance(after, ChannelMessage)
            assert after.data == "after"
            assert subscription.unrecovered == ("feed",)
            assert subscription.statistics()["gaps"] == backend.statistics()["gaps"] == 1
            await wait_until(lambda: backend.statistics()["reconnects"] == 1)
            await hub.publish("feed", "live")
            assert [m.data for m in await receive(subscription, 1)] == ["live"]


async def test_cancelled_and_concurrent_subscribes_never_leave_a_deaf_subscriber(
    prefix: str, redis: coredis.Redis[bytes]
) -> None:
    """Random timings of a subscriber cancelled while it joins and another joining:
    Redis's own PUBSUB NUMSUB agrees with the hub, and the survivor hears a publish."""
    import random

    rng = random.Random(20261126)
    backend = RedisBackend(REDIS_URL, history=10, key_prefix=prefix)
    topic = backend._topic("room").decode()
    async with Hub(backend) as hub:
        for trial in range(60):
            joined = anyio.Event()
            survivor: list[Subscription] = []
            stop = anyio.Event()

            async def doomed(steps: int) -> None:
                async with hub.subscribe("room"):
                    await anyio.sleep_forever()

            async def stays(
                steps: int,
                stop: anyio.Event = stop,
                joined: anyio.Event = joined,
                survivor: list[Subscription] = survivor,
            ) -> None:
                for _ in range(steps):
                    await anyio.lowlevel.checkpoint()
                async with hub.subscribe("room") as subscription:
                    survivor.append(subscription)
                    joined.set()
                    await stop.wait()

            async with anyio.create_task_group() as tg:
                first = anyio.CancelScope()
                tg.start_soon(_run_in, first, doomed, rng.randrange(4))
                tg.start_soon(stays, rng.randrange(6))
                for _ in range(rng.randrange(8)):
                    await anyio.lowlevel.checkpoint()
                first.cancel()  # the first subscriber leaves, somewhere inside its join
                with anyio.fail_after(5):
                    await joined.wait()
                await wait_until_async(lambda: subscribers(redis, topic), 1)
                published = await hub.publish("room", f"trial {trial}")
                (message,) = await receive(survivor[0], 1)
                assert (message.id, message.data) == (published, f"trial {trial}")
                stop.set()
            await wait_until_async(lambda: subscribers(redis, topic), 0)
            assert hub.statistics()["subscriptions"] == 0


async def _run_in(
    scope: anyio.CancelScope, func: Callable[[int], Awaitable[None]], steps: int
) -> None:
    with scope:
        for _ in range(steps):
            await anyio.lowlevel.checkpoint()
        await func(steps)


async def wait_until_async(count: Callable[[], Awaitable[int]], expected: int) -> None:
    """Poll Redis until ``count()`` is ``expected`` (at most 5 s)."""
    with anyio.fail_after(5):
        while await count() != expected:  # noqa: ASYNC110 - Redis's state, not ours
            await anyio.sleep(0.01)


async def test_a_resume_while_redis_is_down_closes_with_1013_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import plait
    from plait.testing import AsyncTestClient

    async with open_redis_server(tmp_path) as server:
        hub = Hub(RedisBackend(server.url, history=10))
        route = plait.WebSocketRoute("/room")

        @route.stream()
        async def hear(hub: Hub, since: str | None = None) -> AsyncIterator[ChannelMessage]:
            async with hub.subscribe("room", since=since) as messages:
                async for message in messages:
                    yield message

        async with AsyncTestClient(plait.App(routes=[route], hub=hub)) as client:
            await server.stop()
            async with client.websocket_connect("/room?since=0-0") as ws:
                with pytest.raises(plait.WebSocketDisconnect) as info:
                    await ws.receive_text()
            await server.start()
    assert info.value.code == 1013
    assert info.value.reason == "channel unavailable, try again later"
    closes = [r for r in caplog.records if "closing /room with 1013" in r.getMessage()]
    assert [r.levelno for r in closes] == [logging.WARNING]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    # The records' tracebacks hold coredis's leaked streams of the failed connects:
    # let them go while this module's warning filter holds (see `collect_leaks`).
    del closes
    caplog.clear()
    gc.collect()


async def test_resume_under_live_publishing_has_no_gap_and_no_duplicate(prefix: str) -> None:
    """A subscriber resumes with ``since`` while another hub keeps publishing: each
    message after ``since`` exactly once, in order, though replay and live overlap."""
    async with (
        Hub(RedisBackend(REDIS_URL, history=1000, key_prefix=prefix)) as publisher,
        Hub(RedisBackend(REDIS_URL, history=1000, key_prefix=prefix)) as receiver,
    ):
        published = [await publisher.publish("room", f"m{i}") for i in range(20)]

        async def publish_on() -> None:
            for i in range(20, 120):
                published.append(await publisher.publish("room", f"m{i}"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_on)
            while len(published) < 30:  # the resume starts in the middle of the stream
                await anyio.lowlevel.checkpoint()
            async with receiver.subscribe("room", since=published[9], buffer=1000) as sub:
                got = await receive(sub, 110)
    assert [m.id for m in got] == published[10:120]
    assert [m.data for m in got] == [f"m{i}" for i in range(10, 120)]


async def test_a_resume_older_than_the_redis_history_says_it_is_incomplete(
    prefix: str,
) -> None:
    # Redis trims approximately (MAXLEN ~), a radix-tree node of ~100 entries at a time:
    # 300 messages with a history of 3 are enough to lose the first ones for sure.
    backend = RedisBackend(REDIS_URL, history=3, key_prefix=prefix)
    async with Hub(backend) as hub:
        ids = [await hub.publish("room", i) for i in range(300)]
        kept = [message_id for message_id, _ in await backend.history("room", None)]
        assert ids[0] not in kept
        async with hub.subscribe("room", since=ids[2]) as gap:
            assert gap.unrecovered == ("room",)
            assert gap.recovery_notice() == {"recovered": False, "channels": ["room"]}
        async with hub.subscribe("room", since=ids[-2]) as whole:
            assert whole.recovered
    async with Hub(RedisBackend(REDIS_URL, key_prefix=prefix + "none:")) as hub:
        published = await hub.publish("room", "m")
        async with hub.subscribe("room", since=published) as no_history:
            assert not no_history.recovered  # nothing can be recovered without history


async def test_a_resume_across_a_redis_restart_without_persistence_is_incomplete(
    tmp_path: Path,
) -> None:
    async with open_redis_server(tmp_path) as server:
        async with Hub(RedisBackend(server.url, history=100)) as hub:
            seen = await hub.publish("room", "before the restart")
            await hub.publish("room", "missed, and lost with the restart")
        await server.stop()  # no persistence: the history is gone
        await server.start()
        async with Hub(RedisBackend(server.url, history=100)) as hub:
            await hub.publish("room", "after the restart")
            async with hub.subscribe("room", since=seen) as subscription:
                assert not subscription.recovered
                assert [(await anext(subscription)).data] == ["after the restart"]
            async with hub.subscribe("room", since="0-0") as everything:
                assert everything.recovered
    gc.collect()  # coredis's leaked streams of the restart: see `collect_leaks`


async def test_a_resume_of_more_than_the_history_replays_says_it_is_incomplete(
    prefix: str,
) -> None:
    """Redis trims approximately and may keep more than ``history``, but a resume
    replays the newest ``history``: missing more than that is a gap, and said so."""
    backend = RedisBackend(REDIS_URL, history=3, key_prefix=prefix)
    async with Hub(backend) as hub:
        ids = [await hub.publish("room", i) for i in range(7)]  # all 7 still kept
        async with hub.subscribe("room", since=ids[0]) as subscription:
            assert subscription.unrecovered == ("room",)
            assert [(await anext(subscription)).data for _ in range(3)] == [4, 5, 6]
        async with hub.subscribe("room", since=ids[3]) as subscription:
            assert subscription.recovered  # exactly `history` missed: all replayed
