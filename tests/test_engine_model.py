"""A model-based test of the connection engine: random interleavings, checked every step.

A Hypothesis state machine drives one connection served by the public
``plait.serve_connection`` through a fake ASGI server (tests/_engine_model_support.py):
the client sends, closes, resets, leaves during the handshake, reads or stops reading;
the server's ``send`` fails or stalls; virtual time passes across the engine's timeouts.
The handler's behaviour and the engine's options are drawn when the connection starts.
After every step the event loop is settled, and the invariants below compare what
happened with a small model of the engine's promises (DESIGN.md, section 1).

The loop runs in a background thread, one per example (several connections may follow
one another in it), on virtual time: trio's ``MockClock``, and on asyncio a loop whose
clock the test moves.

Environment:
    PLAIT_SOAK=1: many more examples and longer runs (``nox -s soak``).
    PLAIT_MODEL_SEED=N: replay a run (its seed is printed with every run).
    PLAIT_MODEL_SKIP=name,name: do not check these invariants (to look past a known
        violation for the next one).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from anyio import get_cancelled_exc_class
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import plait
from _engine_model_support import (
    BEHAVIOURS,
    NEVER_READS,
    READERS,
    Departure,
    Driver,
    FakeServer,
    HandlerRecord,
    HandlerSpec,
    Journal,
    Mark,
    build_handler,
    is_final,
    tasks_now,
)
from plait._backend import YIELD_EVERY

SOAK = os.environ.get("PLAIT_SOAK") == "1"
SEED = int(os.environ.get("PLAIT_MODEL_SEED") or secrets.randbits(32))
SKIP = frozenset(filter(None, os.environ.get("PLAIT_MODEL_SKIP", "").split(",")))

SETTINGS = settings(
    max_examples=1000 if SOAK else 200,
    stateful_step_count=50 if SOAK else 30,
    deadline=None,
    database=None,  # replay with PLAIT_MODEL_SEED; nothing written into the tree
    suppress_health_check=list(HealthCheck),
    # The explain phase traces every line of a failing example's replays: slow here.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
pytestmark = pytest.mark.timeout(3600 if SOAK else 240)

DEFAULT_DRAIN = 5.0  # serve_connection's defaults, for options the example leaves unset
DEFAULT_STALL = 10.0
# Once the engine knows the peer left, the connection ends within the drain and this
# much: a close said after the tasks are gone (1 s), and the read-on after a peer lost
# without a close (at most 5 s).
LINGER = 10.0
WIND_DOWN_CAP = 300.0  # virtual seconds the wind-down waits for the reset to be seen
EPSILON = 1e-9
# A send or receive that does not suspend counts, with the others of its connection,
# towards YIELD_EVERY, after which the next one yields: a loop of plait awaits yields at
# least once in this many.
MAX_AWAITS_WITHOUT_YIELD = YIELD_EVERY

OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "stall_timeout": st.sampled_from([0.5, 1.0, 2.0, None]),
        "on_stall": st.just("drop"),
        "drain_timeout": st.sampled_from([0.5, 1.0, 2.0]),
        "send_timeout": st.sampled_from([1.0, 2.0]),
        "idle_timeout": st.sampled_from([2.0, 3.0]),
        "heartbeat": st.just(plait.Heartbeat(interval=2, timeout=1)),
        "inbound_capacity": st.sampled_from([1, 2]),
        "outbound_capacity": st.sampled_from([1, 2]),
    },
)
HANDLERS = st.builds(
    HandlerSpec,
    behaviour=st.sampled_from(BEHAVIOURS),
    count=st.integers(0, 3),
    children=st.integers(0, 2),
    accept_delay=st.sampled_from([0.0, 1.0]),
)
SCOPE = {
    "type": "websocket",
    "asgi": {"version": "3.0"},
    "scheme": "ws",
    "path": "/model",
    "query_string": b"",
    "headers": [],
    "subprotocols": [],
    "extensions": {},  # no denial responses: a close before accept is the denial
}


class EngineModel(RuleBasedStateMachine):
    """One connection, its client, its server and the clock, step by step."""

    backend: ClassVar[str] = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.driver: Driver | None = None
        self.server: FakeServer = None  # type: ignore[assignment]  # until connect()
        self.done: Mark | None = None
        self.failed_check = False

    # -- the connection starts ----------------------------------------------------------

    @initialize()
    def start_the_loop(self) -> None:
        self.driver = driver = Driver(self.backend)
        self.journal = Journal(driver.now)
        self.now = 0.0
        self.baseline = driver.step(tasks_now)  # the driver's tasks and the step's own
        self.connections = 0

    @precondition(lambda self: self.server is None or self.done is not None)
    @rule(spec=HANDLERS, options=OPTIONS, socket=st.sampled_from([1, 4]))
    def connect(self, spec: HandlerSpec, options: dict[str, Any], socket: int) -> None:
        """Serve a connection; once it is over (and checked), another on the same loop.

        A rule rather than the initialization: the shrinker can drop a connection that
        does not matter to a failure.
        """
        self._open_connection(spec, options, socket)

    def _open_connection(self, spec: HandlerSpec, options: dict[str, Any], socket: int) -> None:
        driver = self.driver
        assert driver is not None
        self.connections += 1
        self.spec, self.options = spec, options
        self.drain: float = options.get("drain_timeout", DEFAULT_DRAIN)
        self.stall: float | None = options.get("stall_timeout", DEFAULT_STALL)
        self.record = record = HandlerRecord()
        self.server = server = FakeServer(self.journal, socket, record)
        handler = build_handler(spec, record, self.journal, driver.turns)
        self.done = None
        self.escaped: str | None = None
        self.tasks_after: int | None = None

        async def serve() -> None:
            try:
                await plait.serve_connection(
                    dict(SCOPE), server.receive, server.send, handler, **options
                )
            except get_cancelled_exc_class():
                self.escaped = "cancelled"  # the test's teardown, or a leaked cancellation
                raise
            except BaseException as exc:
                self.escaped = repr(exc)
            finally:
                self.done = self.journal.mark()

        self._step(lambda: driver.start_soon(serve))

    def _step(self, action: Any, seconds: float = 0.0) -> None:
        assert self.driver is not None
        self.driver.step(action, seconds, after=self._snapshot)

    def _snapshot(self) -> None:
        assert self.driver is not None
        self.now = self.driver.now()
        if self.done is not None:
            self.tasks_after = tasks_now()

    # -- what can happen next -------------------------------------------------------------

    def _live(self) -> bool:
        return self.server is not None and self.done is None

    def _open(self) -> bool:
        return self._live() and self.server.left is None

    def _handshake_done(self) -> bool:
        return any(frame["type"] == "websocket.accept" for frame in self.server.frames)

    @precondition(lambda self: self._open() and self._handshake_done())
    @rule(count=st.integers(1, 3))
    def client_sends_text(self, count: int) -> None:
        def send() -> None:
            for _ in range(count):
                self.server.client_send()

        self._step(send)

    @precondition(
        lambda self: self._open() and self._handshake_done() and "heartbeat" in self.options
    )
    @rule()
    def client_answers_ping(self) -> None:
        self._step(self.server.client_pong)

    @precondition(lambda self: self._open())
    @rule(code=st.sampled_from([1000, 1001, 1006]))
    def client_leaves(self, code: int) -> None:
        """A close (1000, 1001), or a reset (1006)."""
        self._step(lambda: self.server.client_leaves(code, "reset" if code == 1006 else "close"))

    @precondition(lambda self: self._open() and not self._handshake_done())
    @rule()
    def client_fin_during_handshake(self) -> None:
        self._step(lambda: self.server.client_leaves(1006, "fin"))

    @precondition(
        lambda self: self.server is not None and self.server.reading and bool(self.server.socket)
    )
    @rule(count=st.sampled_from([1, 2, 100]))
    def client_reads(self, count: int) -> None:
        self._step(lambda: self.server.client_reads(count))

    @precondition(lambda self: self._live() and self.server.reading)
    @rule()
    def client_stops_reading(self) -> None:
        self.server.reading = False

    @precondition(lambda self: self._live() and not self.server.failing)
    @rule()
    def server_send_fails(self) -> None:
        self._step(self.server.fail_sends)

    @precondition(lambda self: self._live() and not self.server.stalled and not self.server.failing)
    @rule()
    def server_send_stalls(self) -> None:
        self._step(self.server.stall_sends)

    @precondition(lambda self: self.server is not None and self.server.stalled)
    @rule()
    def server_send_resumes(self) -> None:
        self._step(self.server.release_sends)

    @precondition(lambda self: self.server is not None)
    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0, 5.0]))
    def time_passes(self, seconds: float) -> None:
        self._step(lambda: None, seconds)

    # -- the model ------------------------------------------------------------------------

    def _check(self, name: str, ok: bool, problem: str) -> None:
        if ok or name in SKIP:
            return
        self.failed_check = True
        raise AssertionError(f"[{name}] {problem}\n{self._describe()}")

    def _describe(self) -> str:
        server, record = self.server, self.record
        lines = [
            f"  backend={self.backend} now={self.now} seed={SEED} connection={self.connections}",
            f"  handler={self.spec} options={self.options}",
            f"  client sent={server.client_sent} left={server.left}",
            f"  departure seen={server.seen} send failed={server.failed}",
            f"  handler took={record.taken} outcome={record.outcome} ended={record.ended}",
            f"  children ended={record.children_ended}",
            f"  frames={[_frame(f) for f in server.frames]}",
            f"  send calls={[(m.time, _frame(f)) for m, f in server.attempts]}",
            f"  serve_connection done={self.done} escaped={self.escaped}",
        ]
        return "\n".join(lines)

    def _handler_over(self) -> bool:
        record = self.record
        return record.ended is not None and all(mark is not None for mark in record.children_ended)

    def _departure(self) -> Any:
        """The first way the engine learnt that the peer is gone (None: not yet)."""
        known = [d for d in (self.server.seen, self.server.failed) if d is not None]
        return min(known, key=lambda d: d.seq) if known else None

    def _departure_bound(self) -> tuple[float, str] | None:
        server = self.server
        bounds: list[tuple[float, str]] = []
        failed = server.failed
        if failed is not None:
            # The server may still hand over what the peer sent before it went: the
            # handler takes it until the server reports the peer gone, or the drain ends.
            bounds.append(
                (
                    failed.time + self.drain,
                    f"send failed at {failed.time}: within drain_timeout={self.drain}",
                )
            )
        seen = server.seen
        if seen is not None and seen.untaken:
            bounds.append(
                (
                    seen.time + self.drain,
                    f"disconnect read at {seen.time} with {seen.untaken} message(s) "
                    f"untaken: within drain_timeout={self.drain}",
                )
            )
        elif seen is not None:
            bounds.append((seen.time, f"disconnect read at {seen.time}, nothing untaken: at once"))
        left = server.left
        if left is not None and self.spec.behaviour in NEVER_READS and self.stall is not None:
            bounds.append(
                (
                    left.time + self.stall + self.drain,
                    f"client left at {left.time}, handler never reads: within "
                    f"stall_timeout + drain_timeout = {self.stall + self.drain}",
                )
            )
        return min(bounds) if bounds else None

    @precondition(lambda self: self.server is not None)
    @invariant()
    def handler_ends_once_the_peer_left(self) -> None:
        bound = self._departure_bound()
        if bound is None or self.now < bound[0] - EPSILON:
            return
        self._check(
            "handler_ends_once_the_peer_left",
            self._handler_over(),
            f"the handler or a child still runs at {self.now}: {bound[1]}",
        )

    @precondition(lambda self: self.server is not None)
    @invariant()
    def engine_timeouts_end_the_handler(self) -> None:
        if self._handler_over():
            return
        server = self.server
        accepts = [m for m, f in server.attempts if f["type"] == "websocket.accept"]
        if not accepts:
            return
        watched_from = accepts[0].time
        idle = self.options.get("idle_timeout")
        if idle is not None and self._departure() is None:
            quiet_from = max(watched_from, server.last_returned or watched_from)
            bound = quiet_from + 1.25 * idle + self.drain
            self._check(
                "engine_timeouts_end_the_handler",
                self.now < bound - EPSILON,
                f"nothing arrived since {quiet_from}, idle_timeout={idle}: the handler "
                f"should have ended by {bound} (1.25 idle_timeout, then the drain)",
            )
        limit = self.options.get("send_timeout")
        if limit is not None and server.in_flight_since is not None:
            since = max(server.in_flight_since, watched_from)
            bound = since + 1.25 * limit
            self._check(
                "engine_timeouts_end_the_handler",
                self.now < bound - EPSILON,
                f"a send has been in flight since {since}, send_timeout={limit}: the "
                f"connection should have been cut by {bound}",
            )

    @precondition(lambda self: self.server is not None)
    @invariant()
    def nothing_after_the_close(self) -> None:
        server = self.server
        frames = server.frames
        finals = [i for i, frame in enumerate(frames) if is_final(frame)]
        self._check("nothing_after_the_close", len(finals) <= 1, "more than one close frame")
        if finals:
            self._check(
                "nothing_after_the_close",
                finals[0] == len(frames) - 1,
                "a frame went out after the close",
            )
        self._check(
            "nothing_after_the_close",
            not server.calls_after_close,
            f"send called after the close went out: {server.calls_after_close}",
        )
        accepts = [i for i, f in enumerate(frames) if f["type"] == "websocket.accept"]
        data = [i for i, f in enumerate(frames) if f["type"] == "websocket.send"]
        self._check("nothing_after_the_close", len(accepts) <= 1, "accepted twice")
        self._check(
            "nothing_after_the_close",
            not data or bool(accepts and accepts[0] < data[0]),
            "a message went out before the accept",
        )
        self._check(
            "one_send_at_a_time",
            not server.overlapping,
            f"ASGI send called while another call was in flight: {server.overlapping}",
        )
        self._check(
            "no_send_after_a_failed_send",
            not server.calls_after_failure,
            f"send called again after it raised OSError: {server.calls_after_failure}",
        )
        if self.record.outcome == "raised":
            leaked = [f for f in frames if is_final(f) and "fails" in (f.get("reason") or "")]
            self._check("nothing_after_the_close", not leaked, "exception text sent to the client")

    @precondition(lambda self: self.server is not None)
    @invariant()
    def messages_in_order_none_lost(self) -> None:
        sent, taken = self.server.client_sent, self.record.taken
        if self.options.get("on_stall") == "drop":
            positions = [sent.index(t) if t in sent else -1 for t in taken]
            self._check(
                "messages_in_order_none_lost",
                -1 not in positions and positions == sorted(set(positions)),
                f"taken {taken} is not a subsequence of sent {sent}",
            )
        else:
            self._check(
                "messages_in_order_none_lost",
                taken == sent[: len(taken)],
                f"taken {taken} is not the start of what the client sent {sent}",
            )
        record = self.record
        if record.ended is not None and record.outcome == "cancelled":
            self._check_cancelled_reader()
        if record.ended is None or record.ended_by_receive is None:
            return
        code, reason = record.ended_by_receive
        if reason or record.dropped:
            return  # the engine closed (a limit or a timeout): losing messages is its policy
        departure = self._departure()
        self._check(
            "messages_in_order_none_lost",
            departure is not None,
            f"a receive raised WebSocketDisconnect({code}) while the peer was still there",
        )
        if record.ended.time >= departure.time + self.drain - EPSILON:
            return  # the drain ran out: what was left is dropped, by design
        expected = sent[: self._handed_over()]
        self._check(
            self._loss_check_name(departure),
            taken[: len(expected)] == expected,
            f"a receive raised WebSocketDisconnect({code}) after the handler took {taken}; "
            f"the server had handed over {expected} before the peer left",
        )

    def _handed_over(self) -> int:
        """How many messages the server handed over until it reported the peer gone (or
        until a send failed, if it has not reported it) and before the handler ended:
        all of them are the handler's. What the server hands over once the handler
        ended (an engine timeout ended it after a failed send) cannot be."""
        server, ended = self.server, self.record.ended
        assert ended is not None
        known = (server.seen, server.failed)
        return max((d.returned for d in known if d is not None and d.seq < ended.seq), default=0)

    def _loss_check_name(self, departure: Departure) -> str:
        # A loss after a failed send has a name of its own, to be skipped on its own.
        if departure is self.server.failed:
            return "none_lost_after_a_failed_send"
        return "messages_in_order_none_lost"

    def _check_cancelled_reader(self) -> None:
        """A reading handler cancelled because the peer left, before its drain ran out,
        must have taken what the server handed over before the departure."""
        record, departure = self.record, self._departure()
        if departure is None or self.spec.behaviour not in READERS:
            return
        assert record.ended is not None
        if record.ended.time >= departure.time + self.drain - EPSILON:
            return  # the drain ran out: what was left is dropped, by design
        if record.dropped or record.engine_closed:
            return  # a policy or a timeout closed the connection first
        expected = self.server.client_sent[: self._handed_over()]
        if self.spec.behaviour in ("raises_after", "returns_after"):
            expected = expected[: self.spec.count]
        self._check(
            self._loss_check_name(departure),
            record.taken[: len(expected)] == expected,
            f"the handler was cancelled at {record.ended.time}, {departure.time} after the "
            f"peer left, having taken {record.taken}; the server had handed over "
            f"{expected} before it left",
        )

    @precondition(lambda self: self.server is not None)
    @invariant()
    def sends_raise_once_the_peer_left(self) -> None:
        departure = self._departure()
        if departure is None:
            return
        late = [
            mark
            for mark, outcome, _ in self.record.sends
            if mark.seq > departure.seq and outcome == "ok"
        ]
        self._check(
            "sends_raise_once_the_peer_left",
            not late,
            f"{len(late)} send_text call(s) started after the peer left (at "
            f"{departure.time}) returned instead of raising WebSocketDisconnect",
        )

    @precondition(lambda self: self.server is not None)
    @invariant()
    def disconnect_carries_the_peers_code(self) -> None:
        departure = self._departure()
        if departure is None:
            return
        server, record = self.server, self.record
        if server.seen is not None and departure is server.seen:
            assert server.left is not None
            code = server.left.code
        else:
            code = 1006  # the send failed: the connection was reset
        codes = [
            c
            for mark, outcome, c in record.sends
            if outcome == "disconnect" and mark.seq > departure.seq
        ]
        if record.ended_by_receive is not None and not record.ended_by_receive[1]:
            codes.append(record.ended_by_receive[0])
        self._check(
            "disconnect_carries_the_peers_code",
            all(c == code for c in codes),
            f"WebSocketDisconnect codes {codes} after the peer left with {code}",
        )

    @precondition(lambda self: self.server is not None)
    @invariant()
    def heartbeat_ends_a_silent_peer(self) -> None:
        heartbeat = self.options.get("heartbeat")
        if heartbeat is None or self._handler_over() or self._departure() is not None:
            return
        server = self.server
        accepts = [m for m, f in server.attempts if f["type"] == "websocket.accept"]
        if not accepts:
            return
        quiet_from = max(accepts[0].time, server.last_returned or accepts[0].time)
        bound = quiet_from + heartbeat.interval + heartbeat.timeout + self.drain
        self._check(
            "heartbeat_ends_a_silent_peer",
            self.now < bound - EPSILON,
            f"nothing arrived since {quiet_from} with {heartbeat}: the handler should have "
            f"ended by {bound} (a ping, its timeout, then the drain)",
        )

    @precondition(lambda self: self.server is not None)
    @invariant()
    def awaits_are_checkpoints(self) -> None:
        longest = self.record.longest_run_without_yield
        self._check(
            "awaits_are_checkpoints",
            longest <= MAX_AWAITS_WITHOUT_YIELD,
            f"{longest} plait awaits in a row returned without letting the event loop run",
        )

    @precondition(lambda self: self.server is not None)
    @invariant()
    def teardowns_run_once(self) -> None:
        record = self.record
        self._check(
            "teardowns_run_once",
            record.teardowns <= 1 and all(n <= 1 for n in record.children_teardowns),
            f"a teardown ran twice: handler {record.teardowns}, children "
            f"{record.children_teardowns}",
        )
        if self.done is not None:
            self._check(
                "teardowns_run_once",
                record.teardowns == 1 and all(n == 1 for n in record.children_teardowns),
                "serve_connection returned before every teardown ran: handler "
                f"{record.teardowns}, children {record.children_teardowns}",
            )

    @precondition(lambda self: self.server is not None)
    @invariant()
    def nothing_left_when_over(self) -> None:
        if self.done is None:
            return
        self._check(
            "nothing_left_when_over",
            self.tasks_after == self.baseline,
            f"serve_connection returned with {self.tasks_after - self.baseline} task(s) left",
        )
        self._check(
            "nothing_left_when_over",
            self.escaped is None,
            f"serve_connection raised {self.escaped}",
        )
        self._check(
            "nothing_left_when_over",
            not self.record.odd_errors,
            f"plait calls raised other than WebSocketDisconnect: {self.record.odd_errors}",
        )

    # -- the end of an example --------------------------------------------------------------

    def teardown(self) -> None:
        driver = self.driver
        if driver is None:
            return
        try:
            if self.server is not None and not self.failed_check and not driver.stuck:
                self._wind_down()
        finally:
            if self.server is not None and not driver.stuck:
                # A send blocked in the fake server cannot be cancelled where the engine
                # shields it: let every send fail, so that the loop can stop.
                with contextlib.suppress(AssertionError):
                    driver.step(self.server.fail_sends)
            driver.close()

    def _wind_down(self) -> None:
        """The client resets the connection (its sends fail too): it must end."""
        server = self.server

        def reset() -> None:
            server.client_leaves(1006, "reset")
            server.release_sends()
            server.fail_sends()

        if self.done is None:
            self._step(reset)
        if self.stall is None:
            return  # a handler that never reads may hold the reader forever: documented
        started = self.now
        while self.done is None and self.now - started < WIND_DOWN_CAP:
            departure = self._departure()
            if departure is not None and self.now >= departure.time + self.drain + LINGER:
                break
            self._step(lambda: None, 1.0)
        departure = self._departure()
        self._check(
            "connection_ends",
            self.done is not None,
            f"serve_connection still runs at {self.now}, after the client reset the "
            f"connection at {started}: "
            + (
                f"the engine learnt it at {departure.time}"
                if departure is not None
                else "the engine never learnt it"
            ),
        )
        for check in (
            self.handler_ends_once_the_peer_left,
            self.nothing_after_the_close,
            self.messages_in_order_none_lost,
            self.sends_raise_once_the_peer_left,
            self.disconnect_carries_the_peers_code,
            self.teardowns_run_once,
            self.nothing_left_when_over,
        ):
            check()


def _frame(message: Mapping[str, Any]) -> str:
    kind = str(message["type"]).removeprefix("websocket.")
    if kind == "send":
        return str(message.get("text") or "<bytes>")
    if kind == "close":
        return f"close({message.get('code')}, {message.get('reason')!r})"
    return kind


class AsyncioEngine(EngineModel):
    backend = "asyncio"


class TrioEngine(EngineModel):
    backend = "trio"


seed(SEED)(AsyncioEngine)
seed(SEED)(TrioEngine)


class TestEngineModelAsyncio(AsyncioEngine.TestCase):  # type: ignore[misc,valid-type]
    settings = SETTINGS

    def runTest(self) -> None:
        print(f"engine model on asyncio: PLAIT_MODEL_SEED={SEED}")
        super().runTest()


class TestEngineModelTrio(TrioEngine.TestCase):  # type: ignore[misc,valid-type]
    settings = SETTINGS

    def runTest(self) -> None:
        print(f"engine model on trio: PLAIT_MODEL_SEED={SEED}")
        super().runTest()
