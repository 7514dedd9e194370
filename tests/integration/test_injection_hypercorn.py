"""Routing, injection, denials and dependency teardown under real hypercorn."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import anyio
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import plait
from plait import App, Cookie, Deny, Header, WebSocket, use
from plait.testing import HypercornServer, run_hypercorn

pytestmark = pytest.mark.integration

TORN_DOWN: list[str] = []
TEARDOWN = threading.Event()


async def session(ws: WebSocket) -> AsyncIterator[str]:
    try:
        yield f"session-{ws.query_params.get('who', 'anon')}"
    finally:
        TORN_DOWN.append(ws.query_params.get("who", "anon"))
        TEARDOWN.set()


def auth(token: Annotated[str | None, Header("x-token")] = None) -> str:
    if token != "secret":
        raise Deny(401, "a valid x-token header is required")
    return token


@plait.websocket("/rooms/{room}/{n:int}")
async def room(
    ws: WebSocket,
    room: str,
    n: int,
    limit: int,
    tags: list[str],
    agent: Annotated[str, Header("user-agent")],
    theme: Annotated[str, Cookie()] = "light",
    s: Annotated[str, use(session)] = "",
) -> None:
    await ws.accept()
    await ws.send_json(
        {
            "room": room,
            "n": n,
            "limit": limit,
            "tags": tags,
            "theme": theme,
            "agent_known": bool(agent),
            "session": s,
        }
    )
    await anyio.sleep_forever()


@plait.websocket("/private")
async def private(ws: WebSocket, token: Annotated[str, use(auth)]) -> None:
    await ws.accept()
    await ws.send_text("welcome")


@plait.websocket("/conv/{i:int}/{f:float}/{u:uuid}/{s:str}/{rest:path}")
async def converters(ws: WebSocket, i: int, f: float, u: uuid.UUID, s: str, rest: str) -> None:
    await ws.accept()
    await ws.send_json([i, f, str(u), s, rest])


APP = App(routes=[room, private, converters])


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest) -> Iterator[HypercornServer]:
    with run_hypercorn(APP, worker_class=request.param) as running:
        yield running


def test_every_source_is_injected_and_teardown_runs_after_disconnect(
    server: HypercornServer,
) -> None:
    TEARDOWN.clear()
    url = server.url("/rooms/lobby/3?limit=10&tags=x&tags=y&who=ada")
    with connect(url, additional_headers={"Cookie": "theme=dark"}, open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {
            "room": "lobby",
            "n": 3,
            "limit": 10,
            "tags": ["x", "y"],
            "theme": "dark",
            "agent_known": True,
            "session": "session-ada",
        }
    assert TEARDOWN.wait(5), "the generator dependency was not torn down"
    assert TORN_DOWN[-1] == "ada"


def test_bad_parameters_get_a_400_naming_them(server: HypercornServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(server.url("/rooms/lobby/3?limit=lots"), open_timeout=5)
    response = info.value.response
    assert response.status_code == 400
    assert json.loads(response.body) == {
        "detail": "invalid parameters",
        "errors": [
            {"source": "query", "name": "limit", "message": 'expected an integer, got "lots"'},
            {"source": "query", "name": "tags", "message": "missing"},
        ],
    }


def test_a_converter_is_part_of_matching(server: HypercornServer) -> None:
    with pytest.raises(InvalidStatus) as info:  # {n:int} does not match "x": no route
        connect(server.url("/rooms/lobby/x?limit=1&tags=a"), open_timeout=5)
    assert info.value.response.status_code == 404


def test_a_dependency_denies_with_401(server: HypercornServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(server.url("/private"), open_timeout=5)
    assert info.value.response.status_code == 401
    assert json.loads(info.value.response.body) == {"detail": "a valid x-token header is required"}
    with connect(server.url("/private"), additional_headers={"x-token": "secret"}) as ws:
        assert ws.recv(timeout=5) == "welcome"


def test_unknown_path_is_a_404(server: HypercornServer) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(server.url("/nowhere"), open_timeout=5)
    assert info.value.response.status_code == 404
    assert json.loads(info.value.response.body) == {"detail": "no WebSocket route for /nowhere"}


def test_every_converter(server: HypercornServer) -> None:
    uid = uuid.uuid4()
    with connect(server.url(f"/conv/-4/2.5/{uid}/word/a/b/c.txt"), open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == [-4, 2.5, str(uid), "word", "a/b/c.txt"]
