"""Idle-memory client on picows: N idle connections, the server's RSS before and after.

Run as ``python -m benchmarks.memory_client --url ws://127.0.0.1:8000/ --server-pid PID
--conns 2000``. picows does not negotiate permessage-deflate, so no connection is
compressed (with compression hypercorn spends about five times the memory per connection).

1. **Warm-up.** One connection opens, sends its text message, waits for the server's first
   text frame and closes. After `--settle` seconds the server's ``VmRSS`` is read from
   ``/proc/PID/status``: *before*.
2. **Open.** ``--conns`` connections open, `--batch` at a time. Each sends one text
   message and counts as *ready* once the server's first text frame arrives (the apps of
   `benchmarks.memory_apps` send one once they have accepted), so every connection counted
   has been accepted and its handler is running. A connection that fails to open or to get
   ready within `READY_TIMEOUT` seconds counts as *failed*.
3. **Hold.** Nothing is sent for `--settle` seconds; then ``VmRSS`` is read again:
   *after*. ``(after - before) / ready`` is the figure, in KiB per connection. A connection
   the server closed or dropped before then counts as *dropped*.
4. **Close.** Every connection closes with 1000 (bounded by `CLOSE_TIMEOUT`), and one JSON
   line goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks._processes import raise_open_file_limit

HELLO = b"hello"
"""The one text message each connection sends."""
READY_TIMEOUT = 10.0
"""Seconds a connection may take to open and get the server's first frame."""
OPEN_TIMEOUT = 300.0
"""Seconds all the connections together may take to open."""
CLOSE_TIMEOUT = 10.0
FD_HEADROOM = 256
"""Open files the client needs besides one per connection."""


def read_rss(pid: int) -> dict[str, int]:
    """The ``VmRSS``, ``RssAnon``, ``RssFile`` and ``VmHWM`` of a process, in KiB.

    Raises:
        OSError: The process is gone.
    """
    wanted = {"VmRSS", "RssAnon", "RssFile", "VmHWM"}
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in wanted:
                found[key] = int(value.split()[0])  # "12345 kB"
    return found


class Tally:
    """Counters shared by every connection of one run."""

    def __init__(self) -> None:
        self.closing = False
        """Set before the client closes: from then on a close is not a drop."""
        self.dropped = 0
        self.extra_frames = 0
        self.pongs = 0
        """Heartbeat pings answered (by `benchmarks.scale_client`'s listener)."""


class IdleListener(WSListener):
    """One connection: ready at the server's first text frame, then idle."""

    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self._tally = tally
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """The first text frame makes the connection ready; a close is a drop."""
        if frame.msg_type == WSMsgType.TEXT:
            if self.ready.done():
                self._tally.extra_frames += 1
            else:
                self.ready.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        """Count a ready connection the server ended before the client closed it."""
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the first frame"))
        elif not self._tally.closing and not self.ready.cancelled() and not self.ready.exception():
            self._tally.dropped += 1


@dataclass
class Result:
    """What one client run measured; printed as one JSON line."""

    url: str
    conns: int
    ready: int
    """Connections accepted and answered: the divisor."""
    failed: int
    """Connections that did not open, or got no frame within `READY_TIMEOUT` seconds."""
    dropped: int
    """Ready connections the server closed or dropped before the *after* reading."""
    extra_frames: int
    first_error: str | None
    open_s: float
    settle_s: float
    rss_before_kib: int | None
    rss_after_kib: int | None
    kib_per_conn: float | None
    rss_anon_before_kib: int | None
    rss_anon_after_kib: int | None
    hwm_after_kib: int | None
    open_file_limit: int


async def open_one(
    url: str,
    tally: Tally,
    listener_class: type[IdleListener] = IdleListener,
    source: str | None = None,
) -> WSTransport:
    """Open one connection, send its message and wait for the server's first frame.

    Args:
        url: The WebSocket URL.
        tally: The counters the connection's listener adds to.
        listener_class: The connection's listener (`IdleListener` or a subclass).
        source: The local address to connect from (``127.0.0.2``...), or None for the
            kernel's choice; each address has its own range of ephemeral ports.

    Raises:
        TimeoutError: Not ready within `READY_TIMEOUT` seconds.
        Exception: Whatever picows raised opening it.
    """
    local: dict[str, Any] = {} if source is None else {"local_addr": (source, 0)}
    transport, listener = await asyncio.wait_for(
        ws_connect(lambda: listener_class(tally), url, **local), READY_TIMEOUT
    )
    assert isinstance(listener, IdleListener)
    transport.send(WSMsgType.TEXT, HELLO)
    try:
        await asyncio.wait_for(asyncio.shield(listener.ready), READY_TIMEOUT)
    except BaseException:
        transport.disconnect(graceful=False)
        raise
    return transport


async def open_all(
    url: str,
    count: int,
    batch: int,
    tally: Tally,
    listener_class: type[IdleListener] = IdleListener,
    source: str | None = None,
) -> tuple[list[WSTransport], int, str | None]:
    """Open `count` connections, `batch` at a time; return them, the failures, one error.

    `listener_class` and `source` are as in `open_one`.
    """
    opened: list[WSTransport] = []
    failed = 0
    first_error: str | None = None
    deadline = time.monotonic() + OPEN_TIMEOUT
    for start in range(0, count, batch):
        size = min(batch, count - start)
        if time.monotonic() > deadline:
            failed += count - start
            first_error = first_error or f"opening took over {OPEN_TIMEOUT:.0f} s"
            break
        outcomes = await asyncio.gather(
            *(open_one(url, tally, listener_class, source) for _ in range(size)),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, WSTransport):
                opened.append(outcome)
            else:
                failed += 1
                first_error = first_error or f"{type(outcome).__name__}: {outcome}"
    return opened, failed, first_error


async def close_all(transports: list[WSTransport], tally: Tally) -> None:
    """Close each connection with 1000, dropping any that do not finish in time."""
    tally.closing = True
    for transport in transports:
        if not transport.is_disconnected:
            transport.send_close(WSCloseCode.OK)
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await asyncio.gather(
                *(t.wait_disconnected() for t in transports), return_exceptions=True
            )
    except TimeoutError:
        for transport in transports:
            transport.disconnect(graceful=False)


def _rss(pid: int) -> dict[str, int]:
    try:
        return read_rss(pid)
    except OSError:
        return {}


async def run(url: str, server_pid: int, conns: int, batch: int, settle: float) -> Result:
    """Measure the server's resident memory per idle connection.

    Args:
        url: WebSocket URL of an app of `benchmarks.memory_apps`.
        server_pid: The server's PID, whose ``/proc/PID/status`` is read.
        conns: Idle connections to open.
        batch: Connections opened at once.
        settle: Seconds to wait after the warm-up and after opening, before each reading.

    Returns:
        The measurement.
    """
    limit = raise_open_file_limit(conns + FD_HEADROOM)
    tally = Tally()
    warm, warm_failed, first_error = await open_all(url, 1, 1, tally)
    await close_all(warm, tally)
    tally.closing, tally.dropped = False, 0
    await asyncio.sleep(settle)
    before = _rss(server_pid)
    clock = time.perf_counter()
    transports: list[WSTransport] = []
    failed = 0
    after: dict[str, int] = {}
    try:
        if not warm_failed:
            transports, failed, first_error = await open_all(url, conns, batch, tally)
        open_s = time.perf_counter() - clock
        await asyncio.sleep(settle)
        after = _rss(server_pid)
        dropped = tally.dropped
    finally:
        await close_all(transports, tally)
    ready = len(transports)
    rss_before, rss_after = before.get("VmRSS"), after.get("VmRSS")
    per_conn = None
    if ready and rss_before is not None and rss_after is not None:
        per_conn = round((rss_after - rss_before) / ready, 2)
    return Result(
        url=url,
        conns=conns,
        ready=ready,
        failed=failed + (conns if warm_failed else 0),
        dropped=dropped,
        extra_frames=tally.extra_frames,
        first_error=first_error and (f"warm-up: {first_error}" if warm_failed else first_error),
        open_s=round(open_s, 3),
        settle_s=settle,
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        kib_per_conn=per_conn,
        rss_anon_before_kib=before.get("RssAnon"),
        rss_anon_after_kib=after.get("RssAnon"),
        hwm_after_kib=after.get("VmHWM"),
        open_file_limit=limit,
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="ws://127.0.0.1:8000/")
    parser.add_argument("--server-pid", type=int, required=True, help="the process to measure")
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50, help="connections opened at once")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before each reading")
    args = parser.parse_args(argv)
    if args.conns < 1 or args.batch < 1 or args.settle < 0:
        parser.error("--conns and --batch must be at least 1, --settle at least 0")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run one measurement and print it as a JSON line on stdout."""
    args = _parse_args(argv)
    result = asyncio.run(run(args.url, args.server_pid, args.conns, args.batch, args.settle))
    print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
