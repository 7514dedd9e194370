"""The ASGI WebSocket state machine, synchronously: no I/O, every transition."""

from __future__ import annotations

import pytest

from plait import WebSocketClosed, WebSocketDisconnect, WebSocketState, WebSocketStateError
from plait._state import ConnectionState

S = WebSocketState


def connected() -> ConnectionState:
    state = ConnectionState()
    state.did_receive("websocket.connect")
    state.check_send("websocket.accept")
    state.did_send("websocket.accept")
    return state


def test_handshake_then_messages() -> None:
    state = connected()
    assert (state.application, state.peer) == (S.CONNECTED, S.CONNECTED)
    assert state.is_open
    assert state.check_send("websocket.send") is S.CONNECTED
    state.check_receive(raw=False)
    state.did_receive("websocket.receive")


def test_receive_before_accept_names_the_state() -> None:
    state = ConnectionState()
    state.check_receive(raw=True)  # the raw receive may read websocket.connect
    with pytest.raises(WebSocketStateError, match=r"before accept\(\).*CONNECTING"):
        state.check_receive(raw=False)


def test_send_before_accept_is_refused() -> None:
    with pytest.raises(WebSocketStateError, match=r"before accept\(\)"):
        ConnectionState().check_send("websocket.send")


def test_accept_twice_is_refused() -> None:
    with pytest.raises(WebSocketStateError, match="already accepted"):
        connected().check_send("websocket.accept")


def test_send_after_application_close_raises_closed() -> None:
    state = connected()
    state.check_send("websocket.close")
    state.did_send("websocket.close", code=4000, reason="bye")
    with pytest.raises(WebSocketClosed, match="application already closed") as info:
        state.check_send("websocket.send")
    assert isinstance(info.value, WebSocketDisconnect)
    assert (info.value.code, info.value.reason) == (4000, "bye")
    with pytest.raises(WebSocketClosed):
        state.check_receive(raw=False)


def test_peer_disconnect_makes_send_and_receive_raise_disconnect() -> None:
    state = connected()
    state.did_receive("websocket.disconnect", 1001, "going away")
    with pytest.raises(WebSocketDisconnect) as info:
        state.check_receive(raw=False)
    assert (info.value.code, info.value.reason) == (1001, "going away")
    with pytest.raises(WebSocketClosed, match="closed by the peer"):
        state.check_send("websocket.send")


def test_peer_disconnect_is_idempotent_and_keeps_the_first_code() -> None:
    state = connected()
    state.peer_disconnected(1001, "first")
    state.did_receive("websocket.disconnect", 1006, "")
    assert (state.close_code, state.close_reason, state.closed_by) == (1001, "first", "peer")


def test_close_before_accept_denies() -> None:
    state = ConnectionState()
    assert state.check_send("websocket.close") is S.DISCONNECTED


def test_denial_response_states() -> None:
    state = ConnectionState()
    state.check_send("websocket.http.response.start")
    state.did_send("websocket.http.response.start")
    assert state.application is S.RESPONSE
    more = state.check_send("websocket.http.response.body", more_body=True)
    assert more is S.RESPONSE
    final = state.check_send("websocket.http.response.body")
    assert final is S.DISCONNECTED
    with pytest.raises(WebSocketStateError, match="denial response"):
        state.check_send("websocket.accept")


def test_denial_after_accept_is_refused() -> None:
    with pytest.raises(WebSocketStateError, match="handshake is over"):
        connected().check_send("websocket.http.response.start")


def test_server_delivering_out_of_order_is_reported() -> None:
    state = ConnectionState()
    with pytest.raises(WebSocketStateError, match="server delivered"):
        state.did_receive("websocket.receive")


def test_data_read_before_the_disconnect_is_still_data() -> None:
    state = connected()
    state.peer_disconnected(1006, "")
    state.did_receive("websocket.receive")
    assert state.peer is S.DISCONNECTED


def test_the_next_state_comes_from_the_table_not_the_caller() -> None:
    state = ConnectionState()
    state.did_send("websocket.http.response.start")
    state.did_send("websocket.http.response.body", more_body=True)
    assert state.application is S.RESPONSE
    state.did_send("websocket.http.response.body", code=1000)
    assert (state.application, state.closed_by) == (S.DISCONNECTED, "application")
    assert not state.accepted


def test_engine_close_and_the_peer_closing_record_the_first_close() -> None:
    state = connected()
    assert state.accepted
    state.peer_closing(1001, "going away")
    assert state.peer is S.CONNECTED  # what it sent before leaving can still be read
    state.application_closed(1008, "too slow")
    assert (state.close_code, state.closed_by) == (1001, "peer")
    assert state.application is S.DISCONNECTED
    state.application_closed(1011, "")  # closed already: nothing changes
    assert state.close_code == 1001
