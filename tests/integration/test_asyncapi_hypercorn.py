"""The AsyncAPI document, its page and plait.js served by the App under real hypercorn
(asyncio and trio workers), beside a WebSocket route and a fallback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

import plait
from plait import App
from plait.testing import HypercornServer, run_hypercorn
from plait.types import Receive, Scope, Send

pytestmark = pytest.mark.integration


@plait.listener("/echo")
async def echo(data: str) -> str:
    """Say it back."""
    return data


async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"8")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"fallback"})


APP = App(
    routes=[echo],
    fallback=fallback,
    title="Echo",
    version="1.0.0",
    asyncapi_path="/asyncapi.json",
    asyncapi_docs_path="/asyncapi",
    client_path="/plait.js",
)


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def server(request: pytest.FixtureRequest) -> Iterator[HypercornServer]:
    with run_hypercorn(APP, worker_class=request.param) as running:
        yield running


def get(server: HypercornServer, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(server.url(path, scheme="http"), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_documents_beside_the_websocket_route_and_the_fallback(server: HypercornServer) -> None:
    """FastAPI serves ``/openapi.json`` and ``/docs`` beside the routes; so does an App,
    and everything else still reaches the fallback."""
    status, headers, body = get(server, "/asyncapi.json")
    assert (status, headers["content-type"]) == (200, "application/json")
    document = json.loads(body)
    assert document["info"] == {"title": "Echo", "version": "1.0.0"}
    assert document["channels"]["echo"]["address"] == "/echo"
    assert get(server, "/asyncapi.json", **{"If-None-Match": headers["etag"]})[0] == 304
    status, headers, page = get(server, "/asyncapi")
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert b"AsyncApiStandalone.render" in page
    status, headers, script = get(server, "/plait.js")
    assert (status, headers["content-type"]) == (200, "text/javascript")
    assert script == plait._documents.client_script()
    status, _, body = get(server, "/anything-else")
    assert (status, body) == (200, b"fallback")
    with connect(server.url("/echo"), open_timeout=5) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
