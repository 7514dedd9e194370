"""What plait's heartbeat costs per ping, in process: no server, no socket.

``python -m benchmarks.heartbeat [--conns 2000] [--seconds 4] [--backends asyncio,trio]
[--apps plait,plait_app]``

Each case runs in a fresh interpreter: ``--conns`` connections, each served by plait with
``Heartbeat(interval=1, timeout=0.5)`` against a fake server that answers every ping with a
pong at once (an idle client that is alive). After one interval to settle, the process's
CPU time over ``--seconds`` is divided by the pings sent meanwhile; the share the cyclic
garbage collector took (timed through ``gc.callbacks``) is reported beside it, with the
collections of each generation. The apps:

- ``plait``: `plait.serve_connection` with a handler that reads text until the peer leaves;
- ``plait_app``: a `plait.App` route with a typed listener, an idle stream and the
  heartbeat, the route `benchmarks.scale` holds 19,000 times.

At scale the ping rate is connections / interval (19,000 / 30 s = 633 a second), so the
cost per ping times that rate is the worker's CPU at rest, less what the server itself
spends on the frames (`benchmarks.scale` measures the whole of it under hypercorn).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

import plait
from benchmarks._asgi import ASGIApp, Message
from benchmarks._cpu import CollectorTime
from benchmarks.scale_apps import plait_route_app

APPS = ("plait", "plait_app")
BACKENDS = ("asyncio", "trio")
HEARTBEAT = plait.Heartbeat(interval=1, timeout=0.5)
SCOPE: dict[str, Any] = {
    "type": "websocket",
    "path": "/",
    "raw_path": b"/",
    "headers": [],
    "query_string": b"",
    "scheme": "ws",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
}


async def _idle(ws: plait.WebSocket) -> None:
    await ws.accept()
    async for _ in ws.iter_text():
        pass


def _app(name: str) -> ASGIApp:
    if name == "plait":

        async def serve(scope: Any, receive: Any, send: Any) -> None:
            await plait.serve_connection(scope, receive, send, _idle, heartbeat=HEARTBEAT)

        return serve
    return plait_route_app(HEARTBEAT)


async def _measure(app_name: str, conns: int, seconds: float) -> dict[str, Any]:
    app = _app(app_name)
    pings = 0

    async def one(*, task_status: Any) -> None:
        send_answer, answers = anyio.create_memory_object_stream[Message](4)
        step = 0

        async def receive() -> Message:
            nonlocal step
            if step == 0:
                step = 1
                return {"type": "websocket.connect"}
            if step == 1:
                step = 2
                task_status.started()
            return await answers.receive()

        async def send(message: Message) -> None:
            nonlocal pings
            if message.get("text") == HEARTBEAT.ping:
                pings += 1
                send_answer.send_nowait({"type": "websocket.receive", "text": HEARTBEAT.pong})

        await app(dict(SCOPE), receive, send)

    collector = CollectorTime()
    async with anyio.create_task_group() as task_group:
        for _ in range(conns):
            await task_group.start(one)
        await anyio.sleep(HEARTBEAT.interval * 1.2)
        gc.callbacks.append(collector)
        first, cpu = pings, time.process_time()
        await anyio.sleep(seconds)
        cpu, sent = time.process_time() - cpu, pings - first
        gc.callbacks.remove(collector)
        task_group.cancel_scope.cancel()
    return {
        "pings": sent,
        "cpu_us_per_ping": cpu / sent * 1e6 if sent else None,
        "gc_us_per_ping": sum(collector.seconds) / sent * 1e6 if sent else None,
        "collections": collector.collections,
    }


def _child(argv: Sequence[str]) -> int:
    backend, app_name, conns, seconds = argv[0], argv[1], int(argv[2]), float(argv[3])
    result = anyio.run(_measure, app_name, conns, seconds, backend=backend)
    print(json.dumps(result))
    return 0


def run_case(backend: str, app_name: str, conns: int, seconds: float) -> dict[str, Any]:
    """Measure one case in a fresh interpreter; return its figures."""
    command = [sys.executable, "-m", "benchmarks.heartbeat", "--child", backend, app_name]
    done = subprocess.run(
        [*command, str(conns), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120 + seconds,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Print the cost per ping of each app on each backend."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--apps", default=",".join(APPS))
    args = parser.parse_args(argv)
    print(f"{args.conns} connections, Heartbeat(1, 0.5), {args.seconds} s measured")
    print("| backend | app | pings | CPU per ping | of it, the collector | collections 0/1/2 |")
    print("|---|---|---:|---:|---:|---|")
    for backend in args.backends.split(","):
        for app_name in args.apps.split(","):
            r = run_case(backend, app_name, args.conns, args.seconds)
            print(
                f"| {backend} | {app_name} | {r['pings']:,} | {r['cpu_us_per_ping']:.1f} µs "
                f"| {r['gc_us_per_ping']:.1f} µs | {'/'.join(map(str, r['collections']))} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
