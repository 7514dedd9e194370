"""``examples.presence`` runs: in-process with the test client, on asyncio and trio
(under two hypercorn processes sharing Redis: ``integration/test_presence_hypercorn.py``)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from examples.presence import app

from _support import closed
from plait.testing import AsyncTestClient, AsyncWebSocketTestSession, WebSocketDenied

pytestmark = pytest.mark.anyio


async def receive(ws: AsyncWebSocketTestSession) -> dict[str, Any]:
    with anyio.fail_after(5):
        event: dict[str, Any] = await ws.receive_json()
    return event


def counts(members: dict[str, Any]) -> dict[str, int]:
    return {key: member["count"] for key, member in members.items()}


def statuses(members: dict[str, Any]) -> dict[str, list[str]]:
    return {key: [meta["status"] for meta in member["metas"]] for key, member in members.items()}


async def test_presence_example_joins_tabs_statuses_and_leaves() -> None:
    async with (
        AsyncTestClient(app) as client,
        client.websocket_connect("/presence/lobby?name=ada") as ada,
    ):
        state = await receive(ada)
        assert state["type"] == "presence_state"
        assert counts(state["presences"]) == {"ada": 1}  # in it already
        async with client.websocket_connect("/presence/lobby?name=ada") as tab:
            joined = await receive(ada)
            assert joined["type"] == "presence_diff"
            assert counts(joined["joins"]) == {"ada": 2}  # two tabs, one member
            assert counts((await receive(tab))["presences"]) == {"ada": 2}
            async with client.websocket_connect("/presence/lobby?name=bob") as bob:
                assert counts((await receive(ada))["joins"]) == {"bob": 1}
                assert counts((await receive(tab))["joins"]) == {"bob": 1}
                await receive(bob)
                await bob.send_json({"status": "away"})
                for ws in (ada, tab, bob):
                    changed = await receive(ws)
                    assert statuses(changed["leaves"]) == {"bob": ["online"]}
                    assert statuses(changed["joins"]) == {"bob": ["away"]}
                    assert counts(changed["joins"]) == {"bob": 1}
                await bob.send_json({"status": "asleep"})  # not a status it takes
                assert (await closed(bob)).code == 1007
            for ws in (ada, tab):
                assert counts((await receive(ws))["leaves"]) == {"bob": 0}
        left = await receive(ada)
        assert counts(left["leaves"]) == {"ada": 1}
        assert left["joins"] == {}


async def test_presence_example_refuses_a_key_it_does_not_take() -> None:
    async with AsyncTestClient(app) as client:
        with pytest.raises(WebSocketDenied) as info:
            async with client.websocket_connect("/presence/lobby?name=" + "x" * 300):
                pass
        assert info.value.status_code == 403  # refused at the handshake
        async with client.websocket_connect("/presence/lobby?name=ada") as ada:
            assert counts((await receive(ada))["presences"]) == {"ada": 1}
