"""Every plait await is a checkpoint, and after the peer left sends raise, reads drain
(issue 17, points 1 and 2), in-process on asyncio and on trio.

The server's ``send`` here completes without suspending, as hypercorn's asyncio worker
does while the socket takes the bytes: a loop of sends then never yields on its own, so
every test below hangs (and fails on its time limit) unless plait's awaits yield.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import pytest
from anyio import get_cancelled_exc_class

import plait
from plait import Hub, WebSocket, WebSocketClosed, WebSocketDisconnect
from plait._types import Message
from test_engine_edges import ACCEPT, FakeServer, leave, text

pytestmark = pytest.mark.anyio


class InstantServer(FakeServer):
    """A server whose ``send`` never suspends, counting what it took."""

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "websocket.accept":
            self._accepted.set()
        if message["type"] == "websocket.close":
            self.deliver(leave(message.get("code", 1000)))


async def test_a_tight_send_loop_lets_other_tasks_run() -> None:
    server = InstantServer()
    turns = [0]
    stop = anyio.Event()

    async def other() -> None:
        while not stop.is_set():
            turns[0] += 1
            await anyio.lowlevel.checkpoint()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        while turns[0] < 100:  # never true if the loop below starves the other task
            await ws.send_text("x" * 64)
        stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        await server.serve(handler)
    assert turns[0] >= 100
    sends = sum(message["type"] == "websocket.send" for message in server.sent)
    assert sends < 100 * plait_yield_every() + 50  # a turn at least every YIELD_EVERY sends


def plait_yield_every() -> int:
    from plait._backend import YIELD_EVERY

    return YIELD_EVERY


async def test_a_deadline_reaches_a_tight_send_loop() -> None:
    server = InstantServer()
    ended: list[str] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        with anyio.move_on_after(0.05):
            while True:
                await ws.send_text("x")
        ended.append("deadline")

    await server.serve(handler)
    assert ended == ["deadline"]


async def test_a_tight_receive_loop_over_a_backlog_lets_other_tasks_run() -> None:
    server = InstantServer(*(text(str(i)) for i in range(200)), leave(1000))
    turns: list[int] = []
    ticking = [0]

    async def ticker() -> None:
        while True:
            ticking[0] += 1
            await anyio.lowlevel.checkpoint()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        async for _ in ws.iter_text():
            turns.append(ticking[0])

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await server.serve(handler, inbound_capacity=64)
        tg.cancel_scope.cancel()
    assert len(turns) == 200
    assert turns[-1] > turns[0]  # the ticker ran while the handler took the backlog


async def test_a_send_loop_after_the_peer_left_raises_with_the_peers_code() -> None:
    """trio-websocket's test_server_sends_after_close: the send raises. Reproduction 1 of
    issue 17: the client sent two messages and left; the handler never reads."""
    server = InstantServer(text("1"), text("2"), leave(1001, "bye"))
    raised: list[WebSocketDisconnect] = []
    sends = [0]

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text("...")
                sends[0] += 1
        except WebSocketDisconnect as exc:
            raised.append(exc)
            raise

    await server.serve(handler)
    assert [(type(e), e.code, e.reason) for e in raised] == [(WebSocketDisconnect, 1001, "bye")]
    assert server.sent[0] == ACCEPT
    delivered = server.sent[1:]  # what was still queued when the peer left was dropped
    assert delivered == [{"type": "websocket.send", "text": "..."}] * len(delivered)
    assert len(delivered) <= sends[0]


async def test_after_the_peer_left_reads_drain_while_sends_raise() -> None:
    server = FakeServer(text("1"), text("2"), text("3"), leave(4001, "gone"))
    seen: list[Any] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await anyio.wait_all_tasks_blocked()  # the reader has read up to the disconnect
        async for message in ws.iter_text():
            try:
                await ws.send_text(message)
            except WebSocketDisconnect as exc:
                seen.append((message, type(exc).__name__, exc.code))
        seen.append(("end", ws.close_code))
        with pytest.raises(WebSocketClosed):  # over: what the handler tries now says so
            await ws.send_text("late")

    await server.serve(handler)
    assert seen == [
        ("1", "WebSocketDisconnect", 4001),
        ("2", "WebSocketDisconnect", 4001),
        ("3", "WebSocketDisconnect", 4001),
        ("end", 4001),
    ]
    assert server.sent == [ACCEPT]  # nothing reached a peer that was gone


async def test_a_handler_that_swallows_refused_sends_is_cancelled_at_the_drain_timeout() -> None:
    server = InstantServer(text("1"), leave(1000))
    ended: list[str] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                # A handler that will not stop: the engine still gets in.
                with contextlib.suppress(WebSocketDisconnect):
                    await ws.send_text("x")
        except get_cancelled_exc_class():
            ended.append("cancelled")
            raise

    started = anyio.current_time()
    await server.serve(handler, drain_timeout=0.2)
    assert ended == ["cancelled"]
    assert anyio.current_time() - started < 0.2 + 1.0


async def test_listener_replies_after_the_peer_left_are_dropped_and_every_message_heard() -> None:
    heard: list[str] = []

    @plait.listener("/")
    async def echo(data: str) -> str:
        heard.append(data)
        await anyio.sleep(0.01)  # still working when the client leaves
        return data

    app = plait.App(routes=[echo])

    server = FakeServer(*(text(str(i)) for i in range(5)), leave(1000))
    scope = {"type": "websocket", "path": "/", "headers": [], "query_string": b""}
    with anyio.fail_after(3):
        await app(scope, server.receive, server.send)
    assert heard == [str(i) for i in range(5)]


async def test_an_engine_close_reaches_a_handler_stuck_in_a_send() -> None:
    """Reproduction 3 of issue 17: the client does not read, and the engine closes (1008,
    the handler stopped reading): the handler is stuck in a send the server holds, and
    is cut after drain_timeout rather than left alive."""
    release = anyio.Event()
    sent: list[Message] = []
    ended: list[str] = []
    incoming = [{"type": "websocket.connect"}] + [text(str(i)) for i in range(40)]

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "websocket.send":
            await release.wait()  # the socket is full: the client reads nothing

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text("tick")
        finally:
            ended.append("finally")

    scope = {"type": "websocket", "path": "/", "headers": []}
    with anyio.fail_after(3):
        await plait.serve_connection(
            scope, receive, send, handler, stall_timeout=0.1, drain_timeout=0.2
        )
    assert ended == ["finally"]


async def test_a_publish_loop_and_a_subscription_backlog_are_checkpoints() -> None:
    async with Hub() as hub:
        published = 0
        with anyio.move_on_after(0.05):
            while True:  # no subscriber: nothing in the backend suspends
                await hub.publish("news", published)
                published += 1
        assert published > 0

        turns = [0]

        async def ticker() -> None:
            while True:
                turns[0] += 1
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg, hub.subscribe("news", buffer=1000) as sub:
            for i in range(500):
                await hub.publish("news", i)  # a backlog: nobody iterates yet
            tg.start_soon(ticker)
            before = turns[0]
            taken = 0
            async for _ in sub:
                taken += 1
                if taken == 500:
                    break
            assert turns[0] > before  # the backlog did not starve the ticker
            tg.cancel_scope.cancel()


async def test_a_burst_of_publishes_wakes_a_subscriber_once() -> None:
    # A publish is a cancellation point at each call but yields only every YIELD_EVERY
    # calls: a burst at hand reaches a parked subscriber as one batch. A yield per
    # publish woke each of 1,000 subscribers once per message, which halved fan-out.
    burst = plait_yield_every() - 1
    seen: list[int] = []
    async with Hub() as hub, hub.subscribe("news", buffer=100) as sub:

        async def follow() -> None:
            async for _ in sub:
                seen.append(sub.statistics()["buffered"])  # what waited behind it
                if len(seen) == burst:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.wait_all_tasks_blocked()  # parked on its subscription
            for i in range(burst):
                await hub.publish("news", i)
    assert seen[0] == burst - 1  # woken once, with the whole burst waiting
