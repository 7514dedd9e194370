"""A process that tracks presence through Redis, says so, and waits to be killed.

``python _presence_process.py <backend> <url> <key prefix> <ttl> <sweep> <channel> <key>...``
prints ``ready`` once every key is tracked; a test then kills it (SIGKILL), so that it
leaves its entries behind, as a crashed server would.
"""

from __future__ import annotations

import os
import sys
from contextlib import AsyncExitStack

import anyio

from plait.channels import Hub, RedisBackend


async def main(url: str, prefix: str, ttl: str, sweep: str, channel: str, *keys: str) -> None:
    backend = RedisBackend(
        url, key_prefix=prefix, presence_ttl=float(ttl), presence_sweep=float(sweep)
    )
    async with Hub(backend) as hub, AsyncExitStack() as stack:
        presence = hub.presence(channel)
        for key in keys:
            await stack.enter_async_context(presence.track(key, {"pid": os.getpid()}))
        print("ready", flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[2:], backend=sys.argv[1])
