"""Scale client on picows: N idle connections from one source address, held until killed.

Run as ``python -m benchmarks.scale_client --url ws://127.0.0.1:8000/ --conns 4750
--source 127.0.0.2 [--hold]``. `benchmarks.scale` starts several, each under the open-file
limit of one process, each on its own loopback source address (every address has its own
range of ephemeral ports).

The connections open as in `benchmarks.memory_client` (`--batch` at a time, each sending
one text message and ready once the server's first text frame arrives; uncompressed),
and answer the text ``ping`` of `plait.Heartbeat` with ``pong``. Once all have been tried,
one JSON line goes to stdout: connections ready, failed, the first error, the opening
time. Without ``--hold`` the client then closes them with 1000 and exits (the warm-up);
with it, it holds them, answering pings, until it is killed (the benchmark sends SIGKILL:
the clients vanish without a close), until its stdin closes (the benchmark died), or
after `--hold-limit` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass

from picows import WSFrame, WSMsgType, WSTransport

from benchmarks._processes import raise_open_file_limit
from benchmarks.memory_client import FD_HEADROOM, IdleListener, Tally, close_all, open_all

PING = b"ping"
PONG = b"pong"


class PongListener(IdleListener):
    """An idle connection that answers the heartbeat's ``ping`` with ``pong``."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Answer a ``ping`` once ready; anything else as `IdleListener` does."""
        if (
            self.ready.done()
            and frame.msg_type == WSMsgType.TEXT
            and frame.get_payload_as_bytes() == PING
        ):
            transport.send(WSMsgType.TEXT, PONG)
            self._tally.pongs += 1
            return
        super().on_ws_frame(transport, frame)


@dataclass
class Opened:
    """What opening measured; printed as one JSON line."""

    pid: int
    source: str | None
    conns: int
    ready: int
    failed: int
    first_error: str | None
    open_s: float
    open_file_limit: int


def _exit_when_stdin_closes() -> None:
    """Exit the process once stdin reaches its end: the benchmark that started us is gone."""
    sys.stdin.buffer.read()
    os._exit(3)


async def run(
    url: str, conns: int, batch: int, source: str | None, hold: bool, hold_limit: float
) -> None:
    """Open the connections, print what happened, then close them or hold them.

    Args:
        url: WebSocket URL of an app of `benchmarks.scale_apps`.
        conns: Connections to open.
        batch: Connections opened at once.
        source: The local address to connect from, or None.
        hold: Hold the connections until killed instead of closing them.
        hold_limit: Seconds after which a held client closes and exits anyway.
    """
    limit = raise_open_file_limit(conns + FD_HEADROOM)
    tally = Tally()
    clock = time.perf_counter()
    transports, failed, first_error = await open_all(url, conns, batch, tally, PongListener, source)
    opened = Opened(
        pid=os.getpid(),
        source=source,
        conns=conns,
        ready=len(transports),
        failed=failed,
        first_error=first_error,
        open_s=round(time.perf_counter() - clock, 3),
        open_file_limit=limit,
    )
    print(json.dumps(asdict(opened)), flush=True)
    try:
        if hold:
            threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
            await asyncio.sleep(hold_limit)
    finally:
        await close_all(transports, tally)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="ws://127.0.0.1:8000/")
    parser.add_argument("--conns", type=int, default=4750)
    parser.add_argument("--batch", type=int, default=25, help="connections opened at once")
    parser.add_argument("--source", help="local address to connect from, e.g. 127.0.0.2")
    parser.add_argument("--hold", action="store_true", help="hold the connections until killed")
    parser.add_argument("--hold-limit", type=float, default=1800.0, help="seconds at most")
    args = parser.parse_args(argv)
    if args.conns < 1 or args.batch < 1 or args.hold_limit <= 0:
        parser.error("--conns and --batch must be at least 1, --hold-limit above 0")
    return args


def main(argv: list[str] | None = None) -> None:
    """Open, report on stdout, then close or hold (see the module's docstring)."""
    args = _parse_args(argv)
    asyncio.run(run(args.url, args.conns, args.batch, args.source, args.hold, args.hold_limit))


if __name__ == "__main__":
    main()
