"""The connection's lifecycle table, synchronously: every phase by every event, no I/O.

``EXPECTED`` below is the specification written out by hand, one line per transition
that does something; every other (phase, event) pair must change nothing. The table in
``plait._lifecycle`` is built by loops; this one is not, so the two check each other.
"""

from __future__ import annotations

import itertools

import pytest

from plait._lifecycle import TABLE, Action, Event, Phase, Transition, transition

P, E, A = Phase, Event, Action

LEFT = (A.RECORD_PEER_CLOSE, A.STOP_SENDING, A.END_RECEIVES, A.PEER_GONE, A.CANCEL_ALL)
LEFT_UNREAD = (A.RECORD_PEER_CLOSE, A.STOP_SENDING, A.END_RECEIVES, A.START_DRAIN_TIMER)
OVER = (A.RECORD_PEER_CLOSE, A.STOP_SENDING, A.PEER_GONE, A.CANCEL_ALL)
CUT = (A.STOP_SENDING, A.END_RECEIVES, A.CANCEL_ALL, A.SAY_GOODBYE)
BROKEN = (A.RECORD_PEER_CLOSE, A.STOP_SENDING, A.START_DRAIN_TIMER)
BROKEN_OVER = (A.END_RECEIVES, A.PEER_GONE, A.CANCEL_ALL)
ENGINE_CLOSE = (A.QUEUE_CLOSE, A.END_RECEIVES, A.CANCEL_HANDLER, A.START_DRAIN_TIMER)

EXPECTED: dict[tuple[Phase, Event], Transition] = {
    # the handshake
    (P.HANDSHAKE, E.ACCEPTED): Transition(P.OPEN, (A.START_WATCHDOGS,)),
    (P.HANDSHAKE, E.PEER_LEFT): Transition(P.GONE, LEFT),
    (P.HANDSHAKE, E.SEND_FAILED): Transition(P.BROKEN, BROKEN),
    (P.HANDSHAKE, E.PEER_LEFT_UNREAD): Transition(P.LEAVING, LEFT_UNREAD),
    (P.HANDSHAKE, E.HANDLER_ENDED): Transition(P.CLOSING),
    (P.HANDSHAKE, E.ENGINE_CLOSE): Transition(P.CLOSING, ENGINE_CLOSE[1:]),
    (P.HANDSHAKE, E.CLOSE_NOW): Transition(P.CUT, CUT),
    (P.HANDSHAKE, E.CANCELLED): Transition(P.CUT, CUT),
    (P.HANDSHAKE, E.CLOSE_SENT): Transition(P.CLOSED),
    # open
    (P.OPEN, E.PEER_LEFT): Transition(P.GONE, LEFT),
    (P.OPEN, E.SEND_FAILED): Transition(P.BROKEN, BROKEN),
    (P.OPEN, E.PEER_LEFT_UNREAD): Transition(P.LEAVING, LEFT_UNREAD),
    (P.OPEN, E.HANDLER_ENDED): Transition(P.CLOSING),
    (P.OPEN, E.ENGINE_CLOSE): Transition(P.CLOSING, ENGINE_CLOSE),
    (P.OPEN, E.CLOSE_NOW): Transition(P.CUT, CUT),
    (P.OPEN, E.CANCELLED): Transition(P.CUT, CUT),
    (P.OPEN, E.CLOSE_SENT): Transition(P.CLOSED),
    # a send failed; the handler takes what the server still hands over
    (P.BROKEN, E.PEER_LEFT_UNREAD): Transition(P.LEAVING, (A.END_RECEIVES,)),
    (P.BROKEN, E.PEER_LEFT): Transition(P.GONE, BROKEN_OVER),
    (P.BROKEN, E.DRAIN_TIMEOUT): Transition(P.GONE, BROKEN_OVER),
    (P.BROKEN, E.HANDLER_ENDED): Transition(P.GONE, BROKEN_OVER),
    (P.BROKEN, E.ENGINE_CLOSE): Transition(P.GONE, BROKEN_OVER),
    (P.BROKEN, E.CLOSE_NOW): Transition(P.GONE, BROKEN_OVER),
    (P.BROKEN, E.CANCELLED): Transition(P.GONE, BROKEN_OVER),
    # the peer left; the handler takes what it sent first
    (P.LEAVING, E.DRAINED): Transition(P.GONE, (A.PEER_GONE, A.CANCEL_ALL)),
    (P.LEAVING, E.DRAIN_TIMEOUT): Transition(P.GONE, (A.PEER_GONE, A.CANCEL_ALL)),
    (P.LEAVING, E.HANDLER_ENDED): Transition(P.GONE, (A.PEER_GONE, A.CANCEL_ALL)),
    (P.LEAVING, E.CLOSE_NOW): Transition(P.GONE, (A.PEER_GONE, A.CANCEL_ALL)),
    (P.LEAVING, E.CANCELLED): Transition(P.GONE, (A.PEER_GONE, A.CANCEL_ALL)),
    # the application's close is queued
    (P.CLOSING, E.PEER_LEFT): Transition(P.GONE, OVER),
    (P.CLOSING, E.PEER_LEFT_UNREAD): Transition(P.GONE, OVER),
    (P.CLOSING, E.SEND_FAILED): Transition(P.GONE, OVER),
    (P.CLOSING, E.CLOSE_SENT): Transition(P.CLOSED),
    (P.CLOSING, E.DRAIN_TIMEOUT): Transition(P.CUT, CUT),
    (P.CLOSING, E.CLOSE_NOW): Transition(P.CUT, CUT),
    (P.CLOSING, E.CANCELLED): Transition(P.CUT, CUT),
    # the close left
    (P.CLOSED, E.PEER_LEFT): Transition(P.GONE, OVER),
    (P.CLOSED, E.PEER_LEFT_UNREAD): Transition(P.GONE, OVER),
    (P.CLOSED, E.SEND_FAILED): Transition(P.GONE, OVER),
    (P.CLOSED, E.DRAIN_TIMEOUT): Transition(P.CLOSED, (A.CANCEL_ALL,)),
    (P.CLOSED, E.CLOSE_NOW): Transition(P.CLOSED, (A.CANCEL_ALL,)),
    (P.CLOSED, E.CANCELLED): Transition(P.CLOSED, (A.CANCEL_ALL,)),
    # cut by the engine: the close is said once the tasks are gone
    (P.CUT, E.CLOSE_SENT): Transition(P.CLOSED),
    (P.CUT, E.PEER_LEFT): Transition(P.GONE, (A.RECORD_PEER_CLOSE, A.PEER_GONE)),
    (P.CUT, E.PEER_LEFT_UNREAD): Transition(P.GONE, (A.RECORD_PEER_CLOSE, A.PEER_GONE)),
    (P.CUT, E.SEND_FAILED): Transition(P.GONE, (A.RECORD_PEER_CLOSE, A.PEER_GONE)),
}

PAIRS = list(itertools.product(Phase, Event))


@pytest.mark.parametrize(("phase", "event"), PAIRS, ids=[f"{p.name}-{e.name}" for p, e in PAIRS])
def test_every_phase_by_every_event(phase: Phase, event: Event) -> None:
    assert transition(phase, event) == EXPECTED.get((phase, event), Transition(phase))


def test_the_table_is_complete_and_nothing_else() -> None:
    assert set(TABLE) == set(PAIRS)


def test_gone_is_final() -> None:
    assert all(TABLE[P.GONE, event] == Transition(P.GONE) for event in Event)


def test_every_phase_can_reach_gone() -> None:
    reached = {P.GONE}
    while True:
        more = {p for (p, _), t in TABLE.items() if t.phase in reached} - reached
        if not more:
            break
        reached |= more
    assert reached == set(Phase)


def test_cancelling_everything_leaves_no_task_behind_the_phase() -> None:
    """CANCEL_ALL only where the connection's tasks are over (GONE, CUT, CLOSED)."""
    for (phase, event), step in TABLE.items():
        if A.CANCEL_ALL in step.actions:
            assert step.phase in (P.GONE, P.CUT, P.CLOSED), (phase, event)


def test_once_the_peer_left_nothing_more_is_sent() -> None:
    """Every departure stops sending (or finds it stopped), and no path leads from a
    phase the peer left back to one that sends."""
    departures = (E.PEER_LEFT, E.PEER_LEFT_UNREAD, E.SEND_FAILED)
    for phase in (P.HANDSHAKE, P.OPEN, P.CLOSING, P.CLOSED):
        for event in departures:
            assert A.STOP_SENDING in TABLE[phase, event].actions, (phase, event)
    for phase in (P.BROKEN, P.LEAVING, P.GONE):
        for event in Event:
            step = TABLE[phase, event]
            assert step.phase in (P.BROKEN, P.LEAVING, P.GONE), (phase, event)
            assert A.QUEUE_CLOSE not in step.actions
            assert A.SAY_GOODBYE not in step.actions


def test_a_close_is_queued_or_owed_at_most_once() -> None:
    for (phase, event), step in TABLE.items():
        if A.QUEUE_CLOSE in step.actions or A.SAY_GOODBYE in step.actions:
            assert phase in (P.HANDSHAKE, P.OPEN, P.CLOSING), (phase, event)
            assert step.phase in (P.CLOSING, P.CUT), (phase, event)


def test_a_handler_that_outlives_the_engines_close_is_cut() -> None:
    """The drain timer bounds a handler the engine cancelled: past it, everything goes."""
    for phase in (P.HANDSHAKE, P.OPEN):
        assert A.START_DRAIN_TIMER in TABLE[phase, E.ENGINE_CLOSE].actions
    assert A.CANCEL_ALL in TABLE[P.CLOSING, E.DRAIN_TIMEOUT].actions
    assert A.CANCEL_ALL in TABLE[P.CLOSED, E.DRAIN_TIMEOUT].actions


def test_whatever_the_peer_left_with_is_taken_within_the_drain() -> None:
    """Every way the peer goes with messages maybe unread starts the drain timer (or
    comes from a phase that runs it), and the timer's end cancels everything."""
    for phase in (P.HANDSHAKE, P.OPEN):
        for event in (E.PEER_LEFT_UNREAD, E.SEND_FAILED):
            assert A.START_DRAIN_TIMER in TABLE[phase, event].actions, (phase, event)
    assert TABLE[P.BROKEN, E.PEER_LEFT_UNREAD].phase is P.LEAVING
    for phase in (P.BROKEN, P.LEAVING):
        assert A.CANCEL_ALL in TABLE[phase, E.DRAIN_TIMEOUT].actions, phase
