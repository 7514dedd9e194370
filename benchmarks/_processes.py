"""The hypercorn server and load client processes of a benchmark run, pinned to their cores.

Every server started here is stopped on the way out (SIGTERM to its PID, then SIGKILL),
whatever happens; every client runs under a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SERVER_CPU = 0
CLIENT_CPU = 1
# glibc malloc pinned for hypercorn's asyncio worker; without it the same app is bimodal.
SERVER_ENV = {"MALLOC_MMAP_THRESHOLD_": "524288", "MALLOC_TRIM_THRESHOLD_": "1048576"}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
CLIENT_SLACK = 30.0


@dataclass
class Server:
    """A running hypercorn process and where to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    log: str = ""
    """Everything the server printed; filled in once it has stopped."""

    @property
    def url(self) -> str:
        """WebSocket URL of the server's root path (the echo apps answer there)."""
        return f"ws://{HOST}:{self.port}/"


def pin(cpu: int) -> list[str]:
    """Command prefix that pins a process to one core, or nothing when taskset is missing."""
    if shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(process: subprocess.Popen[bytes], port: int) -> None:
    """Return once the port accepts connections; raise if the server died or never listened."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on port {port} within {START_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the PID we started, then SIGKILL it if it outlives the grace period."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(empty)"


@contextlib.contextmanager
def run_server(
    worker: str,
    app: str,
    module: str = "benchmarks.apps",
    env: Mapping[str, str] | None = None,
    backlog: int = 2048,
) -> Iterator[Server]:
    """Run ``hypercorn MODULE:APP`` on the server core for the duration of the block.

    Args:
        worker: hypercorn worker class (``asyncio``, ``trio``, ``uvloop``).
        app: Name of an app in `module`.
        module: The module hypercorn imports the app from (`benchmarks.apps` by default).
        env: Variables set in the server's environment besides this process's and the
            malloc settings, for example a ``PYTHONPATH`` to an earlier plait.
        backlog: hypercorn's ``--backlog``: the handshakes the kernel queues before
            hypercorn accepts them (raise it when opening thousands of connections).

    Yields:
        The server, already listening. Its `Server.log` is filled in after the block.

    Raises:
        RuntimeError: The server exited or did not listen in time.
    """
    port = _free_port()
    command = [
        *pin(SERVER_CPU),
        sys.executable,
        "-m",
        "hypercorn",
        "-w",
        "0",
        "-k",
        worker,
        "--backlog",
        str(backlog),
        "-b",
        f"{HOST}:{port}",
        f"{module}:{app}",
    ]
    fd, name = tempfile.mkstemp(prefix=f"plait-bench-{worker}-{app}-", suffix=".log")
    log_path = Path(name)
    try:
        with os.fdopen(fd, "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **SERVER_ENV, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Server(process, port)
        try:
            try:
                _wait_for_port(process, port)
            except RuntimeError as exc:
                _stop(process)
                raise RuntimeError(f"{exc}; server log ends: {_last_line(log_path)}") from exc
            yield server
        finally:
            _stop(process)
            server.log = log_path.read_text(errors="replace")
    finally:
        with contextlib.suppress(OSError):
            log_path.unlink()


def run_client(
    server: Server, conns: int, duration: float, warmup: float, payload: str = "text"
) -> dict[str, Any]:
    """Run `benchmarks.client` on the client core and return its JSON result.

    Args:
        server: The server to load; the client also reads its CPU time.
        conns: Number of connections.
        duration: Measured window in seconds.
        warmup: Warm-up in seconds.
        payload: The client's payload, ``"text"`` or ``"json"`` (see `benchmarks.client`).

    Returns:
        The client's result as a dict.

    Raises:
        RuntimeError: The client failed, timed out or printed no JSON.
    """
    arguments = [
        f"--url={server.url}",
        f"--server-pid={server.process.pid}",
        f"--conns={conns}",
        f"--duration={duration}",
        f"--warmup={warmup}",
        f"--payload={payload}",
    ]
    return run_json_client("benchmarks.client", arguments, duration + warmup + CLIENT_SLACK)


def run_json_client(module: str, arguments: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m MODULE ARGUMENTS`` on the client core; return its last line as JSON.

    Args:
        module: The client module, for example ``benchmarks.client``.
        arguments: Its command-line arguments.
        timeout: Seconds after which the client is killed.

    Returns:
        The JSON object the client printed last.

    Raises:
        RuntimeError: The client failed, timed out or printed no JSON.
    """
    command = [*pin(CLIENT_CPU), sys.executable, "-m", module, *arguments]
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"client timed out after {exc.timeout:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"client exited with status {done.returncode}: {tail[0]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def raise_open_file_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to ``needed`` (at most the hard limit).

    Returns:
        The soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
