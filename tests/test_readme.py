"""The README's code runs as pasted, and its prerequisites are what CI installs.

Every fenced block of README.md is either Python, which is compiled, executed in a fresh
namespace and, when it defines ``app``, driven with ``AsyncTestClient`` on both
backends; or marked right before it: ``<!-- not run -->`` (a shell command, a
fragment), or ``<!-- demo-command -->`` / ``<!-- test-command -->`` (checked by
tests/test_project.py). A block that is neither fails.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from plait.testing import AsyncTestClient, WebSocketDenied
from plait.types import ASGIApp, Message

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NOT_RUN = "<!-- not run -->"
# Blocks whose command another test checks (tests/test_project.py).
CHECKED_ELSEWHERE = frozenset({"<!-- demo-command -->", "<!-- test-command -->"})
FENCE = re.compile(r"^(?P<indent> *)```(?P<language>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced block of the README."""

    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str  # the line before the fence, stripped

    @property
    def runs(self) -> bool:
        return self.language == "python" and not self.marker.startswith("<!--")


def readme_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while lines[end].strip() != "```":  # an unclosed fence is an IndexError
            end += 1
        before = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        code = textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n"
        blocks.append(Block(index + 1, opening["language"], code, before))
        index = end + 1
    return blocks


BLOCKS = readme_blocks()
SNIPPETS = [block for block in BLOCKS if block.runs]


def test_every_block_runs_or_is_marked() -> None:
    unmarked = [
        f"README.md:{block.line} (```{block.language})"
        for block in BLOCKS
        if not block.runs and block.marker not in {NOT_RUN, *CHECKED_ELSEWHERE}
    ]
    assert not unmarked, f"neither Python that runs nor marked {NOT_RUN}: {unmarked}"
    assert len(SNIPPETS) >= 3, "the README's Python snippets were not found"


def test_the_readme_names_every_package_ci_installs() -> None:
    """The prerequisites the README lists are the Debian packages .ci/run installs."""
    install = re.compile(r"apt-get\s+install\s+((?:[\w.-]+\s*)+)")
    ci = {
        word
        for found in install.findall((ROOT / ".ci" / "run").read_text())
        for word in found.split()
        if not word.startswith("-")
    }
    readme = {word for found in install.findall(README.read_text()) for word in found.split()}
    assert ci, ".ci/run installs no Debian package any more: update this test"
    assert readme == ci


# -- driving the snippets' apps -------------------------------------------------------


async def http_get(app: ASGIApp, path: str) -> tuple[int, bytes]:
    """One HTTP GET through the app, in-process: its status and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("testclient", 50000),
        "server": ("testserver", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start"
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


async def drive_echo(client: AsyncTestClient, app: ASGIApp) -> None:
    async with client.websocket_connect("/echo") as ws:
        await ws.send_text("hello")
        assert await ws.receive_text() == "hello"


async def drive_rooms(client: AsyncTestClient, app: ASGIApp) -> None:
    token = {"x-token": "secret"}
    async with client.websocket_connect("/rooms/lobby?name=ada", headers=token) as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "[lobby] ada: hi"
    with pytest.raises(WebSocketDenied) as denied:
        async with client.websocket_connect("/rooms/lobby?name=ada"):
            pytest.fail("connected without a token")
    assert denied.value.status_code == 401
    with pytest.raises(WebSocketDenied) as denied:  # "a 400 whose JSON body names each..."
        async with client.websocket_connect("/rooms/lobby?name=ada&limit=many", headers=token):
            pytest.fail("connected with a limit that is not an int")
    assert denied.value.status_code == 400
    assert [error["name"] for error in json.loads(denied.value.body)["errors"]] == ["limit"]
    with pytest.raises(WebSocketDenied) as denied:  # "unknown paths get a 404"
        async with client.websocket_connect("/nowhere"):
            pytest.fail("connected to an unknown path")
    assert denied.value.status_code == 404
    assert await http_get(app, "/") == (200, b"the rooms are at /rooms/{room}")


async def drive_chat(client: AsyncTestClient, app: ASGIApp) -> None:
    async with client.websocket_connect("/chat") as ws:
        await ws.send_json({"content": "hi"})
        replies, times = [], []
        while not (replies and times):  # the listener and the stream, on one socket
            text = await ws.receive_text()
            if text.startswith("{"):
                replies.append(json.loads(text))
            else:
                times.append(datetime.fromisoformat(text))
    assert replies == [{"text": "Received: hi"}]


Drive = Callable[[AsyncTestClient, ASGIApp], Awaitable[None]]
DRIVES: dict[tuple[str, ...], Drive] = {
    ("/echo",): drive_echo,
    ("/rooms/{room}",): drive_rooms,
    ("/chat",): drive_chat,
}
"""How to drive a snippet's app, by the paths of its routes."""


def run_snippet(block: Block) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"readme_{block.line}"}
    exec(compile(block.code, f"README.md:{block.line}", "exec"), namespace)
    return namespace


def route_paths(app: Any) -> tuple[str, ...]:
    return tuple(route.path for route in app.routes)


@pytest.mark.anyio
@pytest.mark.parametrize("block", SNIPPETS, ids=lambda block: f"README.md:{block.line}")
async def test_the_snippet_runs(block: Block) -> None:
    app = run_snippet(block).get("app")
    if app is None:
        return  # module-level code only: executing it was the test
    paths = route_paths(app)
    assert paths in DRIVES, f"README.md:{block.line}: no drive for an app on {paths}"
    async with AsyncTestClient(app) as client:
        await DRIVES[paths](client, app)


def test_every_drive_has_its_snippet() -> None:
    driven = {route_paths(app) for block in SNIPPETS if (app := run_snippet(block).get("app"))}
    assert driven == set(DRIVES)
