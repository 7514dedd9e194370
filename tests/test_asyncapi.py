"""AsyncAPI 3.0 documents from typed routes (issue 12): the mapping, serving, and the
official parser's verdict on every example's document.

The parser (``@asyncapi/parser``) and the React component come from npm, pinned in
``tests/asyncapi/package.json``; ``nox -s tests`` and ``.ci/run`` install them with
``npm ci``. Without them (or without ``node``) these tests fail, they do not skip.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncGenerator
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pytest

import plait
from plait import App, Cookie, Header, Heartbeat, Listener, Query, WebSocket, WebSocketRoute
from plait._asyncapi_page import COMPONENT_VERSION
from plait.channels import ChannelMessage
from plait.types import Message

HERE = Path(__file__).parent / "asyncapi"
NODE_MODULES = Path(os.environ.get("PLAIT_NPM_MODULES", HERE / "node_modules"))
EXPECTED = HERE / "documented.expected.json"
EXAMPLES = (
    *("echo", "listener", "clock", "dashboard", "chat", "rooms", "lobby", "class_listener"),
    "documented",
)


# -- an app with every feature the document maps --------------------------------------------


class Add(msgspec.Struct, tag="add"):
    """Add two numbers."""

    a: float
    b: float


class Greet(msgspec.Struct, tag="greet"):
    name: str


class Sum(msgspec.Struct):
    result: float


class Tick(msgspec.Struct):
    n: int


room = WebSocketRoute(
    "/rooms/{room}/users/{uid:int}",
    rate_limit=plait.RateLimit(20, per=1.0, on_exceed="drop"),
    max_connections=100,
    subprotocols=["chat.v2", "chat.v1"],
    heartbeat=Heartbeat(interval=15, timeout=5, ping="hb?", pong="hb!"),
    tag_streams=True,
)


@room.listener
async def calc(
    data: Add | Greet,
    room: str,
    uid: int,
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10,
    tags: Annotated[list[str] | None, Query("tag")] = None,
    token: Annotated[str, Header("x-token")] = "",
    session: Annotated[str | None, Cookie()] = None,
) -> Sum | None:
    """Answer an addition; greetings get no reply."""
    return Sum(data.a + data.b) if isinstance(data, Add) else None


@room.stream
async def ticks(since: str | None = None) -> AsyncGenerator[Tick, None]:
    """A tick a second."""
    yield Tick(1)


@room.stream(name="news")
async def news_feed() -> AsyncGenerator[ChannelMessage | dict[str, Any], None]:
    yield {"headline": "none"}


class Counter(Listener):
    """Counts what it hears."""

    path = "/count"

    async def on_receive(self, data: str) -> str:
        return data


@plait.websocket("/raw", receives=Literal["start", "stop"], sends=Tick)
async def raw(ws: WebSocket) -> None:
    """Low level, messages declared."""


@plait.stream("/read", on_receive="stream")
async def read(socket: WebSocket) -> AsyncGenerator[bytes, None]:
    yield b""


KITCHEN = App(
    routes=[room, Counter, raw, read],
    title="Kitchen",
    version="2.1.0",
    description="Every feature.",
    servers={"production": "wss://example.com/ws", "local": "ws://127.0.0.1:8000"},
)


def test_a_route_becomes_a_channel_with_its_parameters_and_bindings() -> None:
    """FastAPI documents path, query, header and cookie parameters with their types;
    AsyncAPI 3.0 puts a WebSocket's in the channel's address and its ``ws`` binding."""
    document = KITCHEN.asyncapi()
    assert document["asyncapi"] == "3.0.0"
    assert document["info"] == {
        "title": "Kitchen",
        "version": "2.1.0",
        "description": "Every feature.",
    }
    assert document["servers"] == {
        "production": {"host": "example.com", "protocol": "wss", "pathname": "/ws"},
        "local": {"host": "127.0.0.1:8000", "protocol": "ws"},
    }
    channel = document["channels"]["rooms_room_users_uid"]
    assert channel["address"] == "/rooms/{room}/users/{uid}"
    assert channel["parameters"] == {
        "room": {"description": "one path segment."},
        "uid": {"description": "an integer."},
    }
    binding = channel["bindings"]["ws"]
    assert binding["method"] == "GET"
    assert binding["query"]["properties"]["limit"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 50,
        "default": 10,
    }
    assert binding["query"]["properties"]["tag"]["anyOf"][0] == {
        "type": "array",
        "items": {"type": "string"},
    }
    assert "since" in binding["query"]["properties"]
    assert "required" not in binding["query"]  # every one has a default
    headers = binding["headers"]["properties"]
    assert headers["x-token"] == {"type": "string", "default": ""}
    assert "chat.v2, chat.v1" in headers["sec-websocket-protocol"]["description"]
    assert channel["x-plait-cookies"]["properties"]["session"]["default"] is None
    assert channel["x-plait-subprotocols"] == ["chat.v2", "chat.v1"]
    assert channel["x-plait-heartbeat"] == {
        "interval": 15,
        "timeout": 5,
        "ping": "hb?",
        "pong": "hb!",
    }
    assert channel["x-plait-resume"] == {"query": "since"}
    assert channel["x-plait-tagged-streams"] == ["ticks", "news"]
    assert channel["x-plait-rate-limit"] == {
        "messages": 20,
        "per": 1.0,
        "burst": 20,
        "onExceed": "drop",
    }
    assert channel["x-plait-max-connections"] == 100


def test_listener_streams_and_heartbeat_become_operations() -> None:
    """A listener is a ``receive`` operation with a ``reply``; each stream a ``send``
    operation in its tagged envelope; the heartbeat a ping sent and a pong received;
    a tagged union is ``oneOf`` with its discriminator (AsyncAPI's string form)."""
    document = KITCHEN.asyncapi()
    channel_id = "rooms_room_users_uid"
    channel = document["channels"][channel_id]
    operations = {
        key: value
        for key, value in document["operations"].items()
        if value["channel"] == {"$ref": f"#/channels/{channel_id}"}
    }
    assert sorted(operations) == [
        f"{channel_id}.receive.calc",
        f"{channel_id}.receive.pong",
        f"{channel_id}.send.news",
        f"{channel_id}.send.ping",
        f"{channel_id}.send.ticks",
    ]
    calc_operation = operations[f"{channel_id}.receive.calc"]
    assert calc_operation["summary"] == "Answer an addition; greetings get no reply."
    assert calc_operation["messages"] == [{"$ref": f"#/channels/{channel_id}/messages/calc"}]
    assert calc_operation["reply"]["messages"] == [
        {"$ref": f"#/channels/{channel_id}/messages/calcReply"}
    ]
    messages = channel["messages"]
    assert messages["calc"]["payload"] == {
        "discriminator": "type",
        "oneOf": [{"$ref": "#/components/schemas/Add"}, {"$ref": "#/components/schemas/Greet"}],
    }
    # `Sum | None`: None is "no reply", so the reply's schema is Sum's.
    assert messages["calcReply"]["payload"]["anyOf"][0] == {"$ref": "#/components/schemas/Sum"}
    assert messages["ticks"]["payload"] == {
        "type": "object",
        "properties": {"stream": {"const": "ticks"}, "data": {"$ref": "#/components/schemas/Tick"}},
        "required": ["stream", "data"],
    }
    news_data = messages["news"]["payload"]["properties"]["data"]
    assert news_data == {
        "anyOf": [{"$ref": "#/components/schemas/ChannelMessage"}, {"type": "object"}]
    }
    assert messages["ping"]["payload"] == {"type": "string", "const": "hb?"}
    assert messages["pong"]["payload"] == {"type": "string", "const": "hb!"}
    schemas = document["components"]["schemas"]
    assert schemas["Add"]["description"] == "Add two numbers."
    assert schemas["Add"]["properties"]["type"] == {"enum": ["add"]}
    assert set(schemas) == {"Add", "ChannelMessage", "Greet", "Sum", "Tick"}


def test_class_listener_low_level_handler_and_reading_stream() -> None:
    """A class-based listener is described by its ``on_receive``; a low-level handler by
    the ``receives=``/``sends=`` it declares; a stream that reads its socket receives
    anything."""
    document = KITCHEN.asyncapi()
    counter = document["channels"]["count"]
    assert counter["summary"] == "Counts what it hears."
    assert counter["messages"]["Counter"]["contentType"] == "text/plain"
    assert counter["messages"]["Counter"]["payload"] == {"type": "string"}
    raw_channel = document["channels"]["raw"]
    assert raw_channel["messages"]["raw"]["payload"] == {"enum": ["start", "stop"]}
    assert raw_channel["messages"]["rawSends"]["payload"] == {"$ref": "#/components/schemas/Tick"}
    assert document["operations"]["raw.receive.raw"]["action"] == "receive"
    assert document["operations"]["raw.send.raw"]["action"] == "send"
    read_channel = document["channels"]["read"]
    assert read_channel["messages"]["incoming"]["payload"] == {}
    assert read_channel["messages"]["read"]["contentType"] == "application/octet-stream"


def test_servers_must_be_websocket_urls() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        App(servers=["https://example.com"]).asyncapi()


# -- the official parser -----------------------------------------------------------------------


def parse(documents: dict[str, dict[str, Any]], tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Run ``@asyncapi/parser`` over the documents; its diagnostics by name."""
    node = shutil.which("node")
    assert node is not None, "node is needed to run @asyncapi/parser (.ci/run installs it)"
    assert (NODE_MODULES / "@asyncapi" / "parser").is_dir(), (
        f"@asyncapi/parser is not installed in {NODE_MODULES}: "
        "run `npm ci --prefix tests/asyncapi` (nox -s tests does)"
    )
    files = {}
    for name, document in documents.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(document))
    done = subprocess.run(
        [node, str(HERE / "validate.cjs"), str(NODE_MODULES), *map(str, files.values())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    return {name: report[str(file)] for name, file in files.items()}


def errors_and_warnings(diagnostics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in diagnostics if d["severity"] <= 1]


def test_every_example_and_the_kitchen_sink_parse_without_errors_or_warnings(
    tmp_path: Path,
) -> None:
    """The official parser validates against the AsyncAPI 3.0.0 JSON Schema and checks
    references and operations; it reports no error and no warning for any of them."""
    documents = {name: example_app(name).asyncapi() for name in EXAMPLES}
    documents["kitchen"] = KITCHEN.asyncapi()
    report = parse(documents, tmp_path)
    assert {name: errors_and_warnings(found) for name, found in report.items()} == {
        name: [] for name in documents
    }


def test_the_parser_does_reject_a_broken_document(tmp_path: Path) -> None:
    """The check above can fail: a dangling reference and a wrong type are errors."""
    document = KITCHEN.asyncapi()
    operation = next(iter(document["operations"].values()))
    operation["messages"] = [{"$ref": "#/channels/nowhere/messages/nothing"}]
    document["info"]["version"] = 3
    report = parse({"broken": document}, tmp_path)
    assert [d for d in report["broken"] if d["severity"] == 0]


def test_the_documented_example_matches_the_checked_in_document() -> None:
    """A change to the generated document shows up in review. After a deliberate change,
    regenerate: ``PLAIT_UPDATE_EXPECTED=1 pytest tests/test_asyncapi.py -k checked_in``."""
    document = example_app("documented").asyncapi()
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if os.environ.get("PLAIT_UPDATE_EXPECTED"):
        EXPECTED.write_text(text)
    assert text == EXPECTED.read_text()


def example_app(name: str) -> App:
    app: App = importlib.import_module(f"examples.{name}").app
    return app


# -- serving -------------------------------------------------------------------------------------


async def http_get(
    app: App, path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One HTTP request through the App's ASGI interface (the test client speaks only
    WebSocket); real hypercorn serves the same in tests/integration."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [],
    }
    await app(scope, receive, send)
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


@pytest.mark.anyio
async def test_the_app_serves_the_document_and_its_page() -> None:
    """As FastAPI serves ``/openapi.json`` and ``/docs``: the JSON with an ETag (304 when
    the client has it), HEAD, 405 for other methods, and a page whose component URLs the
    application chooses."""
    app = App(
        routes=[room],
        title="Served",
        asyncapi_path="/asyncapi.json",
        asyncapi_docs_path="/docs/asyncapi",
        asyncapi_js_url="/static/asyncapi.js",
        asyncapi_css_url="/static/asyncapi.css",
    )
    status, headers, body = await http_get(app, "/asyncapi.json")
    assert (status, headers[b"content-type"]) == (200, b"application/json")
    assert json.loads(body) == app.asyncapi()
    etag = headers[b"etag"]
    assert (await http_get(app, "/asyncapi.json", headers=[(b"if-none-match", etag)]))[0] == 304
    status, headers, body = await http_get(app, "/asyncapi.json", method="HEAD")
    assert (status, body, int(headers[b"content-length"])) == (
        200,
        b"",
        len(json.dumps(app.asyncapi(), separators=(",", ":"))),
    )
    assert (await http_get(app, "/asyncapi.json", method="POST"))[0] == 405
    status, headers, page = await http_get(app, "/docs/asyncapi")
    assert (status, headers[b"content-type"]) == (200, b"text/html; charset=utf-8")
    assert b'<script src="/static/asyncapi.js">' in page
    assert b'href="/static/asyncapi.css"' in page
    assert b'"url": "../asyncapi.json"' in page  # relative: works below a mount point too
    assert (await http_get(app, "/elsewhere"))[0] == 404  # no fallback: a plain 404

    @plait.listener("/added")
    async def added(data: str) -> str:
        return data

    app.include_routes(added)  # the served document follows the routes
    assert "added" in json.loads((await http_get(app, "/asyncapi.json"))[2])["channels"]


@pytest.mark.anyio
async def test_the_page_loads_the_component_that_ships_with_plait() -> None:
    """By default the page needs no CDN: the App serves its own copy of the component
    below the page, at paths that name the version, so browsers keep it for good; the
    addresses are relative, so the page works below a mount point too."""
    shipped = files("plait").joinpath("static", "asyncapi")
    app = App(routes=[room], asyncapi_path="/asyncapi.json", asyncapi_docs_path="/docs/asyncapi")
    page = (await http_get(app, "/docs/asyncapi"))[2]
    assert b"unpkg" not in page
    assert b"//" not in page.split(b"<body>")[1]  # nothing from another host
    version = COMPONENT_VERSION.encode()
    assert b'<script src="asyncapi/static/asyncapi-react-' + version + b'.js">' in page
    assert b'href="asyncapi/static/asyncapi-react-' + version + b'.css"' in page
    assert b'<a href="../asyncapi.json">/asyncapi.json</a>' in page  # if it does not load
    for suffix, media_type, name in [
        (b"js", b"text/javascript; charset=utf-8", "index.js"),
        (b"css", b"text/css; charset=utf-8", "default.min.css"),
    ]:
        path = f"/docs/asyncapi/static/asyncapi-react-{COMPONENT_VERSION}.{suffix.decode()}"
        status, headers, body = await http_get(app, path)
        assert (status, headers[b"content-type"]) == (200, media_type)
        assert headers[b"cache-control"] == b"public, max-age=31536000, immutable"
        assert body == shipped.joinpath(name).read_bytes()
        again = await http_get(app, path, headers=[(b"if-none-match", headers[b"etag"])])
        assert again[0] == 304
    assert (await http_get(app, "/docs/asyncapi/static/index.js"))[0] == 404

    trailing = App(asyncapi_path="/api.json", asyncapi_docs_path="/docs/")
    page = (await http_get(trailing, "/docs/"))[2]
    assert b'<script src="static/asyncapi-react-' + version + b'.js">' in page
    path = f"/docs/static/asyncapi-react-{COMPONENT_VERSION}.js"
    assert (await http_get(trailing, path))[0] == 200

    chosen = App(asyncapi_path="/a.json", asyncapi_docs_path="/docs", asyncapi_css_url="/my.css")
    page = (await http_get(chosen, "/docs"))[2]
    assert b'href="/my.css"' in page
    assert (await http_get(chosen, f"/docs/static/asyncapi-react-{COMPONENT_VERSION}.css"))[
        0
    ] == 404
    assert (await http_get(chosen, f"/docs/static/asyncapi-react-{COMPONENT_VERSION}.js"))[0] == 200


def test_the_page_needs_the_document() -> None:
    with pytest.raises(ValueError, match="asyncapi_path"):
        App(asyncapi_docs_path="/docs")


def test_python_m_plait_asyncapi_writes_the_document(tmp_path: Path) -> None:
    """As ``litestar schema openapi --output`` does: the document from the command line,
    and a clear error for a target that is not an App."""
    import sys

    output = tmp_path / "asyncapi.json"
    root = Path(__file__).parents[1]
    command = [sys.executable, "-m", "plait", "asyncapi"]
    done = subprocess.run(
        [*command, "examples.documented:app", "--output", str(output)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(output.read_text()) == example_app("documented").asyncapi()
    for target, error in [
        ("examples.documented", "expected module:attribute"),
        ("examples.documented:nothing", "cannot load"),
        ("examples.documented:Quote", "not a plait.App"),
    ]:
        done = subprocess.run(
            [*command, target], cwd=root, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode != 0
        assert error in done.stderr


# -- reST in docstrings ----------------------------------------------------------------------------


class Quote(msgspec.Struct):
    """A price of a :class:`~decimal.Decimal` kind for ``symbol``, as :data:`plait.SAME_ORIGIN`
    says, or :func:`the listener <plait.listener>`."""

    symbol: str


def test_descriptions_from_docstrings_are_commonmark() -> None:
    @plait.listener("/quotes")
    async def quotes(data: Quote) -> Quote:
        """Answer each ``Quote`` with a :class:`plait.Hub`'s latest."""
        return data

    document = App([quotes]).asyncapi()
    text = json.dumps(document)
    assert "``" not in text
    assert ":class:" not in text
    assert ":data:" not in text
    assert ":func:" not in text
    schema = document["components"]["schemas"]["Quote"]
    assert schema["description"] == (
        "A price of a `Decimal` kind for `symbol`, as `plait.SAME_ORIGIN`\nsays, or `the listener`."
    )
    summaries = [
        value["summary"]
        for value in _walk(document)
        if isinstance(value, dict) and "summary" in value
    ]
    assert "Answer each `Quote` with a `plait.Hub`'s latest." in summaries


def _walk(value: Any) -> list[Any]:
    """``value`` and everything in it."""
    found = [value]
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    )
    for child in children:
        found.extend(_walk(child))
    return found


def test_python_m_plait_help_is_plain_text() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "plait", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(plait.__file__).parent.parent)},
    )
    assert "python -m plait asyncapi module:app" in result.stdout
    assert "``" not in result.stdout
    assert ":class:" not in result.stdout
