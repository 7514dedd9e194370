"""Logging that helps operators: per-module loggers, debug open/close, errors with
tracebacks, nothing printed."""

from __future__ import annotations

import logging

import pytest

import plait
from plait import App, WebSocket
from plait.testing import AsyncTestClient

pytestmark = pytest.mark.anyio


async def test_open_close_at_debug_and_errors_with_tracebacks(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    @plait.websocket("/ok")
    async def ok(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(4000, "bye")

    @plait.websocket("/fail")
    async def fail(ws: WebSocket) -> None:
        await ws.accept()
        raise LookupError("broken")

    caplog.set_level(logging.DEBUG, logger="plait")
    async with AsyncTestClient(App(routes=[ok, fail])) as client:
        for path in ("/ok", "/fail"):
            async with client.websocket_connect(path) as session:
                with pytest.raises(plait.WebSocketDisconnect):
                    await session.receive()

    engine = [r for r in caplog.records if r.name == "plait._connection"]
    debug = [r.getMessage() for r in engine if r.levelno == logging.DEBUG]
    assert "connection opened: /ok" in debug
    assert "connection closed: /ok with code 4000 by the application" in debug
    assert "connection closed: /fail with code 1011 by the application" in debug
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["handler for /fail failed"]
    assert errors[0].exc_info is not None
    assert errors[0].exc_info[0] is LookupError
    assert all(r.name.startswith("plait.") for r in caplog.records if "plait" in r.name)
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")  # nothing printed
