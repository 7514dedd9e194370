"""Shutting down on a real SIGTERM and SIGINT, hypercorn in a process of its own (issue 11,
point 9), asyncio and trio workers.

- hypercorn's ``serve()`` with ``shutdown_trigger=APP.shutdown_trigger``: every client
  gets 1001 as soon as the signal arrives, the teardowns run at once, new handshakes are
  refused with 503, a handler that ignores the shutdown holds things up for
  ``shutdown_grace`` seconds only, and a second signal cuts that grace short.
- the ``hypercorn`` command (``-w 0`` and ``-w 1``): hypercorn tells the app nothing; it
  waits ``--graceful-timeout`` seconds, then cancels the connections, which plait closes
  with 1001 after running the teardowns; the App's ``shutdown_grace`` plays no part.
  ``--graceful-timeout 0`` makes that 1001 come at once.
- ``hypercorn -w 0 -k trio`` ends at once on SIGTERM (1006 for the clients, no
  teardowns), and takes SIGINT for a KeyboardInterrupt in whatever code runs; SIGTERM to
  every process of ``-w 1`` ends the worker at once.

A signal needs a process, so the server is a subprocess: ``python -m hypercorn ...
test_shutdown_hypercorn:APP``, or :func:`serve_with_trigger` (what the deployment guide
shows). Its handlers write what happened to them, with the time, to a file named by
``PLAIT_TEST_RECORD``; the test reads it once the process has gone. ``time.monotonic()``
is the system's monotonic clock, the same in both processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import anyio
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

import plait
from plait import App, WebSocket

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GRACEFUL = 1  # hypercorn's --graceful-timeout, whole seconds
SLACK = 1.5  # scheduling slack on a loaded two-core machine, seconds
CLIENTS = 3
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]
WORKERS = ("asyncio", "trio")
WAITS_FOR_CLIENTS = sys.version_info >= (3, 12, 1)
"""hypercorn#308: its asyncio worker calls ``Server.wait_closed()`` before it applies
``--graceful-timeout``, and since Python 3.12.1 that waits for every open connection. A
WebSocket client that stays then holds the shutdown until it leaves; the trio worker and
``serve()`` with the App's ``shutdown_trigger`` (which closes the connections first) do
not depend on it."""


# -- the app, as the subprocess serves it -------------------------------------------------


def note(event: str) -> None:
    """Record ``event`` with the time, in the file the test reads afterwards."""
    with open(os.environ["PLAIT_TEST_RECORD"], "a") as record:
        record.write(f"{time.monotonic():.6f} {event}\n")


async def resource(name: str) -> AsyncIterator[str]:
    try:
        yield name
    finally:
        note(f"teardown {name}")


@plait.websocket("/sleep")
async def sleeper(
    ws: WebSocket, name: Annotated[str, plait.use(resource)], hold: float = 0
) -> None:
    await ws.accept()
    await ws.send_text("ready")
    try:
        await anyio.sleep(600)
    finally:
        note(f"finally {name}")
        if hold:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(hold)  # ignores the shutdown for a while
            note(f"held {name}")


@plait.websocket("/block")
async def blocker(ws: WebSocket, name: Annotated[str, plait.use(resource)]) -> None:
    """Blocks the event loop for a while, as CPU-bound work or a blocking call does."""
    await ws.accept()
    try:
        await ws.receive_text()  # the client is ready: the handshake is done
        note(f"blocking {name}")
        until = time.monotonic() + 2
        while time.monotonic() < until:  # CPU-bound work, no checkpoint
            pass
        await anyio.sleep(600)
    finally:
        note(f"finally {name}")


@contextlib.asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[None]:
    note("startup")
    yield
    note(f"lifespan shutdown with {app.connections()} connections")


APP = App(
    [sleeper, blocker],
    lifespan=lifespan,
    shutdown_grace=float(os.environ.get("PLAIT_TEST_GRACE", 5)),
)


def serve_with_trigger(worker: str, fd: int, graceful_timeout: float) -> None:
    """Serve ``APP`` as the deployment guide shows (``examples/graceful.py``): hypercorn's
    ``serve()`` with the App's ``shutdown_trigger``, on the listening socket ``fd``."""
    from examples.graceful import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{fd}"]
    config.graceful_timeout = graceful_timeout
    serve(APP, config, worker)


# -- the test's side ------------------------------------------------------------------------


@dataclass
class Server:
    """A hypercorn subprocess, in a session (a process group) of its own."""

    process: subprocess.Popen[bytes]
    port: int
    record: Path
    log: Path

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @contextlib.contextmanager
    def connect(self, name: str, hold: float = 0) -> Iterator[ClientConnection]:
        """A client of ``/sleep``, its handler started."""
        with contextlib.ExitStack() as stack:
            try:
                ws = stack.enter_context(
                    connect(self.url(f"/sleep?name={name}&hold={hold}"), open_timeout=10)
                )
            except Exception as exc:
                if self.process.poll() is not None:
                    raise AssertionError(f"hypercorn exited:\n{self.output()}") from exc
                raise
            assert ws.recv(timeout=10) == "ready", self.output()
            yield ws

    def send_signal(self, signum: signal.Signals, *, every_process: bool = False) -> float:
        """Signal hypercorn (the main process), or every process it started; return when."""
        sent_at = time.monotonic()
        if every_process:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        return sent_at

    def wait(self, timeout: float = 10) -> int:
        return self.process.wait(timeout=timeout)

    def events(self) -> list[tuple[float, str]]:
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        return [(float(at), event) for at, event in (line.split(" ", 1) for line in lines)]

    def names(self) -> list[str]:
        return [event for _, event in self.events()]

    def at(self, event: str) -> float:
        return next(at for at, name in self.events() if name == event)

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except ConnectionRefusedError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")


WITH_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]
"""Runs the command that follows with SIGINT at its default. A process started with SIGINT
ignored keeps it ignored (a shell without job control ignores it in background jobs), and
Python and trio then leave it so: ``hypercorn -w 0 -k trio`` would not see it."""


@contextlib.contextmanager
def start(command: list[str], tmp_path: Path, grace: float = 5) -> Iterator[Server]:
    """Run ``command`` (``{fd}`` stands for a listening loopback socket it inherits)."""
    record, log = tmp_path / "record.txt", tmp_path / "server.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PLAIT_TEST_RECORD": str(record),
        "PLAIT_TEST_GRACE": str(grace),
    }
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        fd = sock.fileno()
        # Clients queue in the backlog until hypercorn serves: no polling for the start.
        # Once started, only hypercorn holds the socket, so its closing is seen.
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*WITH_SIGINT, *(part.format(fd=fd) for part in command)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
                start_new_session=True,  # not in pytest's process group: signalled alone
            )
    try:
        yield Server(process, port, record, log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def hypercorn_command(*options: str, graceful_timeout: int = GRACEFUL) -> list[str]:
    """The ``hypercorn`` command serving ``APP``."""
    return [sys.executable, "-m", "hypercorn", *options,
            "--graceful-timeout", str(graceful_timeout),
            "-b", "fd://{fd}", "test_shutdown_hypercorn:APP"]  # fmt: skip


def trigger_command(worker: str, graceful_timeout: float) -> list[str]:
    """``serve_with_trigger`` in a Python process of its own."""
    call = f"serve_with_trigger({worker!r}, {{fd}}, {graceful_timeout})"
    return [sys.executable, "-c", f"from test_shutdown_hypercorn import serve_with_trigger; {call}"]


def closed_at(ws: ClientConnection, timeout: float = 10) -> tuple[float, int | None, str]:
    """Wait for the server's close; return when it came, its code and reason (1006: none)."""
    with pytest.raises(ConnectionClosed) as info:
        ws.recv(timeout=timeout)
    at = time.monotonic()
    if info.value.rcvd is None:
        return at, 1006, ""
    return at, info.value.rcvd.code, info.value.rcvd.reason


# -- plait's shutdown trigger -----------------------------------------------------------------


@pytest.mark.parametrize("signum", SIGNALS)
@pytest.mark.parametrize("worker", WORKERS)
def test_shutdown_trigger_closes_with_1001_at_once(
    worker: str, signum: signal.Signals, tmp_path: Path
) -> None:
    """``serve(app, config, shutdown_trigger=app.shutdown_trigger)``: each client gets
    1001 at once, not after hypercorn's ``graceful_timeout``; each handler's ``finally``
    and its dependency's teardown run before the lifespan shutdown, which finds no
    connection left; the process ends with status 0.

    Peers: Starlette and Litestar under uvicorn get 1012 at once (uvicorn closes every
    WebSocket and queues a disconnect), but a handler that is not receiving never hears
    of it, and uvicorn waits for it without end unless ``--timeout-graceful-shutdown`` is
    set. Under hypercorn they have no hook: their clients wait ``graceful_timeout``, then
    get 1011 (asyncio worker) or 1006 (trio worker).
    """
    with start(trigger_command(worker, graceful_timeout=5), tmp_path) as server:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(server.connect(f"c{i}")) for i in range(CLIENTS)]
            signalled = server.send_signal(signum)
            for ws in clients:
                at, code, reason = closed_at(ws)
                assert (code, reason) == (1001, "server shutting down"), server.output()
                assert at - signalled < SLACK  # hypercorn alone would take 5 s
        assert server.wait() == 0, server.output()
    names = server.names()
    assert names[0] == "startup"
    assert names[-1] == "lifespan shutdown with 0 connections"
    for i in range(CLIENTS):
        assert names.index(f"finally c{i}") < names.index(f"teardown c{i}")
        assert server.at(f"teardown c{i}") - signalled < SLACK
    assert len(names) == 2 + 2 * CLIENTS


@pytest.mark.parametrize("worker", WORKERS)
def test_shutdown_trigger_refuses_new_handshakes_and_bounds_the_grace(
    worker: str, tmp_path: Path
) -> None:
    """A handler that ignores the shutdown (a shielded 3 s in its ``finally``) does not
    hold the server past ``shutdown_grace`` (1 s): its client still gets 1001 at once,
    a handshake during the grace is refused with 503, and hypercorn stops listening once
    the grace is over, while that handler is still busy. It is cancelled when its shield
    ends, and its teardown runs.

    Peers: Starlette and Litestar have no grace of their own; under uvicorn new
    handshakes get nothing (the listening socket is closed at once, as hypercorn's is
    after the trigger) and a handler that ignores the shutdown holds the process for as
    long as it likes (``--timeout-graceful-shutdown`` bounds it); under hypercorn it is
    cancelled after ``graceful_timeout``.
    """
    with start(trigger_command(worker, graceful_timeout=5), tmp_path, grace=1) as server:
        with server.connect("stubborn", hold=3) as ws:
            signalled = server.send_signal(signal.SIGTERM)
            at, code, reason = closed_at(ws)
            assert (code, reason) == (1001, "server shutting down"), server.output()
            assert at - signalled < SLACK
        with pytest.raises(InvalidStatus) as info, server.connect("late"):
            pytest.fail("a handshake was accepted during the shutdown")
        assert time.monotonic() - signalled < 1, "the handshake came after the grace"
        assert info.value.response.status_code == 503
        assert json.loads(info.value.response.body) == {"detail": "server shutting down"}
        while server.listening() and time.monotonic() - signalled < 3 + SLACK:
            time.sleep(0.02)
        stopped_listening = time.monotonic() - signalled
        assert server.wait() == 0, server.output()
    assert stopped_listening >= 1
    assert stopped_listening < server.at("held stubborn") - signalled  # not waiting for it
    assert server.names() == [
        "startup",
        "finally stubborn",
        "held stubborn",
        "teardown stubborn",
        "lifespan shutdown with 0 connections",
    ]


@pytest.mark.parametrize("worker", WORKERS)
def test_a_second_signal_cuts_the_grace_short(worker: str, tmp_path: Path) -> None:
    """With a 30 s ``shutdown_grace`` and a handler that ignores the shutdown for 3 s, a
    second signal (SIGINT, then SIGTERM) ends the grace at once: hypercorn stops
    listening before that handler is done.

    Peers: uvicorn force-quits on a second SIGINT, skipping the lifespan shutdown;
    hypercorn's command on the asyncio worker takes a second signal for the first and
    keeps waiting for ``graceful_timeout``.
    """
    with start(trigger_command(worker, graceful_timeout=5), tmp_path, grace=30) as server:
        with server.connect("stubborn", hold=3) as ws:
            server.send_signal(signal.SIGINT)
            assert closed_at(ws)[1:] == (1001, "server shutting down"), server.output()
        assert server.listening()  # the grace holds
        again = server.send_signal(signal.SIGTERM)
        while server.listening() and time.monotonic() - again < 3 + SLACK:
            time.sleep(0.02)
        stopped_listening = time.monotonic()
        assert server.wait() == 0, server.output()
    assert stopped_listening - again < SLACK
    assert stopped_listening < server.at("held stubborn")  # not waiting for it
    assert server.names()[-1] == "lifespan shutdown with 0 connections"


# -- the hypercorn command ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(("-w", "0", "-k", "asyncio"), id="w0-asyncio"),
        pytest.param(("-w", "1", "-k", "asyncio"), id="w1-asyncio"),
        pytest.param(("-w", "1", "-k", "trio"), id="w1-trio"),
    ],
)
@pytest.mark.parametrize("signum", SIGNALS)
def test_hypercorn_command_closes_with_1001_after_its_graceful_timeout(
    options: tuple[str, ...], signum: signal.Signals, tmp_path: Path
) -> None:
    """``hypercorn --graceful-timeout 1``: hypercorn tells the app nothing when the
    shutdown starts. Clients get 1001 only after the graceful timeout, when hypercorn
    cancels the connections, whatever the App's ``shutdown_grace`` (0.1 s here); then
    the teardowns run, and then the lifespan shutdown, with no connection left. With
    ``-w 1`` the signal goes to hypercorn's main process, which tells its worker.

    On Python 3.12.1+ the asyncio worker never gets that far while a client stays
    (hypercorn#308): it waits for the clients to leave (:data:`WAITS_FOR_CLIENTS`).

    Peers: Starlette and Litestar under the same command wait as long, then their
    clients get 1011 (asyncio worker) or 1006 (trio worker, no close frame); their
    ``finally`` blocks run. Under uvicorn: 1012 at once.
    """
    with start(hypercorn_command(*options), tmp_path, grace=0.1) as server:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(server.connect(f"c{i}")) for i in range(CLIENTS)]
            signalled = server.send_signal(signum)
            if "asyncio" in options and WAITS_FOR_CLIENTS:
                clients_leave_hypercorn_waiting(server, clients, signalled, GRACEFUL)
                return
            for ws in clients:
                at, code, reason = closed_at(ws)
                assert (code, reason) == (1001, "server shutting down"), server.output()
                assert GRACEFUL <= at - signalled < GRACEFUL + SLACK
        assert server.wait() == 0, server.output()
    names = server.names()
    assert names[-1] == "lifespan shutdown with 0 connections"
    for i in range(CLIENTS):
        assert names.index(f"finally c{i}") < names.index(f"teardown c{i}")
        assert server.at(f"finally c{i}") - signalled >= GRACEFUL


def clients_leave_hypercorn_waiting(
    server: Server, clients: list[ClientConnection], signalled: float, graceful: float
) -> None:
    """What the asyncio worker does on Python 3.12.1+ (hypercorn#308): past its graceful
    timeout no client was closed and hypercorn still runs; once the clients leave, their
    handlers end and are torn down, and hypercorn finishes its shutdown."""
    time.sleep(max(0.0, signalled + graceful + SLACK - time.monotonic()))
    for ws in clients:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.05)  # open, and nothing came: no 1001
    assert server.process.poll() is None, server.output()
    for ws in clients:
        ws.close()
    assert server.wait() == 0, server.output()
    names = server.names()
    assert names[-1] == "lifespan shutdown with 0 connections"
    for i in range(len(clients)):
        assert names.index(f"finally c{i}") < names.index(f"teardown c{i}")


@pytest.mark.parametrize("worker", WORKERS)
def test_hypercorn_command_with_graceful_timeout_0_closes_with_1001_at_once(
    worker: str, tmp_path: Path
) -> None:
    """``hypercorn -w 1 --graceful-timeout 0`` on SIGTERM: hypercorn stops listening and
    cancels the connections at once; plait closes each with 1001 and runs the teardowns,
    then the lifespan shutdown runs. (What this gives up: plain HTTP requests in flight are
    cut too, and a close comes without the messages still queued before it.) Not on the
    asyncio worker on Python 3.12.1+, which waits for the clients first (hypercorn#308).

    Peers: Starlette and Litestar under the same command: 1011 (asyncio worker) or 1006
    (trio worker) at once; their ``finally`` blocks run.
    """
    command = hypercorn_command("-w", "1", "-k", worker, graceful_timeout=0)
    with start(command, tmp_path) as server:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(server.connect(f"c{i}")) for i in range(CLIENTS)]
            signalled = server.send_signal(signal.SIGTERM)
            if worker == "asyncio" and WAITS_FOR_CLIENTS:
                clients_leave_hypercorn_waiting(server, clients, signalled, 0)
                return
            for ws in clients:
                at, code, reason = closed_at(ws)
                assert (code, reason) == (1001, "server shutting down"), server.output()
                assert at - signalled < SLACK
        assert server.wait() == 0, server.output()
    names = server.names()
    assert names[-1] == "lifespan shutdown with 0 connections"
    for i in range(CLIENTS):
        assert names.index(f"finally c{i}") < names.index(f"teardown c{i}")


def test_hypercorn_w0_trio_takes_sigint_for_a_keyboard_interrupt_where_code_runs(
    tmp_path: Path,
) -> None:
    """``hypercorn -w 0 -k trio`` on SIGINT: trio raises KeyboardInterrupt in whatever
    code is running when the signal comes. In a handler (here one blocking the event
    loop), that connection fails (1011) and hypercorn logs the error and serves on: the
    other client stays connected and no shutdown starts. Only a SIGINT that finds the
    event loop idle reaches hypercorn's main task and starts its shutdown: 1001 after the
    graceful timeout, the teardowns, the lifespan shutdown. ``-w 1 -k trio`` and
    ``serve()`` with the App's ``shutdown_trigger`` handle SIGINT as a signal instead.

    Peers: the same for Starlette and Litestar under this command; under uvicorn, SIGINT
    is a signal handler setting a flag.
    """
    with start(hypercorn_command("-w", "0", "-k", "trio"), tmp_path) as server:
        with server.connect("idle") as idle:
            url = server.url("/sleep").replace("/sleep", "/block?name=busy")
            with connect(url, open_timeout=10) as busy:
                busy.send("go")
                deadline = time.monotonic() + 10
                while "blocking busy" not in server.names() and time.monotonic() < deadline:
                    time.sleep(0.01)
                server.send_signal(signal.SIGINT)
                assert closed_at(busy)[1:] == (1011, ""), server.output()  # hypercorn's
            with pytest.raises(TimeoutError):
                idle.recv(timeout=GRACEFUL + SLACK)  # no shutdown started
            assert "KeyboardInterrupt" in server.output()
            assert server.process.poll() is None
            assert "lifespan shutdown with 0 connections" not in server.names()
            signalled = server.send_signal(signal.SIGINT)  # finds the event loop idle
            at, code, reason = closed_at(idle)
            assert (code, reason) == (1001, "server shutting down"), server.output()
            assert GRACEFUL <= at - signalled < GRACEFUL + SLACK
        assert server.wait() == 0, server.output()
    names = server.names()
    # Where the KeyboardInterrupt lands in the busy handler is the signal's timing (in
    # its finally block itself, once in CI on Python 3.13): only its teardown is sure.
    assert "teardown busy" in names
    assert names.index("finally idle") < names.index("teardown idle")
    assert names[-1] == "lifespan shutdown with 0 connections"


def test_hypercorn_w0_trio_dies_at_once_on_sigterm(tmp_path: Path) -> None:
    """``hypercorn -w 0 -k trio`` on SIGTERM: hypercorn's trio worker, run without a
    process of its own, installs no SIGTERM handler, so the process ends at once: every
    client gets 1006 (no close frame), no ``finally``, no teardown, no lifespan shutdown.
    ``-w 1 -k trio`` (the SIGTERM goes to the main process), SIGINT, or ``serve()`` with
    the App's ``shutdown_trigger`` shut down cleanly (the tests above).

    Peers: the same for Starlette and Litestar under this command: it is hypercorn's
    doing. uvicorn handles SIGTERM.
    """
    with start(hypercorn_command("-w", "0", "-k", "trio"), tmp_path) as server:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(server.connect(f"c{i}")) for i in range(CLIENTS)]
            signalled = server.send_signal(signal.SIGTERM)
            for ws in clients:
                at, code, _ = closed_at(ws)
                assert code == 1006
                assert at - signalled < SLACK
        assert server.wait() == -signal.SIGTERM
    assert server.names() == ["startup"]


@pytest.mark.parametrize("worker", WORKERS)
def test_sigterm_to_every_process_of_hypercorn_w1_kills_its_worker(
    worker: str, tmp_path: Path
) -> None:
    """``hypercorn -w 1`` with SIGTERM sent to every process (systemd's default
    ``KillMode=control-group`` does that): the worker has no SIGTERM handler of its own
    (it waits for its main process's word), so it ends at once: 1006 for every client,
    no ``finally``, no teardown, no lifespan shutdown.

    Peers: the same for Starlette and Litestar under this command. uvicorn's workers
    handle SIGTERM themselves.
    """
    with start(hypercorn_command("-w", "1", "-k", worker), tmp_path) as server:
        with contextlib.ExitStack() as stack:
            clients = [stack.enter_context(server.connect(f"c{i}")) for i in range(CLIENTS)]
            signalled = server.send_signal(signal.SIGTERM, every_process=True)
            for ws in clients:
                at, code, _ = closed_at(ws)
                assert code == 1006
                assert at - signalled < SLACK
        server.wait()
    assert server.names() == ["startup"]
