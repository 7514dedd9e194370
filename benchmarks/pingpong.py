"""One WebSocket connection in strict ping-pong against a fake ASGI server, in process.

``python -m benchmarks.pingpong APP MESSAGES BACKEND`` serves one connection with the app
named APP (one of `APPS`) on anyio's BACKEND (``asyncio`` or ``trio``) and prints one JSON
line: the echoes that came back and where ``plait`` was imported from. `benchmarks.
instructions` runs it under callgrind; the tests run it as it is.

The fake server hands the app ``websocket.connect``, then MESSAGES text messages of 64
bytes, each only once the app's echo of the one before came back through ``send`` (the
app really waits for every message, as it does behind a client in ping-pong), then
``websocket.disconnect`` with 1000 after the last echo. The wait is one `anyio.Event` per
message that ``send`` sets: the same few instructions for every app, so part of the
baseline. No lifespan: none of the apps needs one to serve a connection.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec

import plait
from benchmarks import apps
from benchmarks.apps import ASGIApp, ChatMessage, Message, Scope

TEXT = "x" * 64
"""The plain apps' message: 64 bytes of text."""
_PADDING = 64 - len(msgspec.json.encode(ChatMessage(user="bench", content="")))
JSON_TEXT = msgspec.json.encode(ChatMessage(user="bench", content="x" * _PADDING)).decode()
"""The typed apps' message: a `ChatMessage` as 64 bytes of JSON text, as msgspec encodes it."""
BACKENDS = ("asyncio", "trio")


def _plait_app() -> ASGIApp:
    """A `plait.App` with one `plait.WebSocketRoute` whose low-level handler echoes text."""
    app: ASGIApp = plait.App(routes=[plait.WebSocketRoute("/", apps._plait_echo)])
    return app


def _from_apps(name: str) -> Callable[[], ASGIApp]:
    """A loader of `benchmarks.apps`'s app `name`, which may be missing with an old plait."""

    def load() -> ASGIApp:
        app: ASGIApp | None = getattr(apps, name)
        if app is None:
            raise RuntimeError(f"benchmarks.apps.{name} is not available with this plait")
        return app

    return load


@dataclass(frozen=True)
class PingPongApp:
    """An app of the ping-pong and what it is compared with."""

    load: Callable[[], ASGIApp]
    """Imports and returns the ASGI app."""
    text: str
    """The message it is sent (and must send back)."""
    baseline: str | None
    """The app whose cost per message this one is compared with; None for ``raw``."""
    about: str
    """What it is, for the report."""


APPS: dict[str, PingPongApp] = {
    "raw": PingPongApp(_from_apps("raw"), TEXT, None, "bare ASGI echo"),
    "raw_json": PingPongApp(
        _from_apps("raw_json"), JSON_TEXT, "raw", "bare ASGI, msgspec decode into a Struct and back"
    ),
    "plait": PingPongApp(
        _from_apps("plait"), TEXT, "raw", "plait.serve_connection, iter_text/send_text"
    ),
    "plait_app": PingPongApp(
        _plait_app, TEXT, "raw", "plait.App, WebSocketRoute handler, iter_text/send_text"
    ),
    "plait_listener": PingPongApp(
        _from_apps("plait_listener"), JSON_TEXT, "raw_json", "plait.App, @plait.listener Struct"
    ),
    "starlette": PingPongApp(
        _from_apps("starlette"), TEXT, "raw", "Starlette WebSocketRoute, receive_text/send_text"
    ),
    "litestar": PingPongApp(
        _from_apps("litestar"), TEXT, "raw", "Litestar @websocket, receive_text/send_text"
    ),
    "litestar_listener": PingPongApp(
        _from_apps("litestar_listener_typed"),
        JSON_TEXT,
        "raw_json",
        "Litestar websocket_listener Struct",
    ),
}
"""Every app, by the name the report gives it; the baselines first."""
PLAIT_APPS = ("plait", "plait_app", "plait_listener")
"""The apps that depend on plait's source (``--before`` counts them on REV's too)."""


def scope() -> Scope:
    """A WebSocket scope for ``/`` as hypercorn gives it, with what every framework reads."""
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"connection", b"Upgrade"),
            (b"upgrade", b"websocket"),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }


class FakeServer:
    """The server side of one connection in strict ping-pong: `receive` and `send`.

    Args:
        messages: How many messages the client sends.
        text: The text of each message; the app must send it back unchanged.
    """

    def __init__(self, messages: int, text: str) -> None:
        self.messages = messages
        self.text = text
        self.handed = 0
        """Messages handed to the app so far."""
        self.echoed = 0
        """Echoes the app sent back so far."""
        self.closed: int | None = None
        """The code of a ``websocket.close`` the app sent, if any."""
        self._connected = False
        self._disconnected = False
        # Set by the accept, then renewed with each message and set by its echo.
        self._turn = anyio.Event()

    async def receive(self) -> Message:
        """The next message of the client, once the app answered the one before."""
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        await self._turn.wait()
        if self.handed < self.messages and self.closed is None:
            self.handed += 1
            self._turn = anyio.Event()
            return {"type": "websocket.receive", "text": self.text}
        self._disconnected = True
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message: Message) -> None:
        """Take the app's message: the accept and each echo let the client go on."""
        kind = message["type"]
        if kind == "websocket.send":
            if self._disconnected:
                return  # a server drops what is sent after the client left
            if message.get("text") != self.text or self.echoed >= self.handed:
                raise RuntimeError(f"unexpected echo {message!r} after {self.echoed} echoes")
            self.echoed += 1
            self._turn.set()
        elif kind == "websocket.accept":
            self._turn.set()
        elif kind == "websocket.close":
            self.closed = message.get("code", 1000)
            self._turn.set()
        else:
            raise RuntimeError(f"unexpected message {message!r}")


async def ping_pong(app: ASGIApp, messages: int, text: str) -> FakeServer:
    """Serve one connection of `messages` ping-pong rounds with `app`; return the server."""
    server = FakeServer(messages, text)
    await app(scope(), server.receive, server.send)
    return server


def run(name: str, messages: int, backend: str) -> dict[str, Any]:
    """Run the ping-pong of app `name` on `backend` and say what came back.

    Returns:
        ``echoed`` (echoes received), ``messages``, ``closed`` (a close code the app sent,
        or None) and ``plait`` (the file ``plait`` was imported from).

    Raises:
        RuntimeError: the app sent something it should not have.
    """
    entry = APPS[name]
    app = entry.load()
    if backend == "trio":
        import trio

        # trio shuffles its run queue with this generator: seeded, the run repeats.
        trio._core._run._r.seed(0)
    server = anyio.run(ping_pong, app, messages, entry.text, backend=backend)
    return {
        "echoed": server.echoed,
        "messages": messages,
        "closed": server.closed,
        "plait": plait.__file__,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ping-pong (``APP MESSAGES BACKEND``) and print its result as a JSON line."""
    name, messages, backend = argv if argv is not None else sys.argv[1:]
    result = run(name, int(messages), backend)
    print(json.dumps(result))
    return 0 if result["echoed"] == result["messages"] else 1


if __name__ == "__main__":
    sys.exit(main())
