"""Every example under the real hypercorn CLI (asyncio and trio workers), real clients.

Each example is started as ``python -m hypercorn -k <worker> examples.<name>:app``, the
way its docstring says to run it, and spoken to with the ``websockets`` sync client.
All fourteen servers start at once, once for the module, and stop with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ("echo", "listener", "clock", "raw_asgi", "dashboard", "chat", "rooms", "lobby")
WORKERS = ("asyncio", "trio")
TIMEOUT = 10.0

Key = tuple[str, str]  # (example, worker)
Url = Callable[[str, str], str]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held together, so none is handed out twice)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


class Server:
    """One ``hypercorn`` process serving one example with one worker class."""

    def __init__(self, example: str, worker: str, logs: Path) -> None:
        self.example = example
        self.worker = worker
        self.log_path = logs / f"{example}-{worker}.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> None:
        self.port = port
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("CHAT_REDIS_URL", None)  # the chat example keeps its rooms in memory
        command = [sys.executable, "-m", "hypercorn", "-w", "0", "-k", self.worker,
                   "-b", f"127.0.0.1:{port}", f"examples.{self.example}:app"]  # fmt: skip
        # a file, not a pipe: nobody reads while the tests run, and a full pipe would block
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_listening(self, deadline: float) -> bool:
        """True once it accepts connections; False if it exited first (a port taken?)."""
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{self} did not listen in time:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)

    def reap(self) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __repr__(self) -> str:
        return f"<hypercorn -k {self.worker} examples.{self.example}:app on {self.port}>"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Key, int]]:
    """Every example under both workers: all started at once, then awaited."""
    logs = tmp_path_factory.mktemp("hypercorn")
    every = [Server(example, worker, logs) for example in EXAMPLES for worker in WORKERS]
    pending = every
    try:
        for attempt in range(2):  # a port taken between choosing and binding: retry once
            for server, port in zip(pending, free_ports(len(pending)), strict=True):
                server.start(port)
            deadline = time.monotonic() + 30
            pending = [server for server in pending if not server.wait_listening(deadline)]
            if not pending:
                break
            if attempt:
                failed = "\n\n".join(f"{server}:\n{server.log()}" for server in pending)
                raise RuntimeError(f"hypercorn exited at startup:\n{failed}")
        yield {(server.example, server.worker): server.port for server in every}
    finally:
        for server in every:
            server.stop()
        for server in every:
            server.reap()


@pytest.fixture(params=WORKERS)
def url(request: pytest.FixtureRequest, servers: dict[Key, int]) -> Url:
    """``url(example, path)``: where that example listens under this test's worker."""
    worker: str = request.param

    def make(example: str, path: str) -> str:
        return f"ws://127.0.0.1:{servers[example, worker]}{path}"

    return make


def open_client(uri: str, **options: Any) -> ClientConnection:
    client: ClientConnection = connect(uri, open_timeout=TIMEOUT, proxy=None, **options)
    return client


def receive_json(ws: ClientConnection) -> Any:
    return json.loads(ws.recv(timeout=TIMEOUT))


def test_echo(url: Url) -> None:
    with open_client(url("echo", "/echo")) as ws:
        for text in ("hello", "", "héllo wörld 🌍", "x" * 10_000):
            ws.send(text)
            assert ws.recv(timeout=TIMEOUT) == text


def test_listener_answers_both_kinds_and_closes_1007_on_bad_input(url: Url) -> None:
    with open_client(url("listener", "/calc")) as ws:
        ws.send(json.dumps({"type": "add", "a": 1, "b": 2.5}))
        assert receive_json(ws) == {"type": "sum", "result": 3.5}
        ws.send(json.dumps({"type": "greet", "name": "ada"}))
        assert receive_json(ws) == {"type": "greeting", "text": "Hello, ada!"}
        ws.send(json.dumps({"type": "add", "a": 1, "b": "two"}))
        with pytest.raises(ConnectionClosedError) as info:
            ws.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1007
    assert "$.b" in info.value.rcvd.reason


def test_clock_ticks_no_faster_than_its_minimum(url: Url) -> None:
    with open_client(url("clock", "/clock?interval=0.01")) as ws:  # clamped to 0.05
        first, second = (datetime.fromisoformat(str(ws.recv(timeout=TIMEOUT))) for _ in "12")
    assert first.tzinfo is not None
    assert timedelta(seconds=0.04) <= second - first < timedelta(seconds=TIMEOUT)


def test_raw_asgi_json_round_trip_in_binary_frames(url: Url) -> None:
    with open_client(url("raw_asgi", "/anywhere")) as ws:
        ws.send(json.dumps({"n": 1, "tags": ["a", "b"]}).encode())
        reply = ws.recv(timeout=TIMEOUT)
        assert isinstance(reply, bytes)  # binary mode both ways
        assert json.loads(reply) == {"received": {"n": 1, "tags": ["a", "b"]}}
        ws.send(b'"bye"')
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=TIMEOUT)
    assert ws.close_code == 1000


@pytest.mark.parametrize("path", ["/dashboard", "/by-hand"])
def test_dashboard_tags_both_streams_and_answers_a_command(url: Url, path: str) -> None:
    seen: dict[str, list[Any]] = {"ticker": [], "clock": [], "reply": []}
    with open_client(url("dashboard", path)) as ws:
        ws.send(json.dumps({"every": 0.01}))  # clamped to 0.05
        while len(seen["ticker"]) < 3 or not seen["clock"] or not seen["reply"]:
            item = receive_json(ws)
            if "every" in item:
                seen["reply"].append(item["every"])
            else:
                seen[item["stream"]].append(item["data"])
    assert seen["reply"] == [0.05]
    assert seen["ticker"] == list(range(len(seen["ticker"])))
    assert all(isinstance(stamp, float) for stamp in seen["clock"])


def test_chat_two_clients_see_each_others_messages_members_and_typing(url: Url) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"

    waiting: dict[tuple[int, str], list[Any]] = defaultdict(list)

    def item(ws: ClientConnection, stream: str) -> Any:
        """The next item of ``stream``; the streams' items come in no set order between
        streams, so those of the others wait for their turn."""
        while not waiting[id(ws), stream]:
            message = receive_json(ws)
            waiting[id(ws), message.get("stream", "reply")].append(message.get("data"))
        return waiting[id(ws), stream].pop(0)

    def said(ws: ClientConnection) -> tuple[str, str]:
        data = item(ws, "messages")["data"]
        return data["user"], data["text"]

    with open_client(url("chat", f"/chat/{room}?name=ada")) as ada:
        ada.send(json.dumps({"type": "say", "text": "before bob"}))
        assert said(ada) == ("ada", "before bob")  # her own: her stream is live
        with open_client(url("chat", f"/chat/{room}?name=bob")) as bob:
            assert said(bob) == ("ada", "before bob")  # the room's history
            assert sorted(item(bob, "members")["presences"]) == ["ada", "bob"]
            bob.send(json.dumps({"type": "typing"}))
            assert item(ada, "typing") == {"user": "bob", "typing": True}
            bob.send(json.dumps({"type": "say", "text": "hi ada"}))
            assert said(ada) == ("bob", "hi ada")
            ada.send(json.dumps({"type": "say", "text": "hi bob"}))
            assert said(bob) == ("bob", "hi ada")  # each hears the whole room
            assert said(bob) == ("ada", "hi bob")
        while not (diff := item(ada, "members")).get("leaves"):
            pass
        assert diff["leaves"]["bob"]["count"] == 0


def test_rooms_refuses_without_token_and_echoes_with_it(url: Url) -> None:
    with pytest.raises(InvalidStatus) as info:
        open_client(url("rooms", "/rooms/lobby?name=ada"))
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body or b"") == {
        "detail": "a valid x-token header is required"
    }
    rooms_url = url("rooms", "/rooms/lobby?name=ada&limit=3")
    with open_client(rooms_url, additional_headers={"x-token": "secret"}) as ws:
        assert receive_json(ws) == {
            "room": "lobby",
            "name": "ada",
            "limit": 3,
            "session": "session of ada",
        }
        ws.send("hi")
        assert ws.recv(timeout=TIMEOUT) == "[lobby] ada: hi"


def test_lobby_hooks_and_a_stream_that_reads(url: Url) -> None:
    """Litestar's ``on_accept``/``on_disconnect`` hooks and ``listen_for_disconnect=False``
    stream, as the example shows them, under each worker."""
    with open_client(url("lobby", "/lobby?name=ada")) as ada:
        assert receive_json(ada) == {"members": ["ada"]}
        with open_client(url("lobby", "/lobby?name=bob")) as bob:
            assert receive_json(bob) == {"members": ["ada", "bob"]}
        ada.send("hi")
        reply = receive_json(ada)
        deadline = time.monotonic() + TIMEOUT
        while reply["members"] != ["ada"] and time.monotonic() < deadline:
            ada.send("hi")  # bob's on_disconnect runs once his close is handled
            reply = receive_json(ada)
        assert reply == {"from": "ada", "text": "hi", "members": ["ada"]}
    with open_client(url("lobby", "/shout")) as ws:
        ws.send("quiet")
        ws.send("please")
        assert [ws.recv(timeout=TIMEOUT), ws.recv(timeout=TIMEOUT)] == ["QUIET", "PLEASE"]
