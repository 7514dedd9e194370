"""Instructions per message of plait and its peers, counted by callgrind: no noise, no server.

``python -m benchmarks.instructions [--apps A,B] [--backends asyncio,trio]
[--messages 200,2200] [--quick] [--before REV]``

Each app of `benchmarks.pingpong` serves one connection in strict ping-pong against a fake
ASGI server in process: 64-byte text messages (JSON for the typed apps), each handed over
only once the echo of the one before came back, so the app really waits for every
message. ``valgrind --tool=callgrind`` counts the instructions of the whole process twice,
with a small and a large message count; ``(Ir(large) - Ir(small)) / (large - small)`` is
what one message costs, start-up and imports left out. The report gives it per app and
backend, with the overhead over the app's baseline (``raw``, the bare ASGI echo, or
``raw_json``, the bare msgspec JSON echo, for the typed listeners) and the ratio to it.

The count does not depend on the machine's load: with ``PYTHONHASHSEED=0``, no bytecode
written and trio's scheduler seeded, the same cases counted in two runs on a busy machine
(load average 3 to 4) agreed to within 0.01% (2026-12-03, per message: raw on trio 57,733
and 57,736, plait on asyncio 95,693 both times, on trio 175,052 and 175,050). It does move by a
few tenths of a percent with the length of the path plait is imported from, so every
source is counted from a copy at a path of the same length (`copy_source`). With
``--before REV`` the plait apps are counted on REV's source too (a temporary git worktree)
and the change per app is printed, so a change to the engine can be weighed where the
clock is too noisy to tell 2% apart. Two counts run at once (two cores). Needs valgrind
(Debian's package); the JSON goes to ``benchmarks/results/instructions-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._before import Before, before_source
from benchmarks._processes import ROOT
from benchmarks._runner import cli_main, csv_list, run_meta, write_results
from benchmarks.pingpong import APPS, BACKENDS, PLAIT_APPS

PACKAGES = ("plait", "anyio", "trio", "starlette", "litestar", "msgspec")
QUICK_APPS = ("raw", "raw_json", "plait", "plait_listener", "litestar")
"""What ``--quick`` counts (``nox -s bench``): the baselines, plait's two, one peer."""
MESSAGES = (200, 2_200)
PARALLEL = 2
"""Counts running at once: one per core."""
TIMEOUT = 900.0
"""Seconds one count may take under callgrind (about 25 s here) before it is a failure."""


@dataclass
class Case:
    """One app on one backend from one source: its two counts and what they give."""

    app: str
    label: str
    """The report's name: the app, or ``plait@<hash>`` when it runs REV's source."""
    backend: str
    source: str
    """The directory ``plait`` is imported from."""
    messages: tuple[int, int]
    instructions: list[int | None] = field(default_factory=lambda: [None, None])
    failure: str | None = None

    @property
    def per_message(self) -> float | None:
        """Instructions per message: the difference of the two counts over the messages."""
        small, large = self.instructions
        if self.failure is not None or small is None or large is None:
            return None
        return (large - small) / (self.messages[1] - self.messages[0])


def count(case: Case, messages: int) -> int:
    """Run `case`'s ping-pong of `messages` under callgrind and return its instructions.

    Raises:
        RuntimeError: the run failed, lost an echo, or imported plait from elsewhere.
    """
    # No bytecode written: the first count of a source would compile it, the second not.
    env = {
        **os.environ,
        "PYTHONPATH": case.source,
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with tempfile.TemporaryDirectory() as tmp:
        try:
            done = subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={tmp}/out",
                    sys.executable,
                    "-m",
                    "benchmarks.pingpong",
                    case.app,
                    str(messages),
                    case.backend,
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"no result after {TIMEOUT:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = [ln for ln in done.stderr.splitlines() if not ln.startswith("==")][-1:]
        raise RuntimeError(f"status {done.returncode}: {(tail or lines or ['no output'])[0]}")
    result = json.loads(lines[-1])
    if result["echoed"] != messages:
        raise RuntimeError(f"{result['echoed']} of {messages} echoes came back")
    if not Path(result["plait"]).resolve().is_relative_to(Path(case.source).resolve()):
        raise RuntimeError(f"plait was imported from {result['plait']}, not {case.source}")
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError("callgrind printed no count")
    return int(found.group(1))


def count_all(cases: Sequence[Case]) -> None:
    """Fill in every case's two counts, `PARALLEL` at a time; a failure stays its case's."""
    pool = ThreadPoolExecutor(max_workers=PARALLEL)
    try:
        jobs = {
            pool.submit(count, case, case.messages[index]): (case, index)
            for index in (1, 0)
            for case in cases
        }
        for job in as_completed(jobs):
            case, index = jobs[job]
            try:
                case.instructions[index] = job.result()
            except RuntimeError as exc:
                case.failure = case.failure or str(exc)
                print(f"  {case.label} {case.backend}: FAILED: {exc}", flush=True)
                continue
            print(
                f"  {case.label} {case.backend} {case.messages[index]:,} messages: "
                f"{case.instructions[index]:,} instructions",
                flush=True,
            )
    finally:
        # On Ctrl-C or SIGTERM, start no further count; the two running end by themselves.
        pool.shutdown(wait=True, cancel_futures=True)


def _baseline(case: Case, cases: Sequence[Case]) -> Case | None:
    """The case `case` is compared with: the same backend's run of its app's baseline."""
    wanted = APPS[case.app].baseline
    return next((c for c in cases if c.label == wanted and c.backend == case.backend), None)


def summary(cases: Sequence[Case]) -> list[dict[str, Any]]:
    """One row per case: its counts, instructions per message, and its baseline's."""
    rows = []
    for case in cases:
        base = _baseline(case, cases)
        mine = case.per_message
        theirs = base.per_message if base is not None else None
        overhead = ratio = None
        if mine is not None and theirs is not None:
            overhead, ratio = mine - theirs, mine / theirs
        rows.append(
            asdict(case)
            | {
                "per_message": mine,
                "baseline": base.label if base is not None else None,
                "overhead": overhead,
                "ratio": ratio,
            }
        )
    return rows


def render(rows: Sequence[dict[str, Any]], backends: Sequence[str]) -> str:
    """The Markdown tables of a run: one per backend."""
    out: list[str] = []
    for backend in backends:
        out += [
            f"{backend}:",
            "",
            "| app | instructions per message | baseline | over baseline | ratio |",
            "|---|---:|---|---:|---:|",
        ]
        for row in (r for r in rows if r["backend"] == backend):
            if row["failure"] is not None:
                out.append(f"| {row['label']} | FAILED: {row['failure']} | | | |")
                continue
            over = "" if row["overhead"] is None else f"{row['overhead']:+,.0f}"
            ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}"
            out.append(
                f"| {row['label']} | {row['per_message']:,.0f} | {row['baseline'] or ''} "
                f"| {over} | {ratio} |"
            )
        out.append("")
    return "\n".join(out)


def render_change(rows: Sequence[dict[str, Any]], before: Before) -> str:
    """The change per plait app from REV to now: + is more instructions now."""
    out = [
        f"change since {before.rev} ({before.short}):",
        "",
        f"| app | backend | now | {before.short} | change |",
        "|---|---|---:|---:|---:|",
    ]
    by_label = {(r["label"], r["backend"]): r["per_message"] for r in rows}
    for row in rows:
        then = by_label.get((before.label(row["label"]), row["backend"]))
        now = row["per_message"]
        if row["label"] in PLAIT_APPS and now is not None and then is not None:
            out.append(
                f"| {row['label']} | {row['backend']} | {now:,.0f} | {then:,.0f} "
                f"| {now / then - 1:+.2%} |"
            )
    return "\n".join(out) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--apps", type=csv_list, help=f"default: all of {', '.join(APPS)}")
    parser.add_argument("--backends", type=csv_list, default=list(BACKENDS))
    parser.add_argument(
        "--messages",
        type=lambda t: [int(n) for n in csv_list(t)],
        default=list(MESSAGES),
        help="the small and the large message count (default 200,2200)",
    )
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_APPS)}")
    parser.add_argument("--before", metavar="REV", help="count the plait apps on REV too")
    args = parser.parse_args(argv)
    if args.apps is None:
        args.apps = list(QUICK_APPS if args.quick else APPS)
    unknown = [a for a in args.apps if a not in APPS] + [
        b for b in args.backends if b not in BACKENDS
    ]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    if len(args.messages) != 2 or not 0 < args.messages[0] < args.messages[1]:
        parser.error("--messages takes two counts, the small one first: 200,2200")
    # Every app is shown against its baseline, so the baselines are counted too.
    wanted = set(args.apps)
    while missing := {b for a in wanted if (b := APPS[a].baseline) is not None} - wanted:
        wanted |= missing
    args.apps = [a for a in APPS if a in wanted]
    return args


def copy_source(source: Path, directory: Path) -> str:
    """Copy a ``src`` directory, without bytecode, to ``directory/src``; return that path.

    The count per message moves by a few tenths of a percent with the length of the path
    plait is imported from (object addresses, and so hashes, change with it): every
    source is counted from a copy at a path of the same length, whatever the checkout's.
    """
    target = directory / "src"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    return str(target)


def _valgrind_version() -> str:
    done = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def run(args: argparse.Namespace) -> int:
    """Count, print the tables and write the JSON; return the exit status."""
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    started = time.strftime("%Y%m%dT%H%M%S")
    clock = time.monotonic()
    messages = (args.messages[0], args.messages[1])
    with contextlib.ExitStack() as stack:
        before: Before | None = None
        if args.before is not None and set(args.apps) & set(PLAIT_APPS):
            try:
                before = stack.enter_context(before_source(args.before))
            except RuntimeError as exc:
                print(f"--before {args.before}: {exc}", file=sys.stderr)
                return 1
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="plait-instr-")))
        now = copy_source(ROOT / "src", tmp / "now")
        then = copy_source(before.path / "src", tmp / "rev") if before is not None else None
        cases = []
        for backend in args.backends:
            for app in args.apps:
                cases.append(Case(app, app, backend, now, messages))
                if before is not None and then is not None and app in PLAIT_APPS:
                    cases.append(Case(app, before.label(app), backend, then, messages))
        print(f"{len(cases) * 2} counts under callgrind, {PARALLEL} at a time", flush=True)
        count_all(cases)
    rows = summary(cases)
    print()
    print(render(rows, args.backends))
    if before is not None:
        print(render_change(rows, before))
    meta = run_meta(args, started, PACKAGES, {}) | {
        "elapsed_s": round(time.monotonic() - clock, 1),
        "valgrind": _valgrind_version(),
        "before": None if before is None else {"rev": before.rev, "commit": before.commit},
    }
    path = write_results({"meta": meta, "results": rows}, f"instructions-{started}.json")
    print(f"results: {path} ({meta['elapsed_s']:.0f} s)")
    return 0 if all(c.failure is None for c in cases) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    return cli_main(run, _parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
