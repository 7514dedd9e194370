"""A private redis-server on a free loopback port, to stop and start in fault tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import Process

__all__ = ("RedisServer", "free_port", "open_redis_server")


class RedisServer:
    """One redis-server process; ``stop()`` (or ``kill()``) and ``start()`` again on the
    same port. Without persistence its data is gone then, as after a real restart; with
    it (AOF: Redis writes each change to the file before it answers, so a SIGKILL loses
    nothing it acknowledged) the data is back."""

    def __init__(self, port: int, directory: Path, *, persistent: bool = False) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}"
        self._directory = directory
        self._persistent = persistent
        self._process: Process | None = None

    async def start(self) -> None:
        """Start the server and wait until it answers PING."""
        assert self._process is None, "already running"
        executable = shutil.which("redis-server")
        assert executable is not None, "redis-server is not installed"
        self._process = await anyio.open_process(
            [
                executable,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--dir", str(self._directory)),
                *(
                    ("--appendonly", "yes", "--appendfsync", "everysec")
                    if self._persistent
                    else ("--appendonly", "no")
                ),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with anyio.fail_after(10):
            while not await self._answers():
                assert self._process.returncode is None, "redis-server exited at start"
                await anyio.sleep(0.02)

    async def stop(self) -> None:
        """Stop the server (SIGTERM: it exits at once, saving nothing)."""
        await self._end(kill=False)

    async def kill(self) -> None:
        """SIGKILL the server: it saves nothing more and says nothing to its clients."""
        await self._end(kill=True)

    async def _end(self, *, kill: bool) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with anyio.CancelScope(shield=True):
            if not kill:
                process.terminate()
                with anyio.move_on_after(5) as scope:
                    await process.wait()
                kill = scope.cancelled_caught
            if kill:
                process.kill()
                await process.wait()
            await process.aclose()

    async def _answers(self) -> bool:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", self.port)
        except OSError:
            return False
        async with stream:
            await stream.send(b"PING\r\n")
            try:
                return (await stream.receive()).startswith(b"+PONG")
            except (anyio.EndOfStream, OSError):
                return False


def free_port() -> int:
    """A loopback TCP port that nothing listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def open_redis_server(
    directory: Path, *, persistent: bool = False
) -> AsyncIterator[RedisServer]:
    """Run a private redis-server for the block; ``directory`` is its working dir."""
    server = RedisServer(free_port(), directory, persistent=persistent)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
