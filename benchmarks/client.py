"""Echo load client on picows: strict ping-pong over N connections, one JSON line out.

Run as ``python -m benchmarks.client --url ws://127.0.0.1:8000/ --conns 50``. Each connection
keeps exactly one 64-byte text message in flight: it sends the next one from picows' frame
callback as soon as the echo arrives, so the client does almost no Python work per message.
``--payload text`` (the default) sends 64 bytes of ASCII; ``--payload json`` sends a 64-byte
JSON object, ``{"user": "ada", "content": ...}``, for the typed-listener apps. Every echo must
be the payload, byte for byte.
The run is bounded by time (warm-up plus measured window) and by a total message count.
The JSON line carries the CPU time of the client, of the server (``--server-pid``) and of
everything else on the machine over the window, so the runner can tell a client-bound run
or one that shared the machine with other work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict, dataclass

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from benchmarks._cpu import Clocks, CpuUse

PAYLOADS = {
    # 64 bytes of ASCII, sent as a text frame: the plain echo.
    "text": b"0123456789abcdef" * 4,
    # 64 bytes of compact JSON, as msgspec encodes `benchmarks.apps.ChatMessage`: the typed
    # echo decodes it and encodes it back, so its reply is these bytes again.
    "json": b'{"user":"ada","content":"a typed listener echo, and sent back."}',
}
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0


class _Tally:
    """Counters shared by every connection of one run."""

    def __init__(self, max_messages: int, payload: bytes) -> None:
        self.max_messages = max_messages
        self.payload = payload
        self.sending = True
        self.messages = 0
        self.errors = 0
        self.capped = asyncio.Event()

    def stop(self) -> None:
        """Stop every connection from sending its next message."""
        self.sending = False


class _EchoListener(WSListener):
    """One connection: check each echo and answer it with the next message."""

    def __init__(self, tally: _Tally) -> None:
        super().__init__()
        self._tally = tally

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Count an echo and send the next message while the run lasts."""
        tally = self._tally
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE and tally.sending:
                tally.errors += 1
            return
        if frame.get_payload_as_bytes() != tally.payload:
            tally.errors += 1
        tally.messages += 1
        if tally.messages >= tally.max_messages:
            tally.stop()
            tally.capped.set()
        if tally.sending:
            transport.send(WSMsgType.TEXT, tally.payload)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        """Count a connection the server dropped while the run was still going."""
        if self._tally.sending:
            self._tally.errors += 1


@dataclass
class Result:
    """What one client run measured; printed as one JSON line."""

    url: str
    payload: str
    connections: int
    connected: int
    errors: int
    messages: int
    seconds: float
    messages_per_s: float
    client_cpu_s: float
    client_cpu_fraction: float
    server_cpu_s: float | None
    server_cpu_fraction: float | None
    other_cpu_s: float | None
    other_cpu_fraction: float | None
    capped: bool


async def _connect_all(url: str, conns: int, tally: _Tally) -> list[WSTransport]:
    """Open the connections concurrently; count the ones that fail as errors."""

    async def connect_one() -> WSTransport:
        transport, _ = await ws_connect(lambda: _EchoListener(tally), url)
        return transport

    async with asyncio.timeout(CONNECT_TIMEOUT):
        outcomes = await asyncio.gather(
            *(connect_one() for _ in range(conns)), return_exceptions=True
        )
    transports = [o for o in outcomes if isinstance(o, WSTransport)]
    tally.errors += conns - len(transports)
    return transports


async def _close_all(transports: list[WSTransport]) -> None:
    """Close each connection with 1000, dropping any that do not finish in time."""
    for transport in transports:
        if not transport.is_disconnected:
            transport.send_close(WSCloseCode.OK)
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await asyncio.gather(*(t.wait_disconnected() for t in transports))
    except TimeoutError:
        for transport in transports:
            transport.disconnect(graceful=False)


async def _wait_capped(tally: _Tally, seconds: float) -> None:
    """Sleep for `seconds`, or less if the message cap is reached first."""
    try:
        async with asyncio.timeout(seconds):
            await tally.capped.wait()
    except TimeoutError:
        pass


async def run(
    url: str,
    conns: int,
    duration: float,
    warmup: float,
    max_messages: int,
    server_pid: int | None = None,
    payload: str = "text",
) -> Result:
    """Drive the echo server and measure messages per second after the warm-up.

    Args:
        url: WebSocket URL of the echo server.
        conns: Number of concurrent connections, each with one message in flight.
        duration: Length of the measured window in seconds.
        warmup: Seconds of load before the window opens.
        max_messages: Echoes after which every connection stops, warm-up included.
        server_pid: The server's PID, to report its CPU time over the window too.
        payload: Which of `PAYLOADS` to send (``"text"`` or ``"json"``).

    Returns:
        The measurement of the window.
    """
    tally = _Tally(max_messages, PAYLOADS[payload])
    transports = await _connect_all(url, conns, tally)
    for transport in transports:
        transport.send(WSMsgType.TEXT, tally.payload)
    await _wait_capped(tally, warmup)
    start, start_messages = Clocks.read(server_pid), tally.messages
    await _wait_capped(tally, duration)
    use, messages = CpuUse.between(start, Clocks.read(server_pid)), tally.messages - start_messages
    tally.stop()
    await _close_all(transports)
    return Result(
        url=url,
        payload=payload,
        connections=conns,
        connected=len(transports),
        errors=tally.errors,
        messages=messages,
        seconds=use.seconds,
        messages_per_s=round(messages / use.seconds, 1) if use.seconds > 0 else 0.0,
        client_cpu_s=use.client,
        client_cpu_fraction=use.share(use.client) or 0.0,
        server_cpu_s=use.server,
        server_cpu_fraction=use.share(use.server),
        other_cpu_s=use.other,
        other_cpu_fraction=use.share(use.other),
        capped=tally.capped.is_set(),
    )


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="ws://127.0.0.1:8000/")
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--max-messages", type=int, default=5_000_000)
    parser.add_argument("--server-pid", type=int, help="report this process's CPU time too")
    parser.add_argument("--payload", choices=sorted(PAYLOADS), default="text")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run one measurement and print it as a JSON line on stdout."""
    args = _parse_args(argv)
    result = asyncio.run(
        run(
            args.url,
            args.conns,
            args.duration,
            args.warmup,
            args.max_messages,
            args.server_pid,
            args.payload,
        )
    )
    print(json.dumps(asdict(result)), flush=True)


if __name__ == "__main__":
    main()
