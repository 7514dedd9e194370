"""How long from a client's close to the handler's cancellation, under real hypercorn.

``python -m benchmarks.cancel_latency [--connections 200] [--workers asyncio,trio]``

Each connection's handler sleeps (it does not read); the client closes; the handler
records when its cancellation arrived. The server runs in this process
(``plait.testing.run_hypercorn``), so both timestamps come from one monotonic clock. The
figure includes the close travelling over loopback and hypercorn delivering
``websocket.disconnect``; it is the latency a user's cleanup code sees.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence

import anyio
from websockets.sync.client import connect

import plait
from benchmarks.apps import serve_lifespan
from plait.testing import run_hypercorn
from plait.types import Receive, Scope, Send

_cancelled_at: dict[str, float] = {}
_lock = threading.Lock()


async def _sleeper(ws: plait.WebSocket) -> None:
    key = ws.query_params["k"]
    await ws.accept()
    await ws.send_text("ready")
    try:
        await anyio.sleep(600)
    except anyio.get_cancelled_exc_class():
        with _lock:
            _cancelled_at[key] = time.monotonic()
        raise


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve every WebSocket with the sleeping handler; answer lifespan."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    await plait.serve_connection(scope, receive, send, _sleeper)


def measure(worker: str, connections: int) -> list[float]:
    """Close ``connections`` clients one at a time; return each close-to-cancel delay (ms)."""
    delays: list[float] = []
    with run_hypercorn(app, worker_class=worker) as server:  # type: ignore[arg-type]
        for i in range(connections):
            key = f"{worker}-{i}"
            with connect(server.url(f"/?k={key}"), open_timeout=5, close_timeout=5) as ws:
                assert ws.recv(timeout=5) == "ready"
                closed_at = time.monotonic()
            deadline = time.monotonic() + 5
            while key not in _cancelled_at and time.monotonic() < deadline:
                time.sleep(0.0005)
            if key not in _cancelled_at:
                raise RuntimeError(f"handler {key} was not cancelled within 5 s")
            delays.append((_cancelled_at[key] - closed_at) * 1000)
    return delays


def main(argv: Sequence[str] | None = None) -> None:
    """Measure and print the median, p90 and max for each worker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--workers", default="asyncio,trio")
    args = parser.parse_args(argv)
    print("| worker | connections | median ms | p90 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for worker in args.workers.split(","):
        delays = sorted(measure(worker, args.connections))
        p90 = delays[int(len(delays) * 0.9) - 1]
        print(
            f"| {worker} | {len(delays)} | {statistics.median(delays):.2f} | {p90:.2f} "
            f"| {delays[-1]:.2f} |"
        )


if __name__ == "__main__":
    main()
