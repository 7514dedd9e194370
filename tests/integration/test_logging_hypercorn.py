"""The demo's log config under the real hypercorn command (asyncio and trio workers).

hypercorn configures no logging for the application, so plait's INFO lines and an
app's own never show without one. ``examples/chat/logging.toml`` is what ``nox -s demo``
passes as ``--log-config``; started that way (as the demo is, with hypercorn's worker
process), the chat and the rooms examples show plait's INFO lines and their own, and
hypercorn's own lines once, all in one format.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_examples_hypercorn import ROOT, TIMEOUT, WORKERS, Server, free_ports, open_client
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.frames import Close
from websockets.sync.client import ClientConnection

pytestmark = pytest.mark.integration

LOG_CONFIG = "toml:examples/chat/logging.toml"
LINE = re.compile(r"^\[[^]]+\] \[\d+\] \[(?P<level>[A-Z]+)\] (?P<logger>[\w.]+): (?P<message>.*)$")


class LoggingServer(Server):
    """``hypercorn --log-config toml:examples/chat/logging.toml``, as the demo runs it."""

    def start(self, port: int) -> None:
        self.port = port
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("CHAT_REDIS_URL", None)  # the chat example keeps its rooms in memory
        command = [sys.executable, "-m", "hypercorn", "-k", self.worker, "--log-config",
                   LOG_CONFIG, "-b", f"127.0.0.1:{port}",
                   f"examples.{self.example}:app"]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def lines(self) -> list[tuple[str, str, str]]:
        """``(level, logger, message)`` of each line in the log's format, in order."""
        return [
            (match["level"], match["logger"], match["message"])
            for match in map(LINE.match, self.log().splitlines())
            if match is not None
        ]


@pytest.fixture(params=WORKERS)
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, LoggingServer]]:
    """The chat and the rooms examples under this test's worker, stopped (SIGTERM) after."""
    every = {name: LoggingServer(name, request.param, tmp_path) for name in ("chat", "rooms")}
    try:
        for server, port in zip(every.values(), free_ports(len(every)), strict=True):
            server.start(port)
        deadline = time.monotonic() + 30
        for server in every.values():
            if not server.wait_listening(deadline):
                pytest.fail(f"{server} exited at startup:\n{server.log()}")
        yield every
    finally:
        for server in every.values():
            server.stop()
        for server in every.values():
            server.reap()


def closed_by_server(ws: ClientConnection) -> Close:
    """Read until the server closes; its close frame."""
    closed: ConnectionClosedError | None = None
    for _ in range(100):
        try:
            ws.recv(timeout=TIMEOUT)
        except ConnectionClosedError as exc:
            closed = exc
            break
    assert closed is not None, "the server did not close"
    assert closed.rcvd is not None, "the server sent no close frame"
    return closed.rcvd


def test_the_demo_log_config_shows_plaits_and_the_apps_info_lines(
    servers: dict[str, LoggingServer],
) -> None:
    chat, rooms = servers["chat"], servers["rooms"]
    room = f"room-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidStatus):
        open_client(f"ws://127.0.0.1:{chat.port}/nowhere")
    with open_client(f"ws://127.0.0.1:{chat.port}/chat/{room}?name=ada&since=0-0") as ws:
        # The chat's streams interleave: read on to its member list, which shows ada.
        item = json.loads(ws.recv(timeout=TIMEOUT))
        while item["stream"] != "members":
            item = json.loads(ws.recv(timeout=TIMEOUT))
        assert item["data"]["type"] == "presence_state"
        assert item["data"]["presences"]["ada"]["count"] == 1
        ws.send("not json")
        assert closed_by_server(ws).code == 1007  # after what was already on its way
    token = {"x-token": "secret"}
    lobby = f"ws://127.0.0.1:{rooms.port}/rooms/lobby?name=ada"
    with open_client(lobby, additional_headers=token) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT))["session"] == "session of ada"
    for server in servers.values():
        server.stop()
        server.reap()

    chat_lines = chat.lines()
    assert ("INFO", "plait._app", "no WebSocket route for /nowhere") in chat_lines
    invalid = f"closing /chat/{room} with 1007: the client sent invalid JSON message"
    assert any(
        line[:2] == ("INFO", "plait._connection") and line[2].startswith(invalid)
        for line in chat_lines
    )
    rooms_lines = rooms.lines()
    assert [line for line in rooms_lines if line[1] == "examples.rooms"] == [
        ("INFO", "examples.rooms", "ada joined"),
        ("INFO", "examples.rooms", "ada left"),
    ]
    for server in servers.values():
        running = [line for line in server.lines() if line[2].startswith("Running on ")]
        assert [line[:2] for line in running] == [("INFO", "hypercorn.error")]  # once
        assert "ERROR" not in {level for level, _, _ in server.lines()}
        assert "Traceback" not in server.log()
