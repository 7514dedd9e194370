"""Instructions per message of plait's engine, counted by callgrind: no noise, no server.

``python -m benchmarks.instructions [--before REV] [--messages 20000]``

An in-process echo through :func:`plait.serve_connection`: a fake server hands the
engine ``--messages`` text messages of 64 bytes and takes every echo without suspending
(as hypercorn's asyncio worker does while the socket has room); the handler is the
usual ``iter_text`` loop. ``valgrind --tool=callgrind`` counts the instructions of the
whole run twice, with 1 message and with ``--messages``; the difference divided by the
messages is what the engine costs per message, start-up left out. Each backend, and with
``--before REV`` the same on REV's source (a temporary git worktree), so a change to the
engine can be weighed where the clock is too noisy to tell 2% apart. Needs valgrind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks._before import before_source
from benchmarks._processes import ROOT

_ECHO = """\
import sys, anyio, plait
N, BACKEND = int(sys.argv[1]), sys.argv[2]

async def main():
    incoming = iter(
        [{"type": "websocket.connect"}]
        + [{"type": "websocket.receive", "text": "x" * 64}] * N
        + [{"type": "websocket.disconnect", "code": 1000}]
    )
    sent = [0]
    accepted = anyio.Event()

    async def receive():
        message = next(incoming)
        if message["type"] != "websocket.connect":
            await accepted.wait()  # no client sends before the handshake is over
        if message["type"] == "websocket.disconnect":
            while sent[0] < N + 1:  # the client leaves once every echo is back
                await anyio.sleep(0.001)
        return message

    async def send(message):
        if message["type"] == "websocket.accept":
            accepted.set()
        sent[0] += 1

    async def handler(ws):
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(text)

    scope = {"type": "websocket", "path": "/", "headers": []}
    await plait.serve_connection(scope, receive, send, handler)
    assert sent[0] >= N + 1, sent

anyio.run(main, backend=BACKEND)
"""

BACKENDS = ("asyncio", "trio")


def count(source: Path, backend: str, messages: int, script: Path) -> int:
    """Instructions callgrind counts for one in-process echo run of ``messages``."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(source), "PYTHONHASHSEED": "0"}
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                str(script),
                str(messages),
                backend,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"the echo failed ({backend}):\n{done.stderr[-2000:]}")
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError("callgrind printed no count")
    return int(found.group(1))


def per_message(source: Path, backend: str, messages: int, script: Path) -> float:
    """Instructions per message: the run of ``messages`` less the run of one."""
    whole = count(source, backend, messages, script)
    start = count(source, backend, 1, script)
    return (whole - start) / (messages - 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Print instructions per message for each backend (and REV's, with ``--before``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git revision to count too")
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "echo.py")
        script.write_text(_ECHO)
        sources = {"plait": ROOT / "src"}
        with before_source(args.before) if args.before else contextlib.nullcontext() as before:
            if before is not None:
                sources[before.label("plait")] = before.path / "src"
            print("| backend | " + " | ".join(sources) + " |")
            print("|---|" + "---:|" * len(sources))
            for backend in BACKENDS:
                counts = [per_message(s, backend, args.messages, script) for s in sources.values()]
                cells = [f"{counts[0]:,.0f}"]
                # The current source against REV's: + is more instructions now.
                cells += [f"{c:,.0f} (now {counts[0] / c - 1:+.1%})" for c in counts[1:]]
                print(f"| {backend} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
