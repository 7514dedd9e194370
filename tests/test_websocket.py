"""The WebSocket object's surface, alone on raw ASGI and under the engine, both backends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import plait
from plait import (
    DenialResponse,
    MessageDecodeError,
    MessageTypeError,
    WebSocket,
    WebSocketDisconnect,
    WebSocketState,
    WebSocketStateError,
)
from plait.testing import AsyncTestClient, WebSocketDenied
from plait.types import Receive, Scope, Send

pytestmark = pytest.mark.anyio

Handler = Callable[[WebSocket], Awaitable[Any]]


@pytest.fixture(params=["standalone", "engine"])
def mode(request: pytest.FixtureRequest) -> str:
    """Each test runs on the WebSocket alone and under serve_connection."""
    return str(request.param)


def make_app(handler: Handler, mode: str, *, extensions: bool = True) -> plait.types.ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError("no lifespan")
        if not extensions:
            scope["extensions"] = {}
        if mode == "engine":
            await plait.serve_connection(scope, receive, send, handler)
        else:
            await handler(WebSocket(scope, receive, send))

    return app


# -- the lilya seed's examples, as written with plait's import names ----------------------


async def seed_app(scope: Scope, receive: Receive, send: Send) -> None:
    websocket = WebSocket(scope=scope, receive=receive, send=send)
    await websocket.accept()
    await websocket.send_json({"message": "Hello, world!"}, mode="binary")
    await websocket.close()


async def seed_iter_app(scope: Scope, receive: Receive, send: Send) -> None:
    websocket = WebSocket(scope=scope, receive=receive, send=send)
    await websocket.accept()

    async for message in websocket.iter_json():
        data = {"message": f"Message text was: {message}"}
        await websocket.send_json(data, mode="binary")
    await websocket.close()


async def test_seed_example_sends_binary_json() -> None:
    async with AsyncTestClient(seed_app) as client, client.websocket_connect("/") as session:
        assert await session.receive_json(mode="binary") == {"message": "Hello, world!"}
        with pytest.raises(WebSocketDisconnect) as info:
            await session.receive()
    assert info.value.code == 1000


async def test_seed_iter_json_example_ends_on_disconnect() -> None:
    async with AsyncTestClient(seed_iter_app) as client, client.websocket_connect("/") as session:
        await session.send_json({"n": 1})
        assert await session.receive_json(mode="binary") == {
            "message": "Message text was: {'n': 1}"
        }
        await session.close()
    # leaving the block waited for the app: iter_json ended and close() was a no-op


# -- handshake ------------------------------------------------------------------------------


async def test_accept_with_subprotocol_and_headers(mode: str) -> None:
    async def handler(ws: WebSocket) -> None:
        assert ws.subprotocols == ["v2", "v1"]
        await ws.accept(subprotocol="v1", headers={"X-Server": "plait"})
        assert ws.application_state is WebSocketState.CONNECTED
        await ws.send_text(ws.headers["x-client"])
        await ws.close()

    async with (
        AsyncTestClient(make_app(handler, mode)) as client,
        client.websocket_connect("/", subprotocols=["v2", "v1"], headers={"X-Client": "c"}) as s,
    ):
        assert s.subprotocol == "v1"
        assert ("x-server", "plait") in s.accept_headers
        assert await s.receive_text() == "c"


async def test_close_before_accept_is_a_403(mode: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.close(code=4001, reason="Invalid token")

    async with AsyncTestClient(make_app(handler, mode)) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/"):
                pass
    assert info.value.status_code == 403


async def test_denial_response_with_body(mode: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.send_denial_response(DenialResponse({"detail": "no token"}, status_code=401))
        assert ws.application_state is WebSocketState.DISCONNECTED

    async with AsyncTestClient(make_app(handler, mode)) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/"):
                pass
    assert info.value.status_code == 401
    assert info.value.body == b'{"detail":"no token"}'
    assert ("content-type", "application/json") in info.value.headers


async def test_denial_response_needs_the_server_extension(mode: str) -> None:
    errors: list[Exception] = []

    async def handler(ws: WebSocket) -> None:
        try:
            await ws.send_denial_response(DenialResponse("no"))
        except RuntimeError as exc:
            errors.append(exc)
        await ws.close()

    async with AsyncTestClient(make_app(handler, mode, extensions=False)) as client:
        with pytest.raises(WebSocketDenied):
            async with client.websocket_connect("/"):
                pass
    assert "websocket.http.response" in str(errors[0])


async def test_denial_after_accept_and_double_accept_are_refused(mode: str) -> None:
    errors: list[str] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        for attempt in (ws.accept(), ws.send_denial_response(DenialResponse())):
            try:
                await attempt
            except WebSocketStateError as exc:
                errors.append(str(exc))
        await ws.close()

    async with (
        AsyncTestClient(make_app(handler, mode)) as client,
        client.websocket_connect("/") as session,
    ):
        with pytest.raises(WebSocketDisconnect):
            await session.receive()
    assert errors == [
        "cannot accept(): the WebSocket is already accepted",
        "cannot send a denial response: the WebSocket is already CONNECTED",
    ]


async def test_client_leaving_during_the_handshake(mode: str) -> None:
    outcome: list[object] = []

    async def handler(ws: WebSocket) -> None:
        try:
            await ws.accept()  # the client is gone before the handshake's first message
        except WebSocketDisconnect as exc:
            outcome.append(exc)
        outcome.append(ws.client_state)

    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        async def gone() -> dict[str, Any]:
            return {"type": "websocket.disconnect", "code": 1006}

        if mode == "engine":
            await plait.serve_connection(scope, gone, send, handler)
        else:
            await handler(WebSocket(scope, gone, send))

    async def never_called(message: object) -> None:
        raise AssertionError

    with anyio.fail_after(1):
        await raw_app({"type": "websocket", "path": "/", "headers": []}, _unused, never_called)
    assert len(outcome) == 2
    assert isinstance(outcome[0], WebSocketDisconnect)
    assert outcome[0].code == 1006
    assert outcome[1] is WebSocketState.DISCONNECTED


async def test_the_engine_cancels_a_handler_whose_client_left_before_it_accepted() -> None:
    outcome: list[str] = []

    async def handler(ws: WebSocket) -> None:
        try:
            await anyio.sleep_forever()  # busy before accept(): the client leaves meanwhile
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise

    async def gone() -> dict[str, Any]:
        return {"type": "websocket.disconnect", "code": 1006}

    async def never_called(message: object) -> None:
        raise AssertionError

    scope = {"type": "websocket", "path": "/", "headers": []}
    with anyio.fail_after(1):
        await plait.serve_connection(scope, gone, never_called, handler)
    assert outcome == ["cancelled"]


async def _unused() -> dict[str, Any]:
    raise AssertionError


# -- messages -----------------------------------------------------------------------------


async def test_text_bytes_and_json_both_ways(mode: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.send_bytes(await ws.receive_bytes())
        await ws.send_json(await ws.receive_json())
        await ws.send_json(await ws.receive_json(mode="binary"), mode="binary")
        await ws.close()

    async with (
        AsyncTestClient(make_app(handler, mode)) as client,
        client.websocket_connect("/") as s,
    ):
        await s.send_text("héllo")
        assert await s.receive_text() == "héllo"
        await s.send_bytes(b"\x00\xff")
        assert await s.receive_bytes() == b"\x00\xff"
        await s.send_json({"a": [1, 2.5, None, "x"]})
        assert await s.receive_json() == {"a": [1, 2.5, None, "x"]}
        await s.send_json({"b": True}, mode="binary")
        assert await s.receive_json(mode="binary") == {"b": True}


async def test_iterators_end_on_disconnect(mode: str) -> None:
    seen: list[Any] = []
    done = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            seen.append(text)
            if text == "switch":
                break
        async for data in ws.iter_bytes():
            seen.append(data)
        done.set()

    async with (
        AsyncTestClient(make_app(handler, mode)) as client,
        client.websocket_connect("/") as s,
    ):
        await s.send_text("a")
        await s.send_text("switch")
        await s.send_bytes(b"b")
        await anyio.wait_all_tasks_blocked()
        await s.close()
    assert seen == ["a", "switch", b"b"]
    # The loop ends, and what follows it runs (the engine cancels only the handler's
    # next checkpoint after the disconnect).
    assert done.is_set()


async def test_misuse_errors_name_the_problem(mode: str) -> None:
    errors: list[BaseException] = []

    async def handler(ws: WebSocket) -> None:
        try:
            await ws.receive_text()
        except WebSocketStateError as exc:
            errors.append(exc)
        await ws.accept()
        try:
            await ws.receive_text()
        except MessageTypeError as exc:
            errors.append(exc)
        try:
            await ws.receive_bytes()
        except MessageTypeError as exc:
            errors.append(exc)
        try:
            await ws.receive_json()
        except MessageDecodeError as exc:
            errors.append(exc)
        for bad in (ws.send_json(object()), ws.send_json(1, mode="xml")):  # type: ignore[arg-type]
            try:
                await bad
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        try:
            await ws.close(1006)
        except ValueError as exc:
            errors.append(exc)
        await ws.close()

    async with (
        AsyncTestClient(make_app(handler, mode)) as client,
        client.websocket_connect("/") as s,
    ):
        await s.send_bytes(b"12345")
        await s.send_text("text")
        await s.send_text("{broken")
        with pytest.raises(WebSocketDisconnect):
            await s.receive()
    messages = [str(e) for e in errors]
    assert messages[0].startswith("cannot receive before accept()")
    assert "CONNECTING" in messages[0]
    assert messages[1] == "expected a text message, received a binary message (5 bytes)"
    assert messages[2] == "expected a binary message, received a text message (4 characters)"
    assert messages[3].startswith("invalid JSON message")
    assert messages[4].startswith("cannot encode the message as JSON")
    assert "mode must be 'text' or 'binary'" in messages[5]
    assert "invalid close code 1006" in messages[6]


async def test_raw_send_and_receive(mode: str) -> None:
    async def handler(ws: WebSocket) -> None:
        assert (await ws.receive())["type"] == "websocket.connect"
        await ws.send({"type": "websocket.accept"})
        message = await ws.receive()
        await ws.send({"type": "websocket.send", "text": message["text"] + "!"})
        await ws.send({"type": "websocket.close", "code": 1000})

    async with (
        AsyncTestClient(make_app(handler, mode)) as client,
        client.websocket_connect("/") as s,
    ):
        await s.send_text("hi")
        assert await s.receive_text() == "hi!"


async def test_close_with_code_and_long_reason(mode: str) -> None:
    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(code=4321, reason="x" * 500)
        assert ws.close_code == 4321

    async with (
        AsyncTestClient(make_app(handler, mode)) as client,
        client.websocket_connect("/") as s,
    ):
        with pytest.raises(WebSocketDisconnect) as info:
            await s.receive()
    assert info.value.code == 4321
    assert info.value.reason == "x" * 123


async def test_standalone_send_to_a_server_that_raises_is_a_disconnect() -> None:
    outcome: list[BaseException] = []
    client_closed = anyio.Event()

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ready")
        await client_closed.wait()
        try:
            await ws.send_text("late")
        except WebSocketDisconnect as exc:
            outcome.append(exc)

    client = AsyncTestClient(make_app(handler, "standalone"), send_after_disconnect="raise")
    async with client, client.websocket_connect("/") as s:
        assert await s.receive_text() == "ready"
        await s.close()
        client_closed.set()
    assert len(outcome) == 1
    assert isinstance(outcome[0], plait.WebSocketClosed)


async def test_task_group_and_statistics_need_the_engine() -> None:
    async def nothing() -> dict[str, Any]:
        raise AssertionError

    async def nosend(message: object) -> None:
        raise AssertionError

    ws = WebSocket({"type": "websocket"}, nothing, nosend)
    with pytest.raises(WebSocketStateError, match="serve_connection"):
        _ = ws.task_group
    with pytest.raises(WebSocketStateError, match="serve_connection"):
        ws.statistics()
    assert repr(ws) == "<WebSocket '' application=CONNECTING peer=CONNECTING>"


async def test_after_the_peer_left_a_later_receive_or_send_raises_websocket_closed(
    mode: str,
) -> None:
    outcomes: list[BaseException] = []

    async def handler(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("ready")
        try:
            await ws.receive_text()
        except plait.WebSocketDisconnect as exc:
            outcomes.append(exc)  # the peer's leaving, as it happened
        for attempt in (ws.receive_text(), ws.receive(), ws.send_text("late")):
            try:
                await attempt
            except BaseException as exc:
                outcomes.append(exc)
        if mode == "standalone":
            await ws.close()  # a second close is harmless

    async with AsyncTestClient(make_app(handler, mode)) as client:
        async with client.websocket_connect("/") as session:
            assert await session.receive_text() == "ready"
            await session.close(4001, "bye")
        with anyio.fail_after(2):
            while len(outcomes) < 4:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    first, *later = outcomes
    assert (type(first), first.code) == (plait.WebSocketDisconnect, 4001)  # type: ignore[attr-defined]
    assert [type(exc) for exc in later] == [plait.WebSocketClosed] * 3
    assert all(exc.code == 4001 for exc in later)  # type: ignore[attr-defined]
    assert all("closed by the peer" in str(exc) for exc in later)
