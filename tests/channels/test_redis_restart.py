"""A Redis restart while a publisher runs at full speed: no subscriber that stays
connected loses a message in silence (issue 18, point 1).

Twenty subscribers stay subscribed to one channel (``history=20``) through one hub; a
second hub, as another process would, publishes numbered messages as fast as Redis takes
them. Redis is SIGKILLed and started again, with and without persistence. Each
subscriber's messages must then come without duplicates and in order, and every
acknowledged message it did not get must lie behind a :class:`RecoveryNotice`: either
everything arrives, or the gap is said where it is.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from _redis_server import open_redis_server

from plait.channels import (
    ChannelMessage,
    ChannelUnavailable,
    Hub,
    RecoveryNotice,
    RedisBackend,
)

pytestmark = [
    pytest.mark.anyio,
    # coredis leaks the memory streams of a connection that failed to connect: see
    # test_redis.py's `collect_leaks`.
    pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning"),
]

SUBSCRIBERS = 20
HISTORY = 20  # small, so that the publisher outruns it before the subscribers are back
BEFORE, DOWN, AFTER = 0.5, 0.3, 0.5  # seconds of publishing, of outage, after the resume
END = "end"


@pytest.fixture(autouse=True)
def collect_leaks() -> Iterator[None]:
    yield
    gc.collect()


def check(received: list[object], acknowledged: dict[int, str]) -> tuple[int, int]:
    """Return (lost, told): acknowledged messages missing, and notices; fail on a
    duplicate, a message out of order, or a loss with no notice before it."""
    numbers = [item.data for item in received if isinstance(item, ChannelMessage)]
    assert len(numbers) == len(set(numbers)), "a message came twice"
    assert numbers == sorted(numbers), "messages came out of order"
    lost = 0
    for n in sorted(set(acknowledged) - set(numbers)):
        lost += 1
        # The notice must come after the last message before n, and before the next.
        before = max((i for i, m in enumerate(numbers) if m < n), default=-1)
        positions = [i for i, item in enumerate(received) if isinstance(item, ChannelMessage)]
        start = positions[before] if before >= 0 else -1
        stop = next((positions[i] for i, m in enumerate(numbers) if m > n), len(received))
        assert any(isinstance(item, RecoveryNotice) for item in received[start + 1 : stop]), (
            f"message {n} was acknowledged, never delivered, and no notice said so"
        )
    return lost, sum(isinstance(item, RecoveryNotice) for item in received)


@pytest.mark.parametrize("persistent", [False, True], ids=["no persistence", "AOF"])
async def test_a_redis_restart_under_full_speed_publishing_loses_nothing_in_silence(
    tmp_path: Path, persistent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="plait.channels")
    received: list[list[object]] = [[] for _ in range(SUBSCRIBERS)]
    acknowledged: dict[int, str] = {}  # publish returned: Redis has it
    async with open_redis_server(tmp_path, persistent=persistent) as server:
        backend = RedisBackend(server.url, history=HISTORY)
        async with Hub(backend) as hub, Hub(RedisBackend(server.url, history=HISTORY)) as other:

            async def subscriber(i: int, task_status: anyio.abc.TaskStatus[None]) -> None:
                async with hub.subscribe("feed", buffer=100_000, policy="disconnect") as sub:
                    task_status.started()
                    async for item in sub:
                        if isinstance(item, ChannelMessage) and item.data == END:
                            return
                        received[i].append(item)

            publishing = True
            published = anyio.Event()

            async def publisher() -> None:
                n = 0
                while publishing:
                    try:
                        acknowledged[n] = await other.publish("feed", n)
                    except ChannelUnavailable:
                        await anyio.sleep(0.005)  # Redis is down: it may or may not have n
                    n += 1
                published.set()

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for i in range(SUBSCRIBERS):
                        await tg.start(subscriber, i)
                    tg.start_soon(publisher)
                    await anyio.sleep(BEFORE)
                    await server.kill()
                    await anyio.sleep(DOWN)
                    await server.start()
                    while backend.statistics()["reconnects"] < 1:  # noqa: ASYNC110 (a counter)
                        await anyio.sleep(0.01)
                    await anyio.sleep(AFTER)
                    publishing = False
                    await published.wait()  # else the end could overtake the last one
                    while True:  # live delivery is back: this one reaches everyone
                        try:
                            await other.publish("feed", END)
                            break
                        except ChannelUnavailable:
                            await anyio.sleep(0.01)
    assert len(acknowledged) > 3 * HISTORY, "the publisher did not run at full speed"
    outcomes = [check(items, acknowledged) for items in received]
    lost = [lost for lost, _ in outcomes]
    told = [told for _, told in outcomes]
    gaps = backend.statistics()["gaps"]
    if not persistent:
        # Redis came back empty: whether it took something with it, only a notice can say.
        assert all(t == 1 for t in told), told
    # One restart, one gap at most, said once per subscriber and logged once.
    assert gaps == max(told) <= 1
    warnings = [r for r in caplog.records if "no longer holds everything" in r.getMessage()]
    assert len(warnings) == gaps
    print(f"persistent={persistent}: lost per subscriber {lost}, notices {told}")
