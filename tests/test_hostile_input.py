"""Hostile input is the client's fault: a close code or a reply, never a crash (issue 10)."""

from __future__ import annotations

import json
import logging

import anyio
import anyio.lowlevel
import msgspec
import pytest

import plait
from _support import closed, open_session
from plait import App, WebSocket
from plait._types import Message
from plait.testing import AsyncTestClient, WebSocketDenied

pytestmark = pytest.mark.anyio

DEEP_OBJECT = '{"a":' * 10_000 + "1" + "}" * 10_000
DEEP_ARRAY = "[" * 10_000 + "]" * 10_000
DEEP_IN_AN_UNKNOWN_FIELD = '{"room":"a","extra":' + DEEP_ARRAY + "}"


class Join(msgspec.Struct):
    room: str


def _no_errors(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (DEEP_OBJECT, "invalid JSON message: nested too deeply"),
        (DEEP_IN_AN_UNKNOWN_FIELD, "invalid JSON message: nested too deeply"),
        (DEEP_ARRAY, "invalid message: Expected `object`, got `array`"),  # refused at once
    ],
)
async def test_deeply_nested_json_closes_a_listener_with_1007(
    message: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    @plait.listener("/join")
    async def join(data: Join) -> str:
        return data.room

    async with (
        AsyncTestClient(App(routes=[join])) as client,
        client.websocket_connect("/join") as ws,
    ):
        await ws.send_text(message)
        disconnect = await closed(ws)
    assert (disconnect.code, disconnect.reason) == (1007, reason)
    _no_errors(caplog)


async def test_deeply_nested_json_gets_the_reply_policy_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @plait.listener("/join", on_invalid="reply")
    async def join(data: Join) -> str:
        return f"joined {data.room}"

    async with (
        AsyncTestClient(App(routes=[join])) as client,
        client.websocket_connect("/join") as ws,
    ):
        for message in (DEEP_OBJECT, DEEP_IN_AN_UNKNOWN_FIELD):
            await ws.send_text(message)
            assert await ws.receive_json() == {
                "error": "invalid message",
                "detail": "invalid JSON message: nested too deeply",
            }
        await ws.send_json({"room": "a"})
        assert await ws.receive_text() == "joined a"
    _no_errors(caplog)


@pytest.mark.parametrize("how", ["iter_json", "receive_json"])
async def test_deeply_nested_json_closes_a_low_level_handler_with_1007(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        if how == "iter_json":
            async for data in ws.iter_json():
                await ws.send_json(data)
        else:
            while True:
                await ws.send_json(await ws.receive_json())

    async with open_session(handler) as session:
        await session.send_json([1, [2]])
        assert await session.receive_json() == [1, [2]]
        await session.send_text(DEEP_ARRAY)
        disconnect = await closed(session)
    assert (disconnect.code, disconnect.reason) == (
        1007,
        "invalid JSON message: nested too deeply",
    )
    _no_errors(caplog)


async def test_a_404_names_a_long_path_by_a_short_escaped_prefix() -> None:
    route = plait.WebSocketRoute("/echo")

    @route.listener()
    async def echo(data: str) -> str:
        return data

    async with AsyncTestClient(App(routes=[route])) as client:
        for path, shown in (
            ("/x" * 6_000, "/x" * 50 + "..."),
            ("/a\x00b\u202ec", "/a\\x00b\\u202ec"),
        ):
            with pytest.raises(WebSocketDenied) as info:
                async with client.websocket_connect(path):
                    pytest.fail("an unknown path was accepted")
            assert info.value.status_code == 404
            assert json.loads(info.value.body) == {"detail": f"no WebSocket route for {shown}"}
            assert len(info.value.body) < 200


@pytest.mark.parametrize("steps", [0, 1, 2])
async def test_a_client_that_leaves_during_the_handshake_is_no_error(
    steps: int, caplog: pytest.LogCaptureFixture
) -> None:
    # The server delivers the handshake and, right behind it, the disconnect: the
    # handler's accept() sees the peer gone, it is cancelled and its finally runs.
    ends: list[str] = []
    messages = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1006}]

    async def receive() -> Message:
        for _ in range(steps):
            await anyio.lowlevel.checkpoint()
        if messages:
            return messages.pop(0)
        await anyio.sleep_forever()
        raise AssertionError

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def handler(ws: WebSocket) -> None:
        try:
            await ws.accept()  # may see the peer gone (WebSocketDisconnect), or succeed
            await anyio.sleep_forever()  # and then be cancelled
        finally:
            ends.append("finally")

    scope = {"type": "websocket", "path": "/echo", "headers": []}
    with anyio.fail_after(1):  # well under drain_timeout: the peer's leaving was seen
        await plait.serve_connection(scope, receive, send, handler)
    assert ends == ["finally"]
    assert [m["type"] for m in sent] in ([], ["websocket.accept"])  # nothing after that
    _no_errors(caplog)


@pytest.mark.parametrize("since", ["abc", "%00", "9" * 5000, "1-2-3", "-1"])
async def test_a_malformed_since_closes_the_chat_with_1008(
    since: str, caplog: pytest.LogCaptureFixture
) -> None:
    from urllib.parse import quote

    from examples.chat import app as chat_app

    async with (
        AsyncTestClient(chat_app) as client,
        client.websocket_connect(f"/chat/lobby?name=eve&since={quote(since)}") as ws,
    ):
        disconnect = await closed(ws)
    assert (disconnect.code, disconnect.reason) == (1008, "invalid since: not a message id")
    _no_errors(caplog)


async def test_hub_subscribe_refuses_a_malformed_since_before_subscribing() -> None:
    from plait.channels import Hub, InvalidResume, MemoryBackend

    async with Hub(MemoryBackend(history=10)) as hub:
        for since in ("abc", "9" * 5000, {"room": "x-1"}):
            with pytest.raises(InvalidResume, match="is not a message id"):
                async with hub.subscribe("room", since=since):
                    pytest.fail("subscribed with a malformed since")
        assert hub.statistics() == {"channels": 0, "subscriptions": 0}


async def test_hypercorns_busy_resource_error_at_the_close_is_the_peer_leaving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # hypercorn's trio worker raises trio.BusyResourceError when the app sends while it
    # answers the peer's close frame: the peer is leaving, nothing failed on our side.
    import trio

    ends: list[str] = []
    connected: list[bool] = []
    answered = anyio.Event()  # hypercorn answered the peer's close

    async def receive() -> Message:
        if not connected:
            connected.append(True)
            return {"type": "websocket.connect"}
        await answered.wait()
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        if message["type"] == "websocket.send":
            answered.set()
            raise trio.BusyResourceError("another task is currently sending data")

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        try:
            await ws.send_text("hello")
            await anyio.sleep_forever()
        except plait.WebSocketDisconnect:
            ends.append("disconnect")
        finally:
            ends.append("finally")

    scope = {"type": "websocket", "path": "/busy", "headers": []}
    caplog.set_level(logging.DEBUG, logger="plait")
    with anyio.fail_after(1):
        await plait.serve_connection(scope, receive, send, handler)
    assert ends[-1] == "finally"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    # Logged at DEBUG, as a failing OSError is (issue 11, point 8), with what happened.
    [record] = [r for r in caplog.records if r.getMessage() == "send failed: the peer is gone"]
    assert record.levelno == logging.DEBUG
    assert record.exc_info is not None
    assert type(record.exc_info[1]) is trio.BusyResourceError
