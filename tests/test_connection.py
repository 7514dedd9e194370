"""The engine's guarantees (DESIGN.md section 1), each on asyncio and on trio."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import anyio
import pytest
import sniffio

import plait
from _support import CountingReceive, count_tasks, engine_app, open_session
from plait import WebSocket, WebSocketDisconnect
from plait._types import Message, Receive, Scope, Send
from plait.testing import AsyncTestClient, WebSocketDenied

pytestmark = pytest.mark.anyio


async def test_disconnect_cancels_a_handler_waiting_on_something_else() -> None:
    cancelled = anyio.Event()
    finally_ran = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.send_text("ready")
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise
        finally:
            finally_ran.set()

    async with open_session(handler) as session:
        assert await session.receive_text() == "ready"
        await session.close(1001, "bye")
        with anyio.fail_after(1):
            await finally_ran.wait()
    assert cancelled.is_set()


async def test_pending_receive_raises_disconnect_with_code_and_reason() -> None:
    seen: list[tuple[int, str]] = []
    after: list[str] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ready")
        try:
            await ws.receive_text()
        except WebSocketDisconnect as exc:
            seen.append((exc.code, exc.reason))
            try:
                await anyio.sleep(10)  # the connection is over: this is cancelled
            finally:
                after.append("cancelled")

    async with open_session(handler) as session:
        assert await session.receive_text() == "ready"
        await anyio.wait_all_tasks_blocked()
        await session.close(4001, "gone fishing")
    assert seen == [(4001, "gone fishing")]
    assert after == ["cancelled"]


async def test_disconnect_cancels_child_tasks_and_no_task_survives() -> None:
    child_cancelled = anyio.Event()

    async def child() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            child_cancelled.set()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        for _ in range(3):
            ws.task_group.start_soon(anyio.sleep_forever)
        ws.task_group.start_soon(child)
        await ws.send_text("started")
        await anyio.sleep_forever()

    async with AsyncTestClient(engine_app(handler)) as client:
        await anyio.wait_all_tasks_blocked()
        before = count_tasks()
        async with client.websocket_connect("/") as session:
            assert await session.receive_text() == "started"
            await anyio.wait_all_tasks_blocked()
            # reader, writer, 4 children, and the test client's own app task
            assert count_tasks() >= before + 6
            await session.close()
        assert child_cancelled.is_set()
        await anyio.wait_all_tasks_blocked()
        assert count_tasks() == before


async def test_children_are_cancelled_when_the_handler_returns() -> None:
    child_cancelled = anyio.Event()

    async def child() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            child_cancelled.set()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        ws.task_group.start_soon(child)
        await anyio.wait_all_tasks_blocked()

    async with open_session(handler) as session:
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text()
        assert info.value.code == 1000
    assert child_cancelled.is_set()


async def test_a_failing_child_task_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    async def child() -> None:
        raise KeyError("secret detail")

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        ws.task_group.start_soon(child)
        await anyio.sleep_forever()

    async with open_session(handler) as session:
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text()
    assert (info.value.code, info.value.reason) == (1011, "internal error")
    assert "secret detail" in caplog.text


async def test_handler_exception_is_logged_and_closes_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("before")
        raise RuntimeError("database password is hunter2")

    async with open_session(handler, "/boom") as session:
        assert await session.receive_text() == "before"
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text()
    assert (info.value.code, info.value.reason) == (1011, "internal error")
    assert "hunter2" not in info.value.reason
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "/boom" in errors[0].getMessage()


async def test_handler_exception_before_accept_is_a_500() -> None:
    async def handler(ws: WebSocket) -> None:
        raise RuntimeError("boom")

    async with AsyncTestClient(engine_app(handler)) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/"):
                pass
    assert info.value.status_code == 500
    assert info.value.body == b"Internal Server Error"


async def test_normal_return_delivers_everything_queued_then_closes_1000() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        for i in range(100):
            await ws.send_text(str(i))

    async with open_session(handler) as session:
        received = [await session.receive_text() for _ in range(100)]
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text()
    assert received == [str(i) for i in range(100)]
    assert info.value.code == 1000


async def test_return_without_accept_denies_with_403() -> None:
    async def handler(ws: WebSocket) -> None:
        return None

    async with AsyncTestClient(engine_app(handler)) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/"):
                pass
    assert info.value.status_code == 403


async def test_concurrent_senders_keep_their_order_and_never_interleave() -> None:
    senders, count = 5, 200

    async def handler(ws: WebSocket) -> None:
        await ws.accept()

        async def sender(name: int) -> None:
            for i in range(count):
                await ws.send_text(f"{name}:{i}")
                if i % 7 == 0:
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for name in range(senders):
                tg.start_soon(sender, name)

    async with open_session(handler, outbound_capacity=4) as session:
        messages = [await session.receive_text() for _ in range(senders * count)]
    per_sender: dict[int, list[int]] = {}
    for message in messages:
        name, i = message.split(":")  # a whole frame each: never two senders' bytes mixed
        per_sender.setdefault(int(name), []).append(int(i))
    assert per_sender == {name: list(range(count)) for name in range(senders)}
    # They really ran at once: the first sender's messages do not all come first.
    assert messages[:count] != [f"0:{i}" for i in range(count)]


async def test_a_handler_that_does_not_read_stops_the_reader() -> None:
    counter: list[CountingReceive] = []
    stats: list[plait.ConnectionStatistics] = []
    release = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await release.wait()
        stats.append(ws.statistics())
        assert await ws.receive_text() == "0"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError("no lifespan support")
        counting = CountingReceive(receive)
        counter.append(counting)
        await plait.serve_connection(scope, counting, send, handler, inbound_capacity=8)

    async with AsyncTestClient(app) as client, client.websocket_connect("/") as session:
        for i in range(50):
            await session.send_text(str(i))
        await anyio.wait_all_tasks_blocked()
        # connect + 8 buffered + 1 in the reader's hand; the other 41 wait upstream
        assert counter[0].calls == 10
        release.set()
        await anyio.wait_all_tasks_blocked()
    assert stats[0].inbound_buffered == 8
    assert stats[0].inbound_capacity == 8


async def test_a_client_that_does_not_read_makes_senders_wait() -> None:
    progress: list[int] = []
    stats: list[plait.ConnectionStatistics] = []
    gate = anyio.Event()

    order: list[int] = []

    async def sender(ws: WebSocket, name: int) -> None:
        order.append(name)
        for i in range(500):
            await ws.send_text(f"{name}:{i}")
            progress.append(i)
            stats[:] = [ws.statistics()]

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender, ws, 0)
            tg.start_soon(sender, ws, 1)

    async def stalled_send(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "websocket.send":
                await gate.wait()  # the transport does not drain
            await send(message)

        return wrapped

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await plait.serve_connection(
            scope, receive, await stalled_send(send), handler, outbound_capacity=4
        )

    async with AsyncTestClient(app) as client, client.websocket_connect("/") as session:
        await anyio.wait_all_tasks_blocked()
        # 1 in the server's send + 4 queued; the next send waits for room. On asyncio
        # the one in the server's send was made by a sender holding the baton, which
        # waits in it; on trio the writer makes it, and that sender returned.
        baton = sniffio.current_async_library() == "asyncio"
        assert len(progress) == (4 if baton else 5)
        assert stats[0].outbound_buffered == 4
        assert stats[0].messages_sent == 1  # the accept; no data message has left
        gate.set()
        assert await session.receive_text() == f"{order[0]}:0"  # the baton's, first
        await session.close()


async def test_message_over_the_limit_closes_with_1009() -> None:
    cancelled = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            async for text in ws.iter_text():
                await ws.send_text(f"ok {len(text)}")
        finally:
            cancelled.set()

    app = engine_app(handler, max_message_size=1000)
    async with AsyncTestClient(app) as client:
        async with client.websocket_connect("/") as session:
            await session.send_text("x" * 1000)
            assert await session.receive_text() == "ok 1000"
            await session.send_text("é" * 600)  # 600 characters, 1200 bytes
            with pytest.raises(WebSocketDisconnect) as info:
                await session.receive_text()
        assert (info.value.code, info.value.reason) == (1009, "message too big")
        assert cancelled.is_set()
        async with client.websocket_connect("/") as session:
            await session.send_bytes(b"\0" * 1001)
            with pytest.raises(WebSocketDisconnect) as info:
                await session.receive_text()
        assert info.value.code == 1009


async def test_send_and_receive_after_the_peer_left_raise_disconnect() -> None:
    outcomes: list[BaseException] = []
    done = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ready")
        with contextlib.suppress(WebSocketDisconnect):
            await ws.receive_text()
        for attempt in (ws.send_text("late"), ws.receive_text(), ws.send_bytes(b"x")):
            try:
                await attempt
            except BaseException as exc:
                outcomes.append(exc)
        done.set()

    async with open_session(handler) as session:
        assert await session.receive_text() == "ready"
        await session.close(1000)
    assert done.is_set()
    assert len(outcomes) == 3
    assert all(isinstance(exc, WebSocketDisconnect) for exc in outcomes)
    assert "closed by the peer" in str(outcomes[0])


async def test_send_after_the_application_closed_raises_websocket_closed() -> None:
    outcomes: list[BaseException] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(4000, "done")
        await ws.close()  # closing again is harmless
        try:
            await ws.send_text("late")
        except plait.WebSocketClosed as exc:
            outcomes.append(exc)

    async with open_session(handler) as session:
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text()
    assert (info.value.code, info.value.reason) == (4000, "done")
    assert len(outcomes) == 1
    assert "already closed" in str(outcomes[0])


async def test_a_server_whose_send_fails_cancels_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The server never reports a disconnect (the reader has nothing to say): only the
    # failed send tells the engine that the peer is gone. What the server may still hand
    # over is the handler's, so the engine waits for the server's word for at most
    # drain_timeout, and then cancels the handler; every send meanwhile raises.
    outcome: list[object] = []
    sent: list[Message] = []
    broken = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                try:
                    await ws.send_text("tick")
                except WebSocketDisconnect as exc:
                    outcome.append(exc.code)  # the handler carries on regardless
                await anyio.sleep(0.01)
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            cancelled_at.append(anyio.current_time())
            raise

    connected: list[bool] = []
    cancelled_at: list[float] = []

    async def receive() -> Message:
        if not connected:  # the handshake, once, as ASGI servers deliver it
            connected.append(True)
            return {"type": "websocket.connect"}
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        if broken.is_set():
            raise OSError("connection reset by peer")
        sent.append(message)
        if message.get("text") == "tick":
            broken.set()  # the transport fails from now on

    scope: dict[str, Any] = {"type": "websocket", "path": "/", "headers": []}
    drain = 0.2
    started = anyio.current_time()
    with anyio.fail_after(2):
        await plait.serve_connection(scope, receive, send, handler, drain_timeout=drain)
    assert drain <= cancelled_at[0] - started < drain + 0.5
    # Every send after the failure raised (on trio the failing call itself was the
    # writer's, so the sender's had returned), and the drain's end cancelled the handler.
    assert outcome[-1] == "cancelled"
    assert len(outcome) > 2
    assert set(outcome[:-1]) == {1006}
    assert sent == [
        {"type": "websocket.accept", "subprotocol": None},
        {"type": "websocket.send", "text": "tick"},
    ]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_invalid_json_closes_with_1007_and_a_reason() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        async for data in ws.iter_json():
            await ws.send_json(data)

    async with open_session(handler) as session:
        await session.send_json({"a": 1})
        assert await session.receive_json() == {"a": 1}
        await session.send_text("{not json")
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text()
    assert info.value.code == 1007
    assert info.value.reason.startswith("invalid JSON message")


async def test_binary_where_text_was_expected_closes_with_1003() -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()

    async with open_session(handler) as session:
        await session.send_bytes(b"\x01\x02")
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text()
    assert info.value.code == 1003
    assert "expected a text message" in info.value.reason


async def test_send_timeout_closes_a_client_that_does_not_read_with_1008(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finally_ran = anyio.Event()
    closes: list[Message] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                await ws.send_text("data")
        finally:
            finally_ran.set()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def stalled(message: Message) -> None:
            if message["type"] == "websocket.send":
                await anyio.sleep_forever()
            if message["type"] == "websocket.close":
                closes.append(message)
            await send(message)

        await plait.serve_connection(scope, receive, stalled, handler, send_timeout=0.05)

    async with AsyncTestClient(app) as client, client.websocket_connect("/") as session:
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive_text()
        with anyio.fail_after(1):
            await finally_ran.wait()
    assert info.value.code == 1008
    assert closes == [{"type": "websocket.close", "code": 1008, "reason": "client too slow"}]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["closing / with 1008: the client read nothing for 0.05 s"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_outside_cancellation_closes_with_1001_and_propagates() -> None:
    sent: list[Message] = []
    started = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        started.set()
        await anyio.sleep_forever()

    async def receive() -> Message:
        if not sent:
            return {"type": "websocket.connect"}
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "websocket", "path": "/", "headers": []}
    async with anyio.create_task_group() as tg:
        tg.start_soon(plait.serve_connection, scope, receive, send, handler)
        await started.wait()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert sent[-1] == {"type": "websocket.close", "code": 1001, "reason": "server shutting down"}


async def test_capacities_must_be_positive() -> None:
    async def handler(ws: WebSocket) -> None:
        raise AssertionError

    with pytest.raises(ValueError, match="at least 1"):
        await plait.serve_connection(
            {"type": "websocket"}, _never, _never, handler, inbound_capacity=0
        )


async def _never(*args: object) -> Any:
    raise AssertionError


async def test_messages_read_before_the_disconnect_are_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The reader may have handed the handler a message, then seen the disconnect,
    # before the handler ran: that message is valid data, not a protocol error.
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(text)

    async with AsyncTestClient(engine_app(handler)) as client:
        for i in range(30):
            async with client.websocket_connect("/") as session:
                await session.send_text(str(i))
                if i % 2:
                    await anyio.lowlevel.checkpoint()
                await session.close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_disconnect_racing_a_failing_send_in_a_child_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One child is cancelled (Cancelled) while another fails to send because the peer
    # left (WebSocketClosed): trio reports both in one group; neither is an error.
    outcomes: list[BaseException] = []
    ended: list[str] = []

    async def doomed_sender(ws: WebSocket) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            try:
                await ws.send_text("too late")  # the peer is gone: WebSocketClosed
            except WebSocketDisconnect as exc:
                outcomes.append(exc)
                raise

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        ws.task_group.start_soon(anyio.sleep_forever)
        ws.task_group.start_soon(doomed_sender, ws)
        await ws.send_text("ready")
        try:
            await anyio.sleep_forever()
        finally:
            ended.append("handler")

    for _ in range(5):
        async with open_session(handler) as session:  # would re-raise an app error
            assert await session.receive_text() == "ready"
            await session.close(4001)
    assert ended == ["handler"] * 5
    assert len(outcomes) == 5
    assert all(isinstance(exc, plait.WebSocketClosed) for exc in outcomes)
    assert {exc.code for exc in outcomes} == {4001}  # the peer's own close code
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
