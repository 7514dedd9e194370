"""Scale benchmark runner: 19,000 idle WebSocket connections on one hypercorn worker.

``python -m benchmarks.scale [--conns 19000] [--rest 60] [--rounds 1]
[--workers asyncio,trio] [--apps raw,plait,plait_app] [--clients 4] [--quick]``

For each worker class and round, every app of `benchmarks.scale_apps` (in an order rotated
each round) gets a fresh ``hypercorn -w 0 --backlog 4096`` on core 0 (glibc malloc pinned
as `benchmarks._processes` does), and `--clients` processes of `benchmarks.scale_client`
on core 1, each on its own loopback source address (127.0.0.2, 127.0.0.3, ...), open
their share of ``--conns`` uncompressed idle connections and hold them, answering the
heartbeat's ``ping``. Then, per server:

1. **Memory**: the server's ``VmRSS`` after one warm-up connection and a full collection
   (*before*) and once every connection is held (*after*); ``(after - before) /
   connections`` in KiB, and its difference to the raw app of the same round.
2. **CPU at rest**: the server's utime + stime over ``--rest`` seconds of holding, as a
   share of one core (heartbeats included, for ``plait_app``).
3. **Ending**: the clients are SIGKILLed; the time from the kill to the last handler's
   ``finally`` (the server's ``GET /stats`` says when), and to the server holding no more
   sockets than before; both bounded by ``--bound`` seconds.
4. **Left for the collector**: once the handlers and sockets are gone, the server's RSS,
   then ``GET /stats?collect=1``: the objects alive and what ``gc.collect()`` found. Added
   to what the automatic collections freed since the kill (``gc.get_stats()`` then and
   now: a collection the allocations set off during the teardown takes part of the
   garbage, at random), that is every object of the ending that only the collector
   could free: objects in reference cycles.

The report gives each cell and, per app, the difference to raw in the same round; the
JSON goes to ``benchmarks/results/scale-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks import scale_apps
from benchmarks._cpu import Clocks, CpuUse, process_cpu_seconds
from benchmarks._processes import (
    CLIENT_CPU,
    ROOT,
    Server,
    pin,
    raise_open_file_limit,
    run_json_client,
)
from benchmarks._report import Measurement
from benchmarks._runner import cli_main, csv_list, rotated, run_meta, save_results, serve_once
from benchmarks.memory_client import FD_HEADROOM, OPEN_TIMEOUT, read_rss
from benchmarks.scale_apps import read_stats

PACKAGES = ("plait", "hypercorn", "anyio", "trio", "picows")
APPS_MODULE = "benchmarks.scale_apps"
CLIENT_MODULE = "benchmarks.scale_client"
BASELINE = "raw"
"""The raw ASGI app: every difference subtracts its figure from the same round."""
BACKLOG = 4096
SOURCE_PREFIX = "127.0.0."
FIRST_SOURCE = 2
"""The clients connect from 127.0.0.2, 127.0.0.3, ...: about 28k ephemeral ports each."""
POLL_INTERVAL = 0.2
STATS_ATTEMPTS = 5


@dataclass
class ScaleMeasurement(Measurement):
    """One server held at ``conns`` idle connections, then left by SIGKILLed clients."""

    ready: int = 0
    failed: int = 0
    dropped: int = 0
    """Handlers that ended while the clients held their connections."""
    open_s: float | None = None
    kib_per_conn: float | None = None
    rss_before_kib: int | None = None
    rss_after_kib: int | None = None
    rest_s: float | None = None
    cpu_at_rest: float | None = None
    """The server's CPU over the rest, as a share of one core."""
    gc_at_rest: float | None = None
    """Of that, the automatic collections' time (from ``gc.callbacks``), as a share of one
    core."""
    collections_at_rest: list[dict[str, float]] | None = None
    """Automatic collections during the rest and their seconds, by generation."""
    clients_cpu_at_rest: float | None = None
    pongs: int | None = None
    last_finally_s: float | None = None
    """Seconds from the SIGKILL to the last handler's ``finally``."""
    sockets_closed_s: float | None = None
    """Seconds from the SIGKILL until the server held no more files than before."""
    rss_peak_kib: int | None = None
    rss_gone_kib: int | None = None
    """RSS once every handler and socket was gone, before collecting."""
    rss_collected_kib: int | None = None
    objects: int | None = None
    """Objects the collector tracked at that point."""
    collected: int | None = None
    """What ``gc.collect()`` found then: the objects only the collector would free."""
    garbage: int | None = None
    auto_collected: int | None = None
    """Objects the automatic collections freed from the kill to that point."""
    auto_full_collections: int | None = None
    """Automatic collections of the oldest generation in that time."""
    for_collector: int | None = None
    """``auto_collected + collected``: every object of the ending left for the collector."""
    for_collector_per_conn: float | None = None
    gc_at_kill: list[dict[str, int]] | None = None
    stats: dict[str, Any] | None = None
    clients: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every connection was held and every figure was measured."""
        return self.failure is None and self.kib_per_conn is not None


@dataclass
class AppScale:
    """One app across the rounds of one worker class (medians)."""

    app: str
    kib_per_conn: float | None
    minus_baseline: float | None
    cpu_at_rest: float | None
    gc_at_rest: float | None
    last_finally_s: float | None
    sockets_closed_s: float | None
    for_collector_per_conn: float | None
    for_collector_minus_baseline: float | None
    valid_rounds: int
    failures: list[str] = field(default_factory=list)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__.splitlines()[0] if __doc__ else "",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds per worker (default 1)")
    parser.add_argument("--workers", type=csv_list, default=["asyncio", "trio"])
    parser.add_argument("--apps", type=csv_list, default=list(scale_apps.NAMES))
    parser.add_argument("--conns", type=int, help="idle connections (default 19000, quick 2000)")
    parser.add_argument("--rest", type=float, help="seconds at rest (default 60, quick 10)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--batch", type=int, default=25, help="connections a client opens at once")
    parser.add_argument("--settle", type=float, help="seconds before readings (3, quick 1)")
    parser.add_argument("--bound", type=float, default=120.0, help="seconds the ending may take")
    parser.add_argument("--quick", action="store_true", help="2,000 conns, 10 s at rest, 1 round")
    args = parser.parse_args(argv)
    quick = args.quick
    args.conns = args.conns if args.conns is not None else (2000 if quick else 19000)
    args.rest = args.rest if args.rest is not None else (10.0 if quick else 60.0)
    args.settle = args.settle if args.settle is not None else (1.0 if quick else 3.0)
    if min(args.rounds, args.conns, args.clients, args.batch) < 1:
        parser.error("--rounds, --conns, --clients and --batch must be at least 1")
    if args.rest < 0 or args.settle < 0 or args.bound <= 0:
        parser.error("--rest and --settle must be at least 0, --bound above 0")
    if args.conns / args.clients + FD_HEADROOM > 20000:
        parser.error("each client process would need over 20,000 files: raise --clients")
    return args


def open_files(pid: int) -> int | None:
    """How many files the process holds (its sockets among them), None if unknown."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _vmrss(pid: int) -> int | None:
    try:
        return read_rss(pid).get("VmRSS")
    except OSError:
        return None


def _shares(conns: int, clients: int) -> list[int]:
    """`conns` split over `clients` processes as evenly as possible (none empty)."""
    clients = min(clients, conns)
    return [conns // clients + (i < conns % clients) for i in range(clients)]


def _source(index: int) -> str:
    return f"{SOURCE_PREFIX}{FIRST_SOURCE + index}"


@contextlib.contextmanager
def holding_clients(url: str, shares: Sequence[int], batch: int) -> Iterator[list[Any]]:
    """Start one holding client per share, each on its own source address; SIGKILL any
    still running on the way out.

    Yields:
        The client processes (`subprocess.Popen`), in the order of `shares`.
    """
    processes: list[subprocess.Popen[str]] = []
    with contextlib.ExitStack() as stack:
        try:
            for index, share in enumerate(shares):
                errors = stack.enter_context(tempfile.TemporaryFile("w+"))
                command = [
                    *pin(CLIENT_CPU),
                    sys.executable,
                    "-m",
                    CLIENT_MODULE,
                    f"--url={url}",
                    f"--conns={share}",
                    f"--batch={batch}",
                    f"--source={_source(index)}",
                    "--hold",
                ]
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=ROOT,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=errors,
                        text=True,
                    )
                )
            yield processes
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
            for process in processes:
                process.wait(timeout=30)
                for pipe in (process.stdin, process.stdout):
                    if pipe is not None:
                        pipe.close()


def _read_opened(processes: Sequence[subprocess.Popen[str]], timeout: float) -> list[Any]:
    """Each client's JSON line, once all have opened their connections.

    Raises:
        RuntimeError: A client exited or said nothing within `timeout` seconds.
    """
    opened: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for index, process in enumerate(processes):
            assert process.stdout is not None
            selector.register(process.stdout, selectors.EVENT_READ, index)
        while len(opened) < len(processes):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"the clients did not open within {timeout:.0f} s")
            for key, _ in selector.select(left):
                process = processes[key.data]
                assert process.stdout is not None
                line = process.stdout.readline()  # one line, then the client holds
                if not line:
                    status = process.wait(timeout=5)
                    raise RuntimeError(f"a client exited with status {status} before opening")
                opened[key.data] = json.loads(line)
                selector.unregister(process.stdout)
    return [opened[index] for index in range(len(processes))]


def _stats(port: int, collect: bool = False) -> dict[str, Any]:
    """`read_stats`, asked again (up to `STATS_ATTEMPTS` times) when the request fails.

    hypercorn's trio worker, busy ending 19,000 connections, closed the request's
    connection without an answer (``RemoteDisconnected``: its keep-alive timeout, 5 s,
    ran out before it read the request); each failure is printed.

    Raises:
        OSError: The last attempt failed too.
    """
    for attempt in range(1, STATS_ATTEMPTS + 1):
        try:
            return read_stats(port, collect)
        except OSError as exc:
            print(f"  note: GET /stats failed ({type(exc).__name__}: {exc})", flush=True)
            if attempt == STATS_ATTEMPTS:
                raise
            time.sleep(POLL_INTERVAL)
    raise AssertionError("unreachable")


def _wait_for(condition: Callable[[], bool], deadline: float) -> bool:
    """Poll `condition()` until it is true or the deadline passes; say whether it became
    true."""
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL)


def _warm_up(cell: ScaleMeasurement, server: Server, args: argparse.Namespace) -> int | None:
    """One connection opened and closed, a full collection, then the *before* reading.

    Returns:
        The files the server holds at rest (its listening socket, logs, ...).
    """
    pid, url = server.process.pid, server.url
    warm = run_json_client(
        CLIENT_MODULE, [f"--url={url}", "--conns=1", f"--source={_source(0)}"], 30
    )
    if warm["ready"] != 1:
        raise RuntimeError(f"the warm-up connection failed: {warm['first_error']}")
    _wait_for(lambda: _stats(server.port)["live"] == 0, time.monotonic() + 10)
    _stats(server.port, collect=True)  # what the imports and the warm-up left, not counted
    time.sleep(args.settle)
    cell.rss_before_kib = _vmrss(pid)
    return open_files(pid)


def _hold(
    cell: ScaleMeasurement,
    server: Server,
    processes: Sequence[subprocess.Popen[str]],
    args: argparse.Namespace,
) -> None:
    """Wait for the clients to open, read the memory, then rest and read the CPU."""
    pid = server.process.pid
    cell.clients = _read_opened(processes, OPEN_TIMEOUT + 60)
    cell.ready = sum(c["ready"] for c in cell.clients)
    cell.failed = sum(c["failed"] for c in cell.clients)
    cell.connected = cell.ready
    cell.open_s = max(c["open_s"] for c in cell.clients)
    time.sleep(args.settle)
    cell.rss_after_kib = _vmrss(pid)
    if cell.ready and cell.rss_before_kib is not None and cell.rss_after_kib is not None:
        cell.kib_per_conn = round((cell.rss_after_kib - cell.rss_before_kib) / cell.ready, 2)
    client_pids = [p.pid for p in processes]
    before = _stats(server.port)
    start, clients_start = Clocks.read(pid), _clients_cpu(client_pids)
    time.sleep(args.rest)
    end, clients_end = Clocks.read(pid), _clients_cpu(client_pids)
    use = CpuUse.between(start, end)
    cell.rest_s = use.seconds
    cell.cpu_at_rest = use.share(use.server)
    held = _stats(server.port)
    cell.gc_at_rest = use.share(sum(held["gc_seconds"]) - sum(before["gc_seconds"]))
    cell.collections_at_rest = [
        {
            "collections": now["collections"] - then["collections"],
            "seconds": round(seconds - earlier, 3),
        }
        for then, now, earlier, seconds in zip(
            before["gc_stats"],
            held["gc_stats"],
            before["gc_seconds"],
            held["gc_seconds"],
            strict=True,
        )
    ]
    cell.other_cpu_fraction = use.share(use.other)
    if clients_start is not None and clients_end is not None:
        cell.clients_cpu_at_rest = use.share(clients_end - clients_start)
    cell.rss_peak_kib = _vmrss(pid)
    cell.dropped = cell.ready - held["live"]
    cell.gc_at_kill = held["gc_stats"]


def _clients_cpu(pids: Sequence[int]) -> float | None:
    seconds = [process_cpu_seconds(pid) for pid in pids]
    return None if None in seconds else sum(s for s in seconds if s is not None)


def _end(
    cell: ScaleMeasurement,
    server: Server,
    processes: Sequence[subprocess.Popen[str]],
    files_at_rest: int | None,
    args: argparse.Namespace,
) -> None:
    """SIGKILL the clients, time the handlers' and the sockets' end, then collect."""
    pid, port = server.process.pid, server.port
    killed = time.monotonic()
    for process in processes:
        process.kill()
    for process in processes:
        process.wait(timeout=30)
    deadline = killed + args.bound
    latest: dict[str, Any] = {}

    def handlers_gone() -> bool:
        try:
            latest.update(read_stats(port))
        except OSError as exc:  # busy ending the connections; the deadline bounds the wait
            print(f"  note: GET /stats failed ({type(exc).__name__}: {exc})", flush=True)
            return False
        return bool(latest["live"] == 0)

    if not _wait_for(handlers_gone, deadline):
        live = latest.get("live", "?")
        cell.failure = f"{live} handlers still running {args.bound:.0f} s after the kill"
        return
    if latest["last_finally"] is not None:
        cell.last_finally_s = round(max(0.0, latest["last_finally"] - killed), 3)

    def sockets_gone() -> bool:
        files = open_files(pid)
        return files is not None and files_at_rest is not None and files <= files_at_rest

    if _wait_for(sockets_gone, deadline):
        cell.sockets_closed_s = round(time.monotonic() - killed, 3)
    time.sleep(args.settle)
    cell.rss_gone_kib = _vmrss(pid)
    cell.stats = _stats(port, collect=True)
    cell.rss_collected_kib = _vmrss(pid)
    cell.objects = cell.stats["objects"]
    cell.collected = cell.stats["collected"]
    cell.garbage = cell.stats["garbage"]
    if cell.gc_at_kill is not None:
        then, now = cell.gc_at_kill, cell.stats["gc_stats"]
        cell.auto_collected = sum(
            b["collected"] - a["collected"] for a, b in zip(then, now, strict=True)
        )
        cell.auto_full_collections = now[-1]["collections"] - then[-1]["collections"]
        cell.for_collector = cell.auto_collected + cell.collected
        if cell.ready:
            cell.for_collector_per_conn = round(cell.for_collector / cell.ready, 2)


def _failure(cell: ScaleMeasurement) -> str | None:
    problems = []
    if cell.failed:
        problems.append(f"{cell.failed} of {cell.conns} connections failed")
    if cell.dropped:
        problems.append(f"{cell.dropped} handlers ended while the clients held on")
    if not problems:
        return None
    errors = [c["first_error"] for c in cell.clients if c.get("first_error")]
    return "; ".join(problems) + (f" (first error: {errors[0]})" if errors else "")


def _measure(cell: ScaleMeasurement, server: Server, args: argparse.Namespace) -> None:
    """Fill in one cell: warm up, open and hold, rest, kill, collect."""
    try:
        files_at_rest = _warm_up(cell, server, args)
        with holding_clients(server.url, _shares(args.conns, args.clients), args.batch) as procs:
            _hold(cell, server, procs, args)
            _end(cell, server, procs, files_at_rest, args)
    except (RuntimeError, OSError, ValueError) as exc:
        cell.failure = cell.failure or f"{type(exc).__name__}: {exc}"
    cell.failure = cell.failure or _failure(cell)


def _mib(kib: float | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.0f}"


def _fmt(value: float | None, form: str = ".1f") -> str:
    return "—" if value is None else format(value, form)


def _percent(share: float | None) -> str:
    return "—" if share is None else f"{100 * share:.2f}%"


def _progress(cell: ScaleMeasurement) -> None:
    print(
        f"{cell.worker:<7} round {cell.round + 1}  {cell.app:<9} {cell.ready:>5}/{cell.conns}"
        f"  {_fmt(cell.kib_per_conn, '.2f')} KiB/conn  opened in {_fmt(cell.open_s)} s"
        f"  CPU at rest {_percent(cell.cpu_at_rest)} (collector {_percent(cell.gc_at_rest)})"
        f"  last finally {_fmt(cell.last_finally_s, '.2f')} s"
        f"  sockets {_fmt(cell.sockets_closed_s, '.2f')} s"
        f"  for the collector {_fmt(cell.for_collector, 'd')} (gc.collect() "
        f"{_fmt(cell.collected, 'd')}, automatic {_fmt(cell.auto_collected, 'd')})"
        f"  RSS {_mib(cell.rss_before_kib)} -> {_mib(cell.rss_peak_kib)} -> "
        f"{_mib(cell.rss_gone_kib)} -> {_mib(cell.rss_collected_kib)} MiB"
        + (f"  FAILED: {cell.failure}" if cell.failure else ""),
        flush=True,
    )


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _minus_baseline(cells: Sequence[ScaleMeasurement], app: str, metric: str) -> float | None:
    """The median over rounds of ``metric(app) - metric(raw)``, same round."""
    base = {c.round: getattr(c, metric) for c in cells if c.app == BASELINE and c.ok}
    differences = []
    for c in cells:
        value, raw = getattr(c, metric), base.get(c.round)
        if c.app == app and c.ok and value is not None and raw is not None:
            differences.append(value - raw)
    return _median(differences)


def summarize(
    cells: Sequence[ScaleMeasurement], workers: Sequence[str], apps: Sequence[str]
) -> dict[str, list[AppScale]]:
    """Each app's medians on each worker class, apps in the given order."""
    summaries: dict[str, list[AppScale]] = {}
    for worker in workers:
        mine = [c for c in cells if c.worker == worker]
        summaries[worker] = []
        for app in apps:
            ok = [c for c in mine if c.app == app and c.ok]
            summaries[worker].append(
                AppScale(
                    app=app,
                    kib_per_conn=_median([c.kib_per_conn for c in ok]),
                    minus_baseline=_minus_baseline(mine, app, "kib_per_conn"),
                    cpu_at_rest=_median([c.cpu_at_rest for c in ok]),
                    gc_at_rest=_median([c.gc_at_rest for c in ok]),
                    last_finally_s=_median([c.last_finally_s for c in ok]),
                    sockets_closed_s=_median([c.sockets_closed_s for c in ok]),
                    for_collector_per_conn=_median([c.for_collector_per_conn for c in ok]),
                    for_collector_minus_baseline=_minus_baseline(
                        mine, app, "for_collector_per_conn"
                    ),
                    valid_rounds=len(ok),
                    failures=[
                        f"round {c.round + 1}: {c.failure}"
                        for c in mine
                        if c.app == app and c.failure
                    ],
                )
            )
    return summaries


def render_markdown(
    summaries: dict[str, list[AppScale]],
    cells: Sequence[ScaleMeasurement],
    args: argparse.Namespace,
) -> str:
    """The run as Markdown: medians per worker and app, then every cell's readings."""
    lines = [
        f"## Scale: {args.conns:,} idle connections, one worker, {args.rest:.0f} s at rest "
        "(no compression)",
        "",
        "| worker | app | KiB/conn | over raw | CPU at rest (collector) "
        "| last `finally` after kill | sockets closed after kill "
        "| objects left for the collector per conn (over raw) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for worker, summary in summaries.items():
        for s in summary:
            cpu = f"{_percent(s.cpu_at_rest)} ({_percent(s.gc_at_rest)})"
            over = "—" if s.app == BASELINE else _fmt(s.minus_baseline, "+.1f")
            left = _fmt(s.for_collector_per_conn)
            if s.app != BASELINE and s.for_collector_minus_baseline is not None:
                left += f" ({s.for_collector_minus_baseline:+.1f})"
            lines.append(
                f"| hypercorn {worker} | {s.app} | {_fmt(s.kib_per_conn)} | {over} | {cpu} "
                f"| {_fmt(s.last_finally_s, '.2f')} s | {_fmt(s.sockets_closed_s, '.2f')} s "
                f"| {left} |"
            )
    lines += [
        "",
        "| worker | round | app | ready | opened in | RSS before → held → gone → collected (MiB) "
        "| objects tracked | gc.collect() | automatic (full) | clients' CPU | other CPU |",
        "|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        clients, other = _percent(c.clients_cpu_at_rest), _percent(c.other_cpu_fraction)
        lines.append(
            f"| {c.worker} | {c.round + 1} | {c.app} | {c.ready:,} | {_fmt(c.open_s)} s "
            f"| {_mib(c.rss_before_kib)} → {_mib(c.rss_after_kib)} → {_mib(c.rss_gone_kib)} → "
            f"{_mib(c.rss_collected_kib)} | {_fmt(c.objects, ',')} | {_fmt(c.collected, ',')} "
            f"| {_fmt(c.auto_collected, ',')} ({_fmt(c.auto_full_collections, 'd')}) "
            f"| {clients} | {other} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by the parsed arguments; return the exit status."""
    skipped = {a: r for a in args.apps if (r := scale_apps.unavailable_reason(a))}
    for app, reason in skipped.items():
        print(f"note: skipping {app}: {reason}", flush=True)
    apps = [a for a in args.apps if a not in skipped]
    if not apps:
        print("nothing to run", file=sys.stderr)
        return 1
    # hypercorn inherits this process's limit: one file per connection, plus its own.
    limit = raise_open_file_limit(args.conns + FD_HEADROOM)
    if limit < args.conns + FD_HEADROOM:
        print(f"WARNING: the open-file limit is {limit}: connections may fail", flush=True)
    started = time.strftime("%Y%m%dT%H%M%S")
    clock, load = time.monotonic(), os.getloadavg()
    cells: list[ScaleMeasurement] = []
    for worker in args.workers:
        for round_index in range(args.rounds):
            for app in rotated(apps, round_index):
                cell = ScaleMeasurement(worker, round_index, app, args.conns)
                serve_once(
                    cell,
                    APPS_MODULE,
                    lambda c, server: _measure(c, server, args),
                    _progress,
                    backlog=BACKLOG,
                )
                cells.append(cell)
    summaries = summarize(cells, args.workers, apps)
    print()
    print(render_markdown(summaries, cells, args))
    meta = run_meta(args, started, PACKAGES, skipped) | {
        "load_average_start": load,
        "elapsed_s": round(time.monotonic() - clock, 1),
        "open_file_limit": limit,
        "backlog": BACKLOG,
        "compression": None,
    }
    summary = {w: [asdict(s) for s in summary] for w, summary in summaries.items()}
    save_results(f"scale-{started}.json", meta, summary, cells)
    return 0 if all(c.ok for c in cells) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    return cli_main(run, _parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
