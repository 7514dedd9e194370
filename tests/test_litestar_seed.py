"""The Litestar seed's examples (seeds/litestar-websockets.md), written with plait's names.

What maps to what:

- ``@websocket`` is ``@plait.websocket``, ``@websocket_listener`` is ``@plait.listener``,
  ``@websocket_stream`` is ``@plait.stream``, ``WebsocketListener`` is ``plait.Listener``;
- ``dependencies={"user": Provide(get_user)}`` is ``dependencies={"user": get_user}``;
- pydantic models are msgspec Structs; ``asyncio.sleep`` is ``anyio.sleep``;
- a Litestar app is a ``plait.App``, and ``litestar.testing.TestClient`` is
  ``plait.testing.TestClient`` (or ``AsyncTestClient`` in async tests).

The seed's snippets all use ``/ws`` and similar paths, so each test serves its example in
an App of its own. Helpers the seed leaves undefined (``process_binary``,
``create_connection``, ``verify_token``, ``notification_queue``...) are small stand-ins.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from datetime import datetime

import anyio
import httpx
import msgspec
import pytest
from litestar import Controller, Litestar, get

import plait
from plait import App, MessageDecodeError, WebSocket, WebSocketDisconnect
from plait.testing import AsyncTestClient, TestClient, WebSocketDenied
from plait.types import ASGIApp, Receive, Scope, Send

pytestmark = pytest.mark.anyio

logger = logging.getLogger(__name__)


# -- WebSocket Handler (Low-level) ----------------------------------------------------------


@plait.websocket("/ws")
async def ws_handler(socket: WebSocket) -> None:
    await socket.accept()

    try:
        while True:
            # Receive text
            message = await socket.receive_text()
            await socket.send_text(f"Echo: {message}")

            # Or receive JSON
            data = await socket.receive_json()
            await socket.send_json({"received": data})

            # Or receive bytes
            binary = await socket.receive_bytes()
            await socket.send_bytes(binary)

    except WebSocketDisconnect:
        print("Client disconnected")
    finally:
        await socket.close()


low_level_app = App(routes=[ws_handler])


async def test_low_level_handler(capsys: pytest.CaptureFixture[str]) -> None:
    async with (
        AsyncTestClient(low_level_app) as client,
        client.websocket_connect("/ws") as ws,
    ):
        for round_ in range(2):  # the loop goes round: text, JSON, bytes, text...
            await ws.send_text(f"Hello {round_}")
            assert await ws.receive_text() == f"Echo: Hello {round_}"
            await ws.send_json({"message": "test", "round": round_})
            assert await ws.receive_json() == {"received": {"message": "test", "round": round_}}
            await ws.send_bytes(b"\x00\x01\xff")
            assert await ws.receive_bytes() == b"\x00\x01\xff"
    # Leaving the block waits for the handler: the disconnect reached it as the exception.
    assert capsys.readouterr().out == "Client disconnected\n"


# -- Testing WebSockets: the seed's own test, of the low-level handler above ---------------

app = low_level_app


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_websocket(backend: str) -> None:
    with TestClient(app=app, backend=backend) as client:  # noqa: SIM117 - the seed as written
        with client.websocket_connect("/ws") as ws:
            ws.send_text("Hello")
            response = ws.receive_text()
            assert response == "Echo: Hello"

            ws.send_json({"message": "test"})
            response = ws.receive_json()
            assert response == {"received": {"message": "test"}}


# -- WebSocket Listener (High-level): Basic Listener ----------------------------------------


@plait.listener("/ws")
async def echo_listener(data: str) -> str:
    return f"Echo: {data}"


async def test_basic_listener() -> None:
    async with (
        AsyncTestClient(App(routes=[echo_listener])) as client,
        client.websocket_connect("/ws") as ws,
    ):
        await ws.send_text("Hello")
        assert await ws.receive_text() == "Echo: Hello"
        await ws.send_text("again")
        assert await ws.receive_text() == "Echo: again"


# -- JSON Data --------------------------------------------------------------------------------


class Message(msgspec.Struct):
    user: str
    content: str


@plait.listener("/chat")
async def chat_listener(data: Message) -> dict:
    return {"user": data.user, "response": f"Received: {data.content}"}


async def test_json_data() -> None:
    async with (
        AsyncTestClient(App(routes=[chat_listener])) as client,
        client.websocket_connect("/chat") as ws,
    ):
        await ws.send_json({"user": "ada", "content": "hi"})
        assert await ws.receive_json() == {"user": "ada", "response": "Received: hi"}
        # Where pydantic would fail validation, the listener closes with 1007 (invalid
        # payload data) and a reason naming the field.
        await ws.send_json({"user": "ada"})
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_text()
    assert info.value.code == 1007
    assert "`content`" in info.value.reason


# -- Binary Data ------------------------------------------------------------------------------


def process_binary(data: bytes) -> bytes:
    return data[::-1]


@plait.listener("/binary")
async def binary_listener(data: bytes) -> bytes:
    # Process binary data
    processed = process_binary(data)
    return processed


async def test_binary_data() -> None:
    async with (
        AsyncTestClient(App(routes=[binary_listener])) as client,
        client.websocket_connect("/binary") as ws,
    ):
        await ws.send_bytes(b"\x01\x02\x03\xff")
        assert await ws.receive_bytes() == b"\xff\x03\x02\x01"


# -- Accessing WebSocket Instance -------------------------------------------------------------


@plait.listener("/ws")
async def listener_with_socket(data: str, socket: WebSocket) -> str:
    # Access connection info
    client = socket.client
    headers = socket.headers

    # Send to specific client
    await socket.send_text(f"Hello {client.host} ({headers['x-app']})")

    return f"Received: {data}"


async def test_accessing_websocket_instance() -> None:
    async with (
        AsyncTestClient(App(routes=[listener_with_socket]), client=("10.0.0.7", 4321)) as client,
        client.websocket_connect("/ws", headers={"X-App": "seed"}) as ws,
    ):
        await ws.send_text("one")
        # What the listener sends itself goes out before its return value.
        assert await ws.receive_text() == "Hello 10.0.0.7 (seed)"
        assert await ws.receive_text() == "Received: one"


# -- Dependency Injection ---------------------------------------------------------------------


class User(msgspec.Struct):
    name: str


USERS = {"t-ada": User("Ada"), "t-bob": User("Bob")}


async def get_user(token: str) -> User:
    # ``token`` is not a path parameter, so it is read from the query string.
    if token not in USERS:
        raise plait.Deny(401, "unknown token")
    return USERS[token]


@plait.listener("/ws", dependencies={"user": get_user})
async def secured_listener(data: str, user: User) -> str:
    return f"Hello {user.name}, you sent: {data}"


async def test_dependency_injection() -> None:
    async with AsyncTestClient(App(routes=[secured_listener])) as client:
        async with client.websocket_connect("/ws?token=t-ada") as ws:
            await ws.send_text("hi")
            assert await ws.receive_text() == "Hello Ada, you sent: hi"
        async with client.websocket_connect("/ws?token=t-bob") as ws:
            await ws.send_text("yo")
            assert await ws.receive_text() == "Hello Bob, you sent: yo"
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket_connect("/ws?token=nope"):
                pass
        assert denied.value.status_code == 401
        assert msgspec.json.decode(denied.value.body) == {"detail": "unknown token"}
        with pytest.raises(WebSocketDenied) as missing:
            async with client.websocket_connect("/ws"):
                pass
        assert missing.value.status_code == 400


# -- Yield Dependencies -----------------------------------------------------------------------


class Connection:
    """A stand-in database connection: it counts the queries it served."""

    def __init__(self) -> None:
        self.queries = 0
        self.closed = False
        OPENED.append(self)

    async def query(self, sql: str) -> tuple[int, str]:
        await anyio.lowlevel.checkpoint()
        assert not self.closed, "queried a closed connection"
        self.queries += 1
        return (self.queries, sql.upper())

    async def close(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.closed = True


OPENED: list[Connection] = []


async def create_connection() -> Connection:
    await anyio.lowlevel.checkpoint()
    return Connection()


async def get_db_connection() -> AsyncGenerator[Connection, None]:
    conn = await create_connection()
    try:
        yield conn
    finally:
        await conn.close()


@plait.listener("/ws", dependencies={"db": get_db_connection})
async def db_listener(data: str, db: Connection) -> str:
    # Connection held for entire WebSocket session
    result = await db.query(data)
    return str(result)


async def test_yield_dependencies() -> None:
    OPENED.clear()
    async with AsyncTestClient(App(routes=[db_listener])) as client:
        async with client.websocket_connect("/ws") as ws:
            await ws.send_text("select 1")
            assert await ws.receive_text() == "(1, 'SELECT 1')"
            await ws.send_text("select 2")
            assert await ws.receive_text() == "(2, 'SELECT 2')"  # the same connection
            assert [c.closed for c in OPENED] == [False]
        # Leaving the block waits for the application: the teardown has run.
        assert [(c.queries, c.closed) for c in OPENED] == [(2, True)]
        async with client.websocket_connect("/ws") as ws:
            await ws.send_text("select 3")
            assert await ws.receive_text() == "(1, 'SELECT 3')"  # a new one per session
    assert [(c.queries, c.closed) for c in OPENED] == [(2, True), (1, True)]


# -- WebSocket Streams: Basic Stream ----------------------------------------------------------


@plait.stream("/time")
async def time_stream() -> AsyncGenerator[str, None]:
    """Stream current time every second"""
    while True:
        yield datetime.now().isoformat()
        await anyio.sleep(1)


async def test_basic_stream() -> None:
    async with (
        AsyncTestClient(App(routes=[time_stream])) as client,
        client.websocket_connect("/time") as ws,
    ):
        before = datetime.now()
        first = datetime.fromisoformat(await ws.receive_text(timeout=2))
        assert abs((first - before).total_seconds()) < 1
        with pytest.raises(TimeoutError):  # the next one comes a second later
            await ws.receive_text(timeout=0.3)


# -- Stream with Serialization ----------------------------------------------------------------


class StatusUpdate(msgspec.Struct):
    status: str
    progress: float
    timestamp: datetime


@plait.stream("/progress")
async def progress_stream(task_id: str) -> AsyncGenerator[StatusUpdate, None]:
    for i in range(100):
        yield StatusUpdate(status="processing", progress=i / 100, timestamp=datetime.now())
        await anyio.sleep(0.1)


async def test_stream_with_serialization() -> None:
    async with (
        AsyncTestClient(App(routes=[progress_stream])) as client,
        client.websocket_connect("/progress?task_id=t1") as ws,
    ):
        updates = [await ws.receive_json() for _ in range(3)]  # then the client leaves
    assert [(u["status"], u["progress"]) for u in updates] == [
        ("processing", 0.0),
        ("processing", 0.01),
        ("processing", 0.02),
    ]
    stamps = [datetime.fromisoformat(u["timestamp"]) for u in updates]
    assert stamps == sorted(stamps)
    # the query parameter is required, as a path-less argument of the stream
    async with AsyncTestClient(App(routes=[progress_stream])) as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket_connect("/progress"):
                pass
    assert denied.value.status_code == 400


# -- Stream with Direct Socket Access ---------------------------------------------------------


class NotificationQueue:
    """A stand-in for the seed's ``notification_queue``: notifications per user."""

    def __init__(self) -> None:
        self.pending: dict[int, list[dict]] = {}

    async def subscribe(self, user_id: int) -> AsyncGenerator[dict, None]:
        for notification in self.pending.get(user_id, []):
            await anyio.lowlevel.checkpoint()
            yield notification


notification_queue = NotificationQueue()


@plait.stream("/notifications")
async def notification_stream(socket: WebSocket) -> AsyncGenerator[dict, None]:
    user_id = socket.scope.get("user_id")

    async for notification in notification_queue.subscribe(user_id):
        yield notification


def with_user_id(asgi_app: App, user_id: int) -> ASGIApp:
    """Middleware putting ``user_id`` in the scope, as an auth middleware would."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        await asgi_app({**scope, "user_id": user_id}, receive, send)

    return middleware


async def test_stream_with_direct_socket_access() -> None:
    notification_queue.pending = {
        7: [{"id": 1, "text": "welcome"}, {"id": 2, "text": "you have mail"}],
        8: [{"id": 3, "text": "not for user 7"}],
    }
    notifications_app = with_user_id(App(routes=[notification_stream]), 7)
    async with (
        AsyncTestClient(notifications_app) as client,
        client.websocket_connect("/notifications") as ws,
    ):
        assert await ws.receive_json() == {"id": 1, "text": "welcome"}
        assert await ws.receive_json() == {"id": 2, "text": "you have mail"}
        # The only stream is over: the connection closes normally.
        with pytest.raises(WebSocketDisconnect) as info:
            await ws.receive_json()
    assert info.value.code == 1000


# -- Class-Based WebSocket Listeners ----------------------------------------------------------
# ``join_room``, ``broadcast_to_room`` and ``leave_room`` are the user's own methods in the
# seed; here they keep the rooms in a dictionary and broadcast by sending on the other
# members' sockets (the Broadcasting section's channels are another matter, see below).

TOKENS = {"ada-token": User("ada"), "bob-token": User("bob")}
ROOMS: dict[str, dict[str, WebSocket]] = {}
LEFT: dict[str, anyio.Event] = {}


async def verify_token(token: str) -> User:
    await anyio.lowlevel.checkpoint()
    return TOKENS[token]


class ChatHandler(plait.Listener):
    path = "/chat"

    async def on_accept(self, socket: WebSocket) -> None:
        """Called when connection is accepted"""
        user = await self.authenticate(socket)
        socket.scope["user"] = user
        await self.join_room(user, "general", socket)

    async def on_receive(self, data: str, socket: WebSocket) -> str:
        """Handle incoming message"""
        user = socket.scope["user"]
        await self.broadcast_to_room(user, "general", data)
        return f"{user.name}: {data}"

    async def on_disconnect(self, socket: WebSocket) -> None:
        """Called on disconnect"""
        user = socket.scope.get("user")
        if user:
            await self.leave_room(user, "general")

    async def authenticate(self, socket: WebSocket) -> User:
        token = socket.headers.get("authorization", "").replace("Bearer ", "")
        return await verify_token(token)

    async def join_room(self, user: User, room: str, socket: WebSocket) -> None:
        ROOMS.setdefault(room, {})[user.name] = socket
        await anyio.lowlevel.checkpoint()

    async def broadcast_to_room(self, user: User, room: str, data: str) -> None:
        for name, member in list(ROOMS.get(room, {}).items()):
            if name != user.name:
                await member.send_text(f"[{room}] {user.name}: {data}")

    async def leave_room(self, user: User, room: str) -> None:
        ROOMS.get(room, {}).pop(user.name, None)
        LEFT[user.name].set()
        await anyio.lowlevel.checkpoint()


async def test_class_based_listener() -> None:
    ROOMS.clear()
    LEFT.update(ada=anyio.Event(), bob=anyio.Event())
    async with AsyncTestClient(App(routes=[ChatHandler])) as client:
        async with (
            client.websocket_connect("/chat", headers={"Authorization": "Bearer ada-token"}) as ada,
            client.websocket_connect("/chat", headers={"Authorization": "Bearer bob-token"}) as bob,
        ):
            await ada.send_text("hello")
            assert await ada.receive_text() == "ada: hello"
            assert await bob.receive_text() == "[general] ada: hello"
            await bob.send_text("hi ada")
            assert await bob.receive_text() == "bob: hi ada"
            assert await ada.receive_text() == "[general] bob: hi ada"
            assert sorted(ROOMS["general"]) == ["ada", "bob"]
            await bob.close()
            # on_disconnect runs once bob's connection is over; ada's goes on.
            with anyio.fail_after(2):
                await LEFT["bob"].wait()
            assert list(ROOMS["general"]) == ["ada"]
            await ada.send_text("anyone?")
            assert await ada.receive_text() == "ada: anyone?"
        assert LEFT["ada"].is_set()
        assert ROOMS["general"] == {}


# -- Custom Connection Handling: Connection Acceptance ----------------------------------------


async def custom_accept(socket: WebSocket) -> None:
    # Custom headers or subprotocols
    await socket.accept(headers=[(b"X-Custom", b"value")], subprotocol="chat-v1")


@plait.listener("/ws", connection_accept_handler=custom_accept)
async def listener(data: str) -> str:
    return data


async def test_connection_acceptance() -> None:
    async with (
        AsyncTestClient(App(routes=[listener])) as client,
        client.websocket_connect("/ws", subprotocols=["chat-v1"]) as ws,
    ):
        assert ws.subprotocol == "chat-v1"
        assert ("x-custom", "value") in ws.accept_headers
        await ws.send_text("same")
        assert await ws.receive_text() == "same"


# -- Rejecting Connections --------------------------------------------------------------------


async def validate_token(token: str | None) -> bool:
    await anyio.lowlevel.checkpoint()
    return token == "letmein"


@plait.websocket("/ws")
async def secured_ws(socket: WebSocket) -> None:
    token = socket.query_params.get("token")

    if not await validate_token(token):
        await socket.close(code=4001, reason="Invalid token")
        return

    await socket.accept()
    # ... handle connection
    await socket.send_text("welcome")


async def test_rejecting_connections() -> None:
    async with AsyncTestClient(App(routes=[secured_ws])) as client:
        # A close before accept refuses the handshake: ASGI (and so every server) turns
        # it into HTTP 403, and the client never sees the code 4001 nor the reason.
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket_connect("/ws?token=wrong"):
                pass
        assert denied.value.status_code == 403
        async with client.websocket_connect("/ws?token=letmein") as ws:
            assert await ws.receive_text() == "welcome"
            with pytest.raises(WebSocketDisconnect) as info:
                await ws.receive_text()
            assert info.value.code == 1000


# -- Broadcasting -----------------------------------------------------------------------------
# Not translated: it needs plait.channels (in-memory and Redis channel backends), which
# does not exist yet.


# -- WebSocket with HTTP Together -------------------------------------------------------------
# plait has no controllers: the HTTP half stays a Litestar app, the App's fallback for
# HTTP requests, and the WebSocket half is a plait route under the controller's path.

HISTORY: list[Message] = []


async def save_message(data: str) -> None:
    await anyio.lowlevel.checkpoint()
    HISTORY.append(Message(user="live", content=data))


async def load_chat_history() -> list[Message]:
    await anyio.lowlevel.checkpoint()
    return list(HISTORY)


class ChatController(Controller):
    path = "/chat"

    @get("/history")
    async def get_history(self) -> list[Message]:
        return await load_chat_history()


@plait.listener("/chat/live")
async def live_chat(data: str) -> str:
    await save_message(data)
    return data


async def test_websocket_with_http_together() -> None:
    HISTORY.clear()
    together = App(routes=[live_chat], fallback=Litestar(route_handlers=[ChatController]))
    async with AsyncTestClient(together) as client:
        async with client.websocket_connect("/chat/live") as ws:
            await ws.send_text("first")
            assert await ws.receive_text() == "first"
            await ws.send_text("second")
            assert await ws.receive_text() == "second"
        transport = httpx.ASGITransport(app=together)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/chat/history")
    assert response.status_code == 200
    assert response.json() == [
        {"user": "live", "content": "first"},
        {"user": "live", "content": "second"},
    ]


# -- Error Handling ---------------------------------------------------------------------------
# Litestar's ``ValidationError`` (with ``errors()``) is ``plait.MessageDecodeError`` (its
# text names the failing field): plait raises it from ``receive_json`` for a message that
# is not JSON, and the typed decode in ``process_message`` converts msgspec's validation
# error into it at the boundary, as plait's typed listeners do. ``receive_text`` became
# ``receive_json`` so that there is something to validate.


class Order(msgspec.Struct):
    item: str
    quantity: int


async def process_message(message: object) -> dict:
    try:
        order = msgspec.convert(message, Order)
    except msgspec.ValidationError as exc:
        raise MessageDecodeError(f"invalid message: {exc}") from None
    await anyio.lowlevel.checkpoint()
    return {"item": order.item, "each": 12 // order.quantity}  # quantity 0: a server bug


@plait.websocket("/ws")
async def error_handling_ws(socket: WebSocket) -> None:
    await socket.accept()

    try:
        while True:
            try:
                message = await socket.receive_json()
                result = await process_message(message)
                await socket.send_json({"success": True, "data": result})
            except MessageDecodeError as e:
                await socket.send_json(
                    {"success": False, "error": "Validation failed", "details": [str(e)]}
                )
            except Exception:
                await socket.send_json({"success": False, "error": "Internal error"})
                logger.exception("WebSocket error")
    except WebSocketDisconnect:
        pass
    finally:
        await socket.close()


async def test_error_handling(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        AsyncTestClient(App(routes=[error_handling_ws])) as client,
        client.websocket_connect("/ws") as ws,
    ):
        await ws.send_json({"item": "egg", "quantity": 3})
        assert await ws.receive_json() == {"success": True, "data": {"item": "egg", "each": 4}}

        await ws.send_text("{not json")
        reply = await ws.receive_json()
        assert (reply["success"], reply["error"]) == (False, "Validation failed")
        assert reply["details"][0].startswith("invalid JSON message")

        await ws.send_json({"item": "egg"})
        reply = await ws.receive_json()
        assert (reply["success"], reply["error"]) == (False, "Validation failed")
        assert reply["details"] == ["invalid message: Object missing required field `quantity`"]

        await ws.send_json({"item": "egg", "quantity": "three"})
        reply = await ws.receive_json()
        assert reply["details"] == ["invalid message: Expected `int`, got `str` - at `$.quantity`"]

        assert not caplog.records
        await ws.send_json({"item": "egg", "quantity": 0})
        assert await ws.receive_json() == {"success": False, "error": "Internal error"}
        # The client is told nothing more; the server logs the error with its traceback.
        [record] = [r for r in caplog.records if r.name == __name__]
        assert record.getMessage() == "WebSocket error"
        assert record.exc_info is not None
        assert record.exc_info[0] is ZeroDivisionError

        # The loop goes on after every error.
        await ws.send_json({"item": "ham", "quantity": 6})
        assert await ws.receive_json() == {"success": True, "data": {"item": "ham", "each": 2}}
