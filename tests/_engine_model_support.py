"""The machinery of tests/test_engine_model.py: a virtual clock on each backend, a fake
ASGI server whose client the test drives, and handlers that record what they saw.

Everything here runs in an event loop kept alive in a background thread (``anyio.run``
in a daemon thread, fed by one executor task), so that a Hypothesis state machine can
act on one connection step by step: each step runs in the loop, then waits until every
task is blocked ("settled"), so that what the model checks afterwards is where the
engine rests.

Time is virtual on both backends and moves only when a step advances it: trio's
``MockClock`` (rate 0), and on asyncio an event loop whose ``time()`` is a number the
test sets. Advancing stops at every timer on the way, as real time would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import anyio
import anyio.abc
import trio
import trio.testing
from anyio import get_cancelled_exc_class

import plait
from _support import count_tasks
from plait._types import Message

__all__ = (
    "BEHAVIOURS",
    "NEVER_READS",
    "READERS",
    "Departure",
    "Driver",
    "FakeServer",
    "HandlerRecord",
    "HandlerSpec",
    "Journal",
    "Mark",
    "VirtualTimeLoop",
    "build_handler",
    "is_final",
    "tasks_now",
)

REAL_TIME_GUARD = 10.0  # real seconds a step may take before the loop is deemed stuck
RUNAWAY = 1000  # plait awaits in a row without a yield before the handler stops itself


# -- virtual time ------------------------------------------------------------------------


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock moves only when the test says so.

    Idle, it sleeps in ``select`` until a call from the test thread wakes it; it does
    not matter how long in real time, since no timer is due before the clock moves.
    """

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 0.0
        self.iterations = 0  # how often the loop went round: a task that yields lets it
        self.autojump = False  # at the very end: jump to the next timer when idle

    def time(self) -> float:
        return self.virtual_now

    def _run_once(self) -> None:
        self.iterations += 1
        if self.autojump and not self._ready:  # type: ignore[attr-defined]
            deadline = self.next_deadline()
            if deadline is not None and deadline > self.virtual_now:
                self.virtual_now = deadline
        super()._run_once()  # type: ignore[misc]

    def next_deadline(self) -> float | None:
        """When the earliest live timer is due (None: no timer)."""
        whens = [h.when() for h in self._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        return min(whens) if whens else None

    def settled(self) -> bool:
        """True when nothing but the caller can run: no callback ready, no timer due."""
        if self._ready:  # type: ignore[attr-defined]
            return False
        deadline = self.next_deadline()
        return deadline is None or deadline > self.virtual_now + self._clock_resolution  # type: ignore[attr-defined]


class _LoopTurns(trio.abc.Instrument):
    """Counts trio's scheduler rounds: a task that yields lets at least one pass."""

    def __init__(self) -> None:
        self.turns = 0

    def before_io_wait(self, timeout: float) -> None:
        self.turns += 1


class Driver:
    """One event loop in a thread, on virtual time, that the test drives step by step.

    Every step goes through one executor task in the loop: the test thread hands it a
    job and waits; the executor runs it, settles, reports, and waits for the next job.
    Nothing else runs between two steps, so the loop meets every step in the same
    state, and the same steps replay the same way (trio's scheduler is seeded by
    Hypothesis for each example; asyncio's runs callbacks in order).
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        if backend == "trio":
            self.clock = trio.testing.MockClock()
            options: dict[str, Any] = {"clock": self.clock}
        else:
            self._loops: list[VirtualTimeLoop] = []
            options = {"loop_factory": self._new_loop}
        self._jobs: deque[tuple[Any, concurrent.futures.Future[Any]]] = deque()
        self._wake: anyio.Event | None = None
        self._call_soon: Callable[..., Any] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._turns = _LoopTurns()
        self.stuck = False
        self.crashed: BaseException | None = None
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        # A daemon thread rather than a blocking portal's: a loop that a runaway task
        # keeps busy can be left behind, failing the example instead of hanging the run.
        self._thread = threading.Thread(
            target=self._run, args=(options, ready), name=f"engine-model-{backend}", daemon=True
        )
        self._thread.start()
        ready.result(timeout=REAL_TIME_GUARD)

    def _run(self, options: dict[str, Any], ready: concurrent.futures.Future[None]) -> None:
        try:
            anyio.run(self._execute, ready, backend=self.backend, backend_options=options)
        except BaseException as exc:  # reported to the test thread, never lost
            if not ready.done():
                ready.set_exception(exc)
            self.crashed = exc

    def _new_loop(self) -> VirtualTimeLoop:
        loop = VirtualTimeLoop()
        self._loops.append(loop)
        return loop

    @property
    def loop(self) -> VirtualTimeLoop:
        return self._loops[0]

    # -- in the loop's thread ----------------------------------------------------------

    async def _execute(self, ready: concurrent.futures.Future[None]) -> None:
        if self.backend == "trio":
            trio.lowlevel.add_instrument(self._turns)
            self._call_soon = trio.lowlevel.current_trio_token().run_sync_soon
        else:
            self._call_soon = asyncio.get_running_loop().call_soon_threadsafe
        async with anyio.create_task_group() as task_group:
            self._task_group = task_group
            ready.set_result(None)
            while True:
                while not self._jobs:
                    self._wake = anyio.Event()
                    await self._wake.wait()
                job, future = self._jobs.popleft()
                if job is None:
                    break
                try:
                    result = await job()
                except Exception as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            self._abort()

    def _abort(self) -> None:
        """Cancel everything the driver runs, with time running freely."""
        self._run_freely()
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    def _enqueue(self, job: Any, future: concurrent.futures.Future[Any]) -> None:
        self._jobs.append((job, future))
        if self._wake is not None:
            self._wake.set()

    def _run_freely(self) -> None:
        # Time runs by itself from here on, so that what is cancelled at the end can
        # finish whatever it waits for (trio's clock must be told in the loop's thread).
        if self.backend == "trio":
            self.clock.autojump_threshold = 0
        else:
            self.loop.autojump = True

    def now(self) -> float:
        return self.clock.current_time() if self.backend == "trio" else self.loop.virtual_now

    def turns(self) -> int:
        """A counter that moves whenever the event loop goes round."""
        return self._turns.turns if self.backend == "trio" else self.loop.iterations

    def start_soon(self, func: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Start ``func()`` as a task that the driver cancels when it closes."""
        assert self._task_group is not None
        self._task_group.start_soon(func)

    async def settle(self) -> None:
        """Return once every other task waits for something (a message, room, a timer)."""
        if self.backend == "trio":
            await trio.testing.wait_all_tasks_blocked()
            return
        loop = self.loop
        for _ in range(100_000):
            await asyncio.sleep(0)
            if loop.settled():
                return
        raise AssertionError("the asyncio loop never settled: some task keeps running")

    async def advance(self, seconds: float) -> None:
        """Move virtual time on by ``seconds``, stopping at every timer on the way."""
        target = self.now() + seconds
        for _ in range(10_000):
            await self.settle()
            due = self._next_deadline()
            if due is None or due > target:
                break
            self._jump_to(due)
        else:  # pragma: no cover
            raise AssertionError("timers keep firing at the same virtual instant")
        self._jump_to(target)
        await self.settle()

    def _next_deadline(self) -> float | None:
        if self.backend == "trio":
            wait = trio.lowlevel.current_statistics().seconds_to_next_deadline
            return None if math.isinf(wait) else self.now() + max(wait, 0.0)
        return self.loop.next_deadline()

    def _jump_to(self, when: float) -> None:
        if self.backend == "trio":
            gap = when - self.now()
            if gap > 0:
                self.clock.jump(gap)
        else:
            self.loop.virtual_now = max(self.loop.virtual_now, when)

    # -- from the test's thread ----------------------------------------------------------

    def step(
        self,
        action: Callable[[], Any],
        seconds: float = 0.0,
        after: Callable[[], Any] | None = None,
    ) -> Any:
        """Run ``action`` in the loop (a sync or async callable), advance the clock by
        ``seconds``, settle, then run ``after`` (in the loop); fail if that takes longer
        than a real-time guard."""

        async def job() -> Any:
            result = action()
            if hasattr(result, "__await__"):
                result = await result
            await (self.advance(seconds) if seconds else self.settle())
            if after is not None:
                after()
            return result

        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        assert self._call_soon is not None
        self._call_soon(self._enqueue, job, future)
        try:
            return future.result(timeout=REAL_TIME_GUARD)
        except concurrent.futures.TimeoutError:
            self.stuck = True
            raise AssertionError(
                f"a step did not settle within {REAL_TIME_GUARD} s of real time: some task "
                "keeps the event loop busy"
            ) from None

    def close(self) -> None:
        """Stop the loop, cancelling whatever still runs (with time running freely)."""
        assert self._call_soon is not None
        if self.stuck:
            self._call_soon(self._abort)
        else:
            self._call_soon(self._enqueue, None, concurrent.futures.Future())
        self._thread.join(REAL_TIME_GUARD)
        if self._thread.is_alive():
            raise AssertionError(
                f"the event loop did not stop within {REAL_TIME_GUARD} s of real time after "
                "everything was cancelled (left running in a daemon thread)"
            )
        if self.crashed is not None:
            raise AssertionError(f"the event loop crashed: {self.crashed!r}")


# -- the fake server and its client ---------------------------------------------------


class Mark(NamedTuple):
    """When something happened: virtual time, and place in the order of events."""

    time: float
    seq: int


class Departure(NamedTuple):
    """The engine learnt that the peer is gone: when, and what it had not taken yet."""

    time: float
    seq: int
    untaken: int  # messages the server had handed over that the handler had not taken
    returned: int  # client data messages the server had handed over by then


class Left(NamedTuple):
    """The client left."""

    time: float
    seq: int
    code: int
    how: str  # "close", "reset", "fin" (during the handshake), "reply" (to the close)


def is_final(message: Message) -> bool:
    """The close frame, or the end of a denial response."""
    kind = message["type"]
    return kind == "websocket.close" or (
        kind == "websocket.http.response.body" and not message.get("more_body", False)
    )


class Journal:
    """The clock and a sequence number shared by everything that records events."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self._seq = 0

    def mark(self) -> Mark:
        self._seq += 1
        return Mark(self.now(), self._seq)


class FakeServer:
    """An ASGI server's side of one WebSocket, and the client behind it.

    ``receive`` hands the application what the client sent (``websocket.connect``
    first). ``send`` puts frames into a bounded socket buffer that the client drains
    when it reads: a full buffer blocks the sender (backpressure), a stalled server
    blocks every send, and a failing one raises ``OSError`` (a reset), also in sends
    already blocked. A client that reads the close frame answers it: the server then
    reports the disconnect, as hypercorn does.
    """

    def __init__(self, journal: Journal, socket_capacity: int, record: HandlerRecord) -> None:
        self.journal = journal
        self.capacity = socket_capacity
        self.record = record
        self.incoming: deque[Message] = deque([{"type": "websocket.connect"}])
        self._arrived: anyio.Event | None = None
        self._room: anyio.Event | None = None
        # the client's side
        self.client_sent: list[str] = []
        self.left: Left | None = None
        self.reading = True
        self.client_frames: list[Message] = []
        # what the application did with it
        self.connect_returned = False
        self.returned = 0  # client data messages handed to the application
        self.last_returned: float | None = None  # when a websocket.receive was handed over
        self.seen: Departure | None = None  # the disconnect was handed to the application
        self.failed: Departure | None = None  # the first send that raised
        self.attempts: list[tuple[Mark, Message]] = []
        self.calls_after_failure: list[Message] = []
        self.closed: Mark | None = None  # the close frame (or the denial) went out
        self.calls_after_close: list[Message] = []
        self.frames: list[Message] = []  # in the socket, in order
        self.socket: deque[Message] = deque()
        self.in_flight = 0
        self.in_flight_since: float | None = None
        self.overlapping: list[Message] = []
        self.failing = False
        self.stalled = False

    def untaken(self) -> int:
        """Messages handed to the application that the handler has not taken."""
        record = self.record
        unaccepted = self.connect_returned and not record.accept_begun
        return self.returned - len(record.taken) + int(unaccepted)

    # -- the ASGI callables ---------------------------------------------------------------

    async def receive(self) -> Message:
        while not self.incoming:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        message = self.incoming.popleft()
        kind = message["type"]
        if kind == "websocket.connect":
            self.connect_returned = True
        elif kind == "websocket.receive":
            self.last_returned = self.journal.now()
            if message.get("text") != "pong":
                self.returned += 1
        elif kind == "websocket.disconnect" and self.seen is None:
            mark = self.journal.mark()
            self.seen = Departure(mark.time, mark.seq, self.untaken(), self.returned)
        return message

    async def send(self, message: Message) -> None:
        mark = self.journal.mark()
        self.attempts.append((mark, message))
        if self.failed is not None:
            self.calls_after_failure.append(message)
        if self.closed is not None:
            self.calls_after_close.append(message)
        if self.in_flight:
            self.overlapping.append(message)
        self.in_flight += 1
        self.in_flight_since = mark.time
        try:
            while True:
                if self.failing:
                    if self.failed is None:
                        now = self.journal.mark()
                        self.failed = Departure(now.time, now.seq, self.untaken(), self.returned)
                    raise OSError(errno.ECONNRESET, "connection reset by peer")
                if not self.stalled and len(self.socket) < self.capacity:
                    break
                if self._room is None or self._room.is_set():
                    self._room = anyio.Event()
                await self._room.wait()
            self.socket.append(message)
            self.frames.append(message)
            if is_final(message) and self.closed is None:
                self.closed = self.journal.mark()
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.in_flight_since = None

    # -- what the client and the network do (called in the loop's thread) -----------------

    def _deliver(self, message: Message) -> None:
        self.incoming.append(message)
        if self._arrived is not None:
            self._arrived.set()

    def _wake_senders(self) -> None:
        if self._room is not None:
            self._room.set()

    def client_send(self) -> None:
        text = f"c{len(self.client_sent)}"
        self.client_sent.append(text)
        self._deliver({"type": "websocket.receive", "text": text})

    def client_pong(self) -> None:
        self._deliver({"type": "websocket.receive", "text": "pong"})

    def client_leaves(self, code: int, how: str) -> None:
        if self.left is not None:
            return
        mark = self.journal.mark()
        self.left = Left(mark.time, mark.seq, code, how)
        self._deliver({"type": "websocket.disconnect", "code": code, "reason": ""})

    def client_reads(self, count: int) -> None:
        for _ in range(min(count, len(self.socket))):
            frame = self.socket.popleft()
            self.client_frames.append(frame)
            if is_final(frame):
                self.client_leaves(frame.get("code", 1006), "reply")
        self._wake_senders()

    def fail_sends(self) -> None:
        self.failing = True
        self._wake_senders()

    def stall_sends(self) -> None:
        self.stalled = True

    def release_sends(self) -> None:
        self.stalled = False
        self._wake_senders()


# -- handlers -----------------------------------------------------------------------


BEHAVIOURS = (
    "reads_all",  # takes every message as it comes
    "reads_slowly",  # sleeps between messages
    "never_reads",  # sleeps forever after accept
    "send_loop",  # while True: await ws.send_text(...)
    "sleeps",  # sleeps a while, then returns
    "raises_after",  # takes N messages, then raises
    "returns_after",  # takes N messages, then returns
    "echo",  # sends back each message it takes
    "denies",  # returns without accepting: the close before accept (an HTTP 403)
)
NEVER_READS = frozenset({"never_reads", "send_loop", "sleeps", "denies"})
READERS = frozenset({"reads_all", "reads_slowly", "raises_after", "returns_after"})


@dataclass(frozen=True)
class HandlerSpec:
    """How the handler behaves, chosen when the connection starts."""

    behaviour: str
    count: int = 0  # N of raises_after and returns_after
    children: int = 0  # tasks started in ws.task_group that sleep forever
    accept_delay: float = 0.0  # sleep before accept(): a window for a FIN in the handshake
    slow: float = 0.25  # reads_slowly's pause
    nap: float = 1.5  # how long "sleeps" sleeps


@dataclass
class HandlerRecord:
    """What the handler and its children saw and did."""

    started: bool = False
    accept_begun: bool = False
    accepted: bool = False
    taken: list[str] = field(default_factory=list)
    ended: Mark | None = None
    outcome: str | None = None
    ended_by_receive: tuple[int, str] | None = None  # a receive raised WebSocketDisconnect
    close_code: int | None = None
    engine_closed: bool = False
    dropped: int = 0  # statistics().messages_dropped at the end
    teardowns: int = 0
    children_started: int = 0
    children_teardowns: list[int] = field(default_factory=list)
    children_ended: list[Mark | None] = field(default_factory=list)
    sends: list[tuple[Mark, str, int | None]] = field(default_factory=list)  # start, outcome, code
    odd_errors: list[str] = field(default_factory=list)
    run_without_yield: int = 0
    longest_run_without_yield: int = 0


class _Boom(Exception):
    """The handler's own error (raises_after)."""


def build_handler(
    spec: HandlerSpec, record: HandlerRecord, journal: Journal, turns: Callable[[], int]
) -> Callable[[plait.WebSocket], Awaitable[None]]:
    """A handler that behaves as ``spec`` says and records into ``record``."""

    async def plait_call(what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        before = turns()
        try:
            return await call()
        except plait.WebSocketDisconnect:
            raise
        except get_cancelled_exc_class():
            raise
        except Exception as exc:
            record.odd_errors.append(f"{what} raised {exc!r}")
            raise
        finally:
            if turns() == before:
                record.run_without_yield += 1
                record.longest_run_without_yield = max(
                    record.longest_run_without_yield, record.run_without_yield
                )
            else:
                record.run_without_yield = 0

    async def guarded(what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        result = await plait_call(what, call)
        if record.run_without_yield >= RUNAWAY:
            # A loop of plait awaits that never yields would hang the test: the handler
            # stops here (it stays cancellable) and the finding is reported.
            await anyio.sleep_forever()
        return result

    async def take(ws: plait.WebSocket) -> str:
        try:
            text: str = await guarded("receive_text", ws.receive_text)
        except plait.WebSocketDisconnect as exc:
            record.ended_by_receive = (exc.code, exc.reason)
            raise
        record.taken.append(text)
        return text

    async def send(ws: plait.WebSocket, text: str) -> None:
        mark = journal.mark()
        try:
            await guarded("send_text", lambda: ws.send_text(text))
        except plait.WebSocketDisconnect as exc:
            record.sends.append((mark, "disconnect", exc.code))
            raise
        except BaseException:
            record.sends.append((mark, "other", None))
            raise
        record.sends.append((mark, "ok", None))

    async def child(index: int) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            record.children_teardowns[index] += 1
            record.children_ended[index] = journal.mark()

    async def behave(ws: plait.WebSocket) -> None:
        kind = spec.behaviour
        if kind == "reads_all":
            while True:
                await take(ws)
        elif kind == "reads_slowly":
            while True:
                await take(ws)
                await anyio.sleep(spec.slow)
        elif kind == "never_reads":
            await anyio.sleep_forever()
        elif kind == "send_loop":
            sent = 0
            while True:
                await send(ws, f"s{sent}")
                sent += 1
        elif kind == "sleeps":
            await anyio.sleep(spec.nap)
        elif kind in ("raises_after", "returns_after"):
            for _ in range(spec.count):
                await take(ws)
            if kind == "raises_after":
                raise _Boom("the handler fails")
        elif kind == "echo":
            while True:
                await send(ws, await take(ws))
        else:  # pragma: no cover
            raise AssertionError(kind)

    async def handler(ws: plait.WebSocket) -> None:
        record.started = True
        try:
            if spec.accept_delay:
                await anyio.sleep(spec.accept_delay)
            if spec.behaviour == "denies":
                record.outcome = "denied"
                return
            record.accept_begun = True
            await guarded("accept", ws.accept)
            record.accepted = True
            for index in range(spec.children):
                record.children_teardowns.append(0)
                record.children_ended.append(None)
                ws.task_group.start_soon(child, index)
                record.children_started += 1
            await behave(ws)
            record.outcome = "returned"
        except plait.WebSocketDisconnect as exc:
            record.outcome = f"ended on {exc!r}"  # a normal end: the engine closes with 1000
        except get_cancelled_exc_class():
            record.outcome = "cancelled"
            raise
        except _Boom:
            record.outcome = "raised"
            raise
        except BaseException as exc:
            record.outcome = f"failed with {exc!r}"
            raise
        finally:
            record.teardowns += 1
            record.ended = journal.mark()
            record.close_code = ws.close_code
            # The application's side closed though the handler never closes: the
            # engine did (a limit or a timeout), or the handler denied the handshake.
            record.engine_closed = ws.application_state is plait.WebSocketState.DISCONNECTED
            with contextlib.suppress(Exception):
                record.dropped = ws.statistics().messages_dropped

    return handler


def tasks_now() -> int:
    """Tasks of the running loop (see tests/_support.py)."""
    return count_tasks()
