"""How long from a client's close to the handler's cancellation, under real hypercorn.

``python -m benchmarks.cancel_latency [--connections 200] [--background 1000]
[--workers asyncio,trio]``

Each connection's handler sleeps (it does not read); the client closes; the handler
records when its cancellation arrived. The server runs in this process
(``plait.testing.run_hypercorn``), so both timestamps come from one monotonic clock. The
figure includes the close travelling over loopback and hypercorn delivering
``websocket.disconnect``; it is the latency a user's cleanup code sees.

While it measures, ``--background`` other connections are open and idle on the same
server, served by the same handler. A separate process holds them (one asyncio event
loop, the ``websockets`` client without compression or keepalive pings), so that neither
its objects nor its work share this process with the server. They are opened before the
first measured close, checked at the end (every one still open and answering a ping on
the client, its handler still running on the server), and only then closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

import anyio
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as async_connect
from websockets.protocol import State
from websockets.sync.client import connect

import plait
from benchmarks._processes import raise_open_file_limit
from benchmarks.apps import serve_lifespan
from plait.testing import run_hypercorn
from plait.types import Receive, Scope, Send

BATCH = 50
"""Background connections opened at once (hypercorn listens with a backlog of 2,048)."""
OPEN_TIMEOUT = 10.0
"""Seconds one connection may take to open and be answered."""
OPEN_DEADLINE = 300.0
"""Seconds all background connections may take to open."""
CHECK_TIMEOUT = 30.0
"""Seconds the final check (a ping on every background connection) may take."""
CLOSE_DEADLINE = 60.0
"""Seconds the background connections may take to close."""
COMMAND_TIMEOUT = 3600.0
"""Seconds the background process waits for the next command before it gives up."""
MAX_CHECKS = 10
"""Checks the background process answers before it closes anyway."""
CANCEL_TIMEOUT = 5.0
"""Seconds a measured handler may take to be cancelled before the run fails."""

_cancelled_at: dict[str, float] = {}
_running: set[str] = set()
_lock = threading.Lock()


async def _sleeper(ws: plait.WebSocket) -> None:
    key = ws.query_params["k"]
    await ws.accept()
    with _lock:
        _running.add(key)
    try:
        await ws.send_text("ready")
        await anyio.sleep(600)
    except anyio.get_cancelled_exc_class():
        with _lock:
            _cancelled_at[key] = time.monotonic()
        raise
    finally:
        with _lock:
            _running.discard(key)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve every WebSocket with the sleeping handler; answer lifespan."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    await plait.serve_connection(scope, receive, send, _sleeper)


def _running_with(prefix: str) -> int:
    with _lock:
        return sum(1 for key in _running if key.startswith(prefix))


# ---- the background connections: a separate process, one asyncio loop ----------------

Report = tuple[str, int, str]
"""What the background process sends back: (phase, count, first error or "")."""


async def _open_one(url: str) -> ClientConnection | str:
    try:
        ws = await async_connect(
            url,
            compression=None,
            ping_interval=None,
            open_timeout=OPEN_TIMEOUT,
            close_timeout=5,
            max_queue=4,
        )
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        first = await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT)
    except Exception as exc:
        await ws.close()
        return f"no ready message: {type(exc).__name__}: {exc}"
    if first != "ready":
        await ws.close()
        return f"unexpected first message {first!r}"
    return ws


async def _is_alive(ws: ClientConnection) -> str:
    if ws.state is not State.OPEN:
        return f"state {ws.state.name}, close code {ws.close_code}"
    try:
        pong = await ws.ping()
        await asyncio.wait_for(pong, CHECK_TIMEOUT / 2)
    except Exception as exc:
        return f"no pong: {type(exc).__name__}: {exc}"
    return ""


async def _next_command(pipe: Connection) -> str:
    ready = await asyncio.to_thread(pipe.poll, COMMAND_TIMEOUT)
    if not ready:
        return "close"
    try:
        command: str = pipe.recv()
    except EOFError:  # the measuring process is gone
        return "close"
    return command


async def _hold(url: str, count: int, pipe: Connection) -> None:
    sockets: list[ClientConnection] = []
    errors: list[str] = []
    deadline = time.monotonic() + OPEN_DEADLINE
    for start in range(0, count, BATCH):
        if time.monotonic() > deadline:
            errors.append(f"open deadline of {OPEN_DEADLINE:.0f} s passed")
            break
        batch = range(start, min(start + BATCH, count))
        results = await asyncio.gather(*(_open_one(f"{url}{i}") for i in batch))
        for result in results:
            if isinstance(result, str):
                errors.append(result)
            else:
                sockets.append(result)
    pipe.send(("opened", len(sockets), errors[0] if errors else ""))
    try:
        for _ in range(MAX_CHECKS):
            if await _next_command(pipe) != "check":
                break
            verdicts = await asyncio.gather(*(_is_alive(ws) for ws in sockets))
            failures = [verdict for verdict in verdicts if verdict]
            pipe.send(("alive", len(sockets) - len(failures), failures[0] if failures else ""))
    finally:
        try:
            async with asyncio.timeout(CLOSE_DEADLINE):
                for start in range(0, len(sockets), BATCH):
                    await asyncio.gather(
                        *(ws.close() for ws in sockets[start : start + BATCH]),
                        return_exceptions=True,
                    )
        except TimeoutError:
            pass
        with contextlib.suppress(OSError):  # the measuring process may be gone
            pipe.send(("closed", sum(ws.state is State.CLOSED for ws in sockets), ""))


def hold_background(url: str, count: int, pipe: Connection) -> None:
    """Open ``count`` idle connections to ``url`` + index and hold them until told to close.

    Run in a separate process. Reports ``("opened", n, error)`` once they are open, answers
    each ``"check"`` with ``("alive", n, error)``, and on ``"close"`` (or when the parent
    is gone) closes them all with 1000 and reports ``("closed", n, "")``.
    """
    raise_open_file_limit(count + 256)
    asyncio.run(_hold(url, count, pipe))


def _receive(pipe: Connection, phase: str, timeout: float) -> Report:
    if not pipe.poll(timeout):
        raise RuntimeError(f"the background process did not report {phase!r} within {timeout} s")
    report: Report = pipe.recv()
    if report[0] != phase:
        raise RuntimeError(f"the background process reported {report!r}, expected {phase!r}")
    return report


# ---- the measurement ------------------------------------------------------------------


@dataclass
class Result:
    """One worker's figures."""

    worker: str
    delays: list[float]
    """Close-to-cancel delays, ms."""
    background: int
    """Background connections asked for."""
    client_open: int
    """Background connections still open and answering a ping after the last close."""
    handlers_running: int
    """Background handlers still running on the server after the last close."""

    @property
    def ok(self) -> bool:
        """Whether every background connection stayed open through the measurement."""
        return self.client_open == self.handlers_running == self.background


def _wait_for_handlers(prefix: str, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (running := _running_with(prefix)) != count and time.monotonic() < deadline:
        time.sleep(0.01)
    return running


def _measure_closes(worker: str, server_url: str, connections: int) -> list[float]:
    delays: list[float] = []
    for i in range(connections):
        key = f"{worker}-{i}"
        with connect(f"{server_url}?k={key}", open_timeout=5, close_timeout=5) as ws:
            assert ws.recv(timeout=5) == "ready"
            closed_at = time.monotonic()
        deadline = time.monotonic() + CANCEL_TIMEOUT
        while key not in _cancelled_at and time.monotonic() < deadline:
            time.sleep(0.0005)
        if key not in _cancelled_at:
            raise RuntimeError(f"handler {key} was not cancelled within {CANCEL_TIMEOUT} s")
        delays.append((_cancelled_at[key] - closed_at) * 1000)
    return delays


def measure(worker: str, connections: int, background: int) -> Result:
    """Close ``connections`` clients one at a time with ``background`` others open."""
    prefix = f"{worker}-bg-"
    spawn = multiprocessing.get_context("spawn")
    parent_end, child_end = spawn.Pipe()
    with run_hypercorn(app, worker_class=worker, backlog=2048) as server:  # type: ignore[arg-type]
        url = server.url("/")
        holder = spawn.Process(
            target=hold_background,
            args=(f"{url}?k={prefix}", background, child_end),
            name="cancel-latency-background",
        )
        holder.start()
        child_end.close()
        try:
            _, opened, error = _receive(parent_end, "opened", OPEN_DEADLINE + 60)
            if opened != background:
                raise RuntimeError(
                    f"{opened} of {background} background connections opened: {error}"
                )
            running = _wait_for_handlers(prefix, background, 5)
            if running != background:
                raise RuntimeError(f"{running} of {background} background handlers running")

            delays = _measure_closes(worker, url, connections)

            handlers_running = _running_with(prefix)
            parent_end.send("check")
            _, client_open, error = _receive(parent_end, "alive", CHECK_TIMEOUT + 30)
            if error:
                print(f"{worker}: background connection lost: {error}", file=sys.stderr)
            handlers_running = min(handlers_running, _running_with(prefix))
            parent_end.send("close")
            _receive(parent_end, "closed", CLOSE_DEADLINE + 30)
            _wait_for_handlers(prefix, 0, 10)
        finally:
            parent_end.close()  # on an error, the background process sees EOF and closes all
            holder.join(timeout=CLOSE_DEADLINE + 30)
            if holder.is_alive():
                holder.terminate()
                holder.join(timeout=5)
            if holder.is_alive():
                holder.kill()
                holder.join(timeout=5)
    return Result(worker, delays, background, client_open, handlers_running)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending sequence."""
    return ordered[max(math.ceil(len(ordered) * fraction) - 1, 0)]


def main(argv: Sequence[str] | None = None) -> None:
    """Measure and print n, median, p90, p99 and max for each worker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200, help="measured closes")
    parser.add_argument(
        "--background", type=int, default=1000, help="idle connections open meanwhile"
    )
    parser.add_argument("--workers", default="asyncio,trio")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.background < 0:
        parser.error("--connections must be at least 1 and --background at least 0")
    # The server and the measured client live here: every background connection costs
    # one descriptor in this process (and one in the background process).
    raise_open_file_limit(args.background + args.connections + 256)

    results = [
        measure(worker, args.connections, args.background) for worker in args.workers.split(",")
    ]
    print(
        "| worker | n | median ms | p90 ms | p99 ms | max ms "
        "| background open at end | background handlers running |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        delays = sorted(result.delays)
        print(
            f"| {result.worker} | {len(delays)} | {statistics.median(delays):.2f} "
            f"| {percentile(delays, 0.9):.2f} | {percentile(delays, 0.99):.2f} "
            f"| {delays[-1]:.2f} | {result.client_open:,} of {result.background:,} "
            f"| {result.handlers_running:,} of {result.background:,} |"
        )
    if not all(result.ok for result in results):
        print("\nSome background connections did not stay open: see above.", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
