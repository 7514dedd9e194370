"""Fan-out load client on picows: N subscribers, one publisher, deliveries per second.

Run as ``python -m benchmarks.fanout_client --url ws://127.0.0.1:8000/fanout --subscribers
1000``. It opens the subscriber connections in batches; the first of them is also the
publisher. Every message is 64 bytes of text that start with its sequence number, so each
subscriber can tell a gap (a message lost or dropped by the server's slow-consumer policy)
from a duplicate.

1. **Ready.** The publisher sends probe messages, one at a time, until one of them reaches
   every subscriber: from then on every subscription is registered on the server.
2. **Load.** The publisher keeps at most ``--window`` publishes in flight: it sends the next
   one, from picows' frame callback, as soon as the oldest one in flight has reached every
   subscriber. No subscriber can then lag by more than the window, so with a window below
   the apps' buffers (256) nothing should ever be dropped: a gap is an error.
3. **Measure.** After the warm-up, deliveries (frames received by subscribers) are counted
   over a fixed window, with the CPU time of the client, the server (``--server-pid``) and
   everything else. The run stops at the window's end or at ``--max-deliveries``, or when
   deliveries stall for `STALL_TIMEOUT` seconds.
4. **Drain.** The publisher stops; what is still in flight may arrive for `DRAIN_TIMEOUT`
   seconds; what has not arrived by then is reported as ``undelivered``. Then every
   connection closes with 1000, and one JSON line goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks._cpu import Clocks, CpuUse

PAYLOAD_SIZE = 64
SEQUENCE_DIGITS = 10
FILL = b"-fan-out-" * 6
"""What follows the sequence number: 54 bytes, so that each message is 64 bytes."""
assert SEQUENCE_DIGITS + len(FILL) == PAYLOAD_SIZE
CONNECT_BATCH = 50
"""Connections opened at once (hypercorn listens with ``--backlog 2048``)."""
CONNECT_TIMEOUT = 60.0
READY_TIMEOUT = 30.0
PROBE_INTERVAL = 1.0
STALL_TIMEOUT = 3.0
DRAIN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
TICK = 0.05


def _payload(sequence: int) -> bytes:
    """Message number `sequence`: its zero-padded number, then `FILL`."""
    return b"%010d" % sequence + FILL


class _Run:
    """The state every connection of one run shares: counters and the publisher's window."""

    def __init__(self, subscribers: int, window: int, max_deliveries: int) -> None:
        self.subscribers = subscribers
        self.window = window
        self.max_deliveries = max_deliveries
        self.publisher: WSTransport | None = None
        self.pumping = False
        """Whether a completed publish makes the publisher send the next one."""
        self.closing = False
        """Set before the client closes: from then on a close is not an error."""
        self.published = 0
        """The sequence number of the last message sent (messages start at 1)."""
        self.completed = 0
        """The highest sequence number that every subscriber has received."""
        self.counts = [0]
        """Subscribers that received each sequence number, by sequence number."""
        self.deliveries = 0
        self.lost = 0
        self.duplicates = 0
        self.bad_payloads = 0
        self.errors = 0
        self.capped = asyncio.Event()
        self.progress = asyncio.Event()

    def publish(self) -> int:
        """Send the next message; return its sequence number."""
        assert self.publisher is not None
        self.published += 1
        self.counts.append(0)
        self.publisher.send(WSMsgType.TEXT, _payload(self.published))
        return self.published

    def fill_window(self) -> None:
        """Publish until `window` messages are in flight, while the run lasts."""
        while self.pumping and self.published - self.completed < self.window:
            self.publish()

    def stop(self) -> None:
        """Stop publishing: what is in flight may still arrive."""
        self.pumping = False


class _Subscriber(WSListener):
    """One subscriber: check each message's place in the sequence and count it."""

    def __init__(self, run: _Run) -> None:
        super().__init__()
        self._run = run
        self.expected = 0
        """The next sequence number due; 0 until the first message arrived."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Count a delivery; complete a publish when it was the last subscriber's."""
        run = self._run
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE and not run.closing:
                run.errors += 1
            return
        data = frame.get_payload_as_bytes()
        try:
            sequence = int(data[:SEQUENCE_DIGITS])
            count = run.counts[sequence] + 1
        except (ValueError, IndexError):
            run.bad_payloads += 1
            return
        if data[SEQUENCE_DIGITS:] != FILL:
            run.bad_payloads += 1
        expected = self.expected
        if sequence >= expected:
            if expected:
                run.lost += sequence - expected
            self.expected = sequence + 1
        else:
            run.duplicates += 1
        run.deliveries += 1
        run.counts[sequence] = count
        if count == run.subscribers and sequence > run.completed:
            run.completed = sequence
            run.progress.set()
            if run.deliveries >= run.max_deliveries:
                run.stop()
                run.capped.set()
            run.fill_window()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        """Count a connection the server dropped before the client closed it."""
        if not self._run.closing:
            self._run.errors += 1


@dataclass
class Result:
    """What one client run measured; printed as one JSON line."""

    url: str
    subscribers: int
    connected: int
    window: int
    connect_s: float
    ready_s: float | None
    probes: int
    seconds: float
    deliveries: int
    deliveries_per_s: float
    publishes: int
    publishes_per_s: float
    lost: int
    """Sequence gaps seen by subscribers after their first message: dropped or lost."""
    duplicates: int
    undelivered: int
    """Messages published but not received by some subscriber when the drain ended."""
    bad_payloads: int
    errors: int
    """Connections that failed to open or were closed or dropped by the server early."""
    stalled: bool
    capped: bool
    client_cpu_s: float
    client_cpu_fraction: float
    server_cpu_s: float | None
    server_cpu_fraction: float | None
    other_cpu_s: float | None
    other_cpu_fraction: float | None


async def _connect_all(url: str, count: int, run: _Run) -> list[tuple[WSTransport, _Subscriber]]:
    """Open `count` connections, `CONNECT_BATCH` at a time; failures count as errors."""

    async def connect_one() -> tuple[WSTransport, _Subscriber]:
        transport, listener = await ws_connect(lambda: _Subscriber(run), url)
        assert isinstance(listener, _Subscriber)
        return transport, listener

    opened: list[tuple[WSTransport, _Subscriber]] = []
    async with asyncio.timeout(CONNECT_TIMEOUT):
        for start in range(0, count, CONNECT_BATCH):
            batch = min(CONNECT_BATCH, count - start)
            outcomes = await asyncio.gather(
                *(connect_one() for _ in range(batch)), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    run.errors += 1
                else:
                    opened.append(outcome)
    return opened


async def _wait_for_progress(run: _Run, seconds: float) -> None:
    """Wait until the next publish completes, for `seconds` at most."""
    run.progress.clear()
    try:
        async with asyncio.timeout(seconds):
            await run.progress.wait()
    except TimeoutError:
        pass


async def _until_ready(run: _Run) -> tuple[int, float | None]:
    """Probe until one message reaches every subscriber; return probes sent and seconds."""
    started = time.perf_counter()
    deadline = started + READY_TIMEOUT
    probes = 0
    while time.perf_counter() < deadline:
        probe = run.publish()
        probes += 1
        probe_deadline = min(deadline, time.perf_counter() + PROBE_INTERVAL)
        while run.completed < probe and time.perf_counter() < probe_deadline:
            await _wait_for_progress(run, probe_deadline - time.perf_counter())
        if run.completed >= probe:
            return probes, round(time.perf_counter() - started, 3)
    return probes, None


async def _load(run: _Run, seconds: float) -> bool:
    """Keep the window full for `seconds` (or until capped); return whether it stalled."""
    end = time.perf_counter() + seconds
    last, last_change = run.deliveries, time.perf_counter()
    while not run.capped.is_set():
        now = time.perf_counter()
        if now >= end:
            return False
        if run.deliveries != last:
            last, last_change = run.deliveries, now
        elif now - last_change > STALL_TIMEOUT:
            return True
        await asyncio.sleep(min(TICK, end - now))
    return False


async def _drain(run: _Run, listeners: list[_Subscriber]) -> int:
    """Stop publishing, let what is in flight arrive, return what never did."""
    run.stop()
    deadline = time.perf_counter() + DRAIN_TIMEOUT
    while run.completed < run.published and time.perf_counter() < deadline:
        await _wait_for_progress(run, deadline - time.perf_counter())
    return sum(run.published + 1 - max(s.expected, 1) for s in listeners)


async def _close_all(transports: list[WSTransport]) -> None:
    """Close each connection with 1000, dropping any that do not finish in time."""
    for transport in transports:
        if not transport.is_disconnected:
            transport.send_close(WSCloseCode.OK)
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await asyncio.gather(*(t.wait_disconnected() for t in transports))
    except TimeoutError:
        for transport in transports:
            transport.disconnect(graceful=False)


async def run(
    url: str,
    subscribers: int,
    window: int,
    duration: float,
    warmup: float,
    max_deliveries: int,
    server_pid: int | None = None,
) -> Result:
    """Connect the subscribers, load the broadcast, measure deliveries per second.

    Args:
        url: WebSocket URL of the fan-out app.
        subscribers: Connections to open, every one of them subscribed; the first also
            publishes.
        window: Publishes in flight at most (not yet received by every subscriber).
        duration: Length of the measured window in seconds.
        warmup: Seconds of load before the window opens.
        max_deliveries: Deliveries after which the publisher stops, warm-up included.
        server_pid: The server's PID, to report its CPU time over the window too.

    Returns:
        The measurement of the window.
    """
    state = _Run(subscribers, window, max_deliveries)
    clock = time.perf_counter()
    opened = await _connect_all(url, subscribers, state)
    connect_s = round(time.perf_counter() - clock, 3)
    transports = [transport for transport, _ in opened]
    listeners = [listener for _, listener in opened]
    state.subscribers = len(opened)
    probes, ready_s, stalled = 0, None, False
    deliveries = publishes = undelivered = 0
    use = CpuUse(0.0, 0.0, None, None)
    try:
        if opened:
            state.publisher = transports[0]
            probes, ready_s = await _until_ready(state)
        if ready_s is not None:
            state.pumping = True
            state.fill_window()
            stalled = await _load(state, warmup)
            start = Clocks.read(server_pid)
            start_deliveries, start_publishes = state.deliveries, state.published
            if not stalled:
                stalled = await _load(state, duration)
            use = CpuUse.between(start, Clocks.read(server_pid))
            deliveries = state.deliveries - start_deliveries
            publishes = state.published - start_publishes
        undelivered = await _drain(state, listeners) if opened else 0
    finally:
        state.stop()
        state.closing = True
        await _close_all(transports)
    seconds = use.seconds
    return Result(
        url=url,
        subscribers=subscribers,
        connected=len(opened),
        window=window,
        connect_s=connect_s,
        ready_s=ready_s,
        probes=probes,
        seconds=seconds,
        deliveries=deliveries,
        deliveries_per_s=round(deliveries / seconds, 1) if seconds > 0 else 0.0,
        publishes=publishes,
        publishes_per_s=round(publishes / seconds, 1) if seconds > 0 else 0.0,
        lost=state.lost,
        duplicates=state.duplicates,
        undelivered=undelivered,
        bad_payloads=state.bad_payloads,
        errors=state.errors + (0 if ready_s is not None or not opened else 1),
        stalled=stalled,
        capped=state.capped.is_set(),
        client_cpu_s=use.client,
        client_cpu_fraction=use.share(use.client) or 0.0,
        server_cpu_s=use.server,
        server_cpu_fraction=use.share(use.server),
        other_cpu_s=use.other,
        other_cpu_fraction=use.share(use.other),
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="ws://127.0.0.1:8000/fanout")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--window", type=int, default=16, help="publishes in flight at most")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-deliveries", type=int, default=20_000_000)
    parser.add_argument("--server-pid", type=int, help="report this process's CPU time too")
    args = parser.parse_args(argv)
    if args.subscribers < 1 or args.window < 1:
        parser.error("--subscribers and --window must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run one measurement and print it as a JSON line on stdout."""
    args = _parse_args(argv)
    result = asyncio.run(
        run(
            args.url,
            args.subscribers,
            args.window,
            args.duration,
            args.warmup,
            args.max_deliveries,
            args.server_pid,
        )
    )
    print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
