"""Echo benchmark runner: plait and its peers against a raw ASGI echo on hypercorn.

``python -m benchmarks.echo [--rounds 3] [--duration 4] [--workers asyncio,trio]
[--apps raw,plait,floor,starlette,litestar,litestar_listener] [--conns 1,50] [--quick]``

``python -m benchmarks.echo --payload json`` runs the typed echo instead: the client sends a
JSON object and the apps ``raw_json``, ``plait_listener`` and ``litestar_listener_typed``
decode it into a msgspec Struct and encode it back; ratios are to ``raw_json``.

``--before REV`` also serves ``plait`` and ``plait_listener`` from git revision REV (a
temporary worktree, imported through ``PYTHONPATH``) in the same rounds, reported as
``plait@<short hash>``: the engine before and after a change, each as a ratio to raw.

For each worker class and round, every app (in an order rotated each round) gets a fresh
hypercorn on core 0 and the picows client on core 1, once per connection count. The report
gives each app's median messages per second and the median of its per-round ratios to the
baseline app measured in the same round; the JSON goes to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

from benchmarks import _before
from benchmarks import apps as bench_apps
from benchmarks._before import Before, before_source
from benchmarks._processes import Server, run_client, run_server
from benchmarks._report import Measurement, render_markdown, summarize
from benchmarks._runner import (
    cli_main,
    csv_list,
    note_server_log,
    percent,
    rotated,
    run_meta,
    save_results,
    warn,
)

PACKAGES = ("plait", "hypercorn", "anyio", "trio", "picows", "starlette", "litestar", "msgspec")
DEFAULT_APPS = {"text": bench_apps.NAMES, "json": bench_apps.JSON_NAMES}
"""The apps each payload runs unless ``--apps`` says otherwise."""
BASELINES = {"text": "raw", "json": "raw_json"}
"""The raw ASGI app each payload's ratios divide by unless ``--baseline`` says otherwise."""
Servers = dict[str, tuple[str, dict[str, str]]]
"""Each label the report shows: the app hypercorn serves and what its environment adds."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.echo", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--rounds", type=int, help="rounds per worker (default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="measured seconds (default 4, quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (default 1, quick 0.5)")
    parser.add_argument("--workers", type=csv_list, default=["asyncio", "trio"])
    parser.add_argument(
        "--payload",
        choices=sorted(DEFAULT_APPS),
        default="text",
        help="text: 64 bytes echoed as they are; json: a typed echo through a msgspec Struct",
    )
    parser.add_argument("--apps", type=csv_list, help="default: every app of the payload")
    parser.add_argument("--baseline", help="app the ratios divide by (raw, or raw_json for json)")
    parser.add_argument("--conns", type=lambda t: [int(c) for c in csv_list(t)], default=[1, 50])
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 s")
    parser.add_argument(
        "--before",
        metavar="REV",
        help="also serve plait and plait_listener from git revision REV, as plait@<hash>",
    )
    args = parser.parse_args(argv)
    args.apps = args.apps if args.apps is not None else list(DEFAULT_APPS[args.payload])
    args.baseline = args.baseline or BASELINES[args.payload]
    quick = args.quick
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else 3)
    args.duration = args.duration if args.duration is not None else (2.0 if quick else 4.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    return args


def _available(apps: Sequence[str], payload: str) -> tuple[list[str], dict[str, str]]:
    """Split the requested apps into those that can run and the reasons for the rest."""
    skipped = {
        app: reason for app in apps if (reason := bench_apps.unavailable_reason(app, payload))
    }
    for app, reason in skipped.items():
        print(f"note: skipping {app}: {reason}", flush=True)
    return [a for a in apps if a not in skipped], skipped


def _with_before(
    apps: list[str], before: Before, payload: str, skipped: dict[str, str]
) -> tuple[list[str], Servers]:
    """Put each plait app's run from `before` right after it; note those that cannot run.

    Raises:
        RuntimeError: The servers would not import plait from the worktree.
    """
    servers: Servers = {app: (app, {}) for app in apps}
    wanted = [app for app in apps if app in _before.APPS]
    reasons = _before.probe(before, wanted, payload)
    if running := [before.label(app) for app in wanted if app not in reasons]:
        print(f"note: {', '.join(running)}: plait from {before.path / 'src'}", flush=True)
    ordered: list[str] = []
    for app in apps:
        ordered.append(app)
        if app not in wanted:
            continue
        label = before.label(app)
        if app in reasons:
            print(f"note: skipping {label}: {reasons[app]}", flush=True)
            skipped[label] = reasons[app]
            continue
        ordered.append(label)
        servers[label] = (app, before.env)
    return ordered, servers


def _measure(cell: Measurement, server: Server, args: argparse.Namespace) -> Measurement:
    """Fill in a measurement by running the client against the server."""
    try:
        result = run_client(server, cell.conns, args.duration, args.warmup, args.payload)
    except RuntimeError as exc:
        cell.failure = str(exc)
        return cell
    cell.client = result
    cell.messages_per_s = result["messages_per_s"]
    cell.client_cpu_fraction = result["client_cpu_fraction"]
    cell.server_cpu_fraction = result["server_cpu_fraction"]
    cell.other_cpu_fraction = result["other_cpu_fraction"]
    if result["server_cpu_s"]:
        cell.messages_per_server_cpu_s = round(result["messages"] / result["server_cpu_s"], 1)
    cell.connected = result["connected"]
    cell.errors = result["errors"]
    if cell.connected == 0:
        cell.failure = "no connection could be opened"
    return cell


def _progress(cell: Measurement) -> None:
    head = f"{cell.worker:<7} round {cell.round + 1}  {cell.app:<23} {cell.conns:>4} conns"
    if cell.failure:
        print(f"{head}  FAILED: {cell.failure}", flush=True)
        return
    rate = cell.messages_per_s or 0.0
    print(
        f"{head}  {rate:>9,.0f} msg/s  CPU server {percent(cell.server_cpu_fraction):>4}"
        f" client {percent(cell.client_cpu_fraction):>4}"
        f" other {percent(cell.other_cpu_fraction):>4}  errors {cell.errors}",
        flush=True,
    )


def _serve_and_measure(
    worker: str, round_index: int, label: str, args: argparse.Namespace, servers: Servers
) -> list[Measurement]:
    """Start one server for the app `label` names and measure it at every connection count."""
    cells = [Measurement(worker, round_index, label, conns) for conns in args.conns]
    app, env = servers.get(label, (label, {}))
    server: Server | None = None
    try:
        with run_server(worker, app, env=env) as server:
            for cell in cells:
                _progress(_measure(cell, server, args))
    except RuntimeError as exc:
        for cell in cells:
            if cell.client is None and cell.failure is None:
                cell.failure = str(exc)
                _progress(cell)
    note_server_log(cells, server)
    return cells


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by the parsed arguments; return the exit status."""
    apps, skipped = _available(args.apps, args.payload)
    if not apps:
        print("nothing to run", file=sys.stderr)
        return 1
    if args.before is not None and not set(apps) & set(_before.APPS):
        print(f"note: --before {args.before}: none of {', '.join(_before.APPS)} runs", flush=True)
        args.before = None
    with contextlib.ExitStack() as stack:
        before: Before | None = None
        servers: Servers = {app: (app, {}) for app in apps}
        if args.before is not None:
            try:
                before = stack.enter_context(before_source(args.before))
                apps, servers = _with_before(apps, before, args.payload, skipped)
            except RuntimeError as exc:
                print(f"--before {args.before}: {exc}", file=sys.stderr)
                return 1
        return _run(args, apps, skipped, servers, before)


def _run(
    args: argparse.Namespace,
    apps: list[str],
    skipped: dict[str, str],
    servers: Servers,
    before: Before | None,
) -> int:
    started = time.strftime("%Y%m%dT%H%M%S")
    clock, load = time.monotonic(), os.getloadavg()
    cells: list[Measurement] = []
    for worker in args.workers:
        for round_index in range(args.rounds):
            for app in rotated(apps, round_index):
                cells += _serve_and_measure(worker, round_index, app, args, servers)
    groups = summarize(cells, args.workers, apps, args.conns, args.baseline)
    print()
    print(render_markdown(groups, apps, args.baseline))
    warn(cells, max(args.conns))
    meta = run_meta(args, started, PACKAGES, skipped) | {
        "load_average_start": load,
        "elapsed_s": round(time.monotonic() - clock, 1),
        "before": None
        if before is None
        else {
            "rev": before.rev,
            "commit": before.commit,
            "apps": {label: app for label, (app, env) in servers.items() if env},
        },
    }
    kind = "echo" if args.payload == "text" else "echo-json"
    save_results(f"{kind}-{started}.json", meta, [asdict(g) for g in groups], cells)
    return 0 if all(c.ok for c in cells) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    return cli_main(run, _parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
