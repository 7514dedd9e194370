"""Presence through Redis when processes die and Redis goes away, on asyncio and trio.

A process killed with SIGKILL never cleans up: the others must remove its entries, and
publish their leaves once, within ``presence_ttl + presence_sweep``. A Redis that
restarts empty must get every live tracking back. The shared Redis is
``PLAIT_REDIS_URL``; the restart test runs its own redis-server.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.abc
import coredis
import pytest
from _redis_server import open_redis_server

from plait.channels import (
    ChannelUnavailable,
    Hub,
    PresenceDiff,
    PresenceState,
    PresenceSubscription,
    RedisBackend,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning"),
]

REDIS_URL = os.environ.get("PLAIT_REDIS_URL", "redis://127.0.0.1:6379")
PROCESS = Path(__file__).with_name("_presence_process.py")
TTL, SWEEP = 1.0, 0.25
"""The killed process's ttl, and how often the others sweep."""
BOUND = TTL + SWEEP
"""The documented bound: a dead process's entries are gone within ttl + sweep."""
SLACK = 1.0
"""What a shared, loaded machine may add to it (a round trip takes a millisecond)."""


@pytest.fixture(autouse=True)
def collect_leaks() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix of this test alone; its keys are removed afterwards."""
    prefix = f"plait-test:{uuid.uuid4().hex}:"
    yield prefix
    async with coredis.Redis.from_url(REDIS_URL) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(keys)


def backend(prefix: str, url: str = REDIS_URL) -> RedisBackend:
    """A hub of the test process: it sweeps every SWEEP seconds, but its own ttl is
    long, so that a loaded machine never has two of them sweep each other."""
    return RedisBackend(url, key_prefix=prefix, presence_ttl=5.0, presence_sweep=SWEEP)


class Watcher:
    """A subscription and the state it builds from its diffs, as a client would."""

    def __init__(self, events: PresenceSubscription) -> None:
        self.events = events
        self.state = PresenceState(channel=events.channel, presences={})
        self.diffs: list[PresenceDiff] = []

    async def start(self) -> None:
        with anyio.fail_after(5):
            state = await anext(self.events)
        assert isinstance(state, PresenceState)
        self.state = state

    async def until(self, counts: dict[str, int], within: float = 5) -> None:
        """Apply diffs until each key has its count (and no other key is there)."""
        with anyio.fail_after(within):
            while self.counts() != counts:
                diff = await anext(self.events)
                assert isinstance(diff, PresenceDiff)
                self.diffs.append(diff)
                self.state = self.state.apply(diff)
                for key, member in (*diff.joins.items(), *diff.leaves.items()):
                    assert member.count == self.counts().get(key, 0)  # counts add up

    def counts(self) -> dict[str, int]:
        return {key: member.count for key, member in self.state.presences.items()}


async def test_a_killed_process_leaves_within_the_bound_and_once(
    prefix: str, anyio_backend: str
) -> None:
    command = [sys.executable, str(PROCESS), anyio_backend, REDIS_URL, prefix]
    command += [str(TTL), str(SWEEP), "room", "ada", "bob"]
    async with (
        Hub(backend(prefix)) as hub_a,
        Hub(backend(prefix)) as hub_b,  # two processes sweep: each leave comes once
        hub_a.presence("room").subscribe() as events_a,
        hub_b.presence("room").subscribe() as events_b,
        hub_a.presence("room").track("ada", {"here": True}),
    ):
        watchers = [Watcher(events_a), Watcher(events_b)]
        for watcher in watchers:
            await watcher.start()
            await watcher.until({"ada": 1})
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        async with await anyio.open_process(
            command, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ) as process:
            assert process.stdout is not None
            with anyio.fail_after(20):
                assert (await process.stdout.receive()).strip() == b"ready"
            for watcher in watchers:
                await watcher.until({"ada": 2, "bob": 1})
            process.kill()  # SIGKILL: nothing is withdrawn
            killed = time.monotonic()
            await process.wait()
        for watcher in watchers:
            await watcher.until({"ada": 1}, within=BOUND + SLACK + 2)
        elapsed = time.monotonic() - killed
        assert elapsed <= BOUND + SLACK, f"{elapsed:.2f} s to see the leaves"
        listed = await hub_b.presence("room").list()
        assert {key: member.count for key, member in listed.items()} == {"ada": 1}
        for watcher in watchers:
            leaves = [
                meta["ref"] for d in watcher.diffs for m in d.leaves.values() for meta in m.metas
            ]
            assert len(leaves) == 2  # "ada" on the dead process, and "bob": once each
            assert len(set(leaves)) == 2
            assert all(not d.joins for d in watcher.diffs[-1:])
    async with coredis.Redis.from_url(REDIS_URL) as client:
        # nothing of the dead process is left: no deadline, no list of its channels
        left = [key async for key in client.scan_iter(match=f"{prefix}presence-*")]
        assert left == []


async def test_a_hub_that_stops_takes_its_presence_away_at_once(prefix: str) -> None:
    async with Hub(backend(prefix)) as watching, watching.presence("room").subscribe() as events:
        watcher = Watcher(events)
        await watcher.start()
        async with Hub(backend(prefix)) as leaving:
            tracked = leaving.presence("room").track("ada")
            await tracked.__aenter__()
            await watcher.until({"ada": 1})
            started = time.monotonic()
        # it stopped with "ada" still tracked: withdrawn now, not after ttl + sweep
        await watcher.until({}, within=0.5)
        assert time.monotonic() - started < 0.5
        await tracked.__aexit__(None, None, None)  # later: nothing more to do
        assert await watching.presence("room").list() == {}


async def test_presence_comes_back_after_redis_restarts_empty(tmp_path: Path) -> None:
    async with open_redis_server(tmp_path) as server:
        prefix = "plait:"
        async with (
            Hub(backend(prefix, server.url)) as hub_a,
            Hub(backend(prefix, server.url)) as hub_b,
            hub_b.presence("room").subscribe() as events,
            hub_a.presence("room").track("ada", {"on": "a"}),
            hub_b.presence("room").track("bob"),
        ):
            watcher = Watcher(events)
            await watcher.start()
            await watcher.until({"ada": 1, "bob": 1})
            async with anyio.create_task_group() as task_group:
                await server.stop()  # a restart that loses everything (no persistence)
                # Redis away: tracking goes on in memory, and never fails a handler
                leaving = hub_a.presence("room").track("cy")
                with anyio.fail_after(4):  # bounded: the write is left for later
                    await leaving.__aenter__()
                    async with hub_a.presence("room").track("dee"):
                        pass
                    await leaving.__aexit__(None, None, None)
                with pytest.raises(ChannelUnavailable):
                    await hub_a.presence("room").list()
                with pytest.raises(ChannelUnavailable):  # it has no state to start from
                    async with hub_a.presence("room").subscribe():
                        pytest.fail("subscribed")
                task_group.start_soon(hold, hub_b, "eve")
                await server.start()
                # every process writes its entries again: only what is tracked now
                await watcher.until({"ada": 1, "bob": 1, "eve": 1}, within=10)
                with anyio.fail_after(10):
                    # polled: list() reads Redis, there is no event to wait for
                    while await _listed(hub_a) != {"ada": 1, "bob": 1, "eve": 1}:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                task_group.cancel_scope.cancel()
            await watcher.until({"ada": 1, "bob": 1})
        with anyio.fail_after(5):  # both hubs stopped: they withdrew everything
            async with Hub(backend(prefix, server.url)) as hub_c:
                assert await _listed(hub_c) == {}


async def hold(hub: Hub, key: str) -> None:
    async with hub.presence("room").track(key):
        await anyio.sleep_forever()


async def _listed(hub: Hub) -> dict[str, int]:
    try:
        listed = await hub.presence("room").list()
    except ChannelUnavailable:
        return {}
    return {key: member.count for key, member in listed.items()}


async def test_a_live_process_that_was_swept_writes_its_entries_again(prefix: str) -> None:
    """A process that paused longer than its ttl is swept by the others; its next write
    (or heartbeat) finds its deadline had passed, and its entries come back."""
    slow = RedisBackend(REDIS_URL, key_prefix=prefix, presence_ttl=30)  # beats every 10 s
    async with (
        Hub(slow) as hub_a,
        Hub(backend(prefix)) as hub_b,  # sweeps every SWEEP seconds
        hub_b.presence("room").subscribe() as events,
        hub_a.presence("room").track("ada") as ada,
    ):
        watcher = Watcher(events)
        await watcher.start()
        await watcher.until({"ada": 1})
        process = ada.ref.partition(":")[0]
        async with coredis.Redis.from_url(REDIS_URL) as client:
            # as if hub_a had not beaten for longer than its ttl
            await client.zadd(f"{prefix}presence-processes", {process: 0})
        await watcher.until({}, within=SWEEP + SLACK)  # hub_b swept it
        async with hub_a.presence("room").track("bob"):
            await watcher.until({"ada": 1, "bob": 1})  # and it came back
            listed = await hub_b.presence("room").list()
            assert {key: member.count for key, member in listed.items()} == {"ada": 1, "bob": 1}
