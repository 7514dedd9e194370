"""Idle-memory benchmark runner: hypercorn's resident memory per idle WebSocket connection.

``python -m benchmarks.memory [--rounds 5] [--workers asyncio,trio]
[--apps raw,plait,plait_app,starlette,litestar] [--conns 2000] [--settle 1] [--quick]``

For each worker class and round, every app of `benchmarks.memory_apps` (in an order rotated
each round) gets a fresh hypercorn on core 0, and the picows client of
`benchmarks.memory_client` on core 1 opens the idle connections, uncompressed, reading the
server's ``VmRSS`` before (after one warm-up connection) and after. The figure is
``(after - before) / connections`` in KiB. The report gives each app's median and the median
of its per-round difference to the raw ASGI app of the same round; the JSON goes to
``benchmarks/results/memory-<time>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks import memory_apps
from benchmarks._processes import Server, raise_open_file_limit, run_json_client
from benchmarks._report import Measurement
from benchmarks._runner import (
    cli_main,
    csv_list,
    rotated,
    run_meta,
    save_results,
    serve_once,
)
from benchmarks.memory_client import FD_HEADROOM, OPEN_TIMEOUT

PACKAGES = ("plait", "hypercorn", "anyio", "trio", "picows", "starlette", "litestar")
APPS_MODULE = "benchmarks.memory_apps"
CLIENT_MODULE = "benchmarks.memory_client"
BASELINE = "raw"
"""The raw ASGI app: every difference subtracts its figure from the same round."""
CLIENT_SLACK = 60.0
"""Seconds the client may take besides opening and settling: warm-up, closing."""


@dataclass
class MemoryMeasurement(Measurement):
    """One client run against one server: ``conns`` idle connections, RSS before and after."""

    kib_per_conn: float | None = None
    rss_before_kib: int | None = None
    rss_after_kib: int | None = None
    failed: int = 0
    """Connections that did not open or were not answered in time."""
    dropped: int = 0
    """Connections the server ended before the second reading."""

    @property
    def ok(self) -> bool:
        """Whether every connection was held and the figure is worth comparing."""
        return self.failure is None and self.kib_per_conn is not None


@dataclass
class AppMemory:
    """One app across the rounds of one worker class."""

    app: str
    median_kib_per_conn: float | None
    kib_per_conn: list[float]
    median_minus_baseline: float | None
    minus_baseline: list[float]
    median_ratio: float | None
    median_rss_before_kib: float | None
    valid_rounds: int
    failed: int
    dropped: int
    server_tracebacks: int
    failures: list[str] = field(default_factory=list)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory",
        description=__doc__.splitlines()[0] if __doc__ else "",
    )
    parser.add_argument("--rounds", type=int, help="rounds per worker (default 5, quick 1)")
    parser.add_argument("--workers", type=csv_list, default=["asyncio", "trio"])
    parser.add_argument("--apps", type=csv_list, default=list(memory_apps.NAMES))
    parser.add_argument("--conns", type=int, help="idle connections (default 2000, quick 500)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before each reading")
    parser.add_argument("--batch", type=int, default=50, help="connections opened at once")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round, 500 conns")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else 5)
    args.conns = args.conns if args.conns is not None else (500 if quick else 2000)
    if args.rounds < 1 or args.conns < 1 or args.batch < 1 or args.settle < 0:
        parser.error("--rounds, --conns and --batch must be at least 1, --settle at least 0")
    return args


def _available(apps: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Split the requested apps into those that can run and the reasons for the rest."""
    skipped = {app: reason for app in apps if (reason := memory_apps.unavailable_reason(app))}
    for app, reason in skipped.items():
        print(f"note: skipping {app}: {reason}", flush=True)
    return [a for a in apps if a not in skipped], skipped


def _failure(result: dict[str, Any]) -> str | None:
    """Why the client's result cannot be compared with the others, if it cannot."""
    problems = []
    if result["failed"]:
        problems.append(f"{result['failed']} of {result['conns']} connections failed")
    if result["dropped"]:
        problems.append(f"{result['dropped']} dropped by the server while idle")
    if result["kib_per_conn"] is None:
        problems.append("no figure (no connection, or the server's RSS could not be read)")
    if not problems:
        return None
    error = f" (first error: {result['first_error']})" if result["first_error"] else ""
    return "; ".join(problems) + error


def _measure(
    cell: MemoryMeasurement, server: Server, args: argparse.Namespace
) -> MemoryMeasurement:
    """Fill in a measurement by running the client against the server."""
    arguments = [
        f"--url={server.url}",
        f"--server-pid={server.process.pid}",
        f"--conns={args.conns}",
        f"--batch={args.batch}",
        f"--settle={args.settle}",
    ]
    timeout = OPEN_TIMEOUT + 2 * args.settle + CLIENT_SLACK
    try:
        result = run_json_client(CLIENT_MODULE, arguments, timeout)
    except RuntimeError as exc:
        cell.failure = str(exc)
        return cell
    cell.client = result
    cell.connected = result["ready"]
    cell.failed = result["failed"]
    cell.dropped = result["dropped"]
    cell.errors = result["failed"] + result["dropped"]
    cell.kib_per_conn = result["kib_per_conn"]
    cell.rss_before_kib = result["rss_before_kib"]
    cell.rss_after_kib = result["rss_after_kib"]
    cell.failure = _failure(result)
    return cell


def _mib(kib: float | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.1f}"


def _progress(cell: MemoryMeasurement) -> None:
    head = f"{cell.worker:<7} round {cell.round + 1}  {cell.app:<9} {cell.conns:>5} conns"
    if cell.kib_per_conn is None:
        print(f"{head}  FAILED: {cell.failure}", flush=True)
        return
    open_s = cell.client["open_s"] if cell.client else 0.0
    print(
        f"{head}  {cell.kib_per_conn:>6.2f} KiB/conn"
        f"  RSS {_mib(cell.rss_before_kib)} -> {_mib(cell.rss_after_kib)} MiB"
        f"  ready {cell.connected} failed {cell.failed} dropped {cell.dropped}"
        f"  opened in {open_s:.1f} s" + (f"  FAILED: {cell.failure}" if cell.failure else ""),
        flush=True,
    )


def _serve_and_measure(
    worker: str, round_index: int, app: str, args: argparse.Namespace
) -> MemoryMeasurement:
    """Start one server for `app` and measure it once."""
    cell = MemoryMeasurement(worker, round_index, app, args.conns)
    return serve_once(cell, APPS_MODULE, lambda c, server: _measure(c, server, args), _progress)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _summarize_app(cells: list[MemoryMeasurement], app: str) -> AppMemory:
    mine = sorted((c for c in cells if c.app == app), key=lambda c: c.round)
    ok = [c for c in mine if c.ok and c.kib_per_conn is not None]
    base = {c.round: c.kib_per_conn for c in cells if c.app == BASELINE and c.ok}
    minus, ratios = [], []
    for c in ok:
        value, raw = c.kib_per_conn, base.get(c.round)
        if value is not None and raw is not None:
            minus.append(round(value - raw, 2))
            if raw > 0:
                ratios.append(value / raw)
    before = [float(c.rss_before_kib) for c in ok if c.rss_before_kib is not None]
    return AppMemory(
        app=app,
        median_kib_per_conn=_median([c.kib_per_conn for c in ok if c.kib_per_conn is not None]),
        kib_per_conn=[c.kib_per_conn for c in ok if c.kib_per_conn is not None],
        median_minus_baseline=_median(minus),
        minus_baseline=minus,
        median_ratio=_median(ratios),
        median_rss_before_kib=_median(before),
        valid_rounds=len(ok),
        failed=sum(c.failed for c in mine),
        dropped=sum(c.dropped for c in mine),
        server_tracebacks=sum(c.server_tracebacks for c in mine),
        failures=[f"round {c.round + 1}: {c.failure}" for c in mine if c.failure],
    )


def summarize(
    cells: list[MemoryMeasurement], workers: Sequence[str], apps: Sequence[str]
) -> dict[str, list[AppMemory]]:
    """Each app's summary on each worker class, apps in the given order."""
    return {
        worker: [_summarize_app([c for c in cells if c.worker == worker], app) for app in apps]
        for worker in workers
    }


def _kib(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}"


def render_markdown(summaries: dict[str, list[AppMemory]], apps: Sequence[str], conns: int) -> str:
    """The run as Markdown: an overview of medians, then one table per worker class."""
    others = [a for a in apps if a != BASELINE]
    lines = [
        f"## Idle memory per connection: server RSS, KiB per connection, {conns:,} connections"
        " (no compression; lower is better)",
        "",
        f"Each cell: the median KiB per connection (the median of the per-round differences "
        f"to `{BASELINE}`, same round).",
        "",
        f"| worker | {BASELINE} KiB/conn | " + " | ".join(others) + " |",
        "|---|---:|" + "---:|" * len(others),
    ]
    for worker, summary in summaries.items():
        by_app = {s.app: s for s in summary}
        raw = by_app.get(BASELINE)
        cells = [
            f"{_kib(s.median_kib_per_conn)} ({_signed(s.median_minus_baseline)})"
            if (s := by_app.get(a))
            else "—"
            for a in others
        ]
        median = _kib(raw.median_kib_per_conn if raw else None)
        lines.append(f"| hypercorn {worker} | {median} | " + " | ".join(cells) + " |")
    for worker, summary in summaries.items():
        lines += [
            "",
            f"### hypercorn {worker}, {conns:,} idle connections",
            "",
            f"| app | median KiB/conn | by round | vs {BASELINE} (median) | vs {BASELINE} by round "
            f"| ÷ {BASELINE} | RSS before (MiB) | failed | dropped | tracebacks |",
            "|---|---:|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        for s in summary:
            rounds = " ".join(f"{v:.1f}" for v in s.kib_per_conn) or "—"
            minus = " ".join(f"{v:+.1f}" for v in s.minus_baseline) or "—"
            ratio = "—" if s.median_ratio is None else f"{s.median_ratio:.2f}"
            lines.append(
                f"| {s.app} | {_kib(s.median_kib_per_conn)} | {rounds} "
                f"| {_signed(s.median_minus_baseline)} | {minus} | {ratio} "
                f"| {_mib(s.median_rss_before_kib)} | {s.failed} | {s.dropped} "
                f"| {s.server_tracebacks} |"
            )
    return "\n".join(lines) + "\n"


def _warn(cells: Sequence[MemoryMeasurement]) -> None:
    for cell in cells:
        if cell.failure:
            print(
                f"WARNING: {cell.worker} round {cell.round + 1} {cell.app}: {cell.failure}; "
                "left out of the medians",
                flush=True,
            )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by the parsed arguments; return the exit status."""
    apps, skipped = _available(args.apps)
    if not apps:
        print("nothing to run", file=sys.stderr)
        return 1
    # hypercorn inherits this process's limit: one file per connection, plus its own.
    open_files = raise_open_file_limit(args.conns + FD_HEADROOM)
    if open_files < args.conns + FD_HEADROOM:
        print(f"WARNING: the open-file limit is {open_files}: connections may fail", flush=True)
    started = time.strftime("%Y%m%dT%H%M%S")
    clock, load = time.monotonic(), os.getloadavg()
    cells: list[MemoryMeasurement] = []
    for worker in args.workers:
        for round_index in range(args.rounds):
            for app in rotated(apps, round_index):
                cells.append(_serve_and_measure(worker, round_index, app, args))
    summaries = summarize(cells, args.workers, apps)
    print()
    print(render_markdown(summaries, apps, args.conns))
    _warn(cells)
    meta = run_meta(args, started, PACKAGES, skipped) | {
        "load_average_start": load,
        "elapsed_s": round(time.monotonic() - clock, 1),
        "open_file_limit": open_files,
        "compression": None,
    }
    summary = {w: [asdict(s) for s in summary] for w, summary in summaries.items()}
    save_results(f"memory-{started}.json", meta, summary, cells)
    return 0 if all(c.ok for c in cells) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    return cli_main(run, _parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
