"""A resume id Redis would refuse is the client's fault: 1008, before Redis sees it
(issue 18, point 2), under real hypercorn on both workers."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import plait
from plait import Hub, Query
from plait.channels import ChannelMessage, RedisBackend
from plait.testing import HypercornServer, run_hypercorn

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("PLAIT_REDIS_URL", "redis://127.0.0.1:6379")


def _app() -> plait.App:
    @plait.stream("/room")
    async def room(
        hub: Hub, since: Annotated[str | None, Query()] = None
    ) -> AsyncIterator[ChannelMessage]:
        async with hub.subscribe("resume-room", since=since) as messages:
            async for message in messages:
                if isinstance(message, ChannelMessage):
                    yield message

    hub = Hub(RedisBackend(REDIS_URL, history=10, key_prefix="plait-test-resume:"))
    return plait.App(routes=[room], hub=hub)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest) -> Iterator[HypercornServer]:
    with run_hypercorn(_app(), worker_class=request.param) as running:
        yield running


@pytest.mark.parametrize(
    "since",
    [
        "99999999999999999999999-0",
        f"{2**64}-0",
        f"0-{2**64}",
        f"{2**64 - 1}-{2**64 - 1}",  # the largest: nothing comes after it
        "yesterday",
    ],
)
def test_a_resume_id_redis_would_refuse_closes_with_1008(
    server: HypercornServer, since: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        connect(server.url(f"/room?since={since}"), open_timeout=5) as ws,
        pytest.raises(ConnectionClosed) as info,
    ):
        ws.recv(timeout=5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (
        1008,
        "invalid since: not a message id",
    )
    logged = [r for r in caplog.records if r.name.startswith("plait")]
    assert [r for r in logged if r.levelno >= logging.WARNING] == []


def test_the_largest_id_but_one_is_a_resume_like_any_other(server: HypercornServer) -> None:
    url = server.url(f"/room?since={2**64 - 1}-{2**64 - 2}")
    with connect(url, open_timeout=5) as ws, pytest.raises(TimeoutError):
        ws.recv(timeout=0.5)  # subscribed: nothing after it, and the stream waits
