"""What the benchmark runners share: argument parsing, app order, metadata, warnings.

Used by `benchmarks.echo` and `benchmarks.fanout`; the processes they start are in
`benchmarks._processes`, the statistics and tables in `benchmarks._report`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from benchmarks._processes import ROOT, Server, pin, run_server
from benchmarks._report import (
    BUSY_MACHINE_FRACTION,
    Measurement,
    busy_machine,
    client_bound,
    unsaturated,
)

RESULTS = ROOT / "benchmarks" / "results"
"""Where every runner writes its JSON (git-ignored)."""


def csv_list(text: str) -> list[str]:
    """Split a comma-separated command-line value, dropping blanks."""
    return [part.strip() for part in text.split(",") if part.strip()]


def rotated(apps: Sequence[str], round_index: int) -> list[str]:
    """The apps in the order of this round, so that no app always runs first or last."""
    shift = round_index % len(apps)
    return [*apps[shift:], *apps[:shift]]


def percent(value: float | None) -> str:
    """A share as a whole percentage, ``?`` when unknown."""
    return "?" if value is None else f"{value:.0%}"


MeasurementT = TypeVar("MeasurementT", bound=Measurement)


def serve_once(
    cell: MeasurementT,
    module: str,
    measure: Callable[[MeasurementT, Server], object],
    progress: Callable[[MeasurementT], None],
    backlog: int = 2048,
) -> MeasurementT:
    """Start one server for the cell's worker and app, measure it once, and report: a
    server that does not start is the cell's failure, not the run's. `backlog` is
    hypercorn's ``--backlog``."""
    server: Server | None = None
    try:
        with run_server(cell.worker, cell.app, module, backlog=backlog) as server:
            measure(cell, server)
    except RuntimeError as exc:
        if cell.client is None and cell.failure is None:
            cell.failure = str(exc)
    progress(cell)
    note_server_log([cell], server)
    return cell


def note_server_log(cells: Iterable[Measurement], server: Server | None) -> None:
    """Attach the count of tracebacks in the server's log, and say so when there are any."""
    if server is None:
        return
    count = server.log.count("Traceback")
    for cell in cells:
        cell.server_tracebacks = count
    if count:
        errors = [ln for ln in server.log.splitlines() if "Error" in ln or "Exception" in ln]
        last = errors[-1].strip() if errors else "?"
        print(f"  note: {count} traceback(s) in the server log, last: {last}", flush=True)


def git_revision() -> str | None:
    """The short revision checked out, or None outside a work tree."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def versions(packages: Iterable[str]) -> dict[str, str | None]:
    """The installed version of each package, None for those not installed."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def run_meta(
    args: argparse.Namespace, started: str, packages: Iterable[str], skipped: Any
) -> dict[str, Any]:
    """What a result file records about the run besides its measurements."""
    return {
        "started": started,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "pinned": bool(pin(0)),
        "load_average_end": os.getloadavg(),
        "git_revision": git_revision(),
        "versions": versions(packages),
        "args": dict(vars(args)),
        "skipped": skipped,
    }


def write_results(document: dict[str, Any], name: str) -> Path:
    """Write `document` as ``benchmarks/results/NAME`` and return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def save_results(name: str, meta: dict[str, Any], summary: Any, cells: Iterable[Any]) -> None:
    """Write a run's result file (``meta``, ``summary`` and every measurement, each a
    dataclass) as ``benchmarks/results/NAME`` and say where it is."""
    document = {"meta": meta, "summary": summary, "measurements": [asdict(c) for c in cells]}
    path = write_results(document, name)
    print(f"results: {path} ({meta['elapsed_s']:.0f} s)")


def warn(cells: Sequence[Measurement], top_conns: int) -> None:
    """Point out the measurements whose throughput says more about the machine than the app."""
    for cell in client_bound(cells):
        print(
            f"WARNING: client-bound: {cell.worker} round {cell.round + 1} {cell.app} "
            f"{cell.conns} conns: the client used {cell.client_cpu_fraction:.0%} of its core; "
            "the server's figure is a lower bound",
            flush=True,
        )
    for cell in unsaturated(cells, top_conns):
        print(
            f"WARNING: server not saturated: {cell.worker} round {cell.round + 1} {cell.app} "
            f"{cell.conns} conns: the server used {cell.server_cpu_fraction:.0%} of its core; "
            "another process probably shared it, so trust the per-CPU ratio for that round",
            flush=True,
        )
    if busy := busy_machine(cells):
        worst = max(c.other_cpu_fraction or 0.0 for c in busy)
        print(
            f"WARNING: busy machine: in {len(busy)} of {len(cells)} measurements other "
            f"processes used more than {BUSY_MACHINE_FRACTION:.0%} of a core (up to {worst:.0%});"
            " ratios of those rounds are noisier",
            flush=True,
        )


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit so that every running server is stopped on the way out."""
    raise SystemExit(128 + signum)


def cli_main(run: Callable[[argparse.Namespace], int], namespace: argparse.Namespace) -> int:
    """Run a benchmark runner: stop cleanly on SIGTERM and Ctrl-C, return its status."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        return run(namespace)
    except KeyboardInterrupt:
        print("interrupted; every server started was stopped", file=sys.stderr)
        return 130
