"""WebSocket echo apps that hypercorn loads as ``benchmarks.apps:NAME``.

Every app in `NAMES` serves the same echo on any path: accept, then send each text or bytes
message back until the client disconnects. ``raw`` is the baseline the runner divides by;
the others are plait and its peers doing the same work.

Every app in `JSON_NAMES` serves a *typed* echo on ``/``: each text message is JSON that
msgspec decodes and validates into `ChatMessage`, and the Struct is encoded back as JSON
text. ``raw_json`` is their baseline: the same msgspec work on bare ASGI messages.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
from litestar import Litestar, websocket, websocket_listener
from litestar.connection import WebSocket as LitestarWebSocket
from litestar.exceptions import WebSocketDisconnect as LitestarDisconnect
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket as StarletteWebSocket
from starlette.websockets import WebSocketDisconnect as StarletteDisconnect

import plait as _plait
from benchmarks._asgi import ASGIApp as ASGIApp
from benchmarks._asgi import Message as Message
from benchmarks._asgi import Receive as Receive
from benchmarks._asgi import Scope as Scope
from benchmarks._asgi import Send as Send
from benchmarks._asgi import serve_lifespan as serve_lifespan
from plait._channel import Channel

NAMES = ("raw", "plait", "floor", "starlette", "litestar", "litestar_listener")
"""The echo apps: they send back any text, so they serve either payload."""
JSON_NAMES = ("raw_json", "plait_listener", "litestar_listener_typed")
"""The typed-echo apps: they only answer JSON that decodes into `ChatMessage`."""


class ChatMessage(msgspec.Struct):
    """The typed message of the `JSON_NAMES` apps (the client's ``json`` payload)."""

    user: str
    content: str


def unavailable_reason(name: str, payload: str = "text") -> str | None:
    """Say why an app cannot run in this environment or with this payload.

    Args:
        name: One of `NAMES` or `JSON_NAMES`.
        payload: The client's payload, ``"text"`` or ``"json"``.

    Returns:
        A sentence for the report, or None when the app can run.
    """
    if name not in NAMES + JSON_NAMES:
        return f"unknown app {name!r}; choose from {', '.join(NAMES + JSON_NAMES)}"
    if name in JSON_NAMES and payload != "json":
        return "it answers only JSON messages: run it with --payload json"
    if name == "plait" and not hasattr(_plait, "serve_connection"):
        return "plait.serve_connection is not importable yet"
    if name == "plait_listener" and not hasattr(_plait, "listener"):
        return "plait.listener is not importable yet"
    return None


async def _send_not_found(send: Send) -> None:
    """Answer a plain HTTP request: these apps only speak WebSocket."""
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"websocket only"})


async def _echo_raw(receive: Receive, send: Send) -> None:
    """Echo on bare ASGI messages, the least work an app can do."""
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] != "websocket.receive":
            break
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes")})
    # hypercorn turns a return while connected into a 1011 close: close normally instead.
    await send({"type": "websocket.close", "code": 1000})


def _websocket_app(serve: ASGIApp, doc: str) -> ASGIApp:
    """An app that serves WebSockets with ``serve``, answers lifespan, 404s HTTP."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await serve(scope, receive, send)
        elif scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
        else:
            await _send_not_found(send)

    app.__doc__ = doc
    return app


raw = _websocket_app(
    lambda scope, receive, send: _echo_raw(receive, send),
    "Raw ASGI echo app: the baseline every ratio divides by.",
)


async def _plait_echo(ws: _plait.WebSocket) -> None:
    """Echo every text message on plait's engine until the client disconnects."""
    await ws.accept()
    async for text in ws.iter_text():
        await ws.send_text(text)


plait = _websocket_app(
    lambda scope, receive, send: _plait.serve_connection(scope, receive, send, _plait_echo),
    "plait echo app: the same echo through `plait.serve_connection`.",
)


async def _floor_echo(receive: Receive, send: Send) -> None:
    """The least a reader/writer/handler design can cost: three tasks, two hops, no checks.

    Not a usable framework (no state, no limits, no cancellation on disconnect): it is
    here to separate what plait's design costs from what plait's code costs.
    """
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    inbound: Channel[Message] = Channel(16)
    outbound: Channel[Message | None] = Channel(16)

    async def reader() -> None:
        while True:
            message = await receive()
            await inbound.send(message)
            if message["type"] == "websocket.disconnect":
                return

    async def writer() -> None:
        while (message := await outbound.receive()) is not None:
            await send(message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        while (message := await inbound.receive())["type"] == "websocket.receive":
            await outbound.send({"type": "websocket.send", "text": message["text"]})
        await outbound.send(None)


floor = _websocket_app(
    lambda scope, receive, send: _floor_echo(receive, send),
    "Three bare tasks joined by plait's channel: the design's floor, for reference.",
)


async def _starlette_echo(ws: StarletteWebSocket) -> None:
    """Echo text with Starlette's receive_text/send_text loop."""
    await ws.accept()
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except StarletteDisconnect:
        pass


starlette = Starlette(routes=[WebSocketRoute("/", _starlette_echo)])


@websocket("/")
async def _litestar_echo(socket: LitestarWebSocket[Any, Any, Any]) -> None:
    """Echo text with a Litestar ``@websocket`` handler."""
    await socket.accept()
    try:
        while True:
            await socket.send_text(await socket.receive_text())
    except LitestarDisconnect:
        pass


litestar = Litestar(route_handlers=[_litestar_echo])


@websocket_listener("/")
async def _litestar_listener_echo(data: str) -> str:
    """Echo text with a Litestar ``websocket_listener``: the return value is sent back."""
    return data


litestar_listener = Litestar(route_handlers=[_litestar_listener_echo])


_chat_decoder = msgspec.json.Decoder(ChatMessage)
_chat_encoder = msgspec.json.Encoder()


async def _echo_raw_json(receive: Receive, send: Send) -> None:
    """Typed echo on bare ASGI messages: decode into `ChatMessage`, encode it back.

    A message that does not decode closes the connection with 1007, as the listeners do.
    """
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] != "websocket.receive":
            break
        text = message.get("text")
        try:
            data = _chat_decoder.decode(text if text is not None else message.get("bytes") or b"")
        except msgspec.DecodeError:  # ValidationError included
            await send({"type": "websocket.close", "code": 1007})
            return
        await send({"type": "websocket.send", "text": _chat_encoder.encode(data).decode()})
    await send({"type": "websocket.close", "code": 1000})


raw_json = _websocket_app(
    lambda scope, receive, send: _echo_raw_json(receive, send),
    "Raw ASGI typed echo: the baseline of the `JSON_NAMES` apps.",
)


def _plait_listener_app() -> ASGIApp | None:
    """The plait App of one typed listener on ``/``; None before `plait.listener` exists."""
    if not hasattr(_plait, "listener"):
        return None

    @_plait.listener("/")
    async def echo(data: ChatMessage) -> ChatMessage:
        """Decoded and validated by msgspec; the reply is encoded as JSON text."""
        return data

    app: ASGIApp = _plait.App(routes=[echo])
    return app


plait_listener = _plait_listener_app()


@websocket_listener("/")
async def _litestar_listener_typed_echo(data: ChatMessage) -> ChatMessage:
    """Typed echo with a Litestar ``websocket_listener``: msgspec decodes, Litestar encodes."""
    return data


litestar_listener_typed = Litestar(route_handlers=[_litestar_listener_typed_echo])
