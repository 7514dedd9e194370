"""AsyncTestClient and AsyncWebSocketTestSession, against small raw ASGI applications."""

from __future__ import annotations

import base64
import time
from typing import Any

import anyio
import pytest

from plait import MessageDecodeError, MessageTypeError, WebSocketClosed, WebSocketDisconnect
from plait.testing import (
    AsyncTestClient,
    AsyncWebSocketTestSession,
    LifespanError,
    WebSocketDenied,
)

pytestmark = pytest.mark.anyio


async def serve_lifespan(receive: Any, send: Any, log: list[str] | None = None) -> None:
    while True:
        message = await receive()
        if log is not None:
            log.append(message["type"])
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        reply = {"type": "websocket.send"}
        if message.get("text") is not None:
            reply["text"] = message["text"]
        else:
            reply["bytes"] = message["bytes"]
        await send(reply)


def websocket_app(handler: Any) -> Any:
    """An application that answers lifespan and runs ``handler`` for WebSocket scopes."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
        else:
            await handler(scope, receive, send)

    return app


async def test_echo_text_bytes_and_json() -> None:
    async with AsyncTestClient(echo_app) as client, client.websocket_connect("/") as ws:
        await ws.send_text("hello")
        assert await ws.receive_text() == "hello"
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes() == b"\x00\x01"
        await ws.send_json({"a": [1, 2]})
        assert await ws.receive_json() == {"a": [1, 2]}
        await ws.send_json({"b": None}, mode="binary")
        assert await ws.receive_json(mode="binary") == {"b": None}
        await ws.send({"type": "websocket.receive", "text": "raw"})
        assert await ws.receive() == {"type": "websocket.send", "text": "raw"}


async def test_scope() -> None:
    scopes: list[Any] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await receive()
        await send({"type": "websocket.accept"})

    client = AsyncTestClient(
        websocket_app(handler), base_url="wss://example.org:8443", root_path="/api"
    )
    async with client:
        path = "/chat/a%20b?x=1&y=2"
        headers = {"Authorization": "Bearer t", "Host": "override"}
        async with client.websocket_connect(path, ["v1", "v2"], headers):
            pass
    scope = scopes[0]
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "wss"
    assert scope["server"] == ("example.org", 8443)
    assert scope["client"] == ("testclient", 50000)
    assert scope["path"] == "/chat/a b"
    assert scope["raw_path"] == b"/chat/a%20b"
    assert scope["query_string"] == b"x=1&y=2"
    assert scope["root_path"] == "/api"
    assert scope["subprotocols"] == ["v1", "v2"]
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["state"] == {}
    headers_seen = dict(scope["headers"])
    assert len(headers_seen) == len(scope["headers"])  # overridden, not duplicated
    assert headers_seen[b"host"] == b"override"
    assert headers_seen[b"authorization"] == b"Bearer t"
    assert headers_seen[b"connection"] == b"upgrade"
    assert headers_seen[b"upgrade"] == b"websocket"
    assert headers_seen[b"sec-websocket-version"] == b"13"
    assert headers_seen[b"sec-websocket-protocol"] == b"v1, v2"
    assert len(base64.b64decode(headers_seen[b"sec-websocket-key"], validate=True)) == 16


async def test_subprotocol_and_accept_headers() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        accept = {"subprotocol": scope["subprotocols"][-1], "headers": [(b"X-Id", b"7")]}
        await send({"type": "websocket.accept", **accept})
        await receive()

    async with (
        AsyncTestClient(websocket_app(handler)) as client,
        client.websocket_connect("/", subprotocols=["a", "b"]) as ws,
    ):
        assert ws.subprotocol == "b"
        assert ws.accept_headers == [("x-id", "7")]


async def test_close_before_accept_is_denied_with_403() -> None:
    disconnects: list[Any] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})
        disconnects.append(await receive())

    async with AsyncTestClient(websocket_app(handler)) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/"):
                pytest.fail("the connection must not open")
    assert (info.value.status_code, info.value.headers, info.value.body) == (403, [], b"")
    assert "403 Forbidden" in str(info.value)
    assert disconnects[0]["type"] == "websocket.disconnect"


async def test_denial_response_carries_status_headers_and_body() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"content-type", b"text/plain")]
        start = {"type": "websocket.http.response.start", "status": 401, "headers": headers}
        await send(start)
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"token"})

    async with AsyncTestClient(websocket_app(handler)) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/"):
                pytest.fail("the connection must not open")
    assert info.value.status_code == 401
    assert info.value.headers == [("content-type", "text/plain")]
    assert info.value.body == b"no token"
    assert str(info.value) == (
        "the application denied the WebSocket connection with HTTP 401 Unauthorized: no token"
    )


async def test_returning_without_accepting_is_denied_with_500() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    async with AsyncTestClient(websocket_app(handler)) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/"):
                pytest.fail("the connection must not open")
    assert info.value.status_code == 500


async def test_exception_before_accepting() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("no route")

    async with AsyncTestClient(websocket_app(handler)) as client:
        with pytest.raises(LookupError, match="no route"):
            async with client.websocket_connect("/"):
                pytest.fail("the connection must not open")
    quiet = AsyncTestClient(websocket_app(handler), raise_server_exceptions=False)
    async with quiet:
        with pytest.raises(WebSocketDenied) as info:
            async with quiet.websocket_connect("/"):
                pytest.fail("the connection must not open")
    assert info.value.status_code == 500


async def test_protocol_violation_is_raised_in_the_application() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.send", "text": "too early"})

    async with AsyncTestClient(websocket_app(handler)) as client:
        with pytest.raises(RuntimeError, match=r"'websocket\.send'"):
            async with client.websocket_connect("/"):
                pytest.fail("the connection must not open")


async def test_server_close_raises_websocket_disconnect() -> None:
    replies: list[Any] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "last words"})
        await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
        await send({"type": "websocket.send", "text": "dropped"})
        replies.append(await receive())

    async with (
        AsyncTestClient(websocket_app(handler)) as client,
        client.websocket_connect("/") as ws,
    ):
        assert await ws.receive_text() == "last words"
        for _ in range(2):
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
            assert (info.value.code, info.value.reason) == (4001, "bye")
        await ws.send_text("ignored")  # the application has closed: dropped
    assert replies == [{"type": "websocket.disconnect", "code": 4001, "reason": "bye"}]


async def test_client_close_delivers_disconnect_after_pending_messages() -> None:
    received: list[Any] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await anyio.sleep(0.05)  # let the client queue everything first
        for _ in range(4):
            received.append(await receive())

    async with (
        AsyncTestClient(websocket_app(handler)) as client,
        client.websocket_connect("/") as ws,
    ):
        await ws.send_text("one")
        await ws.close(4000, "done")
        await ws.close()  # closing again does nothing
        with pytest.raises(WebSocketClosed, match="client closed"):
            await ws.receive_text()
        with pytest.raises(WebSocketClosed, match="client already closed"):
            await ws.send_text("two")
    disconnect = {"type": "websocket.disconnect", "code": 4000, "reason": "done"}
    assert received == [
        {"type": "websocket.receive", "text": "one"},
        disconnect,
        disconnect,
        disconnect,
    ]


async def test_returning_after_accept_closes_with_1011() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async with (
        AsyncTestClient(websocket_app(handler)) as client,
        client.websocket_connect("/") as ws,
    ):
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive()
    assert info.value.code == 1011


async def test_wrong_message_kind_and_invalid_json() -> None:
    async with AsyncTestClient(echo_app) as client, client.websocket_connect("/") as ws:
        await ws.send_text("text")
        with pytest.raises(MessageTypeError, match="expected a binary message, got a text"):
            await ws.receive_bytes()
        await ws.send_bytes(b"data")
        with pytest.raises(MessageTypeError, match="expected a text message, got a binary"):
            await ws.receive_text()
        await ws.send_text("{not json")
        with pytest.raises(MessageDecodeError):
            await ws.receive_json()


async def test_receive_times_out_quickly() -> None:
    async with AsyncTestClient(echo_app) as client, client.websocket_connect("/") as ws:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no message from the application within 0\.1 s"):
            await ws.receive_text(timeout=0.1)
        assert time.monotonic() - started < 2
        await ws.send_text("still open")
        assert await ws.receive_text() == "still open"


async def test_handshake_times_out() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await anyio.sleep_forever()

    async with AsyncTestClient(websocket_app(handler), timeout=0.1) as client:
        with pytest.raises(TimeoutError, match="did not accept or deny"):
            async with client.websocket_connect("/"):
                pytest.fail("the connection must not open")


async def test_application_ignoring_the_disconnect_fails_the_exit() -> None:
    cancelled = anyio.Event()

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with AsyncTestClient(websocket_app(handler), timeout=0.2) as client:
        with pytest.raises(TimeoutError, match=r"did not finish within 0\.2 s after the client"):
            async with client.websocket_connect("/"):
                pass
        assert cancelled.is_set()


async def flood(ws: AsyncWebSocketTestSession) -> None:
    for _ in range(1000):
        await ws.send_text("x")


async def test_full_buffer_makes_send_time_out() -> None:
    release = anyio.Event()
    received: list[Any] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()  # not receiving until then
        while (message := await receive())["type"] != "websocket.disconnect":
            received.append(message)

    async with (
        AsyncTestClient(websocket_app(handler), timeout=0.1) as client,
        client.websocket_connect("/") as ws,
    ):
        with pytest.raises(TimeoutError, match=r"did not receive a message within 0\.1 s"):
            await flood(ws)
        release.set()
    assert 10 < len(received) < 1000


@pytest.mark.parametrize(("policy", "outcome"), [("drop", "sent"), ("raise", "OSError")])
async def test_send_after_disconnect(policy: Any, outcome: str) -> None:
    outcomes: list[str] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            outcomes.append(f"OSError: {exc}")
        else:
            outcomes.append("sent")

    client = AsyncTestClient(websocket_app(handler), send_after_disconnect=policy)
    async with client, client.websocket_connect("/"):
        pass
    assert outcomes == [outcome if outcome == "sent" else "OSError: client disconnected"]


async def test_application_exception_is_raised_from_receive_once() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "before"})
        await receive()
        raise ValueError("boom")

    async with (
        AsyncTestClient(websocket_app(handler)) as client,
        client.websocket_connect("/") as ws,
    ):
        await ws.send_text("go")
        assert await ws.receive_text() == "before"
        with pytest.raises(ValueError, match="boom"):
            await ws.receive_text()
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
        assert info.value.code == 1011


async def test_application_exception_is_raised_on_exit() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise ValueError("after disconnect")

    async with AsyncTestClient(websocket_app(handler)) as client:
        with pytest.raises(ValueError, match="after disconnect"):
            async with client.websocket_connect("/"):
                pass
    quiet = AsyncTestClient(websocket_app(handler), raise_server_exceptions=False)
    async with quiet, quiet.websocket_connect("/"):
        pass


async def test_error_in_the_block_is_not_wrapped() -> None:
    with pytest.raises(KeyError):
        async with AsyncTestClient(echo_app) as client, client.websocket_connect("/"):
            raise KeyError("from the test")


async def test_lifespan_startup_and_shutdown_and_state() -> None:
    log: list[str] = []
    states: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            scope["state"]["db"] = "connected"
            await serve_lifespan(receive, send, log)
            return
        states.append(scope["state"])
        await receive()
        await send({"type": "websocket.accept"})
        await receive()

    async with AsyncTestClient(app) as client:
        assert log == ["lifespan.startup"]
        async with client.websocket_connect("/"):
            pass
    assert log == ["lifespan.startup", "lifespan.shutdown"]
    assert states == [{"db": "connected"}]


async def test_application_without_lifespan_support() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError("only WebSocket")
        await echo_app(scope, receive, send)

    async with AsyncTestClient(app) as client, client.websocket_connect("/") as ws:
        await ws.send_text("works")
        assert await ws.receive_text() == "works"


@pytest.mark.parametrize("phase", ["startup", "shutdown"])
async def test_lifespan_failure(phase: str) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            kind = message["type"].split(".")[1]
            outcome = "failed" if kind == phase else "complete"
            await send({"type": f"lifespan.{kind}.{outcome}", "message": f"no {kind}"})

    with pytest.raises(LifespanError, match=f"no {phase}"):
        async with AsyncTestClient(app):
            pass


async def test_connecting_requires_a_running_client() -> None:
    client = AsyncTestClient(echo_app)
    with pytest.raises(RuntimeError, match="async with AsyncTestClient"):
        async with client.websocket_connect("/"):
            pytest.fail("the connection must not open")


async def test_cancelling_the_test_cancels_the_application() -> None:
    cancelled = anyio.Event()

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    async with AsyncTestClient(websocket_app(handler)) as client:
        with anyio.move_on_after(0.05) as scope:
            async with client.websocket_connect("/"):
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert cancelled.is_set()


async def test_application_ignoring_the_disconnect_after_a_denial() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})
        await anyio.sleep_forever()

    async with AsyncTestClient(websocket_app(handler), timeout=0.1) as client:
        with pytest.raises(TimeoutError, match=r"after it denied the connection \(HTTP 403\)"):
            async with client.websocket_connect("/"):
                pytest.fail("the connection must not open")
