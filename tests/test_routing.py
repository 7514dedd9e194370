"""Path templates and converters, synchronously."""

from __future__ import annotations

import uuid

import pytest

from plait import App, RouteConflictError, WebSocketRoute
from plait._paths import PathTemplate


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/rooms/{room}", "/rooms/lobby", {"room": "lobby"}),
        ("rooms/{room}", "/rooms/lobby", {"room": "lobby"}),  # leading slash optional
        ("/u/{id:int}", "/u/42", {"id": 42}),
        ("/u/{id:int}", "/u/-7", {"id": -7}),
        ("/t/{x:float}", "/t/2.5", {"x": 2.5}),
        ("/t/{x:float}", "/t/3", {"x": 3.0}),
        (
            "/s/{uid:uuid}",
            "/s/12345678-1234-5678-1234-567812345678",
            {"uid": uuid.UUID("12345678-1234-5678-1234-567812345678")},
        ),
        ("/files/{rest:path}", "/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
        ("/a/{x:str}/b/{y}", "/a/1/b/2", {"x": "1", "y": "2"}),
        ("/static", "/static", {}),
    ],
)
def test_templates_match_and_convert(template: str, path: str, expected: dict[str, object]) -> None:
    assert PathTemplate(template).match(path) == expected


@pytest.mark.parametrize(
    ("template", "path"),
    [
        ("/rooms/{room}", "/rooms/a/b"),  # one segment only
        ("/rooms/{room}", "/rooms/"),
        ("/u/{id:int}", "/u/4x"),
        ("/t/{x:float}", "/t/1.2.3"),
        ("/s/{uid:uuid}", "/s/not-a-uuid"),
        ("/static", "/static/"),
        ("/a.b", "/aXb"),  # literal text is escaped
    ],
)
def test_templates_reject(template: str, path: str) -> None:
    assert PathTemplate(template).match(path) is None


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("/u/{id:nope}", "unknown converter 'nope'"),
        ("/u/{id}/{id}", "repeats"),
        ("/u/{id", "unbalanced"),
        ("/u/{1x}", "not a valid identifier"),
    ],
)
def test_malformed_templates_are_reported(template: str, message: str) -> None:
    with pytest.raises(RouteConflictError, match=message):
        PathTemplate(template)


def test_conflicting_routes_are_reported_when_the_app_is_built() -> None:
    first, second = WebSocketRoute("/a/{x}"), WebSocketRoute("a/{y}")
    with pytest.raises(RouteConflictError, match="match the same paths"):
        App(routes=[first, second])
    app = App(routes=[first, WebSocketRoute("/a/{x:int}")])  # different converter: no clash
    with pytest.raises(RouteConflictError):
        app.include_routes(second)


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/api/chat", "/api", "/chat"),
        ("/api", "/api", "/"),
        ("/apiary/x", "/api", "/apiary/x"),  # a prefix of a segment is not a mount
        ("/chat", "", "/chat"),
        ("/api/chat", "/api/", "/chat"),
    ],
)
def test_the_route_path_is_the_path_below_the_mount(path: str, root: str, expected: str) -> None:
    from plait._app import _route_path

    assert _route_path({"path": path, "root_path": root}) == expected
