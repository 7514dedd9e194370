"""A WebSocket API that documents itself: ``hypercorn -k trio examples.documented:app``.

Then open http://127.0.0.1:8000/asyncapi for the rendered AsyncAPI document (the JSON is
at ``/asyncapi.json``), and connect to ``ws://127.0.0.1:8000/markets/nyse?interval=0.5``:
send ``{"type": "watch", "symbol": "ACME"}`` and quotes for ACME arrive, tagged
``{"stream": "prices", "data": {...}}``, until ``{"type": "unwatch", "symbol": "ACME"}``.
The server pings with ``ping`` every 20 seconds; answer ``pong``. ``/status`` sends
the server's status once.

Nothing here is written for the document: it comes from the route, the annotations and
the docstrings.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator
from typing import Annotated

import anyio
import msgspec

import plait
from plait import Heartbeat, WebSocket, use


class Watch(msgspec.Struct, tag="watch"):
    """Start receiving quotes for a symbol."""

    symbol: Annotated[str, msgspec.Meta(pattern="^[A-Z]{1,5}$")]


class Unwatch(msgspec.Struct, tag="unwatch"):
    """Stop receiving quotes for a symbol."""

    symbol: str


class Watching(msgspec.Struct):
    """The symbols watched now."""

    symbols: list[str]


class Quote(msgspec.Struct):
    """One price."""

    symbol: str
    price: float
    at: Annotated[float, msgspec.Meta(description="Seconds since the epoch.")]


def watchlist() -> set[str]:
    """The connection's watched symbols, shared by its listener and its stream."""
    return set()


Watchlist = Annotated[set[str], use(watchlist)]

markets = plait.WebSocketRoute(
    "/markets/{market}", tag_streams=True, heartbeat=Heartbeat(interval=20, timeout=10)
)


@markets.listener
async def watch(data: Watch | Unwatch, symbols: Watchlist) -> Watching:
    """Watch or unwatch a symbol; the answer lists what is watched."""
    if isinstance(data, Watch):
        symbols.add(data.symbol)
    else:
        symbols.discard(data.symbol)
    return Watching(sorted(symbols))


@markets.stream
async def prices(
    market: str,
    symbols: Watchlist,
    interval: Annotated[float, msgspec.Meta(ge=0.1, le=60)] = 1.0,
) -> AsyncGenerator[Quote, None]:
    """A quote for each watched symbol every ``interval`` seconds."""
    price: dict[str, float] = {}
    while True:
        for symbol in sorted(symbols):
            price[symbol] = round(price.get(symbol, 100.0) * random.uniform(0.99, 1.01), 2)
            yield Quote(symbol, price[symbol], time.time())
        await anyio.sleep(interval)


class Status(msgspec.Struct):
    """How the server is."""

    markets: list[str]
    started: float


STARTED = time.time()


@plait.websocket("/status", sends=Status)
async def status(ws: WebSocket) -> None:
    """The server's status, once; then the connection closes."""
    await ws.accept()
    await ws.send_json(msgspec.to_builtins(Status(["nyse", "lse"], STARTED)))
    await ws.close()


app = plait.App(
    routes=[markets, status],
    title="Markets",
    version="1.0.0",
    description="Live quotes for the symbols a client watches.",
    servers=["ws://127.0.0.1:8000"],
    asyncapi_path="/asyncapi.json",
    asyncapi_docs_path="/asyncapi",
)
