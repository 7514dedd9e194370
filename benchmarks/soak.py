"""Soak: churned connections, a hostile flood and a Redis restart, under real hypercorn.

``python -m benchmarks.soak [--quick] [--workers asyncio,trio] [--phases churn,flood,redis]
[--connections 10000] [--messages 100000] [--published 2000]``

Every phase serves its app with hypercorn in this process (``plait.testing.run_hypercorn``,
one worker class at a time), so the server's handlers can be counted directly and the
resident memory read is the server's (this process's ``VmRSS``). Clients run in a separate
process (churn, flood) or on this process's main thread (the Redis phase); everything is
on loopback and bounded in count and time.

1. **churn**: ``--connections`` WebSocket connections (``--batch`` at a time, the asyncio
   ``websockets`` client, no compression) to a ``plait.serve_connection`` echo whose
   handler counts its teardowns in ``finally``. Each exchanges one message, then a third
   close cleanly, a third reset (``SO_LINGER`` 0, then close), a third close in the middle
   of a large message (a frame header for 512 KiB, 64 KiB of it, then FIN).
2. **flood**: ``--messages`` messages over ``--flood-connections`` connections, one at a
   time per connection, to a typed listener (a msgspec ``Struct``, ``on_invalid="reply"``,
   ``App(max_message_size=64 KiB)``): valid, invalid JSON, wrong schema, a 401-digit
   number, 10,000-deep objects and arrays, just under and just over the size limit (each
   over-size one on a fresh connection: it closes with 1009), binary where text is
   expected.
3. **redis**: a private ``redis-server`` (no persistence, then ``appendonly yes``); an App
   with ``Hub(RedisBackend(url, history=1000))``, a publish listener and a stream route.
   ``--published`` messages go out at ``--rate`` per second while one subscriber stays
   connected and another leaves at a quarter, and comes back with ``since=`` at three
   quarters; Redis is stopped (SIGTERM) and started again at half.

The report is Markdown, one table per phase. The exit status is 1 when an invariant
failed (a teardown missed, a handler or task left running, an ERROR record from plait, a
valid message unanswered, a connection that did not open, a message delivered twice, a
resume that lost messages and said it recovered).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

import plait
from benchmarks._processes import raise_open_file_limit
from benchmarks.apps import serve_lifespan
from plait import Hub, Query
from plait.channels import ChannelMessage, ChannelUnavailable
from plait.testing import run_hypercorn
from plait.types import Receive, Scope, Send

Worker = Literal["asyncio", "trio"]
PHASES = ("churn", "flood", "redis")
OPEN_TIMEOUT = 10.0
"""Seconds a client connection may take to open, and a reply to come."""
CHILD_SLACK = 60.0
"""Seconds a client process may take besides its own deadline (start-up, closing)."""
REDIS_START_TIMEOUT = 10.0
HISTORY = 1000
CHANNEL = "soak"


def rss_kib() -> int:
    """This process's resident memory (``VmRSS``), KiB; 0 where /proc is missing."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def _codes(counter: dict[str, int]) -> str:
    return ", ".join(f"{key}: {value:,}" for key, value in sorted(counter.items())) or "—"


class LogCounter(logging.Handler):
    """Keeps every WARNING and ERROR record, and the first ERROR traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[str, int, str]] = []
        self.first_traceback = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()[:300]))
        if record.levelno >= logging.ERROR and not self.first_traceback and record.exc_info:
            self.first_traceback = "".join(traceback.format_exception(*record.exc_info))[-3000:]

    def reset(self) -> None:
        """Forget what was recorded."""
        with self.lock if self.lock is not None else contextlib.nullcontext():
            self.records = []
            self.first_traceback = ""

    def count(self, level: int, prefix: str) -> int:
        """Records at exactly ``level`` from loggers named ``prefix`` or below it."""
        return sum(
            1
            for name, levelno, _ in self.records
            if levelno == level and (name == prefix or name.startswith(prefix + "."))
        )

    def first(self, level: int, prefix: str) -> str:
        """The first such record's message, or ''."""
        for name, levelno, message in self.records:
            if levelno == level and (name == prefix or name.startswith(prefix + ".")):
                return f"{name}: {message}"
        return ""


def _run_child(
    target: Callable[..., None], arguments: tuple[Any, ...], timeout: float, name: str
) -> dict[str, Any]:
    """Run ``target(*arguments, pipe)`` in a spawned process; return what it sends."""
    spawn = multiprocessing.get_context("spawn")
    receiver, sender = spawn.Pipe(duplex=False)
    process = spawn.Process(target=target, args=(*arguments, sender), name=name)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise RuntimeError(f"the {name} process did not report within {timeout:.0f} s")
        try:
            result: dict[str, Any] = receiver.recv()
        except EOFError as exc:
            raise RuntimeError(f"the {name} process exited with {process.exitcode}") from exc
        return result
    finally:
        receiver.close()
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)


async def _open(url: str) -> ClientConnection:
    return await connect(
        url,
        compression=None,
        ping_interval=None,
        open_timeout=OPEN_TIMEOUT,
        close_timeout=5,
        max_size=4 * 1024 * 1024,
    )


def _close_code(ws: ClientConnection) -> str:
    code = ws.close_code
    return "none" if code is None else str(int(code))


# ---- phase 1: churn ---------------------------------------------------------------------

CHURN_KINDS = ("clean", "reset", "mid_send")
MID_SEND_ANNOUNCED = 512 * 1024
MID_SEND_SENT = 64 * 1024


class _ChurnCounts:
    """Handlers started and torn down on the server, by kind (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: Counter[str] = Counter()
        self.ended: Counter[str] = Counter()
        self.how: Counter[str] = Counter()

    def reset(self) -> None:
        with self.lock:
            self.started.clear()
            self.ended.clear()
            self.how.clear()

    def alive(self) -> int:
        with self.lock:
            return sum(self.started.values()) - sum(self.ended.values())


_counts = _ChurnCounts()


async def _churn_echo(ws: plait.WebSocket) -> None:
    kind = ws.query_params.get("k", "?")
    with _counts.lock:
        _counts.started[kind] += 1
    how = "returned"
    try:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(text)
    except anyio.get_cancelled_exc_class():
        how = "cancelled"
        raise
    except BaseException as exc:
        how = type(exc).__name__
        raise
    finally:
        with _counts.lock:
            _counts.ended[kind] += 1
            _counts.how[how] += 1


async def _task_probe(ws: plait.WebSocket) -> None:
    await ws.accept()
    await ws.send_text(str(len(anyio.get_running_tasks())))


async def churn_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/tasks`` answers the server loop's task count; any other path is the echo."""
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    handler = _task_probe if scope["path"] == "/tasks" else _churn_echo
    await plait.serve_connection(scope, receive, send, handler)


def _partial_frame() -> bytes:
    """A masked text frame header for MID_SEND_ANNOUNCED bytes and MID_SEND_SENT of them."""
    header = struct.pack("!BBQ", 0x81, 0x80 | 127, MID_SEND_ANNOUNCED) + b"\0\0\0\0"
    return header + b"x" * MID_SEND_SENT


async def _churn_one(url: str, index: int) -> tuple[str, str | None, str]:
    """One connection: (kind, close code seen by the client or None if not opened, error)."""
    kind = CHURN_KINDS[index % len(CHURN_KINDS)]
    try:
        ws = await _open(f"{url}?k={kind}&i={index}")
    except Exception as exc:
        return kind, None, f"open: {type(exc).__name__}: {exc}"
    try:
        await ws.send("hello")
        reply = await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT)
        if reply != "hello":
            raise RuntimeError(f"echo answered {reply!r}")
    except Exception as exc:
        ws.transport.abort()
        return kind, None, f"echo: {type(exc).__name__}: {exc}"
    if kind == "clean":
        await ws.close()
    else:
        transport = ws.transport
        if kind == "reset":
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.write(_partial_frame())
            transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ws.wait_closed(), 5)
    return kind, _close_code(ws), ""


async def _churn(url: str, total: int, batch: int, deadline: float) -> dict[str, Any]:
    opened: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    codes: dict[str, Counter[str]] = {kind: Counter() for kind in CHURN_KINDS}
    errors: list[str] = []
    clock = time.monotonic()
    timed_out = False
    try:
        async with asyncio.timeout(deadline):
            for start in range(0, total, batch):
                results = await asyncio.gather(
                    *(_churn_one(url, i) for i in range(start, min(start + batch, total)))
                )
                for kind, code, error in results:
                    if code is None:
                        failed[kind] += 1
                        errors.append(error)
                    else:
                        opened[kind] += 1
                        codes[kind][code] += 1
    except TimeoutError:
        timed_out = True
    return {
        "opened": dict(opened),
        "failed": dict(failed),
        "codes": {kind: dict(counter) for kind, counter in codes.items()},
        "first_error": errors[0] if errors else ("deadline passed" if timed_out else ""),
        "timed_out": timed_out,
        "elapsed_s": time.monotonic() - clock,
    }


def churn_client(url: str, total: int, batch: int, deadline: float, pipe: Connection) -> None:
    """Client process of the churn: open, echo once and end ``total`` connections."""
    raise_open_file_limit(2 * batch + 256)
    pipe.send(asyncio.run(_churn(url, total, batch, deadline)))


def _probe_tasks(url: str) -> int:
    with sync_connect(url, open_timeout=OPEN_TIMEOUT, compression=None) as ws:
        return int(ws.recv(timeout=OPEN_TIMEOUT))


@dataclass
class ChurnResult:
    """One worker's churn."""

    worker: str
    asked: int
    opened: dict[str, int]
    failed: dict[str, int]
    started: int
    teardowns: int
    handler_ends: dict[str, int]
    handlers_alive: int
    tasks_before: int
    tasks_after: int
    rss_before_kib: int
    rss_after_kib: int
    codes: dict[str, dict[str, int]]
    plait_errors: int
    plait_warnings: int
    hypercorn_errors: int
    elapsed_s: float
    settle_s: float
    first_error: str = ""

    @property
    def opened_total(self) -> int:
        return sum(self.opened.values())

    def failures(self) -> list[str]:
        """The invariants this run broke."""
        problems = []
        if self.opened_total != self.asked:
            problems.append(f"{self.opened_total:,} of {self.asked:,} connections opened")
        if self.teardowns != self.started or self.started < self.opened_total:
            problems.append(
                f"{self.teardowns:,} teardowns for {self.started:,} handlers started "
                f"({self.opened_total:,} connections opened)"
            )
        if self.handlers_alive:
            problems.append(f"{self.handlers_alive} handlers still running")
        if self.tasks_after > self.tasks_before:
            problems.append(f"{self.tasks_after - self.tasks_before} server tasks left running")
        if self.plait_errors:
            problems.append(f"{self.plait_errors} ERROR records from plait")
        return [f"churn {self.worker}: {p}" for p in problems]


def _settle(before: int, probe: Callable[[], int], limit: float) -> tuple[int, int, float]:
    """Wait until no handler runs and the task count is back; (alive, tasks, seconds)."""
    clock = time.monotonic()
    while True:
        alive, tasks = _counts.alive(), probe()
        if (alive == 0 and tasks <= before) or time.monotonic() - clock > limit:
            return alive, tasks, time.monotonic() - clock
        time.sleep(0.25)


def run_churn(worker: Worker, args: argparse.Namespace, logs: LogCounter) -> ChurnResult:
    """The churn phase on one worker."""
    with run_hypercorn(churn_app, worker_class=worker, backlog=2048) as server:
        url, probe_url = server.url("/churn"), server.url("/tasks")

        def probe() -> int:
            return _probe_tasks(probe_url)

        # Warm-up: the same mix, so that the RSS read before counts the server's
        # steady state, not its first allocations.
        warm = min(args.batch * 2, args.connections)
        _run_child(churn_client, (url, warm, args.batch, 60.0), 60 + CHILD_SLACK, "churn")
        _settle(10**9, probe, args.settle)
        _counts.reset()
        logs.reset()
        gc.collect()
        tasks_before, rss_before = probe(), rss_kib()
        result = _run_child(
            churn_client,
            (url, args.connections, args.batch, args.time_limit),
            args.time_limit + CHILD_SLACK,
            "churn",
        )
        alive, tasks_after, settle_s = _settle(tasks_before, probe, args.settle)
        gc.collect()
        rss_after = rss_kib()
        with _counts.lock:
            started, ended = sum(_counts.started.values()), sum(_counts.ended.values())
            how = dict(_counts.how)
    return ChurnResult(
        worker=worker,
        asked=args.connections,
        opened=result["opened"],
        failed=result["failed"],
        started=started,
        teardowns=ended,
        handler_ends=how,
        handlers_alive=alive,
        tasks_before=tasks_before,
        tasks_after=tasks_after,
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        codes=result["codes"],
        plait_errors=logs.count(logging.ERROR, "plait"),
        plait_warnings=logs.count(logging.WARNING, "plait"),
        hypercorn_errors=logs.count(logging.ERROR, "hypercorn"),
        elapsed_s=result["elapsed_s"],
        settle_s=settle_s,
        first_error=result["first_error"] or logs.first(logging.ERROR, "plait"),
    )


def render_churn(results: Sequence[ChurnResult]) -> str:
    """The churn table."""
    lines = [
        "### Churn: connections opened, echoed once and ended (a third each: clean close, "
        "reset, close mid-send)",
        "",
        "| worker | opened | open failures | handlers started | teardowns run "
        "| handlers alive after settle | server tasks before → after | server RSS MiB "
        "before → after | plait ERROR / WARNING | hypercorn ERROR | client close codes "
        "(clean; reset; mid-send) | handler ends | time s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for r in results:
        codes = "; ".join(_codes(r.codes.get(kind, {})) for kind in CHURN_KINDS)
        lines.append(
            f"| {r.worker} | {r.opened_total:,} of {r.asked:,} | {sum(r.failed.values()):,} "
            f"| {r.started:,} | {r.teardowns:,} | {r.handlers_alive} "
            f"| {r.tasks_before} → {r.tasks_after} "
            f"| {_mib(r.rss_before_kib)} → {_mib(r.rss_after_kib)} "
            f"({(r.rss_after_kib - r.rss_before_kib) / 1024:+.1f}) "
            f"| {r.plait_errors} / {r.plait_warnings} | {r.hypercorn_errors} | {codes} "
            f"| {_codes(r.handler_ends)} | {r.elapsed_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


# ---- phase 2: hostile flood -------------------------------------------------------------

MAX_MESSAGE_SIZE = 64 * 1024
DEPTH = 10_000
FLOOD_WEIGHTS = {
    "valid": 60,
    "invalid_json": 8,
    "wrong_schema": 8,
    "huge_number": 8,
    "binary": 8,
    "deep_object": 2,
    "deep_array": 2,
    "just_under": 3,
    "just_over": 1,
}
"""How many of every 100 messages are of each kind."""
CLIENT_FAULT_CLOSES = ("close 1003", "close 1007", "close 1008", "close 1009")
EXPECTED: dict[str, frozenset[str]] = {
    "valid": frozenset({"ok reply"}),
    "just_under": frozenset({"ok reply"}),
    "just_over": frozenset({"close 1009"}),
    # on_invalid="reply": the connection survives anything that does not decode.
    "invalid_json": frozenset({"error reply"}),
    "wrong_schema": frozenset({"error reply"}),
    "deep_object": frozenset({"error reply"}),
    "deep_array": frozenset({"error reply"}),
    # msgspec takes a 401-digit int as an int, and plait decodes JSON from binary frames
    # as from text: either answer is fine, or a close naming the client's fault.
    "huge_number": frozenset({"ok reply", "error reply", *CLIENT_FAULT_CLOSES}),
    "binary": frozenset({"ok reply", "error reply", *CLIENT_FAULT_CLOSES}),
}
"""The outcomes each kind may have; anything else is a failure."""


class Item(msgspec.Struct):
    """What the flooded listener accepts."""

    n: int
    text: str


class Ack(msgspec.Struct):
    """Its answer."""

    n: int
    size: int


@plait.listener("/flood", on_invalid="reply")
async def flood(data: Item) -> Ack:
    """Answer a valid message with its number and the length of its text."""
    return Ack(n=data.n, size=len(data.text))


def flood_app() -> plait.App:
    """The App of the flooded listener, ``max_message_size`` 64 KiB."""
    return plait.App(routes=[flood], max_message_size=MAX_MESSAGE_SIZE)


def _payloads() -> dict[str, str | bytes]:
    pad = '{"n": 1, "text": "' + '"}'
    return {
        "invalid_json": '{"n": 1, "text": "unterminated',
        "wrong_schema": '{"n": "one", "text": 5}',
        "huge_number": '{"n": 1' + "0" * 400 + ', "text": "x"}',
        "binary": b'{"n": 1, "text": "binary"}',
        "deep_object": '{"a":' * DEPTH + "1" + "}" * DEPTH,
        "deep_array": '{"n": 1, "text": "x", "extra": ' + "[" * DEPTH + "]" * DEPTH + "}",
        "just_under": pad[:-2] + "x" * (MAX_MESSAGE_SIZE - 1 - len(pad)) + pad[-2:],
        "just_over": pad[:-2] + "x" * (MAX_MESSAGE_SIZE + 1 - len(pad)) + pad[-2:],
    }


def _kinds(total: int) -> list[str]:
    cycle = [kind for kind, weight in FLOOD_WEIGHTS.items() for _ in range(weight)]
    random.Random(10).shuffle(cycle)
    return [cycle[i % len(cycle)] for i in range(total)]


def _outcome(reply: str | bytes) -> str:
    try:
        decoded = json.loads(reply)
    except ValueError:
        return "other reply"
    if isinstance(decoded, dict) and "error" in decoded:
        return "error reply"
    if isinstance(decoded, dict) and "size" in decoded:
        return "ok reply"
    return "other reply"


async def _exchange(ws: ClientConnection, payload: str | bytes) -> str:
    try:
        await ws.send(payload)
        return _outcome(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT))
    except ConnectionClosed as exc:
        return f"close {exc.rcvd.code if exc.rcvd is not None else 1006}"
    except TimeoutError:
        ws.transport.abort()
        return "timeout"


async def _flood_connection(
    url: str, indices: range, kinds: list[str], tally: dict[str, Counter[str]]
) -> None:
    payloads = _payloads()
    ws: ClientConnection | None = None
    try:
        for j in indices:
            kind = kinds[j]
            payload = payloads.get(kind) or f'{{"n": {j}, "text": "hello"}}'
            try:
                if kind == "just_over":  # it closes the connection: a fresh one each
                    async with await _open(url) as single:
                        outcome = await _exchange(single, payload)
                else:
                    if ws is None:
                        ws = await _open(url)
                    outcome = await _exchange(ws, payload)
                    if outcome.startswith("close") or outcome == "timeout":
                        ws = None
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                outcome = f"open failed ({type(exc).__name__})"
                ws = None
            tally[kind][outcome] += 1
    finally:
        if ws is not None:
            await ws.close()


async def _flood(url: str, total: int, connections: int, deadline: float) -> dict[str, Any]:
    kinds = _kinds(total)
    tally: dict[str, Counter[str]] = {kind: Counter() for kind in FLOOD_WEIGHTS}
    clock = time.monotonic()
    timed_out = False
    try:
        async with asyncio.timeout(deadline), asyncio.TaskGroup() as group:
            for c in range(connections):
                group.create_task(
                    _flood_connection(url, range(c, total, connections), kinds, tally)
                )
    except TimeoutError:
        timed_out = True
    return {
        "tally": {kind: dict(counter) for kind, counter in tally.items()},
        "timed_out": timed_out,
        "elapsed_s": time.monotonic() - clock,
    }


def flood_client(url: str, total: int, connections: int, deadline: float, pipe: Connection) -> None:
    """Client process of the flood: ``total`` mixed messages, one at a time per connection."""
    pipe.send(asyncio.run(_flood(url, total, connections, deadline)))


@dataclass
class FloodResult:
    """One worker's flood."""

    worker: str
    asked: int
    tally: dict[str, dict[str, int]]
    plait_errors: int
    plait_warnings: int
    hypercorn_errors: int
    rss_before_kib: int
    rss_after_kib: int
    elapsed_s: float
    timed_out: bool
    first_error: str = ""

    @property
    def sent(self) -> int:
        return sum(sum(outcomes.values()) for outcomes in self.tally.values())

    def failures(self) -> list[str]:
        """The invariants this run broke."""
        problems = []
        if self.timed_out or self.sent != self.asked:
            problems.append(f"{self.sent:,} of {self.asked:,} messages sent in time")
        if self.plait_errors:
            problems.append(f"{self.plait_errors} ERROR records from plait")
        for kind, outcomes in self.tally.items():
            wrong = {o: n for o, n in outcomes.items() if o not in EXPECTED[kind]}
            if wrong:
                problems.append(f"{kind}: {_codes(wrong)}")
        return [f"flood {self.worker}: {p}" for p in problems]


def run_flood(worker: Worker, args: argparse.Namespace, logs: LogCounter) -> FloodResult:
    """The flood phase on one worker."""
    with run_hypercorn(flood_app(), worker_class=worker, backlog=2048) as server:
        url = server.url("/flood")
        warm = min(2000, args.messages)
        _run_child(flood_client, (url, warm, args.flood_connections, 60.0), 120, "flood")
        logs.reset()
        gc.collect()
        rss_before = rss_kib()
        result = _run_child(
            flood_client,
            (url, args.messages, args.flood_connections, args.time_limit),
            args.time_limit + CHILD_SLACK,
            "flood",
        )
        time.sleep(min(args.settle, 1.0))
        gc.collect()
        rss_after = rss_kib()
    return FloodResult(
        worker=worker,
        asked=args.messages,
        tally=result["tally"],
        plait_errors=logs.count(logging.ERROR, "plait"),
        plait_warnings=logs.count(logging.WARNING, "plait"),
        hypercorn_errors=logs.count(logging.ERROR, "hypercorn"),
        rss_before_kib=rss_before,
        rss_after_kib=rss_after,
        elapsed_s=result["elapsed_s"],
        timed_out=result["timed_out"],
        first_error=logs.first(logging.ERROR, "plait"),
    )


def render_flood(results: Sequence[FloodResult]) -> str:
    """The flood table: one row per kind, one column per worker, then the totals."""
    lines = [
        '### Hostile flood: a typed listener, `on_invalid="reply"`, '
        f"max_message_size {MAX_MESSAGE_SIZE // 1024} KiB",
        "",
        "| kind | share | allowed | " + " | ".join(f"{r.worker}: outcomes" for r in results) + " |",
        "|---|---:|---|" + "---|" * len(results),
    ]
    for kind, weight in FLOOD_WEIGHTS.items():
        cells = [_codes(r.tally.get(kind, {})) for r in results]
        allowed = (
            "any reply, or close 1003/1007/1008/1009"
            if len(EXPECTED[kind]) > 2
            else ", ".join(sorted(EXPECTED[kind]))
        )
        lines.append(f"| {kind} | {weight}% | {allowed} | " + " | ".join(cells) + " |")
    rows = {
        "messages": [f"{r.sent:,} of {r.asked:,}" for r in results],
        "plait ERROR / WARNING records": [
            f"{r.plait_errors} / {r.plait_warnings}" for r in results
        ],
        "hypercorn ERROR records": [str(r.hypercorn_errors) for r in results],
        "server RSS MiB before → after": [
            f"{_mib(r.rss_before_kib)} → {_mib(r.rss_after_kib)} "
            f"({(r.rss_after_kib - r.rss_before_kib) / 1024:+.1f})"
            for r in results
        ],
        "time s (messages/s)": [
            f"{r.elapsed_s:.1f} ({r.sent / r.elapsed_s:,.0f})" if r.elapsed_s else "—"
            for r in results
        ],
    }
    for name, cells in rows.items():
        lines.append(f"| **{name}** | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---- phase 3: Redis restart -------------------------------------------------------------


class Publish(msgspec.Struct):
    """A request to publish sequence number ``seq``."""

    seq: int


publisher = plait.WebSocketRoute("/publish")


@publisher.listener
async def publish(data: Publish, hub: Hub) -> dict[str, Any]:
    """Publish ``{"seq": ...}``; answer its id, or the error while Redis is away."""
    try:
        message_id = await hub.publish(CHANNEL, {"seq": data.seq})
    except ChannelUnavailable as exc:
        return {"seq": data.seq, "error": str(exc)[:200]}
    return {"seq": data.seq, "id": message_id}


feed = plait.WebSocketRoute("/feed")


@feed.stream
async def hear(
    hub: Hub, since: Annotated[str | None, Query()] = None
) -> AsyncGenerator[ChannelMessage | dict[str, Any], None]:
    """The channel, after the recovery notice when a resume has a gap."""
    async with hub.subscribe(CHANNEL, since=since, buffer=10_000) as messages:
        notice = messages.recovery_notice()
        if notice is not None:
            yield notice
        async for message in messages:
            yield message


def redis_app(url: str) -> plait.App:
    """The App of the Redis phase: a hub on Redis with history."""
    from plait.channels import RedisBackend

    return plait.App(routes=[publisher, feed], hub=Hub(RedisBackend(url, history=HISTORY)))


class RedisProcess:
    """A private redis-server on a free loopback port; ``restart()`` keeps the port."""

    def __init__(self, directory: Path, *, appendonly: bool) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}"
        self.directory = directory
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not on PATH")
        self.process = subprocess.Popen(
            [
                executable,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "yes" if self.appendonly else "no"),
                *("--dir", str(self.directory)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {REDIS_START_TIMEOUT} s")

    def stop(self) -> None:
        """SIGTERM the PID started, then SIGKILL after 10 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self, downtime: float) -> None:
        """Stop, stay down ``downtime`` seconds, start again."""
        self.stop()
        time.sleep(downtime)
        self.start()


@contextlib.contextmanager
def redis_server(*, appendonly: bool) -> Iterator[RedisProcess]:
    """A private redis-server in a temporary directory for the block."""
    with tempfile.TemporaryDirectory(prefix="plait-soak-redis-") as directory:
        server = RedisProcess(Path(directory), appendonly=appendonly)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@dataclass
class _Subscriber:
    """What one subscriber connection received: (id, seq) in order, and notices."""

    received: list[tuple[str, int]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    close_code: str = ""


async def _subscribe(url: str, into: _Subscriber) -> None:
    for _ in range(20):  # a resume while Redis is away closes with 1013: try again later
        async with await _open(url) as ws:
            try:
                async for raw in ws:
                    message = json.loads(raw)
                    if "recovered" in message:
                        into.notices.append(message)
                    else:
                        into.received.append((message["id"], int(message["data"]["seq"])))
            except ConnectionClosed:
                pass
            into.close_code = _close_code(ws)
            if ws.close_code != 1013:
                return
        await asyncio.sleep(0.5)


async def _publish_one(ws: ClientConnection, seq: int, limit: float) -> tuple[str | None, int]:
    """Publish until acknowledged: (id or None when it never was, attempts)."""
    deadline = time.monotonic() + limit
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        await ws.send(json.dumps({"seq": seq}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if "id" in answer:
            return str(answer["id"]), attempts
        await asyncio.sleep(0.05)
    return None, attempts


@dataclass
class RedisResult:
    """One worker and one persistence setting of the Redis phase."""

    worker: str
    persistence: str
    asked: int
    acked: int
    attempts: int
    unacked: int
    stayed_received: int
    stayed_lost: int
    stayed_duplicated: int
    stayed_unacknowledged: int
    resumed_expected: int
    resumed_received: int
    resumed_lost: int
    resumed_duplicated: int
    resumed_unacknowledged: int
    resumed_recovered: bool
    resumed_lost_seqs: str
    plait_errors: int
    plait_warnings: int
    elapsed_s: float
    note: str = ""

    def failures(self) -> list[str]:
        """The invariants this run broke: losses are figures, not failures, unless the
        resumed subscriber lost messages and was told it recovered everything."""
        problems = []
        if self.stayed_duplicated or self.resumed_duplicated:
            problems.append(
                f"duplicates: {self.stayed_duplicated} (stayed), {self.resumed_duplicated} "
                "(resumed)"
            )
        if self.resumed_lost and self.resumed_recovered:
            problems.append(
                f"silent gap: the resume lost {self.resumed_lost} ({self.resumed_lost_seqs}) "
                "and said recovered"
            )
        if self.plait_errors:
            problems.append(f"{self.plait_errors} ERROR records from plait")
        if self.note:
            problems.append(self.note)
        return [f"redis {self.worker} {self.persistence}: {p}" for p in problems]


def _ranges(seqs: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` as ``"1-3, 7"``: which messages, by sequence number."""
    spans: list[list[int]] = []
    for seq in seqs:
        if spans and seq == spans[-1][1] + 1:
            spans[-1][1] = seq
        else:
            spans.append([seq, seq])
    text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans[:4])
    return (text + (", …" if len(spans) > 4 else "")) or "—"


def _duplicates(ids: Sequence[str]) -> int:
    return sum(n - 1 for n in Counter(ids).values() if n > 1)


async def _redis_soak(
    base: str, redis: RedisProcess, count: int, rate: float, downtime: float
) -> dict[str, Any]:
    stayed, left, resumed = _Subscriber(), _Subscriber(), _Subscriber()
    acked: dict[str, int] = {}
    attempts = unacked = 0
    note = ""
    async with asyncio.TaskGroup() as group, await _open(f"{base}/publish") as pub:
        stay_task = group.create_task(_subscribe(f"{base}/feed", stayed))
        left_task = group.create_task(_subscribe(f"{base}/feed", left))
        # Warm-up until both subscribers receive: the hub listens before the count starts.
        deadline = time.monotonic() + 20
        while not (stayed.received and left.received) and time.monotonic() < deadline:
            await _publish_one(pub, -1, 5)
            await asyncio.sleep(0.05)
        restart: asyncio.Task[None] | None = None
        resume_task: asyncio.Task[None] | None = None
        left_last = ""
        clock = time.monotonic()
        for seq in range(count):
            await asyncio.sleep(max(0.0, clock + seq / rate - time.monotonic()))
            if seq == count // 4:
                left_task.cancel()  # the client leaves; its socket is closed
                with contextlib.suppress(asyncio.CancelledError):
                    await left_task
                left_last = left.received[-1][0]
            if seq == count // 2:
                restart = asyncio.create_task(asyncio.to_thread(redis.restart, downtime))
            if seq == 3 * count // 4:
                url = f"{base}/feed?since={left_last}"
                resume_task = group.create_task(_subscribe(url, resumed))
            message_id, tries = await _publish_one(pub, seq, 30)
            attempts += tries
            if message_id is None:
                unacked += 1
            else:
                acked[message_id] = seq
        elapsed = time.monotonic() - clock
        if restart is not None:
            await restart
        # Wait for the last acknowledged message to reach both, at most 10 s.
        last = max(acked, key=acked.__getitem__, default="")
        for _ in range(100):
            if all(any(i == last for i, _ in s.received[-5:]) for s in (stayed, resumed)):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # a duplicate after the last one would show now
        if stayed.close_code or (resume_task is not None and resumed.close_code):
            note = f"a subscriber was closed: {stayed.close_code or resumed.close_code}"
        stay_task.cancel()
        if resume_task is not None:
            resume_task.cancel()
    counted = {i for i, seq in acked.items() if seq >= 0}
    stayed_ids = [i for i, seq in stayed.received if seq >= 0]
    left_seqs = [seq for _, seq in left.received if seq >= 0]
    left_max = max(left_seqs, default=-1)
    expected = {i for i, seq in acked.items() if seq > left_max}
    resumed_ids = [i for i, seq in resumed.received if seq >= 0]
    left_ids = {i for i, _ in left.received}
    return {
        "acked": len(counted),
        "attempts": attempts,
        "unacked": unacked,
        "stayed_received": len(counted & set(stayed_ids)),
        "stayed_lost": len(counted - set(stayed_ids)),
        "stayed_duplicated": _duplicates(stayed_ids),
        "stayed_unacknowledged": len(set(stayed_ids) - counted),
        "resumed_expected": len(expected),
        "resumed_received": len(expected & set(resumed_ids)),
        "resumed_lost": len(expected - set(resumed_ids)),
        "resumed_duplicated": _duplicates(resumed_ids)
        + sum(1 for i in resumed_ids if i in left_ids),
        "resumed_unacknowledged": len(set(resumed_ids) - counted),
        "resumed_recovered": not resumed.notices,
        "resumed_lost_seqs": _ranges(sorted(acked[i] for i in expected - set(resumed_ids))),
        "elapsed_s": elapsed,
        "note": note,
    }


def run_redis(
    worker: Worker, args: argparse.Namespace, logs: LogCounter, *, appendonly: bool
) -> RedisResult:
    """The Redis phase on one worker with one persistence setting."""
    with (
        redis_server(appendonly=appendonly) as redis,
        run_hypercorn(redis_app(redis.url), worker_class=worker) as server,
    ):
        logs.reset()
        base = server.url("").rstrip("/")
        outcome = asyncio.run(
            asyncio.wait_for(
                _redis_soak(base, redis, args.published, args.rate, args.redis_down),
                args.time_limit,
            )
        )
    return RedisResult(
        worker=worker,
        persistence="appendonly yes" if appendonly else "none",
        asked=args.published,
        plait_errors=logs.count(logging.ERROR, "plait"),
        plait_warnings=logs.count(logging.WARNING, "plait"),
        **outcome,
    )


def render_redis(results: Sequence[RedisResult], args: argparse.Namespace) -> str:
    """The Redis table."""
    lines = [
        f"### Redis restart: `RedisBackend(history={HISTORY})`, {args.published:,} messages "
        f"at {args.rate:g}/s, redis-server down {args.redis_down:g} s at half-way",
        "",
        "The subscriber that stayed was connected throughout; the one that resumed left at "
        "a quarter and came back with `since=` at three quarters, after the restart. "
        "Received and lost count acknowledged publishes; *unacked* counts deliveries of "
        "publishes whose answer was an error (Redis went away after running the script) and "
        "that the publisher therefore sent again under a new id; duplicated counts one id "
        "delivered twice. With the defaults the resume asks for about as many messages as "
        f"the history keeps ({HISTORY:,}): a gap there must show as `recovered` False.",
        "",
        "| worker | persistence | acknowledged (publish attempts) | stayed: received "
        "| stayed: lost | stayed: duplicated | stayed: unacked | resumed: expected "
        "| resumed: received | resumed: lost (which) | resumed: duplicated | resumed: unacked "
        "| resumed: `recovered` | plait ERROR / WARNING |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.worker} | {r.persistence} | {r.acked:,} ({r.attempts:,}) "
            f"| {r.stayed_received:,} | {r.stayed_lost:,} | {r.stayed_duplicated} "
            f"| {r.stayed_unacknowledged} | {r.resumed_expected:,} | {r.resumed_received:,} "
            f"| {r.resumed_lost:,} ({r.resumed_lost_seqs}) | {r.resumed_duplicated} "
            f"| {r.resumed_unacknowledged} "
            f"| {r.resumed_recovered} "
            f"| {r.plait_errors} / {r.plait_warnings} |"
        )
    return "\n".join(lines) + "\n"


# ---- the run ----------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__.splitlines()[0] if __doc__ else "",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes throughout")
    parser.add_argument("--workers", default="asyncio,trio")
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--connections", type=int, help="churn (default 10000, quick 1000)")
    parser.add_argument("--batch", type=int, default=200, help="churn: connections at once")
    parser.add_argument("--messages", type=int, help="flood (default 100000, quick 10000)")
    parser.add_argument("--flood-connections", type=int, default=4)
    parser.add_argument("--published", type=int, help="redis (default 2000, quick 500)")
    parser.add_argument("--rate", type=float, default=200.0, help="redis: messages per second")
    parser.add_argument("--redis-down", type=float, default=1.0, help="seconds Redis is down")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to settle, at most")
    parser.add_argument("--time-limit", type=float, help="seconds per phase and worker")
    args = parser.parse_args(argv)
    quick = args.quick
    args.connections = args.connections or (1000 if quick else 10_000)
    args.messages = args.messages or (10_000 if quick else 100_000)
    args.published = args.published or (500 if quick else 2000)
    args.time_limit = args.time_limit or (120.0 if quick else 300.0)
    args.workers = [w for w in args.workers.split(",") if w]
    args.phases = [p for p in args.phases.split(",") if p]
    if any(w not in ("asyncio", "trio") for w in args.workers):
        parser.error("--workers: asyncio and/or trio")
    if any(p not in PHASES for p in args.phases):
        parser.error(f"--phases: some of {', '.join(PHASES)}")
    if min(args.connections, args.batch, args.messages, args.flood_connections) < 1:
        parser.error("sizes must be at least 1")
    if args.published < 8 or args.rate <= 0 or args.redis_down < 0:
        parser.error("--published at least 8, --rate positive, --redis-down not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the phases; print the report; 1 if an invariant failed."""
    args = _parse_args(argv)
    raise_open_file_limit(4 * args.batch + 1024)
    logs = LogCounter()
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    root.addHandler(logs)
    clock = time.monotonic()
    sections: list[str] = []
    failures: list[str] = []
    tracebacks: list[str] = []

    def note(result: ChurnResult | FloodResult | RedisResult) -> None:
        failures.extend(result.failures())
        if logs.first_traceback and len(tracebacks) < 3:
            tracebacks.append(logs.first_traceback)
        print(f"  done: {result.worker} ({time.monotonic() - clock:.0f} s)", flush=True)

    if "churn" in args.phases:
        churned = []
        for worker in args.workers:
            print(f"churn: {worker}, {args.connections:,} connections", flush=True)
            churned.append(run_churn(worker, args, logs))
            note(churned[-1])
        sections.append(render_churn(churned))
    if "flood" in args.phases:
        flooded = []
        for worker in args.workers:
            print(f"flood: {worker}, {args.messages:,} messages", flush=True)
            flooded.append(run_flood(worker, args, logs))
            note(flooded[-1])
        sections.append(render_flood(flooded))
    if "redis" in args.phases:
        if shutil.which("redis-server") is None:
            sections.append("### Redis restart\n\nskipped: redis-server is not on PATH\n")
        else:
            restarted = []
            for worker in args.workers:
                for appendonly in (False, True):
                    print(f"redis: {worker}, appendonly {appendonly}", flush=True)
                    restarted.append(run_redis(worker, args, logs, appendonly=appendonly))
                    note(restarted[-1])
            sections.append(render_redis(restarted, args))
    root.removeHandler(logs)

    print()
    print(f"## Soak ({'quick' if args.quick else 'full'}, {time.monotonic() - clock:.0f} s)")
    for section in sections:
        print()
        print(section, end="")
    print()
    if tracebacks:
        print("First ERROR traceback(s) from the server:\n", file=sys.stderr)
        for text in tracebacks:
            print(text, file=sys.stderr)
    if failures:
        print("FAILED:")
        for failure in failures:
            print(f"- {failure}")
        return 1
    print("All invariants held.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
