"""Two hypercorn processes (asyncio and trio workers) sharing one Redis.

Each process serves the chat example with ``CHAT_REDIS_URL`` set: a client of the first
publishes, a client of the second receives everything, in order, nothing lost, and both
see the same members. The
helpers here start any app that way (``test_presence_hypercorn.py`` uses them too).
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("PLAIT_REDIS_URL", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hypercorn exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"hypercorn did not listen on {port}")


@dataclass
class Server:
    """One hypercorn process serving on a loopback port."""

    worker: str
    port: int
    process: subprocess.Popen[bytes]


@contextmanager
def hypercorn_processes(app: str, env: Mapping[str, str]) -> Iterator[dict[str, Server]]:
    """Serve ``app`` under hypercorn twice, an asyncio worker and a trio worker, each a
    process of its own with ``env`` added to its environment; stopped with SIGTERM at
    the end (those still running: a test may kill one)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    servers: dict[str, Server] = {}
    try:
        for worker in ("asyncio", "trio"):
            port = free_port()
            command = [sys.executable, "-m", "hypercorn", "-w", "0", "-k", worker,
                       "-b", f"127.0.0.1:{port}", app]  # fmt: skip
            process = subprocess.Popen(command, cwd=ROOT, env=environment, stderr=subprocess.PIPE)
            servers[worker] = Server(worker, port, process)
        deadline = time.monotonic() + 20
        for server in servers.values():
            wait_for_port(server.port, server.process, deadline)
        yield servers
    finally:
        for server in servers.values():
            server.process.send_signal(signal.SIGTERM)  # nothing if it already exited
        for server in servers.values():
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
            if server.process.stderr is not None:
                server.process.stderr.close()


@pytest.fixture
def servers() -> Iterator[dict[str, int]]:
    """Start ``examples.chat`` under hypercorn twice: asyncio worker and trio worker."""
    with hypercorn_processes("examples.chat:app", {"CHAT_REDIS_URL": REDIS_URL}) as started:
        yield {worker: server.port for worker, server in started.items()}


WAITING: dict[tuple[int, str], list[Any]] = defaultdict(list)


def tagged(ws: ClientConnection, stream: str) -> Any:
    """The next item of the chat's ``stream``; the streams' items come in no set order
    between streams, so those of the others wait for their turn."""
    while not WAITING[id(ws), stream]:
        message = json.loads(ws.recv(timeout=10))
        WAITING[id(ws), message.get("stream", "reply")].append(message.get("data"))
    return WAITING[id(ws), stream].pop(0)


def test_a_message_published_in_one_process_reaches_the_other(servers: dict[str, int]) -> None:
    room = f"room-{uuid.uuid4().hex}"
    count = 10  # the chat's burst: all go through its rate limit at once
    receiver_url = f"ws://127.0.0.1:{servers['trio']}/chat/{room}?name=receiver"
    sender_url = f"ws://127.0.0.1:{servers['asyncio']}/chat/{room}?name=sender"
    with connect(receiver_url, open_timeout=10) as receiver:
        assert list(tagged(receiver, "members")["presences"]) == ["receiver"]
        # The sender's own streams echo the room to it too; it never reads most of
        # them, so it must not stop reading the socket (max_queue) or it would not see
        # the server's close frame queued behind them and wait out its close timeout.
        with connect(sender_url, open_timeout=10, max_queue=None) as sender:
            # who is there is the same in both processes
            assert sorted(tagged(sender, "members")["presences"]) == ["receiver", "sender"]
            joined = tagged(receiver, "members")
            assert (joined["type"], list(joined["joins"])) == ("presence_diff", ["sender"])
            for i in range(count):
                sender.send(json.dumps({"type": "say", "text": f"message {i}"}))
            texts: list[str] = []
            ids: list[str] = []
            while len(texts) < count:
                event = tagged(receiver, "messages")
                assert event["data"]["user"] == "sender"
                texts.append(event["data"]["text"])
                ids.append(event["id"])
        left = tagged(receiver, "members")
        assert left["leaves"]["sender"]["count"] == 0  # across the processes too
        # a newcomer in the other process gets the room's history from Redis
        with connect(sender_url.replace("sender", "late"), open_timeout=10) as late:
            history = [tagged(late, "messages")["data"]["text"] for _ in range(count)]
        assert history == texts
    assert texts == [f"message {i}" for i in range(count)]  # in order, nothing lost
    keys = [tuple(int(part) for part in i.split("-")) for i in ids]
    assert keys == sorted(keys)
    assert len(set(ids)) == count
