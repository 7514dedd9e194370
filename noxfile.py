"""Developer tasks. CI (``.ci/run``) runs ``nox -s tests lint typecheck docs``: the tests
once on each supported Python (sessions ``tests-3.11``, ``tests-3.12`` and
``tests-3.13``), lint, typecheck and docs on 3.11. A Python that nox cannot find fails
its session rather than skipping it; with pyenv, ``.ci/run`` makes all three visible.
``nox -s demo`` serves the chat example on the Python that runs nox. ``nox -s bench``
measures plait against raw ASGI and its peers; ``nox -s soak`` churns, floods and
restarts Redis under real hypercorn (neither is part of CI)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = True  # a Python not found fails, never skips

PYTHON = "3.11"
"""The Python of the sessions that run once."""
PYTHONS = ["3.11", "3.12", "3.13"]
"""Every supported Python: the tests run on each (pyproject.toml's classifiers)."""


NPM_TESTS = "tests/asyncapi"
"""Where the AsyncAPI tests' npm packages are pinned (package.json, package-lock.json)."""


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite, every async test on asyncio and on trio, real hypercorn too.

    The AsyncAPI tests need node and the npm packages pinned in tests/asyncapi: the
    first session installs them with ``npm ci``, the others find them there.
    """
    session.install("-e", ".[test]")
    if not Path(NPM_TESTS, "node_modules", ".package-lock.json").is_file():
        session.run("npm", "ci", "--no-audit", "--no-fund", "--prefix", NPM_TESTS, external=True)
    session.run("pytest", "-n", "2", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.8")
    paths = ["src", "tests", "benchmarks", "examples", "docs", "conftest.py", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/ and examples/ (what users' strict code sees)."""
    session.install("-e", ".[typecheck]")
    session.run("mypy", "--strict", "src/plait", "examples")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmarks: plait and peers as ratios to raw ASGI, same server, same run.

    First the plain echo (64 bytes of text), then the typed-listener echo (a JSON object
    decoded into a msgspec Struct and encoded back, as ratios to ``raw_json``), then the
    fan-out (one publish to 1,000 WebSocket subscribers: plait's Hub against Litestar's
    channels plugin and a raw ASGI broadcaster), then the idle memory per connection
    (server RSS over 2,000 uncompressed idle connections, against raw ASGI), then the
    cancellation latency, then the scale run's quick form (2,000 idle connections held
    by four killed clients: memory, CPU at rest, time to the last handler's end, objects
    left for the collector; the full 19,000-connection form, ``python -m
    benchmarks.scale``, takes about 20 minutes and is run by hand), then the
    instructions per message under callgrind (``benchmarks.instructions``, when valgrind
    is there). Options after ``--`` go to both echo runs, for example ``nox -s bench --
    --quick``; of them the fan-out, the memory and the instruction runs take ``--quick``
    only (their other options differ); the scale run is
    always quick. ``nox -s bench -- --before REV`` (a git revision, for example
    ``--before 8ac291d^``) also serves plait and its typed listener from REV in both echo
    runs, same rounds, reported as ``plait@<hash>`` with its own ratio to raw.
    """
    session.install("-e", ".[bench]", "websockets>=13")
    session.run("python", "-m", "benchmarks.echo", *session.posargs)
    session.run("python", "-m", "benchmarks.echo", "--payload", "json", *session.posargs)
    quick = ["--quick"] if "--quick" in session.posargs else []
    session.run("python", "-m", "benchmarks.fanout", *quick)
    session.run("python", "-m", "benchmarks.memory", *quick)
    session.run("python", "-m", "benchmarks.cancel_latency")
    session.run("python", "-m", "benchmarks.scale", "--quick")
    if shutil.which("valgrind") is None:
        session.warn("valgrind is not installed: no instruction counts (apt-get install valgrind)")
    else:
        session.run("python", "-m", "benchmarks.instructions", *quick)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """The soak, under real hypercorn on both workers (not part of CI, about 2 minutes).

    10,000 churned connections (clean closes, resets, closes mid-send), 100,000 mixed
    hostile messages to a typed listener, and a Redis with history restarted mid-stream
    (needs ``redis-server`` on PATH; a private one is started on a free port); then the
    engine's Hypothesis model (``tests/test_engine_model.py``) with ``PLAIT_SOAK=1``:
    many more random interleavings than CI runs. Prints
    teardowns missed, tasks left running, RSS growth, close codes by kind, lost and
    duplicated messages, and fails when an invariant does not hold. Options after
    ``--`` go to ``python -m benchmarks.soak``, for example ``nox -s soak -- --quick``.
    """
    session.install("-e", ".[bench,redis,test]", "websockets>=13")
    session.run("python", "-m", "benchmarks.soak", *session.posargs)
    # The engine's model-based test with its large profile (PLAIT_SOAK=1).
    session.run(
        "pytest", "--timeout", "1800", "tests/test_engine_model.py", env={"PLAIT_SOAK": "1"}
    )


@nox.session  # on the Python that runs nox: the quickstart asks only for 3.11 or later
def demo(session: nox.Session) -> None:
    """The chat example on hypercorn's trio worker, with its page at http://127.0.0.1:8000/.

    Its log config (``examples/chat/logging.toml``) shows plait's INFO lines and the app's
    beside hypercorn's: hypercorn configures no logging for the application.
    """
    session.install("-e", ".", "hypercorn>=0.17", "trio>=0.27")
    session.log("chat demo: point a browser at http://127.0.0.1:8000/ (Ctrl+C stops it)")
    log_config = "toml:examples/chat/logging.toml"
    session.run(
        "hypercorn", "-k", "trio", "--log-config", log_config, "-b", "127.0.0.1:8000",
        "examples.chat:app",
    )  # fmt: skip


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation: sphinx-build -W (every warning an error) into docs/_build/html."""
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )
