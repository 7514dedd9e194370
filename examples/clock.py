"""A stream: ``hypercorn -k trio examples.clock:app``.

(Or plain ``hypercorn examples.clock:app`` for the asyncio worker.) Connect to
``ws://127.0.0.1:8000/clock?interval=0.5``: the server's time (an ISO 8601 string,
UTC) arrives every ``interval`` seconds (1.0 by default, 0.05 at least); nothing needs
to be sent. The stream stops when the client leaves.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import anyio

import plait

MIN_INTERVAL = 0.05


@plait.stream("/clock")
async def clock(interval: float = 1.0) -> AsyncGenerator[str, None]:
    """The time now, then again every ``interval`` seconds (a query parameter)."""
    interval = max(MIN_INTERVAL, interval)
    while True:
        yield datetime.now(UTC).isoformat()
        await anyio.sleep(interval)


app = plait.App(routes=[clock])
