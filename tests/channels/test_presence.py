"""Presence through the hub, the same tests on the memory and the Redis backend.

Each test runs four times: memory and Redis, asyncio and trio. Redis is taken from
``PLAIT_REDIS_URL`` (default ``redis://127.0.0.1:6379``); each test has its own key
prefix and removes its keys.
"""

from __future__ import annotations

import gc
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

import anyio
import coredis
import msgspec
import pytest

from plait.channels import (
    Backend,
    Hub,
    InvalidPresence,
    MemoryBackend,
    PresenceDiff,
    PresenceEvent,
    PresenceFull,
    PresenceMember,
    PresenceState,
    PresenceSubscription,
    RedisBackend,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning"),
]

REDIS_URL = os.environ.get("PLAIT_REDIS_URL", "redis://127.0.0.1:6379")


@pytest.fixture(autouse=True)
def collect_leaks() -> Iterator[None]:
    """coredis leaks memory streams of failed connections: collected under the filter."""
    yield
    gc.collect()


@pytest.fixture(params=["memory", "redis"])
async def new_backend(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Backend]]:
    """Makes backends that share presence: one memory backend, or Redis backends
    (one per hub, as processes would have) with a key prefix of this test alone."""
    if request.param == "memory":
        backend = MemoryBackend()
        yield lambda: backend
        return
    prefix = f"plait-test:{uuid.uuid4().hex}:"
    try:
        with anyio.fail_after(3):
            async with coredis.Redis.from_url(REDIS_URL) as client:
                await client.ping()
    except Exception as exc:
        pytest.fail(f"no Redis answers at {REDIS_URL} ({exc!r})", pytrace=False)
    yield lambda: RedisBackend(REDIS_URL, key_prefix=prefix, presence_ttl=5.0)
    async with coredis.Redis.from_url(REDIS_URL) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        # Withdrawn at the hub's end: only empty channels (their numbering) remain.
        assert all(b"presence:" in key for key in keys), keys
        if keys:
            await client.delete(keys)


@pytest.fixture
async def hub(new_backend: Callable[[], Backend]) -> AsyncIterator[Hub]:
    async with Hub(new_backend()) as hub:
        yield hub


async def next_event(events: PresenceSubscription) -> PresenceEvent:
    with anyio.fail_after(5):
        return await anext(events)


async def next_diff(events: PresenceSubscription) -> PresenceDiff:
    event = await next_event(events)
    assert isinstance(event, PresenceDiff), event
    return event


def shape(members: dict[str, PresenceMember]) -> dict[str, tuple[int, list[dict[str, Any]]]]:
    """``{key: (count, metas without refs)}``: refs are random, the rest is not."""
    return {
        key: (
            member.count,
            [{k: v for k, v in meta.items() if k != "ref"} for meta in member.metas],
        )
        for key, member in members.items()
    }


async def test_tracked_while_the_block_runs_then_gone(hub: Hub) -> None:
    presence = hub.presence("room")
    assert await presence.list() == {}
    async with presence.track("ada", {"name": "Ada", "device": "phone"}) as tracking:
        listed = await presence.list()
        assert shape(listed) == {"ada": (1, [{"name": "Ada", "device": "phone"}])}
        assert listed["ada"].metas[0]["ref"] == tracking.ref
        assert tracking.key == "ada"
        assert tracking.meta == {"name": "Ada", "device": "phone"}
        assert await hub.presence("elsewhere").list() == {}
    assert await presence.list() == {}


async def test_the_same_key_twice_is_one_presence_counted_twice(hub: Hub) -> None:
    presence = hub.presence("room")
    async with presence.subscribe() as events:
        assert await next_event(events) == PresenceState(channel="room", presences={})
        async with presence.track("ada", {"tab": 1}) as first:
            diff = await next_diff(events)
            assert shape(diff.joins) == {"ada": (1, [{"tab": 1}])}
            assert diff.leaves == {}
            async with presence.track("ada", {"tab": 2}) as second:
                diff = await next_diff(events)
                # a join of a meta, not a new member: the count says so
                assert shape(diff.joins) == {"ada": (2, [{"tab": 2}])}
                assert shape(await presence.list()) == {"ada": (2, [{"tab": 1}, {"tab": 2}])}
                assert first.ref != second.ref
            diff = await next_diff(events)
            assert shape(diff.leaves) == {"ada": (1, [{"tab": 2}])}
            assert diff.joins == {}
            assert diff.leaves["ada"].metas[0]["ref"] == second.ref
            assert shape(await presence.list()) == {"ada": (1, [{"tab": 1}])}
        diff = await next_diff(events)
        assert shape(diff.leaves) == {"ada": (0, [{"tab": 1}])}  # count 0: the key is gone
    assert await presence.list() == {}


async def test_a_cancelled_tracking_task_is_untracked(hub: Hub) -> None:
    presence = hub.presence("room")

    async def hold(key: str, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with presence.track(key):
            task_status.started()
            await anyio.sleep_forever()

    async with presence.subscribe() as events:
        await next_event(events)
        async with anyio.create_task_group() as task_group:
            await task_group.start(hold, "ada")
            await task_group.start(hold, "bob")
            assert (await next_diff(events)).joins.keys() == {"ada"}
            assert (await next_diff(events)).joins.keys() == {"bob"}
            assert set(await presence.list()) == {"ada", "bob"}
            task_group.cancel_scope.cancel()  # as a handler is when its client goes
        assert await presence.list() == {}
        left = {key for _ in range(2) for key in (await next_diff(events)).leaves}
        assert left == {"ada", "bob"}


async def test_a_subscriber_gets_the_state_then_every_diff_in_order(hub: Hub) -> None:
    presence = hub.presence("room")
    async with presence.track("bob", {"status": "away"}), presence.subscribe() as events:
        state = await next_event(events)
        assert isinstance(state, PresenceState)
        assert shape(state.presences) == {"bob": (1, [{"status": "away"}])}
        async with presence.track("ada") as ada:
            await ada.update({"status": "typing"})
            async with presence.track("cy"):
                pass
        diffs = [await next_diff(events) for _ in range(5)]
        final = await presence.list()
    assert [(shape(d.joins), shape(d.leaves)) for d in diffs] == [
        ({"ada": (1, [{}])}, {}),
        ({"ada": (1, [{"status": "typing"}])}, {"ada": (1, [{}])}),  # an update, count kept
        ({"cy": (1, [{}])}, {}),
        ({}, {"cy": (0, [{}])}),
        ({}, {"ada": (0, [{"status": "typing"}])}),
    ]
    for diff in diffs:
        state = state.apply(diff)
    assert state.presences == final  # the diffs take the state to what list() says
    assert shape(final) == {"bob": (1, [{"status": "away"}])}


async def test_update_replaces_the_meta_under_a_new_ref(hub: Hub) -> None:
    presence = hub.presence("room")
    async with presence.track("ada", {"status": "online"}) as tracking:
        before = tracking.ref
        await tracking.update({"status": "away"})
        assert tracking.ref != before
        assert tracking.meta == {"status": "away"}
        listed = await presence.list()
        assert shape(listed) == {"ada": (1, [{"status": "away"}])}
        assert listed["ada"].metas[0]["ref"] == tracking.ref
        with pytest.raises(InvalidPresence):
            await tracking.update([1, 2])
    with pytest.raises(RuntimeError, match="no longer tracked"):
        await tracking.update({"status": "gone"})


class Meta(msgspec.Struct):
    name: str


@dataclass
class DataMeta:
    name: str


@pytest.mark.parametrize("meta", [None, {"a": [1, "é"]}, Meta("ada"), DataMeta("ada")])
async def test_a_meta_is_any_json_object(hub: Hub, meta: object) -> None:
    async with hub.presence("room").track("ada", meta) as tracking:
        listed = await hub.presence("room").list()
    expected = {} if meta is None else msgspec.to_builtins(meta)
    assert tracking.meta == expected
    assert shape(listed) == {"ada": (1, [expected])}


@pytest.mark.parametrize(
    ("key", "meta", "message"),
    [
        ("", None, "non-empty string"),
        (42, None, "non-empty string, not int"),
        (None, None, "non-empty string"),
        ("x" * 257, None, "at most 256 bytes, not 257"),
        ("é" * 129, None, "at most 256 bytes, not 258"),
        ("\ud800", None, "valid Unicode"),
        ("ada", [1, 2], "JSON object"),
        ("ada", "text", "JSON object"),
        ("ada", 3, "JSON object"),
        ("ada", {"x": object()}, "encode as JSON"),
        ("ada", {"ref": "mine"}, "'ref'"),
        ("ada", {"blob": "x" * 5000}, "at most 4096 bytes"),
    ],
)
async def test_invalid_keys_and_metas_are_refused(
    hub: Hub, key: Any, meta: Any, message: str
) -> None:
    presence = hub.presence("room")
    with pytest.raises(InvalidPresence, match=message) as info:
        async with presence.track(key, meta):
            pytest.fail("tracked")
    assert isinstance(info.value, ValueError)
    assert info.value.close_code == 1008
    assert await presence.list() == {}


async def test_limits_are_set_per_presence(hub: Hub) -> None:
    presence = hub.presence("room", max_key=3, max_meta=10, max_entries=2)
    with pytest.raises(InvalidPresence, match="at most 3 bytes"):
        async with presence.track("abcd"):
            pass
    with pytest.raises(InvalidPresence, match="at most 10 bytes"):
        async with presence.track("abc", {"long": "enough"}):
            pass
    async with presence.track("a"), presence.track("a"):
        with pytest.raises(PresenceFull, match="already tracks 2") as info:
            async with presence.track("b"):
                pass
        assert isinstance(info.value, ValueError)
        assert info.value.close_code == 1013
        assert {k: m.count for k, m in (await presence.list()).items()} == {"a": 2}
    async with presence.track("b"):  # room again once they left
        pass
    for bad in ({"max_key": 0}, {"max_meta": 0}, {"max_entries": 0}):
        with pytest.raises(ValueError, match="at least 1"):
            hub.presence("room", **bad)
    with pytest.raises(ValueError, match="non-empty"):
        hub.presence("")
    with pytest.raises(ValueError, match="buffer"):
        async with presence.subscribe(buffer=0):
            pass


async def test_a_slow_subscriber_gets_merged_diffs_that_still_add_up(hub: Hub) -> None:
    presence = hub.presence("room")
    async with presence.subscribe(buffer=3) as slow, presence.subscribe() as fast:
        state = await next_event(slow)
        await next_event(fast)
        async with presence.track("keep", {"n": 0}):
            for n in range(10):  # each joins and leaves: 20 diffs that cancel out
                async with presence.track(f"passing-{n}"):
                    pass
            async with presence.track("late") as late:
                await late.update({"n": 1})
                for _ in range(23):  # the fast one has seen every change by then
                    await next_diff(fast)
                final = await presence.list()
                received: list[PresenceDiff] = []
                while not received or state.presences != final:
                    received.append(await next_diff(slow))
                    state = state.apply(received[-1])
                assert slow.merged > 0
                assert len(received) <= 3  # never more than the buffer
                assert slow.statistics() == {"buffered": 0, "merged": slow.merged}
                # what joined and left while it lagged is in no diff it got
                seen = {key for d in received for key in (*d.joins, *d.leaves)}
                assert seen == {"keep", "late"}
    assert shape(final) == {"keep": (1, [{"n": 0}]), "late": (1, [{"n": 1}])}


async def test_the_state_and_diffs_as_a_client_gets_them(hub: Hub) -> None:
    presence = hub.presence("room")
    async with presence.track("bob"), presence.subscribe() as events:
        state = await next_event(events)
        async with presence.track("ada", {"tab": 2}):
            diff = await next_diff(events)
    encoder = msgspec.json.Encoder()
    bob = state.presences["bob"].metas[0]["ref"]
    assert msgspec.json.decode(encoder.encode(state)) == {
        "type": "presence_state",
        "channel": "room",
        "presences": {"bob": {"metas": [{"ref": bob}], "count": 1}},
    }
    ada = diff.joins["ada"].metas[0]["ref"]
    assert msgspec.json.decode(encoder.encode(diff)) == {
        "type": "presence_diff",
        "channel": "room",
        "joins": {"ada": {"metas": [{"ref": ada, "tab": 2}], "count": 1}},
        "leaves": {},
    }


async def test_hubs_sharing_a_backend_see_each_other(new_backend: Callable[[], Backend]) -> None:
    """With Redis, two hubs are as two processes; in memory, one hub plays both."""
    backend = new_backend()
    async with Hub(backend) as hub_a:
        other = new_backend()
        async with (
            Hub(other) if other is not backend else nullcontext(hub_a) as hub_b,
            hub_a.presence("room").subscribe() as events,
        ):
            await next_event(events)
            async with hub_b.presence("room").track("ada", {"on": "b"}):
                assert shape((await next_diff(events)).joins) == {"ada": (1, [{"on": "b"}])}
                async with hub_a.presence("room").track("ada", {"on": "a"}):
                    assert shape((await next_diff(events)).joins) == {"ada": (2, [{"on": "a"}])}
                    listed = await hub_b.presence("room").list()
                    assert {k: m.count for k, m in listed.items()} == {"ada": 2}
                assert shape((await next_diff(events)).leaves) == {"ada": (1, [{"on": "a"}])}
            assert shape((await next_diff(events)).leaves) == {"ada": (0, [{"on": "b"}])}


async def test_a_stopped_hub_refuses_and_a_backend_without_presence_says_so() -> None:
    hub = Hub()
    presence = hub.presence("room")
    with pytest.raises(RuntimeError, match="not running"):
        async with presence.track("ada"):
            pass
    with pytest.raises(RuntimeError, match="not running"):
        await presence.list()

    class Plain(MemoryBackend):
        presence_store = None  # type: ignore[assignment]

    with pytest.raises(TypeError, match="Plain does not offer presence"):
        Hub(Plain()).presence("room")


async def test_subscribers_joining_during_churn_see_every_change_once(hub: Hub) -> None:
    """Tracks, updates and untracks race with subscribers arriving: each ends with the
    state list() gives, and every count it was told adds up on the way."""
    presence = hub.presence("room")
    rng = random.Random(13)

    async def churn(worker: int) -> None:
        for i in range(15):
            async with presence.track(f"user-{rng.randrange(4)}", {"w": worker}) as tracking:
                if rng.random() < 0.3:
                    await tracking.update({"w": worker, "i": i})
                await anyio.sleep(rng.random() * 0.002)

    async with AsyncExitStack() as stack, presence.track("anchor"):
        followers: list[PresenceSubscription] = []
        async with anyio.create_task_group() as task_group:
            for worker in range(4):
                task_group.start_soon(churn, worker)
            for _ in range(3):  # read later: their buffers merge meanwhile
                await anyio.sleep(0.003)
                followers.append(await stack.enter_async_context(presence.subscribe(buffer=8)))
        async with presence.track("marker"):
            expected = await presence.list()
            assert set(expected) == {"anchor", "marker"}
            for events in followers:
                state = await next_event(events)
                assert isinstance(state, PresenceState)
                while "marker" not in state.presences:
                    diff = await next_diff(events)
                    state = state.apply(diff)
                    for key, member in (*diff.joins.items(), *diff.leaves.items()):
                        present = state.presences.get(key)
                        assert member.count == (present.count if present else 0)
                assert state.presences == expected
