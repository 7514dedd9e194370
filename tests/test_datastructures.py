"""URL, headers, query parameters, cookies, state, close validation."""

from __future__ import annotations

import pytest

from plait import URL, Address, DenialResponse, State, WebSocket
from plait._websocket import validate_close


def make_scope(**overrides: object) -> dict[str, object]:
    scope: dict[str, object] = {
        "type": "websocket",
        "scheme": "wss",
        "path": "/chat/room 1",
        "raw_path": b"/chat/room%201",
        "root_path": "",
        "query_string": b"search=a&tag=x&tag=y&empty=",
        "headers": [
            (b"host", b"example.com:8443"),
            (b"x-token", b"abc"),
            (b"x-multi", b"1"),
            (b"x-multi", b"2"),
            (b"cookie", b"session=s1; theme=dark"),
            (b"sec-websocket-version", b"13"),
        ],
        "client": ("10.0.0.7", 51234),
        "server": ("example.com", 8443),
        "subprotocols": ["chat.v2", "chat.v1"],
        "path_params": {"username": "ada"},
    }
    scope.update(overrides)
    return scope


async def _never() -> dict[str, object]:
    raise AssertionError("not called")


async def _nosend(message: object) -> None:
    raise AssertionError("not called")


def websocket(**overrides: object) -> WebSocket:
    return WebSocket(make_scope(**overrides), _never, _nosend)


def test_mapping_over_scope() -> None:
    ws = websocket()
    assert ws["path"] == "/chat/room 1"
    assert "headers" in ws
    assert len(ws) == len(make_scope())


def test_url_parts() -> None:
    url = websocket().url
    assert isinstance(url, str)
    assert url == "wss://example.com:8443/chat/room 1?search=a&tag=x&tag=y&empty="
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "wss",
        "example.com",
        8443,
        "/chat/room 1",
    )
    assert url.query == "search=a&tag=x&tag=y&empty="
    assert url.is_secure


def test_url_without_host_header_uses_server_and_drops_default_port() -> None:
    ws = websocket(headers=[], server=("testserver", 80), scheme="ws", query_string=b"")
    assert ws.url == "ws://testserver/chat/room 1"
    assert ws.url.port is None


def test_url_includes_root_path() -> None:
    assert websocket(root_path="/api").url.path == "/api/chat/room 1"


def test_headers_are_case_insensitive_and_multi_valued() -> None:
    headers = websocket().headers
    assert headers["X-Token"] == "abc"
    assert headers["sec-websocket-version"] == "13"
    assert headers.getall("x-multi") == ["1", "2"]
    with pytest.raises(TypeError):
        headers["x-new"] = "no"  # type: ignore[index]


def test_query_params_are_multi_valued() -> None:
    params = websocket().query_params
    assert params["search"] == "a"
    assert params.getall("tag") == ["x", "y"]
    assert params["empty"] == ""


def test_cookies_path_params_client_subprotocols() -> None:
    ws = websocket()
    assert ws.cookies == {"session": "s1", "theme": "dark"}
    assert ws.path_params == {"username": "ada"}
    assert ws.client == Address("10.0.0.7", 51234)
    assert ws.client.host == "10.0.0.7"
    assert ws.subprotocols == ["chat.v2", "chat.v1"]
    assert websocket(client=None).client is None


def test_state_is_stored_in_the_scope() -> None:
    scope = make_scope()
    ws = WebSocket(scope, _never, _nosend)
    ws.state.user = "ada"
    assert ws.state.user == "ada"
    assert scope["state"] == {"user": "ada"}
    assert "user" in ws.state
    del ws.state.user
    with pytest.raises(AttributeError, match="no attribute 'user'"):
        _ = ws.state.user
    assert repr(State({"a": 1})) == "State({'a': 1})"


def test_websocket_needs_a_websocket_scope() -> None:
    with pytest.raises(ValueError, match="'websocket' scope"):
        WebSocket({"type": "http"}, _never, _nosend)


def test_url_is_a_str() -> None:
    assert URL("ws://h/p?q=1").query == "q=1"


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1008, 1009, 1011, 1013, 3000, 4999])
def test_sendable_close_codes(code: int) -> None:
    assert validate_close(code, "ok") == "ok"


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 2000, 5000])
def test_close_codes_that_may_not_be_sent(code: int) -> None:
    with pytest.raises(ValueError, match="invalid close code"):
        validate_close(code, None)


def test_close_reason_is_cut_to_123_bytes_on_a_character_boundary() -> None:
    reason = validate_close(1000, "é" * 100)  # 200 bytes in UTF-8
    assert len(reason.encode()) <= 123
    assert reason == "é" * 61


def test_denial_response_bodies() -> None:
    assert DenialResponse({"error": "nope"}, 401).headers[-2:] == [
        (b"content-type", b"application/json"),
        (b"content-length", b"16"),
    ]
    text = DenialResponse("no", headers={"X-Why": "because"})
    assert text.status_code == 403
    assert (b"x-why", b"because") in text.headers
    assert (b"content-type", b"text/plain; charset=utf-8") in text.headers
