"""The Origin allow-list against cross-site WebSocket hijacking (issue 10, point 6)."""

from __future__ import annotations

import json
import logging

import pytest

import plait
from plait import App, WebSocketRoute
from plait._app import _origin_refused
from plait._origins import OriginPolicy
from plait.testing import AsyncTestClient, WebSocketDenied

POLICY = OriginPolicy(["https://app.example.com", "https://*.example.org", "http://localhost:8000"])


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://APP.Example.com:443", True),  # case and the default port do not matter
        ("https://app.example.com/", True),
        ("http://app.example.com", False),  # another scheme is another origin
        ("https://app.example.com:8443", False),
        ("https://app.example.com.evil.test", False),
        ("https://evil.test", False),
        ("https://a.example.org", True),
        ("https://a.b.example.org", True),
        ("https://example.org", False),  # a wildcard is subdomains only
        ("https://badexample.org", False),
        ("http://localhost:8000", True),
        ("http://localhost", False),
        ("null", False),  # sandboxed iframes and file: pages
        ("https://user@app.example.com", False),
        ("https://app.example.com/path", False),
        ("x" * 5000, False),
        (None, True),  # no Origin header: not a browser, nothing to hijack
    ],
)
def test_the_policy_matches_origins(origin: str | None, allowed: bool) -> None:
    assert POLICY.allows(origin, host="app.example.com") is allowed


def test_same_origin_follows_the_host_header() -> None:
    policy = OriginPolicy([plait.SAME_ORIGIN])
    assert policy.allows("https://chat.test", "chat.test")
    assert policy.allows("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert policy.allows("https://chat.test", "chat.test:443")
    assert not policy.allows("https://chat.test", "other.test")
    assert not policy.allows("http://127.0.0.1:9000", "127.0.0.1:8000")
    assert not policy.allows("https://chat.test", None)


@pytest.mark.parametrize("entry", ["app.example.com", "https://", "https://a.test/path", "*"])
def test_an_entry_that_is_not_an_origin_is_refused_when_the_route_is_built(entry: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        App(allowed_origins=[entry])
    with pytest.raises(ValueError, match="is not an origin"):
        WebSocketRoute("/x", allowed_origins=[entry])


TWO_ORIGINS = "more than one Origin header"


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ([("origin", "http://evil.test"), ("origin", "http://a.test")], TWO_ORIGINS),
        ([("origin", "http://a.test"), ("origin", "http://evil.test")], TWO_ORIGINS),
        ([("host", "evil.test"), ("origin", "http://evil.test")], "more than one Host header"),
        ([("origin", "http://evil.test")], "origin not allowed"),
        ([("origin", "http://a.test")], None),
        ([], None),  # not a browser
    ],
)
def test_a_handshake_names_one_origin_and_one_host(
    headers: list[tuple[str, str]], refused: str | None
) -> None:
    """A browser sends one of each: with two, which one a check read would be a guess."""
    scope = {
        "headers": [(b"host", b"a.test")]
        + [(name.encode(), value.encode()) for name, value in headers]
    }
    assert _origin_refused(OriginPolicy([plait.SAME_ORIGIN]), scope) == refused


def _echo_route(path: str, **options: object) -> WebSocketRoute:
    route = WebSocketRoute(path, **options)  # type: ignore[arg-type]

    @route.listener()
    async def echo(data: str) -> str:
        return data

    return route


@pytest.mark.anyio
async def test_a_cross_site_handshake_is_refused_with_403_and_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="plait")
    app = App(
        routes=[
            _echo_route("/app"),
            _echo_route("/open", allowed_origins=["https://partner.test"]),
        ],
        allowed_origins=["https://chat.example.com"],
    )
    async with AsyncTestClient(app) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/app", headers={"origin": "https://evil.test"}):
                pytest.fail("a cross-site handshake was accepted")
        assert info.value.status_code == 403
        assert json.loads(info.value.body) == {"detail": "origin not allowed"}
        refused = [r.getMessage() for r in caplog.records if "not allowed" in r.getMessage()]
        assert refused == ["refused /app: origin https://evil.test is not allowed"]
        assert [r.levelno for r in caplog.records if "not allowed" in r.getMessage()] == [
            logging.INFO
        ]
        for path, origin in (
            ("/app", "https://chat.example.com"),
            ("/open", "https://partner.test"),
        ):
            async with client.websocket_connect(path, headers={"origin": origin}) as ws:
                await ws.send_text("hi")
                assert await ws.receive_text() == "hi"
        async with client.websocket_connect("/app") as ws:  # no Origin: not a browser
            await ws.send_text("hi")
            assert await ws.receive_text() == "hi"
        # the route's own list replaces the App's
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect(
                "/open", headers={"origin": "https://chat.example.com"}
            ):
                pytest.fail("an origin only the App allows was accepted by the route")
        assert info.value.status_code == 403
