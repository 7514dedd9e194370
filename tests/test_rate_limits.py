"""Per-connection rate limits and connection limits, in-process (issue 13, point 2).

The async tests run on asyncio and trio through the anyio plugin; the two schedules
that need exact time run on trio's MockClock through pytest-trio (``@pytest.mark.trio``
with ``autojump_clock``), never mixed with the anyio plugin on one test.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio

import plait
from _support import closed, engine_app
from plait import App, Heartbeat, RateLimit, WebSocket, WebSocketRoute
from plait.testing import AsyncTestClient, WebSocketDenied
from plait.types import ASGIApp, Receive, Scope, Send

ONE_A_MINUTE = {"messages": 1, "per": 60.0}  # a bucket that does not refill in a test


def limit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The engine's INFO lines about rate limits."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "plait._connection" and r.levelno == logging.INFO and "rate limit" in r.message
    ]


async def receive_all(ws: Any, quiet: float = 0.2) -> list[str]:
    """Every text message until none comes for ``quiet`` seconds."""
    received = []
    while True:
        try:
            received.append(await ws.receive_text(timeout=quiet))
        except TimeoutError:
            return received


# -- RateLimit --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {"messages": 0},
        {"messages": -1},
        {"messages": float("nan")},
        {"messages": float("inf")},
        {"messages": True},
        {"messages": "20"},
        {"messages": 20, "per": 0},
        {"messages": 20, "burst": 0.5},
        {"messages": 20, "burst": 0},
        {"messages": 20, "on_exceed": "ignore"},
    ],
)
def test_a_rate_limit_checks_its_arguments(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RateLimit(**arguments)


def test_a_rate_limit_bursts_one_periods_worth_by_default() -> None:
    assert RateLimit(20).capacity == 20
    assert RateLimit(0.5, per=1.0).capacity == 1  # at least one message gets through
    assert RateLimit(20, burst=40).capacity == 40
    assert RateLimit(20).on_exceed == "close"
    assert RateLimit(20, per=1.0, burst=40).describe() == "20 messages per 1 s, burst 40"


# -- the three policies -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_drop_lets_the_burst_through_and_counts_the_rest() -> None:
    seen: list[str] = []
    stats: list[plait.ConnectionStatistics] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            async for text in ws.iter_text():
                seen.append(text)
        finally:
            stats.append(ws.statistics())

    limit = RateLimit(**ONE_A_MINUTE, burst=3, on_exceed="drop")
    async with (
        AsyncTestClient(engine_app(handler, rate_limit=limit)) as client,
        client.websocket_connect("/") as ws,
    ):
        for i in range(10):
            await ws.send_text(f"m{i}")
    assert seen == ["m0", "m1", "m2"]
    (final,) = stats
    assert (final.messages_received, final.messages_limited) == (10, 7)
    assert final.messages_dropped == 0  # the stall policy's counter is another one


@pytest.mark.anyio
async def test_close_closes_with_1008_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    @plait.listener("/close", rate_limit=RateLimit(**ONE_A_MINUTE, burst=2))
    async def echo(data: str) -> str:
        seen.append(data)
        return data

    caplog.set_level(logging.INFO, logger="plait")
    async with (
        AsyncTestClient(App(routes=[echo])) as client,
        client.websocket_connect("/close") as ws,
    ):
        for i in range(3):
            await ws.send_text(f"m{i}")
        disconnect = await closed(ws)
    assert (disconnect.code, disconnect.reason) == (1008, "rate limit exceeded")
    assert seen == ["m0", "m1"][: len(seen)]  # the handler is cancelled at the close
    assert limit_lines(caplog) == [
        "closing /close with 1008: rate limit exceeded (1 message per 60 s, burst 2)"
    ]


@pytest.mark.anyio
async def test_reply_tells_the_client_once_per_interval_and_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @plait.listener("/reply", rate_limit=RateLimit(**ONE_A_MINUTE, burst=1, on_exceed="reply"))
    async def echo(data: str) -> str:
        return data

    caplog.set_level(logging.INFO, logger="plait")
    async with (
        AsyncTestClient(App(routes=[echo])) as client,
        client.websocket_connect("/reply") as ws,
    ):
        for i in range(21):
            await ws.send_text(f"m{i}")
        received = await receive_all(ws)
    assert len(received) == 2  # the echo and one reply, in either order
    assert "m0" in received
    error = json.loads(next(text for text in received if text != "m0"))
    assert error["error"] == "rate limit exceeded"
    assert 59 < error["retry_after"] <= 60
    assert error["detail"] == "at most 1 message per 60 s, burst 1"
    assert limit_lines(caplog) == [
        "/reply: rate limit exceeded (1 message per 60 s, burst 1); "
        "dropping what is over it with a reply",
        "/reply: the rate limit dropped 20 of 21 messages (replies: 1)",
    ]


@pytest.mark.anyio
async def test_the_decision_is_logged_once_per_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @plait.listener("/drop", rate_limit=RateLimit(**ONE_A_MINUTE, burst=1, on_exceed="drop"))
    async def sink(data: str) -> None:
        pass

    caplog.set_level(logging.INFO, logger="plait")
    async with AsyncTestClient(App(routes=[sink])) as client:
        for _ in range(2):
            async with client.websocket_connect("/drop") as ws:
                for i in range(200):
                    await ws.send_text(f"m{i}")
    first = "/drop: rate limit exceeded (1 message per 60 s, burst 1); dropping what is over it"
    summary = "/drop: the rate limit dropped 199 of 200 messages"
    assert limit_lines(caplog) == [first, summary, first, summary]


@pytest.mark.anyio
async def test_the_heartbeats_pong_takes_no_token() -> None:
    @plait.listener(
        "/beat",
        heartbeat=Heartbeat(interval=3600, timeout=10),
        rate_limit=RateLimit(**ONE_A_MINUTE, burst=1),
    )
    async def echo(data: str) -> str:
        return data

    async with (
        AsyncTestClient(App(routes=[echo])) as client,
        client.websocket_connect("/beat") as ws,
    ):
        for _ in range(10):
            await ws.send_text("pong")  # consumed by the engine, free
        await ws.send_text("counted")
        assert await ws.receive_text() == "counted"
        await ws.send_text("one too many")
        disconnect = await closed(ws)
    assert disconnect.code == 1008


@pytest.mark.anyio
async def test_a_routes_limit_replaces_the_apps_and_unlimited_routes_count_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stats: list[plait.ConnectionStatistics] = []

    async def report(ws: WebSocket) -> None:
        stats.append(ws.statistics())

    @plait.listener("/app-limit")
    async def app_limit(data: str) -> str:
        return data

    @plait.listener("/own", rate_limit=RateLimit(**ONE_A_MINUTE, burst=5, on_exceed="drop"))
    async def own(data: str) -> str:
        return data

    @plait.listener("/free", on_disconnect=report)
    async def free(data: str) -> str:
        return data

    limited = App(routes=[app_limit, own], rate_limit=RateLimit(**ONE_A_MINUTE, burst=1))
    unlimited = App(routes=[free])
    caplog.set_level(logging.INFO, logger="plait")
    async with AsyncTestClient(limited) as client:
        async with client.websocket_connect("/app-limit") as ws:
            await ws.send_text("one")
            assert await ws.receive_text() == "one"
            await ws.send_text("two")
            assert (await closed(ws)).code == 1008
        async with client.websocket_connect("/own") as ws:
            for i in range(10):
                await ws.send_text(f"m{i}")
            assert await receive_all(ws) == [f"m{i}" for i in range(5)]
    caplog.clear()
    async with AsyncTestClient(unlimited) as client, client.websocket_connect("/free") as ws:
        for i in range(100):
            await ws.send_text(f"m{i}")
        assert await receive_all(ws) == [f"m{i}" for i in range(100)]
    assert stats[0].messages_limited == 0
    assert limit_lines(caplog) == []


@pytest.mark.anyio
async def test_after_the_burst_the_steady_rate(anyio_backend: str) -> None:
    # Real time, with generous margins: the exact schedule is the MockClock test below.
    rate, burst = 50.0, 5
    seen: list[str] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            seen.append(text)

    limit = RateLimit(messages=rate, per=1.0, burst=burst, on_exceed="drop")
    async with AsyncTestClient(engine_app(handler, rate_limit=limit)) as client:
        started = anyio.current_time()
        async with client.websocket_connect("/") as ws:
            sent = 0
            while anyio.current_time() - started < 0.5:
                await ws.send_text(f"m{sent}")
                sent += 1
                await anyio.sleep(0.001)
            sending = anyio.current_time() - started
        ended = anyio.current_time()
    assert seen[:burst] == [f"m{i}" for i in range(burst)]
    assert len(seen) <= burst + rate * (ended - started) + 1
    assert len(seen) >= burst + rate * sending / 2, (len(seen), sent, sending)
    assert sent > 2 * len(seen)  # the client did send faster than the rate


# -- exact schedules on trio's MockClock ----------------------------------------------------------


def recording_app(limit: RateLimit, seen: list[str], stats: list[Any]) -> ASGIApp:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            async for text in ws.iter_text():
                seen.append(text)
                if limit.on_exceed == "reply":
                    await ws.send_text(text)
        finally:
            stats.append(ws.statistics())

    return engine_app(handler, rate_limit=limit)


@pytest.mark.trio
async def test_burst_then_steady_rate_on_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    seen: list[str] = []
    stats: list[plait.ConnectionStatistics] = []
    app = recording_app(RateLimit(messages=10, per=1.0, burst=5, on_exceed="drop"), seen, stats)
    async with (
        AsyncTestClient(app, timeout=3600) as client,
        client.websocket_connect("/") as ws,
    ):
        for i in range(20):  # 20 at once: the burst gets through
            await ws.send_text(f"a{i}")
        await trio.sleep(1.0)  # the bucket fills again (and holds no more than 5)
        for i in range(20):  # exactly at the rate: every one gets through
            await ws.send_text(f"b{i}")
            await trio.sleep(0.1)
        for i in range(40):  # twice the rate for 2 s: the 5 in the bucket, then half
            await ws.send_text(f"c{i}")
            await trio.sleep(0.05)
    over_double_rate = [*range(9), *range(10, 40, 2)]  # 5 + 10 x 1.95 s, rounded down
    assert seen == [
        *(f"a{i}" for i in range(5)),
        *(f"b{i}" for i in range(20)),
        *(f"c{i}" for i in over_double_rate),
    ]
    assert len(over_double_rate) == 24
    (final,) = stats
    assert (final.messages_received, final.messages_limited) == (80, 15 + 16)


@pytest.mark.trio
async def test_replies_come_at_most_once_per_token_interval(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[str] = []
    stats: list[plait.ConnectionStatistics] = []
    app = recording_app(RateLimit(messages=10, per=1.0, burst=1, on_exceed="reply"), seen, stats)
    async with (
        AsyncTestClient(app, timeout=3600) as client,
        client.websocket_connect("/") as ws,
    ):
        for i in range(1000):  # 1,000 a second for a second
            await ws.send_text(f"m{i}")
            await trio.sleep(0.001)
        received = [await ws.receive_text() for _ in range(20)]
        with pytest.raises(TimeoutError):
            await ws.receive_text(timeout=1)
    accepted = [f"m{i}" for i in range(0, 1000, 100)]  # one token every 0.1 s
    assert seen == accepted
    assert [text for text in received if text.startswith("m")] == accepted
    replies = [json.loads(text) for text in received if not text.startswith("m")]
    assert len(replies) == 10  # the first refusal, then one per 0.1 s
    assert replies[0] == {
        "error": "rate limit exceeded",
        "retry_after": 0.099,  # sent 1 ms after the token was taken
        "detail": "at most 10 messages per 1 s, burst 1",
    }
    assert stats[0].messages_limited == 990


# -- max_connections ------------------------------------------------------------------------------


async def hold(ws: WebSocket) -> None:
    """Echo until the client leaves; or end as the ``end`` query parameter says."""
    await ws.accept()
    end = ws.query_params.get("end")
    if end == "cancelled":
        await anyio.sleep_forever()
    async for text in ws.iter_text():
        if end == "returns":
            return
        if end == "raises":
            raise RuntimeError("the handler failed")
        await ws.send_text(text)


def capped_app(**app_options: Any) -> App:
    capped = WebSocketRoute("/capped", max_connections=2)
    capped.ws_handler(hold)
    free = WebSocketRoute("/free")
    free.ws_handler(hold)
    return App(routes=[capped, free], **app_options)


@pytest.mark.anyio
async def test_past_a_routes_max_connections_the_handshake_gets_503() -> None:
    async with AsyncTestClient(capped_app()) as client:
        async with client.websocket_connect("/capped"), client.websocket_connect("/capped") as ws:
            with pytest.raises(WebSocketDenied) as info:
                async with client.websocket_connect("/capped"):
                    pass
            async with client.websocket_connect("/free") as other:  # other routes: not counted
                await other.send_text("served")
                assert await other.receive_text() == "served"
            await ws.send_text("still served")
            assert await ws.receive_text() == "still served"
        async with client.websocket_connect("/capped") as ws:  # both slots free again
            await ws.send_text("back")
            assert await ws.receive_text() == "back"
    denied = info.value
    assert denied.status_code == 503
    assert json.loads(denied.body) == {
        "detail": "too many connections",
        "route": "/capped",
        "max_connections": 2,
    }
    assert "retry-after" not in dict(denied.headers)


@pytest.mark.anyio
async def test_past_the_apps_max_connections_the_handshake_gets_503() -> None:
    async with (
        AsyncTestClient(capped_app(max_connections=1)) as client,
        client.websocket_connect("/free"),
    ):
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/capped"):
                pass
    assert info.value.status_code == 503
    assert json.loads(info.value.body) == {"detail": "too many connections", "max_connections": 1}


def cancellable(app: ASGIApp, scopes: list[anyio.CancelScope]) -> ASGIApp:
    """``app`` with each WebSocket connection run in a cancel scope the test holds, as a
    server that cancels its connections (hypercorn at shutdown)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        with anyio.CancelScope() as cancel_scope:
            scopes.append(cancel_scope)
            await app(scope, receive, send)

    return wrapped


@pytest.mark.anyio
@pytest.mark.parametrize("end", ["client-closes", "returns", "raises", "cancelled"])
async def test_a_slot_is_released_however_the_connection_ends(end: str) -> None:
    app = capped_app(max_connections=1)
    scopes: list[anyio.CancelScope] = []
    async with AsyncTestClient(cancellable(app, scopes)) as client:
        for _ in range(3):  # a leaked slot would refuse the second
            async with client.websocket_connect(f"/capped?end={end}") as ws:
                assert app.connections() == 1
                if end == "cancelled":
                    scopes[-1].cancel()
                    assert (await closed(ws)).code == 1001
                elif end != "client-closes":
                    await ws.send_text("end now")
                    assert (await closed(ws)).code == (1000 if end == "returns" else 1011)
            assert app.connections() == 0


def without_denial_responses(app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "extensions": {}}, receive, send)

    return wrapped


@pytest.mark.anyio
async def test_without_denial_responses_the_excess_is_closed_with_1013() -> None:
    app = without_denial_responses(capped_app(max_connections=1))
    async with (
        AsyncTestClient(app) as client,
        client.websocket_connect("/free"),
        client.websocket_connect("/free") as ws,
    ):
        disconnect = await closed(ws)
    assert (disconnect.code, disconnect.reason) == (1013, "too many connections")


@pytest.mark.parametrize("make", [lambda: App(max_connections=0), lambda: capped_route(0)])
def test_max_connections_is_at_least_one(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="max_connections must be at least 1"):
        make()


def capped_route(limit: int) -> WebSocketRoute:
    return WebSocketRoute("/x", max_connections=limit)


# -- the example --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_limited_example() -> None:
    from examples.limited import app

    async with AsyncTestClient(app) as client:
        async with client.websocket_connect("/chat") as ws:
            for i in range(45):
                await ws.send_text(f"m{i}")
            received = await receive_all(ws)
        echoes = [text for text in received if not text.startswith("{")]
        assert 40 <= len(echoes) <= 45
        assert echoes == [f"m{i}" for i in range(len(echoes))]
        replies = [json.loads(text) for text in received if text.startswith("{")]
        assert replies
        assert all(reply["error"] == "rate limit exceeded" for reply in replies)
        async with client.websocket_connect("/feed") as ws:
            for i in range(20):
                await ws.send_text(f"m{i}")
            assert (await closed(ws)).code == 1008
