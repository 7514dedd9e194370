"""The engine at its edges: failing servers, the drain, stalls, the baton, races at the close.

Each test plays the server's side in-process (a fake ``receive``/``send`` pair, or the
test client) and checks what the user sees: the handler's ``finally``, close codes, the
frames that reached the server, and the log. Every one runs on asyncio and on trio.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio import ClosedResourceError, get_cancelled_exc_class

import plait
from _support import engine_app
from plait import Heartbeat, WebSocket, WebSocketClosed, WebSocketDisconnect
from plait._channel import Channel
from plait._types import Message, Send
from plait.testing import AsyncTestClient

pytestmark = pytest.mark.anyio

LIMIT = 3.0  # seconds any one connection may take in these tests: a hang fails fast
ACCEPT: Message = {"type": "websocket.accept", "subprotocol": None}


def text(data: str) -> Message:
    return {"type": "websocket.receive", "text": data}


def sent_text(data: str) -> Message:
    return {"type": "websocket.send", "text": data}


def leave(code: int = 1000, reason: str = "") -> Message:
    return {"type": "websocket.disconnect", "code": code, "reason": reason}


def close(code: int = 1000, reason: str = "") -> Message:
    return {"type": "websocket.close", "code": code, "reason": reason}


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


class FakeServer:
    """The server's side of one connection: what the application receives, what it sent.

    It answers the application's close as a client does, with a disconnect, and delivers
    the client's messages only once the application accepted, as a server does: a client
    cannot send a message before the handshake is over.
    """

    def __init__(self, *incoming: Message) -> None:
        self.incoming: list[Message] = [{"type": "websocket.connect"}, *incoming]
        self.sent: list[Message] = []
        self.left_at: float | None = None  # when the application was handed the disconnect
        self._arrived = anyio.Event()
        self._accepted = anyio.Event()

    def deliver(self, *messages: Message) -> None:
        self.incoming.extend(messages)
        self._arrived.set()

    async def receive(self) -> Message:
        while not self.incoming:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        if self.incoming[0]["type"] == "websocket.receive":
            await self._accepted.wait()
        message = self.incoming.pop(0)
        if message["type"] == "websocket.disconnect":
            self.left_at = anyio.current_time()
        return message

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "websocket.accept":
            self._accepted.set()
        if message["type"] == "websocket.close":
            self.deliver(leave(message.get("code", 1000)))

    @property
    def texts(self) -> list[str]:
        return [message["text"] for message in self.sent if message["type"] == "websocket.send"]

    async def serve(
        self,
        handler: Callable[[WebSocket], Awaitable[Any]],
        *,
        send: Send | None = None,
        **options: Any,
    ) -> None:
        scope = {"type": "websocket", "path": "/edge", "headers": [], "extensions": {}}
        with anyio.fail_after(LIMIT):
            await plait.serve_connection(scope, self.receive, send or self.send, handler, **options)


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition``: for engine counters, which no event announces."""
    while not condition():  # noqa: ASYNC110
        await anyio.sleep(0.005)


async def leave_when_blocked(server: FakeServer, code: int = 1000, reason: str = "") -> None:
    """The peer leaves once the application waits for something."""
    await anyio.wait_all_tasks_blocked()
    server.deliver(leave(code, reason))


# -- a. the server's send fails while the handler waits elsewhere --------------------------


@pytest.mark.parametrize("sender", ["child task", "heartbeat"])
async def test_a_send_failing_with_oserror_ends_a_handler_waiting_elsewhere(
    sender: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The reader has nothing to report (the server never sends a disconnect): only the
    # failed send can tell the engine that the peer is gone. It waits drain_timeout for
    # the server to hand over what the peer sent before it went, then cancels.
    server = FakeServer()
    attempts: list[Message] = []
    ended: list[str] = []

    async def send(message: Message) -> None:
        if message["type"] == "websocket.send":
            attempts.append(message)
            raise OSError("connection reset by peer")
        await server.send(message)

    async def child(ws: WebSocket) -> None:
        try:
            with contextlib.suppress(WebSocketDisconnect):
                await ws.send_text("tick")
            await anyio.sleep_forever()
        finally:
            ended.append("child")

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            if sender == "child task":
                ws.task_group.start_soon(child, ws)
            await anyio.sleep_forever()
        finally:
            ended.append("handler")

    heartbeat = Heartbeat(interval=0.01, timeout=10) if sender == "heartbeat" else None
    drain = 0.2
    started = anyio.current_time()
    await server.serve(handler, send=send, heartbeat=heartbeat, drain_timeout=drain)
    assert drain <= anyio.current_time() - started < drain + 1
    assert sorted(ended) == (["child", "handler"] if sender == "child task" else ["handler"])
    assert len(attempts) == 1  # the first failure ended the connection
    assert server.sent == [ACCEPT]  # and no close frame went to a gone peer
    assert errors(caplog) == []  # an OSError from send means the peer left: no error


# -- b. the peer's close code reaches a raw receive() -----------------------------------


@pytest.mark.parametrize("buffered", [True, False], ids=["after buffered", "pending"])
async def test_a_raw_receive_gets_the_peers_close_code(buffered: bool) -> None:
    received: list[Message] = []
    after: list[str] = []
    server = FakeServer(*([text("1"), text("2"), leave(4001, "gone fishing")] if buffered else []))

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        if buffered:
            await anyio.wait_all_tasks_blocked()  # the reader has read up to the disconnect
        for _ in range(3 if buffered else 1):
            received.append(await ws.receive())
        after.append(f"close code {ws.close_code}")
        try:
            await anyio.sleep_forever()  # done with the last message: cancelled
        except get_cancelled_exc_class():
            after.append("cancelled")
            raise

    async with anyio.create_task_group() as tg:
        if not buffered:
            tg.start_soon(leave_when_blocked, server, 4001, "gone fishing")
        await server.serve(handler)
    disconnect = {"type": "websocket.disconnect", "code": 4001, "reason": "gone fishing"}
    assert received == ([text("1"), text("2"), disconnect] if buffered else [disconnect])
    assert after == ["close code 4001", "cancelled"]


# -- c. a woken waiter that is cancelled before it runs ------------------------------------


async def test_a_woken_sender_cancelled_by_its_scope_in_the_same_tick_still_sends() -> None:
    # A cancel scope cannot take back a wake-up on either backend: the woken sender
    # queues its item, and the cancellation lands at its next checkpoint.
    channel: Channel[str] = Channel(1)
    channel.send_nowait("old")
    outcomes: list[str] = []
    first_scope = anyio.CancelScope()

    async def sender(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await channel.send(name)
            except ClosedResourceError:
                outcomes.append(f"{name} refused")
                return
            outcomes.append(f"{name} sent")

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender, "first", first_scope)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(sender, "second", anyio.CancelScope())
        await anyio.wait_all_tasks_blocked()
        assert channel.receive_nowait() == "old"  # wakes the first sender ...
        first_scope.cancel()  # ... and cancels it before it runs
        await anyio.wait_all_tasks_blocked()
        assert outcomes == ["first sent"]
        assert channel.statistics() == (1, 1, 1, 0)  # the second still waits for room
        assert channel.receive_nowait() == "first"
        await anyio.wait_all_tasks_blocked()
    assert outcomes == ["first sent", "second sent"]
    assert channel.receive_nowait() == "second"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_woken_sender_cancelled_by_task_cancel_hands_its_turn_on(
    anyio_backend: str,
) -> None:
    # asyncio's Task.cancel() lands on a task whose wake-up is already scheduled: the
    # sender never takes its place, and must pass it to the next one (on trio a woken
    # task cannot be cancelled any more, which the test above covers).
    import asyncio

    channel: Channel[str] = Channel(1)
    channel.send_nowait("old")
    outcomes: list[str] = []
    tasks: dict[str, asyncio.Task[Any]] = {}

    async def sender(name: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks[name] = task
        try:
            await channel.send(name)
        except asyncio.CancelledError:
            outcomes.append(f"{name} cancelled")
            task.uncancel()  # handled here: the task group must not see it
            return
        outcomes.append(f"{name} sent")

    with anyio.move_on_after(1):  # a lost wake-up leaves the second waiting
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender, "first")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(sender, "second")
            await anyio.wait_all_tasks_blocked()
            assert channel.receive_nowait() == "old"  # wakes the first sender ...
            tasks["first"].cancel()  # ... and cancels it before it runs
            await anyio.wait_all_tasks_blocked()
    assert outcomes == ["first cancelled", "second sent"]
    assert channel.statistics() == (1, 1, 0, 0)
    assert channel.receive_nowait() == "second"


# -- d. nothing leaves after the close -------------------------------------------------


async def test_a_sender_blocked_on_a_full_outbound_is_refused_when_the_handler_closes() -> None:
    server = FakeServer()
    in_flight = anyio.Event()
    release = anyio.Event()
    outcomes: dict[str, object] = {}
    before_close: dict[str, object] = {}

    async def send(message: Message) -> None:
        if message.get("text") == "a":
            in_flight.set()
            await release.wait()  # the transport is slow
        await server.send(message)

    async def sender(ws: WebSocket, data: str) -> None:
        try:
            await ws.send_text(data)
        except WebSocketClosed as exc:
            outcomes[data] = exc
        else:
            outcomes[data] = "sent"

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        ws.task_group.start_soon(sender, ws, "a")  # the baton: waits in the server's send
        await in_flight.wait()
        ws.task_group.start_soon(sender, ws, "b")  # queued: the outbound's one place
        await anyio.wait_all_tasks_blocked()
        ws.task_group.start_soon(sender, ws, "c")  # blocked: the outbound is full
        await anyio.wait_all_tasks_blocked()
        before_close.update(outcomes)
        await ws.close(4000, "done")  # goes past the capacity, behind "b"
        await anyio.wait_all_tasks_blocked()
        before_close["c after the close"] = outcomes.get("c")
        release.set()

    await server.serve(handler, send=send, outbound_capacity=1)
    assert before_close["b"] == "sent"
    assert "c" not in before_close  # it really was blocked
    assert isinstance(before_close["c after the close"], WebSocketClosed)  # refused at once
    assert outcomes["a"] == "sent"
    assert server.sent == [ACCEPT, sent_text("a"), sent_text("b"), close(4000, "done")]


# -- e. an error raised together with a cancellation ---------------------------------------


@pytest.mark.parametrize("end", ["the peer leaves", "the server shuts down"])
async def test_an_error_raised_while_the_connection_is_cancelled_is_logged(
    end: str, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A child's cleanup fails while the whole connection is being cancelled: on trio the
    # error and the cancellation come out of the handler's task group in one group.
    server = FakeServer()

    async def child() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("cleanup failed")

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        ws.task_group.start_soon(child)
        ws.task_group.start_soon(anyio.sleep_forever)
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        if end == "the peer leaves":
            tg.start_soon(leave_when_blocked, server, 1001, "")
            await server.serve(handler)
        else:
            tg.start_soon(server.serve, handler)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    logged = errors(caplog)
    assert [record.getMessage() for record in logged] == ["handler for /edge failed"]
    assert logged[0].exc_info is not None
    assert repr(logged[0].exc_info[1]) == "RuntimeError('cleanup failed')"
    if end == "the peer leaves":
        assert server.sent == [ACCEPT]  # nobody to say anything to
    else:
        # the shutdown's close, on both backends: the error came during the shutdown
        assert server.sent == [ACCEPT, close(1001, "server shutting down")]


# -- f. the server's receive fails -----------------------------------------------------------


@pytest.mark.parametrize("waiting_in", ["receive_text", "sleep"])
async def test_a_failing_receive_cancels_the_handler_and_is_logged_once(
    waiting_in: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeServer()
    outcome: list[object] = []

    async def receive() -> Message:
        if server.incoming:
            return await server.receive()  # the handshake
        await anyio.wait_all_tasks_blocked()  # the handler waits
        raise RuntimeError("receive exploded")

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            if waiting_in == "receive_text":
                try:
                    await ws.receive_text()
                except WebSocketDisconnect as exc:
                    outcome.append(exc.code)
            await anyio.sleep_forever()
        except get_cancelled_exc_class():
            outcome.append("cancelled")
            raise
        finally:
            outcome.append("finally")

    scope = {"type": "websocket", "path": "/edge", "headers": []}
    with anyio.fail_after(LIMIT):
        await plait.serve_connection(scope, receive, server.send, handler)
    prefix: list[object] = [1006] if waiting_in == "receive_text" else []
    assert outcome == [*prefix, "cancelled", "finally"]
    logged = errors(caplog)
    assert [record.getMessage() for record in logged] == [
        "the server's receive() failed; treating the peer as gone"
    ]
    assert logged[0].exc_info is not None
    assert repr(logged[0].exc_info[1]) == "RuntimeError('receive exploded')"
    assert server.sent == [ACCEPT]


# -- g. the drain timeout -----------------------------------------------------------------


@pytest.mark.parametrize("taken", [0, 1])
async def test_the_drain_timeout_cancels_a_handler_that_stopped_reading(taken: int) -> None:
    drain = 0.2
    server = FakeServer(text("1"), text("2"), text("3"), leave(1001))
    got: list[str] = []
    cancelled_at: list[float] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        for _ in range(taken):
            got.append(await ws.receive_text())
        try:
            await anyio.sleep_forever()  # stops reading with messages left
        finally:
            cancelled_at.append(anyio.current_time())

    await server.serve(handler, drain_timeout=drain)
    assert got == ["1"][:taken]
    assert server.left_at is not None
    elapsed = cancelled_at[0] - server.left_at
    assert drain - 0.02 <= elapsed < drain + 0.5  # the grace, then no more


# -- h. races at the close, and a close that cannot be sent --------------------------------


async def test_a_send_in_flight_when_the_peer_leaves_is_cut_short(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeServer()
    outcome: list[object] = []

    async def send(message: Message) -> None:
        if message["type"] == "websocket.send":
            server.deliver(leave(4001, "bye"))  # the peer leaves meanwhile ...
            await anyio.sleep(1)  # ... and its socket does not drain
        await server.send(message)

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.send_text("never delivered")
        except WebSocketClosed as exc:
            outcome.append((exc.code, exc.reason))
        try:
            await anyio.sleep_forever()
        finally:
            outcome.append("finally")

    started = anyio.current_time()
    await server.serve(handler, send=send)
    assert anyio.current_time() - started < 0.5  # not after the socket's second
    # On asyncio the sender holds the baton and hears how the peer left; on trio the
    # writer makes every send, so the sender's call had returned.
    if anyio_backend == "asyncio":
        assert outcome == [(4001, "bye"), "finally"]
    else:
        assert outcome == ["finally"]
    assert server.sent == [ACCEPT]  # the frame in flight never completed
    assert errors(caplog) == []


async def test_a_child_sending_while_the_handler_returns_goes_out_whole_before_the_close() -> None:
    server = FakeServer()
    in_flight = anyio.Event()
    release = anyio.Event()
    outcome: list[str] = []

    async def send(message: Message) -> None:
        if message.get("text") == "last words":
            in_flight.set()
            await release.wait()
        await server.send(message)

    async def child(ws: WebSocket) -> None:
        await ws.send_text("last words")
        outcome.append("sent")

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        ws.task_group.start_soon(child, ws)
        await in_flight.wait()  # returns with the child's send in flight

    async def release_when_blocked() -> None:
        await in_flight.wait()
        await anyio.wait_all_tasks_blocked()
        release.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_when_blocked)
        await server.serve(handler, send=send)
    assert outcome == ["sent"]
    assert server.sent == [ACCEPT, sent_text("last words"), close(1000)]


async def test_sends_racing_the_peers_close_never_fail_nor_follow_a_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: set[object] = set()
    # On trio the accept reaches the server one hop later (its writer sends it) and
    # trio may run ready tasks in either order: the handler's range covers both.
    for handler_steps in range(8):
        for peer_steps in range(4):
            server = FakeServer()

            async def handler(ws: WebSocket, steps: int = handler_steps) -> None:
                await ws.accept()
                try:
                    for _ in range(steps):
                        await anyio.lowlevel.checkpoint()
                    await ws.send_text("last")
                except WebSocketClosed as exc:
                    outcomes.add(exc.code)
                except get_cancelled_exc_class():
                    outcomes.add("cancelled")
                    raise
                else:
                    outcomes.add("sent")

            async def peer(server: FakeServer = server, steps: int = peer_steps) -> None:
                while ACCEPT not in server.sent:
                    await anyio.lowlevel.checkpoint()
                for _ in range(steps):
                    await anyio.lowlevel.checkpoint()
                server.deliver(leave(4001))

            async with anyio.create_task_group() as tg:
                tg.start_soon(peer)
                await server.serve(handler)
            types = [message["type"] for message in server.sent]
            assert types[0] == "websocket.accept"
            assert types.count("websocket.close") <= 1
            assert "websocket.close" not in types[:-1]  # nothing after a close
    assert outcomes == {"sent", "cancelled"}  # both orders happened
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("how", ["the handler returns", "the handler closes", "shutdown"])
async def test_a_close_frame_that_cannot_be_sent_is_no_error(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="plait")
    server = FakeServer()
    attempts: list[Message] = []
    ended: list[str] = []

    async def send(message: Message) -> None:
        if message["type"] == "websocket.close":
            attempts.append(message)
            raise OSError("broken pipe")
        await server.send(message)

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.send_text("bye")
            if how == "the handler closes":
                with contextlib.suppress(WebSocketDisconnect):
                    await ws.close(4000)
            elif how == "shutdown":
                await anyio.sleep_forever()
        finally:
            ended.append("handler")

    async with anyio.create_task_group() as tg:
        if how == "shutdown":
            tg.start_soon(lambda: server.serve(handler, send=send))
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        else:
            await server.serve(handler, send=send)
    expected = {
        "the handler returns": close(1000),
        "the handler closes": close(4000),
        "shutdown": close(1001, "server shutting down"),
    }[how]
    assert attempts == [expected]  # tried once
    assert ended == ["handler"]
    assert server.sent == [ACCEPT, sent_text("bye")]
    assert errors(caplog) == []
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert len(failures) == 1
    assert failures[0].levelno == logging.DEBUG
    assert isinstance(failures[0].exc_info[1], OSError)  # type: ignore[index]


# -- i. the App's lifespan when the server drops it -------------------------------------------


@pytest.mark.parametrize("drop", [anyio.EndOfStream, anyio.ClosedResourceError])
async def test_the_lifespan_ends_cleanly_when_the_server_drops_it(
    drop: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plait")
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: plait.App) -> AsyncIterator[None]:
        events.append("startup")
        try:
            yield
        finally:
            events.append("teardown")

    @plait.websocket("/live")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await anyio.sleep_forever()
        finally:
            events.append("handler ended")

    app = plait.App(routes=[live], lifespan=lifespan, shutdown_grace=1)
    lifespan_sent: list[Message] = []
    dropped = anyio.Event()
    asked = 0

    async def lifespan_receive() -> Message:
        nonlocal asked
        asked += 1
        if asked == 1:
            return {"type": "lifespan.startup"}
        await dropped.wait()
        raise drop

    async def lifespan_send(message: Message) -> None:
        lifespan_sent.append(message)

    server = FakeServer()
    lifespan_scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    websocket_scope = {"type": "websocket", "path": "/live", "headers": [], "query_string": b""}
    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, lifespan_scope, lifespan_receive, lifespan_send)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(app, websocket_scope, server.receive, server.send)
            await anyio.wait_all_tasks_blocked()
            assert server.sent == [ACCEPT]
            dropped.set()
    assert lifespan_sent == [{"type": "lifespan.startup.complete"}]  # no shutdown answer
    assert server.sent == [ACCEPT, close(1001, "server shutting down")]
    assert events == ["startup", "handler ended", "teardown"]
    assert errors(caplog) == []
    assert "the lifespan ended without a shutdown message" in caplog.messages
    assert app.connections() == 0


async def test_the_lifespan_tears_down_when_the_server_cancels_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: plait.App) -> AsyncIterator[None]:
        events.append("startup")
        try:
            yield
        finally:
            events.append("teardown")

    app = plait.App(lifespan=lifespan)
    sent: list[Message] = []
    messages = [{"type": "lifespan.startup"}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, {"type": "lifespan", "state": {}}, receive, send)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert events == ["startup", "teardown"]
    assert errors(caplog) == []


# -- j. nothing the client sent is lost at the close --------------------------------------------


@pytest.mark.parametrize(("count", "capacity"), [(5, 16), (40, 4)])
async def test_a_handler_gets_every_message_sent_before_the_close_then_the_code(
    count: int, capacity: int
) -> None:
    got: list[str] = []
    ends: list[object] = []
    client_left = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await client_left.wait()  # busy elsewhere while the client sends and leaves
        try:
            while True:
                got.append(await ws.receive_text())
        except WebSocketDisconnect as exc:
            ends.append((exc.code, exc.reason))
        try:
            await anyio.sleep_forever()
        except get_cancelled_exc_class():
            ends.append("cancelled")
            raise

    app = engine_app(handler, inbound_capacity=capacity)
    with anyio.fail_after(LIMIT):
        async with AsyncTestClient(app) as client, client.websocket_connect("/") as session:
            for i in range(count):
                await session.send_text(str(i))
            await session.close(4001, "bye")
            await anyio.wait_all_tasks_blocked()  # the reader saw what it could
            client_left.set()
    assert got == [str(i) for i in range(count)]
    assert ends == [(4001, "bye"), "cancelled"]


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_listener_handles_every_message_sent_before_the_close(
    concurrency: int, caplog: pytest.LogCaptureFixture
) -> None:
    handled: list[str] = []

    @plait.listener("/work", concurrency=concurrency)
    async def work(data: str) -> str:
        await anyio.sleep(0.01)  # slow work: the client is gone long before it ends
        handled.append(data)
        return f"done {data}"  # nobody can read it: dropped quietly

    # "raise": a reply that reached the gone client's socket would end the connection
    app = plait.App(routes=[work])
    client = AsyncTestClient(app, send_after_disconnect="raise")
    with anyio.fail_after(LIMIT):
        async with client, client.websocket_connect("/work") as session:
            for i in range(6):
                await session.send_text(str(i))
            await session.close(1001)
    expected = [str(i) for i in range(6)]
    assert (handled if concurrency == 1 else sorted(handled)) == expected
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_class_listener_handles_every_message_sent_before_the_close() -> None:
    handled: list[str] = []
    disconnected: list[int | None] = []

    class Work(plait.Listener):
        path = "/class"
        concurrency = 2

        async def on_receive(self, data: str, socket: WebSocket) -> str:
            await anyio.sleep(0.01)
            handled.append(data)
            return data

        async def on_disconnect(self, socket: WebSocket) -> None:
            disconnected.append(socket.close_code)

    client = AsyncTestClient(plait.App(routes=[Work]))
    with anyio.fail_after(LIMIT):
        async with client, client.websocket_connect("/class") as session:
            for i in range(5):
                await session.send_text(str(i))
            await session.close(4002)
    assert sorted(handled) == [str(i) for i in range(5)]
    assert disconnected == [4002]


# -- k. a handler that stopped reading still sees the peer leave --------------------------------


async def test_a_push_only_handler_is_cancelled_after_a_stall_and_the_drain() -> None:
    stall, drain, capacity = 0.1, 0.1, 2
    times: list[float] = []
    cancelled = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await anyio.sleep_forever()  # pushes, never reads
        finally:
            times.append(anyio.current_time())
            cancelled.set()

    app = engine_app(handler, inbound_capacity=capacity, stall_timeout=stall, drain_timeout=drain)
    with anyio.fail_after(LIMIT):
        async with AsyncTestClient(app) as client, client.websocket_connect("/") as session:
            for i in range(capacity + 1):
                await session.send_text(str(i))
            await session.close()
            left = anyio.current_time()
            await cancelled.wait()
    # Bounded by the stall and the drain (the defaults, 10 s and 5 s, would blow this),
    # with room for a loaded machine's scheduling.
    assert times[0] - left < stall + drain + 1.0


async def test_on_stall_drop_counts_what_it_drops_and_reads_on() -> None:
    capacity = 2
    stats: list[plait.ConnectionStatistics] = []
    got: list[str] = []
    dropped = anyio.Event()
    read_on = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await until(lambda: ws.statistics().messages_dropped >= 3)  # not reading meanwhile
        stats.append(ws.statistics())
        dropped.set()
        async for data in ws.iter_text():
            got.append(data)
            if data == "after":
                read_on.set()

    app = engine_app(handler, inbound_capacity=capacity, stall_timeout=0.05, on_stall="drop")
    with anyio.fail_after(LIMIT):
        async with AsyncTestClient(app) as client, client.websocket_connect("/") as session:
            for i in range(capacity + 4):
                await session.send_text(str(i))
            await dropped.wait()
            await session.send_text("after")
            await read_on.wait()
    # capacity kept, one more held past it when the stall was declared, three dropped
    assert got == [str(i) for i in range(capacity + 1)] + ["after"]
    assert stats[0].messages_dropped == 3
    assert stats[0].messages_received == capacity + 4


async def test_on_stall_close_closes_with_1008(caplog: pytest.LogCaptureFixture) -> None:
    capacity = 2
    ended: list[str] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await anyio.sleep_forever()
        finally:
            ended.append("handler")

    app = engine_app(handler, inbound_capacity=capacity, stall_timeout=0.05, on_stall="close")
    with anyio.fail_after(LIMIT):
        async with AsyncTestClient(app) as client, client.websocket_connect("/") as session:
            for i in range(capacity + 2):
                await session.send_text(str(i))
            with pytest.raises(WebSocketDisconnect) as info:
                await session.receive()
    assert (info.value.code, info.value.reason) == (1008, "messages not read")
    assert ended == ["handler"]
    assert errors(caplog) == []


# -- l. the baton -----------------------------------------------------------------------------


async def test_a_sender_cancelled_during_a_baton_send_does_not_cut_the_frame() -> None:
    server = FakeServer()
    in_flight = anyio.Event()
    release = anyio.Event()
    interrupted: list[str] = []
    sender_scope = anyio.CancelScope()

    async def send(message: Message) -> None:
        if message.get("text") == "big":
            in_flight.set()
            try:
                await release.wait()  # a large frame, written in parts
            except get_cancelled_exc_class():
                interrupted.append("big")
                raise
        await server.send(message)

    queued = anyio.Event()

    async def cancel_the_sender(ws: WebSocket) -> None:
        await in_flight.wait()
        sender_scope.cancel()
        await ws.send_text("queued meanwhile")  # waits behind the frame in flight
        queued.set()
        release.set()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        ws.task_group.start_soon(cancel_the_sender, ws)
        with sender_scope:
            await ws.send_text("big")  # takes the baton where there is one
        if not queued.is_set():  # (no checkpoint when it is: the writer must not run)
            await queued.wait()
        await ws.send_text("after")  # must not overtake what is queued

    await server.serve(handler, send=send)
    assert interrupted == []
    assert server.texts == ["big", "queued meanwhile", "after"]
    assert server.sent[-1] == close(1000)


# -- engine bugs found while writing these tests, fixed ------------------------------------------


async def test_messages_read_before_a_send_fails_still_reach_the_handler() -> None:
    # uvicorn raises from send once the client has left. The three messages were read
    # before the disconnect, so they must reach the handler (issue 9, point 1; the
    # engine's own docstring: "When the peer goes (... or a send fails), the handler
    # first gets what the peer sent before it left").
    server = FakeServer(text("1"), text("2"), text("3"))
    got: list[object] = []
    failing = False

    async def send(message: Message) -> None:
        if failing and message["type"] == "websocket.send":
            # What uvicorn does once the client left: the send raises, and receive hands
            # over what it still holds of the client's, then the disconnect.
            server.deliver(text("4"), leave(1006))
            raise OSError("client disconnected")
        await server.send(message)

    async def handler(ws: WebSocket) -> None:
        nonlocal failing
        await ws.accept()
        await anyio.wait_all_tasks_blocked()  # the reader has read all three
        failing = True
        with contextlib.suppress(WebSocketDisconnect):
            await ws.send_text("reply")
        await anyio.wait_all_tasks_blocked()  # some work; the send has failed by now
        try:
            while True:
                got.append(await ws.receive_text())
        except WebSocketDisconnect:
            got.append("disconnect")

    started = anyio.current_time()
    await server.serve(handler, send=send)
    assert got == ["1", "2", "3", "4", "disconnect"]
    assert anyio.current_time() - started < 1  # the server's word ended it, not the drain


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # where close() holds the baton
async def test_a_close_in_finally_that_cannot_be_sent_keeps_the_handlers_error(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = FakeServer()

    async def send(message: Message) -> None:
        if message["type"] == "websocket.close":
            raise OSError("broken pipe")  # the peer vanished
        await server.send(message)

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            raise ValueError("the handler's bug")
        finally:
            await ws.close()  # documented as safe in a finally

    await server.serve(handler, send=send)
    assert [repr(r.exc_info[1]) for r in errors(caplog) if r.exc_info] == [
        'ValueError("the handler\'s bug")'
    ]


# -- the heartbeat's ping never holds the watchdog ------------------------------------------


async def test_a_ping_stuck_in_the_servers_send_still_lets_the_heartbeat_time_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The ping's send never returns (a client that stopped reading): it goes on in a task
    # of its own, and the watchdog still closes for the missing answer.
    caplog.set_level(logging.INFO, logger="plait")
    server = FakeServer()
    ended = anyio.Event()

    async def send(message: Message) -> None:
        if message.get("text") == "ping":
            await anyio.sleep_forever()
        await server.send(message)

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            async for _ in ws.iter_text():
                pass
        finally:
            ended.set()

    await server.serve(handler, send=send, heartbeat=Heartbeat(0.05, 0.05), drain_timeout=0.2)
    assert ended.is_set()
    assert any("no answer to the heartbeat" in r.getMessage() for r in caplog.records)


async def test_a_ping_whose_send_fails_ends_the_connection_as_a_peer_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = FakeServer()

    async def send(message: Message) -> None:
        if message.get("text") == "ping":
            raise OSError("connection reset by peer")
        await server.send(message)

    codes: list[int] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect as left:
            codes.append(left.code)

    await server.serve(handler, send=send, heartbeat=Heartbeat(0.05, 1), drain_timeout=0.2)
    assert codes == [1006]
    assert not errors(caplog)


async def test_a_ping_queued_behind_a_full_outbound_waits_for_room() -> None:
    # Every data send blocks until released, so the outbound fills up; the ping then
    # waits for room in a task of its own, and reaches the client once it reads again.
    server = FakeServer()
    release = anyio.Event()
    pinged = anyio.Event()

    async def send(message: Message) -> None:
        if message["type"] == "websocket.send":
            await release.wait()
            if message["text"] == "ping":
                pinged.set()
        await server.send(message)

    async def release_later() -> None:
        await anyio.sleep(0.3)  # a ping is due meanwhile, with no room for it
        release.set()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        ws.task_group.start_soon(release_later)
        for n in range(6):  # what the outbound holds, and one in flight
            await ws.send_text(str(n))
        with anyio.fail_after(1):
            await pinged.wait()
        await ws.close()

    await server.serve(
        handler, send=send, heartbeat=Heartbeat(0.1, 1), outbound_capacity=4, drain_timeout=1
    )
    assert "ping" in server.texts


async def test_a_heartbeat_whose_timeout_outlasts_its_interval_pings_once_per_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The next ping waits for the last one's answer to be checked: the watchdog's timer
    # is set for that check, never for a ping time already past (a busy loop).
    from plait import _watchdogs

    timers: list[float] = []
    real_call_at = _watchdogs.call_at

    def counted(when: float, callback: Callable[[], object]) -> Any:
        timers.append(when)
        return real_call_at(when, callback)

    monkeypatch.setattr(_watchdogs, "call_at", counted)
    server = FakeServer()

    async def send(message: Message) -> None:
        await server.send(message)
        if message.get("text") == "ping":
            server.deliver(text("pong"))

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await anyio.sleep(0.5)
        await ws.close()

    await server.serve(handler, send=send, heartbeat=Heartbeat(0.01, 0.2))
    assert 2 <= server.texts.count("ping") <= 3  # at 0.01, 0.21 and 0.41
    assert len(timers) <= 8


async def test_a_send_stuck_after_an_idle_close_is_still_cut_by_the_send_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The idle watchdog closes first; the close cannot leave behind a send stuck in
    # flight, and the slow-client watchdog must still cut it (found by the model, seed
    # 2467471125: the merged watchdog stopped at the first close).
    caplog.set_level(logging.INFO, logger="plait")
    server = FakeServer()

    async def send(message: Message) -> None:
        if message["type"] == "websocket.send":
            await anyio.sleep_forever()  # a client that stopped reading
        await server.send(message)

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        while True:
            await ws.send_text("tick")

    await server.serve(handler, send=send, idle_timeout=0.2, send_timeout=0.6, drain_timeout=5)
    messages = [r.getMessage() for r in caplog.records]
    assert any("idle for" in m for m in messages)
    assert any("client read nothing" in m for m in messages)


async def test_a_resting_connection_holds_no_writer_task_between_pings() -> None:
    # Once the heartbeat's ping was all the writer had to do, it ends with it: thousands
    # of resting connections then hold no writer task, and no waiter renewed at each
    # ping (on trio, where every send goes through the writer). A later send starts it
    # again, and the pings go on.
    server = FakeServer()
    writers: list[int] = []
    pinged, pings = anyio.create_memory_object_stream[None](10)

    async def send(message: Message) -> None:
        await anyio.lowlevel.checkpoint()  # a send that suspends, as on a real server
        await server.send(message)
        if message.get("text") == "ping":
            server.deliver(text("pong"))
            pinged.send_nowait(None)

    def writer_tasks() -> int:
        return sum(task.name.endswith("Outbound._write") for task in anyio.get_running_tasks())

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hello")
        for _ in range(3):  # a ping every 0.05 s, each answered
            await pings.receive()
            await anyio.wait_all_tasks_blocked()  # the ping has left; all rest
            writers.append(writer_tasks())
        await ws.send_text("after")
        await ws.close()

    with pinged, pings:
        await server.serve(handler, send=send, heartbeat=Heartbeat(0.05, 0.03))
    assert server.texts.count("ping") >= 3
    assert server.texts[-1] == "after"
    assert writers == [0, 0, 0]
