"""The connection's lifecycle as one table: phases, events, and what each transition does.

Everything the engine decides about a connection's life lives here, and nothing here does
I/O (the approach of h11's ``_state.py``). :class:`~plait._connection.Connection` feeds
it events and carries out the actions it returns; the ASGI protocol's own rules (who may
send what) stay in :mod:`plait._state`.

The phases, in the order a connection usually meets them:

* ``HANDSHAKE``: the handler runs and has not accepted.
* ``OPEN``: accepted; messages flow both ways.
* ``BROKEN``: the server's ``send`` raised, so the peer is gone, but the server may still
  hand over what the peer sent before it went: the reader reads on and the handler takes
  it, until the server reports the peer gone (then ``LEAVING`` or ``GONE``), for at most
  ``drain_timeout``. Nothing can be sent, as in ``LEAVING``.
* ``LEAVING``: the peer left, and the handler still takes what it sent before leaving
  (for at most ``drain_timeout``). Nobody can read what is sent now: what was queued is
  dropped, the handler's own sends raise, listener and stream replies are dropped.
* ``CLOSING``: the application's close is queued (the handler ended, or the engine
  closed for a limit or a timeout and cancelled the handler); the writer delivers what
  was queued before it.
* ``CLOSED``: the close frame (or the denial) has left; the connection waits for the
  peer to go.
* ``CUT``: the engine ended everything at once (a client too slow to read, a
  subscriber the hub lets go): every task is cancelled and the close is said once
  they are gone.
* ``GONE``: the peer is gone and every task is cancelled. Nothing leaves any more.

``GONE`` and ``CUT`` end the connection's tasks; ``CLOSED`` ends what it sends.
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple

__all__ = ("TABLE", "Action", "Event", "Phase", "Transition", "transition")


class Phase(enum.Enum):
    """Where a connection is in its life (see the module's docstring)."""

    HANDSHAKE = "handshake"
    OPEN = "open"
    BROKEN = "broken"
    LEAVING = "leaving"
    CLOSING = "closing"
    CLOSED = "closed"
    CUT = "cut"
    GONE = "gone"


class Event(enum.Enum):
    """What happens to a connection."""

    ACCEPTED = "accepted"
    """The handler accepted the handshake."""
    PEER_LEFT = "peer left"
    """The server reported the peer gone, and the handler has taken all it sent."""
    PEER_LEFT_UNREAD = "peer left, unread"
    """The server reported the peer gone while messages it sent wait for the handler."""
    SEND_FAILED = "send failed"
    """The server's ``send`` raised: the peer is gone, and what the server still hands
    over is what it sent before it went."""
    DRAINED = "drained"
    """The handler took everything the peer sent before it left."""
    DRAIN_TIMEOUT = "drain timeout"
    """``drain_timeout`` passed since the peer left, or since the engine closed."""
    HANDLER_ENDED = "handler ended"
    """The handler returned or raised (its children have ended)."""
    ENGINE_CLOSE = "engine close"
    """A limit or a timeout closes the connection (1008, 1009, 1001): close after what
    is queued, and cancel the handler."""
    CLOSE_NOW = "close now"
    """End at once: a client too slow to read, a subscriber let go by the hub."""
    CLOSE_SENT = "close sent"
    """The final frame (a close, or a denial's last body) left."""
    CANCELLED = "cancelled"
    """The connection was cancelled from outside (the server shuts down)."""


class Action(enum.Enum):
    """What a transition makes the engine do, in the order listed in the table."""

    START_WATCHDOGS = "start the idle, heartbeat and send watchdogs"
    RECORD_PEER_CLOSE = "record the peer's close code (the first close recorded stays)"
    STOP_SENDING = "drop what is queued, cut a send in flight, refuse what comes"
    END_RECEIVES = "close the inbound: a receive past what it holds gets the disconnect"
    START_DRAIN_TIMER = "give the handler drain_timeout to take what is buffered"
    QUEUE_CLOSE = "queue the engine's close behind what is queued"
    CANCEL_HANDLER = "cancel the handler (its children end with it)"
    CANCEL_ALL = "cancel every task of the connection"
    SAY_GOODBYE = "send the close once the connection's tasks are gone"
    PEER_GONE = "mark the peer's side disconnected: nothing more is received"


_P, _E, _A = Phase, Event, Action


class Transition(NamedTuple):
    """The phase an event leads to, and the actions taken on the way."""

    phase: Phase
    actions: tuple[Action, ...] = ()


# What the peer leaving does, from a phase where the handler may still read.
_LEFT: Final = Transition(
    _P.GONE,
    (_A.RECORD_PEER_CLOSE, _A.STOP_SENDING, _A.END_RECEIVES, _A.PEER_GONE, _A.CANCEL_ALL),
)
_LEFT_UNREAD: Final = Transition(
    _P.LEAVING,
    (_A.RECORD_PEER_CLOSE, _A.STOP_SENDING, _A.END_RECEIVES, _A.START_DRAIN_TIMER),
)
# A send failed: nothing more leaves, and the reader reads on until the server's word.
_BROKEN: Final = Transition(
    _P.BROKEN, (_A.RECORD_PEER_CLOSE, _A.STOP_SENDING, _A.START_DRAIN_TIMER)
)
# BROKEN ends: what the server handed over is all the handler will get.
_BROKEN_OVER: Final = Transition(_P.GONE, (_A.END_RECEIVES, _A.PEER_GONE, _A.CANCEL_ALL))
# The peer leaving once the application closed: nothing can be said any more.
_OVER: Final = Transition(
    _P.GONE, (_A.RECORD_PEER_CLOSE, _A.STOP_SENDING, _A.PEER_GONE, _A.CANCEL_ALL)
)
# Ended at once by the engine: the close is said once the tasks are gone.
_CUT: Final = Transition(_P.CUT, (_A.STOP_SENDING, _A.END_RECEIVES, _A.CANCEL_ALL, _A.SAY_GOODBYE))
_DEPARTURES: Final = (_E.PEER_LEFT, _E.PEER_LEFT_UNREAD, _E.SEND_FAILED)


def _rows() -> dict[tuple[Phase, Event], Transition]:
    rows: dict[tuple[Phase, Event], Transition] = {}
    for phase in (_P.HANDSHAKE, _P.OPEN):
        rows[phase, _E.PEER_LEFT] = _LEFT
        rows[phase, _E.PEER_LEFT_UNREAD] = _LEFT_UNREAD
        rows[phase, _E.SEND_FAILED] = _BROKEN
        rows[phase, _E.HANDLER_ENDED] = Transition(_P.CLOSING)  # the run queues its close
        rows[phase, _E.CLOSE_NOW] = rows[phase, _E.CANCELLED] = _CUT
    rows[_P.HANDSHAKE, _E.ACCEPTED] = Transition(_P.OPEN, (_A.START_WATCHDOGS,))
    # Before accept there is no close to queue: the handler's end denies the handshake.
    # The drain timer bounds the handler's own end (run() stops it once the handler
    # ended): a handler stuck past it, in a send the client does not read, is cut.
    rows[_P.HANDSHAKE, _E.ENGINE_CLOSE] = Transition(
        _P.CLOSING, (_A.END_RECEIVES, _A.CANCEL_HANDLER, _A.START_DRAIN_TIMER)
    )
    rows[_P.OPEN, _E.ENGINE_CLOSE] = Transition(
        _P.CLOSING,
        (_A.QUEUE_CLOSE, _A.END_RECEIVES, _A.CANCEL_HANDLER, _A.START_DRAIN_TIMER),
    )
    # BROKEN: the server's disconnect tells what is left to take; anything else ends it.
    rows[_P.BROKEN, _E.PEER_LEFT_UNREAD] = Transition(_P.LEAVING, (_A.END_RECEIVES,))
    for event in (
        _E.PEER_LEFT,
        _E.DRAIN_TIMEOUT,
        _E.HANDLER_ENDED,
        _E.ENGINE_CLOSE,
        _E.CLOSE_NOW,
        _E.CANCELLED,
    ):
        rows[_P.BROKEN, event] = _BROKEN_OVER
    # LEAVING: the handler takes what the peer sent, then everything is cancelled.
    for event in (_E.DRAINED, _E.DRAIN_TIMEOUT, _E.HANDLER_ENDED, _E.CLOSE_NOW, _E.CANCELLED):
        rows[_P.LEAVING, event] = Transition(_P.GONE, (_A.PEER_GONE, _A.CANCEL_ALL))
    # CLOSING: the application's close is queued; the peer leaving ends what is left.
    for event in _DEPARTURES:
        rows[_P.CLOSING, event] = rows[_P.CLOSED, event] = _OVER
        rows[_P.CUT, event] = Transition(_P.GONE, (_A.RECORD_PEER_CLOSE, _A.PEER_GONE))
    # The final frame left: the handler's own close or denial, the run's, the engine's.
    for phase in (_P.HANDSHAKE, _P.OPEN, _P.CLOSING, _P.CUT):
        rows[phase, _E.CLOSE_SENT] = Transition(_P.CLOSED)
    for event in (_E.DRAIN_TIMEOUT, _E.CLOSE_NOW, _E.CANCELLED):
        rows[_P.CLOSING, event] = _CUT
        rows[_P.CLOSED, event] = Transition(_P.CLOSED, (_A.CANCEL_ALL,))
    # Everything else changes nothing: an event that comes too late to matter.
    for phase in Phase:
        for event in Event:
            rows.setdefault((phase, event), Transition(phase))
    return rows


TABLE: Final[dict[tuple[Phase, Event], Transition]] = _rows()
"""Every (phase, event) pair and its transition: the whole lifecycle."""


def transition(phase: Phase, event: Event) -> Transition:
    """The transition ``event`` causes in ``phase``."""
    return TABLE[phase, event]
