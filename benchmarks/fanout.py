"""Fan-out benchmark runner: one publish delivered to 1,000 WebSocket subscribers.

``python -m benchmarks.fanout [--rounds 3] [--duration 4] [--workers asyncio,trio]
[--apps raw,plait,litestar] [--subscribers 1000] [--window 16] [--quick]``

For each worker class and round, every app of `benchmarks.fanout_apps` (in an order rotated
each round) gets a fresh hypercorn on core 0 and the picows client of
`benchmarks.fanout_client` on core 1: 1,000 subscriber connections, one of which publishes
with a bounded number of publishes in flight. The figure is deliveries per second
(publishes times subscribers, counted as they arrive). The report gives each app's median and
the medians of the per-round ratios plait ÷ Litestar and app ÷ raw ASGI; the JSON goes to
``benchmarks/results/fanout-<time>.json``. Litestar's channels plugin is asyncio-only, so on
hypercorn's trio worker only raw and plait run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks import fanout_apps
from benchmarks._processes import Server, run_json_client
from benchmarks._report import AppSummary, GroupSummary, Measurement, summarize
from benchmarks._runner import (
    cli_main,
    csv_list,
    percent,
    rotated,
    run_meta,
    save_results,
    serve_once,
    warn,
)

PACKAGES = ("plait", "hypercorn", "anyio", "trio", "picows", "litestar", "msgspec")
APPS_MODULE = "benchmarks.fanout_apps"
CLIENT_MODULE = "benchmarks.fanout_client"
BASELINE = "raw"
"""The raw ASGI broadcaster: every app's ``÷ raw`` ratio divides by it."""
PEER = "litestar"
"""The peer plait is compared with: ``plait ÷ Litestar`` is the headline."""
CLIENT_SLACK = 120.0
"""Seconds the client may take besides warm-up and window: connecting, probing, draining."""
LABELS = {"raw": "raw ASGI", "plait": "plait", "litestar": "Litestar"}


@dataclass
class FanoutMeasurement(Measurement):
    """One client run against one server; ``messages_per_s`` counts deliveries."""

    publishes_per_s: float | None = None
    lost: int = 0
    """Messages some subscriber never got although it got a later one (gaps)."""
    undelivered: int = 0
    """Messages some subscriber had not got when the client stopped waiting."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout",
        description=__doc__.splitlines()[0] if __doc__ else "",
    )
    parser.add_argument("--rounds", type=int, help="rounds per worker (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds (default 4, quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default 1, quick 0.5)")
    parser.add_argument("--workers", type=csv_list, default=["asyncio", "trio"])
    parser.add_argument("--apps", type=csv_list, default=list(fanout_apps.NAMES))
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument(
        "--window",
        type=int,
        default=16,
        help=f"publishes in flight at most (keep it below the apps' buffer, {fanout_apps.BUFFER})",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 s")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else 3)
    args.duration = args.duration if args.duration is not None else (2.0 if quick else 4.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    if args.subscribers < 1 or args.window < 1 or args.rounds < 1:
        parser.error("--subscribers, --window and --rounds must be at least 1")
    return args


def _available(apps: Sequence[str], worker: str) -> tuple[list[str], dict[str, str]]:
    """Split the apps into those that can run on `worker` and the reasons for the rest."""
    skipped = {
        app: reason for app in apps if (reason := fanout_apps.unavailable_reason(app, worker))
    }
    for app, reason in skipped.items():
        print(f"note: skipping {app} on {worker}: {reason}", flush=True)
    return [a for a in apps if a not in skipped], skipped


def _client_arguments(server: Server, args: argparse.Namespace) -> list[str]:
    return [
        f"--url={server.url}{fanout_apps.PATH.lstrip('/')}",
        f"--server-pid={server.process.pid}",
        f"--subscribers={args.subscribers}",
        f"--window={args.window}",
        f"--duration={args.duration}",
        f"--warmup={args.warmup}",
    ]


def _failure(result: dict[str, Any], subscribers: int) -> str | None:
    """Why the client's result cannot be compared with the others, if it cannot."""
    if result["connected"] == 0:
        return "no connection could be opened"
    if result["connected"] < subscribers:
        return f"only {result['connected']} of {subscribers} subscribers connected"
    if result["ready_s"] is None:
        return "no probe reached every subscriber: the subscriptions were not all registered"
    if result["stalled"]:
        return "deliveries stalled: nothing arrived for 3 s"
    return None


def _measure(
    cell: FanoutMeasurement, server: Server, args: argparse.Namespace
) -> FanoutMeasurement:
    """Fill in a measurement by running the client against the server."""
    timeout = args.duration + args.warmup + CLIENT_SLACK
    try:
        result = run_json_client(CLIENT_MODULE, _client_arguments(server, args), timeout)
    except RuntimeError as exc:
        cell.failure = str(exc)
        return cell
    cell.client = result
    cell.messages_per_s = result["deliveries_per_s"]
    cell.publishes_per_s = result["publishes_per_s"]
    cell.client_cpu_fraction = result["client_cpu_fraction"]
    cell.server_cpu_fraction = result["server_cpu_fraction"]
    cell.other_cpu_fraction = result["other_cpu_fraction"]
    if result["server_cpu_s"]:
        cell.messages_per_server_cpu_s = round(result["deliveries"] / result["server_cpu_s"], 1)
    cell.connected = result["connected"]
    cell.errors = result["errors"] + result["bad_payloads"] + result["duplicates"]
    cell.lost = result["lost"]
    cell.undelivered = result["undelivered"]
    cell.failure = _failure(result, cell.conns)
    return cell


def _progress(cell: FanoutMeasurement) -> None:
    head = f"{cell.worker:<7} round {cell.round + 1}  {cell.app:<8} {cell.conns:>5} subscribers"
    if cell.failure:
        print(f"{head}  FAILED: {cell.failure}", flush=True)
        return
    print(
        f"{head}  {cell.messages_per_s or 0.0:>9,.0f} deliveries/s"
        f" ({cell.publishes_per_s or 0.0:,.1f} publishes/s)"
        f"  CPU server {percent(cell.server_cpu_fraction):>4}"
        f" client {percent(cell.client_cpu_fraction):>4}"
        f" other {percent(cell.other_cpu_fraction):>4}"
        f"  lost {cell.lost} undelivered {cell.undelivered} errors {cell.errors}",
        flush=True,
    )


def _serve_and_measure(
    worker: str, round_index: int, app: str, args: argparse.Namespace
) -> FanoutMeasurement:
    """Start one server for `app` and measure it once."""
    cell = FanoutMeasurement(worker, round_index, app, args.subscribers)
    return serve_once(cell, APPS_MODULE, lambda c, server: _measure(c, server, args), _progress)


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ratio_columns(apps: Sequence[str]) -> list[tuple[str, str]]:
    """The (app, baseline) pairs of the overview's ratio columns, headline first."""
    pairs = [("plait", PEER)] if "plait" in apps and PEER in apps else []
    if BASELINE in apps:
        pairs += [(app, BASELINE) for app in apps if app != BASELINE]
    return pairs


def _summaries(
    cells: list[FanoutMeasurement], args: argparse.Namespace, apps: Sequence[str]
) -> dict[str, list[GroupSummary]]:
    """Per baseline (Litestar, raw): the medians and same-round ratios of every app."""
    return {
        baseline: summarize(cells, args.workers, apps, [args.subscribers], baseline)
        for baseline in (PEER, BASELINE)
        if baseline in apps
    }


def _summary(
    summaries: dict[str, list[GroupSummary]], baseline: str, worker: str, app: str
) -> AppSummary | None:
    group = next((g for g in summaries.get(baseline, []) if g.worker == worker), None)
    return group.app(app) if group else None


def _by_round(summary: AppSummary | None) -> str:
    return " ".join(f"{r:.2f}" for r in summary.ratios) if summary and summary.ratios else "—"


def render_markdown(
    cells: list[FanoutMeasurement],
    summaries: dict[str, list[GroupSummary]],
    args: argparse.Namespace,
    apps: Sequence[str],
    skipped: dict[str, dict[str, str]],
) -> str:
    """The run as Markdown: medians and ratios per worker, then one table per worker.

    Args:
        cells: Every measurement of the run.
        summaries: The output of `_summaries`: per baseline, one group per worker.
        args: The run's arguments.
        apps: The apps measured, in report order.
        skipped: Per worker, the apps that could not run there and why.

    Returns:
        Markdown text.
    """
    any_summary = next(iter(summaries.values()), [])
    pairs = _ratio_columns(apps)
    lines = [
        f"## Fan-out to {args.subscribers:,} subscribers: deliveries/s, median of "
        f"{args.rounds} round(s); ratios are medians of same-round ratios",
        "",
        "| server | "
        + " | ".join(f"{LABELS.get(a, a)} deliveries/s" for a in apps)
        + "".join(f" | {LABELS.get(a, a)} ÷ {LABELS.get(b, b)}" for a, b in pairs)
        + " |",
        "|---|" + "---:|" * (len(apps) + len(pairs)),
    ]
    for group in any_summary:
        rates = [_rate(s.median_messages_per_s if (s := group.app(a)) else None) for a in apps]
        ratios = [
            _ratio(s.median_ratio if (s := _summary(summaries, b, group.worker, a)) else None)
            for a, b in pairs
        ]
        lines.append(f"| hypercorn {group.worker} | " + " | ".join(rates + ratios) + " |")
    notes = [
        f"- not run on hypercorn {worker}: {app}: {reason}"
        for worker, reasons in skipped.items()
        for app, reason in reasons.items()
    ]
    if notes:
        lines += ["", *notes]
    for group in any_summary:
        lines += [
            "",
            f"### hypercorn {group.worker}, {args.subscribers:,} subscribers",
            "",
            f"| app | median deliveries/s | ÷ {LABELS[PEER]} by round | ÷ raw by round "
            f"| ÷ {LABELS[PEER]} per server CPU-s | ÷ raw per server CPU-s | server CPU "
            "| client CPU max | other load max | lost | undelivered | errors | tracebacks |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in group.apps:
            mine = [c for c in cells if c.worker == group.worker and c.app == s.app]
            if not mine:
                continue  # not run on this worker (see the notes)
            peer = _summary(summaries, PEER, group.worker, s.app)
            raw = _summary(summaries, BASELINE, group.worker, s.app)
            lines.append(
                f"| {s.app} | {_rate(s.median_messages_per_s)} | {_by_round(peer)} "
                f"| {_by_round(raw)} | {_ratio(peer.median_cpu_ratio if peer else None)} "
                f"| {_ratio(raw.median_cpu_ratio if raw else None)} "
                f"| {percent(s.median_server_cpu_fraction)} "
                f"| {percent(s.max_client_cpu_fraction)} | {percent(s.max_other_cpu_fraction)} "
                f"| {sum(c.lost for c in mine)} | {sum(c.undelivered for c in mine)} "
                f"| {s.errors} | {sum(c.server_tracebacks for c in mine)} |"
            )
    return "\n".join(lines) + "\n"


def _warn_about_drops(cells: list[FanoutMeasurement], window: int) -> None:
    for cell in cells:
        if cell.lost or cell.undelivered:
            print(
                f"WARNING: messages not delivered: {cell.worker} round {cell.round + 1} "
                f"{cell.app}: {cell.lost} lost, {cell.undelivered} undelivered with a window "
                f"of {window} (below every buffer, so nothing should be dropped)",
                flush=True,
            )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by the parsed arguments; return the exit status."""
    started = time.strftime("%Y%m%dT%H%M%S")
    clock, load = time.monotonic(), os.getloadavg()
    cells: list[FanoutMeasurement] = []
    skipped: dict[str, dict[str, str]] = {}
    for worker in args.workers:
        apps, skipped[worker] = _available(args.apps, worker)
        for round_index in range(args.rounds if apps else 0):
            for app in rotated(apps, round_index):
                cells.append(_serve_and_measure(worker, round_index, app, args))
    if not cells:
        print("nothing to run", file=sys.stderr)
        return 1
    measured = [a for a in args.apps if any(c.app == a for c in cells)]
    summaries = _summaries(cells, args, measured)
    print()
    print(render_markdown(cells, summaries, args, measured, skipped))
    warn(cells, args.subscribers)
    _warn_about_drops(cells, args.window)
    meta = run_meta(args, started, PACKAGES, skipped) | {
        "load_average_start": load,
        "elapsed_s": round(time.monotonic() - clock, 1),
    }
    summary = {baseline: [asdict(g) for g in groups] for baseline, groups in summaries.items()}
    save_results(f"fanout-{started}.json", meta, summary, cells)
    clean = all(c.ok and not c.lost and not c.undelivered for c in cells)
    return 0 if clean else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    return cli_main(run, _parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
