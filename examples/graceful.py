"""Serve an App with a graceful shutdown: ``python -m examples.graceful``.

(``--worker asyncio`` for hypercorn's asyncio worker, ``--bind 0.0.0.0:8000`` to listen
elsewhere.) hypercorn's command tells an application nothing when it starts shutting
down; its ``serve()`` function stops when the ``shutdown_trigger`` it is given returns.
The App's trigger waits for SIGTERM or SIGINT, closes every connection with 1001 at once
and runs the handlers' teardowns (within ``shutdown_grace`` seconds; a second signal cuts
that short), then lets hypercorn stop. That also holds on Python 3.12.1 and later, where
the command's asyncio worker waits for every WebSocket client to leave first
(hypercorn#308).
"""

from __future__ import annotations

import argparse
import asyncio
from functools import partial
from typing import cast

from hypercorn.asyncio import serve as asyncio_serve
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework

import plait


def serve(app: plait.App, config: Config, worker: str = "trio") -> None:
    """Run hypercorn on ``worker``'s event loop until SIGTERM or SIGINT, then close the
    App's connections with 1001 before hypercorn stops."""
    asgi = cast(ASGIFramework, app)  # hypercorn types its scopes more narrowly than ASGI's
    if worker == "trio":
        import trio
        from hypercorn.trio import serve as trio_serve

        trio.run(partial(trio_serve, asgi, config, shutdown_trigger=app.shutdown_trigger))
    else:
        asyncio.run(asyncio_serve(asgi, config, shutdown_trigger=app.shutdown_trigger))


def main() -> None:
    """Serve the chat example as ``python -m examples.graceful`` does."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", default="127.0.0.1:8000")
    parser.add_argument("--worker", choices=["trio", "asyncio"], default="trio")
    args = parser.parse_args()
    from examples.chat import app

    config = Config()
    config.bind = [args.bind]
    serve(app, config, args.worker)


if __name__ == "__main__":
    main()
