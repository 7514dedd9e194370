"""plait from an earlier git revision, served beside the current one in the same run.

`before_source` checks the revision out into a temporary git worktree (removed on the way
out, also on errors, Ctrl-C and SIGTERM) and gives the environment that makes a server
import ``plait`` from there: the worktree's ``src`` first on ``PYTHONPATH``. The project is
installed editable with a plain path entry in a ``.pth`` file, which ``site`` appends after
``PYTHONPATH``, so the worktree wins; `probe` checks that it really does, in the server's
own environment, before anything is measured. `benchmarks.apps` itself stays the current
one: only the ``plait`` it imports changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks._processes import ROOT

APPS = ("plait", "plait_listener")
"""The apps that also run from the earlier revision when ``--before`` is given."""
GIT_TIMEOUT = 120.0


@dataclass
class Before:
    """An earlier revision of plait, checked out where a server can import it."""

    rev: str
    """The revision as given, for example ``8ac291d^``."""
    commit: str
    """The full hash it resolved to."""
    short: str
    """The short hash, as the report's labels show it."""
    path: Path
    """The worktree."""
    env: dict[str, str] = field(default_factory=dict)
    """What a server's environment needs on top of the current one to import this plait."""

    def label(self, app: str) -> str:
        """The report's name for `app` served from this revision: ``plait@d7c2e99``."""
        return f"{app}@{self.short}"


def _git(*arguments: str) -> str:
    """Run git in the repository and return its output; raise with git's message if it fails."""
    done = subprocess.run(
        ["git", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        message = done.stderr.strip().splitlines()[-1:] or [f"status {done.returncode}"]
        raise RuntimeError(f"git {' '.join(arguments)}: {message[0]}")
    return done.stdout.strip()


@contextlib.contextmanager
def before_source(rev: str) -> Iterator[Before]:
    """Check `rev` out into a temporary worktree for the duration of the block.

    Raises:
        RuntimeError: git could not resolve `rev` or add the worktree.
    """
    commit = _git("rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}")
    short = _git("rev-parse", "--short", commit)
    tmp = Path(tempfile.mkdtemp(prefix="plait-bench-before-"))
    path = tmp / f"plait-{short}"
    try:
        _git("worktree", "add", "--detach", str(path), commit)
        python_path = [str(path / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        yield Before(rev, commit, short, path, {"PYTHONPATH": os.pathsep.join(python_path)})
    finally:
        if path.exists():
            try:
                _git("worktree", "remove", "--force", str(path))
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                print(f"warning: could not remove the worktree {path}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


_PROBE = """\
import json, sys
import plait
from benchmarks import apps
names, payload = json.loads(sys.argv[1])
reasons = {name: apps.unavailable_reason(name, payload) for name in names}
print(json.dumps({"plait": plait.__file__, "reasons": reasons}))
"""


def probe(before: Before, apps: Sequence[str], payload: str) -> dict[str, str]:
    """Check that a server started with `before.env` imports plait from the worktree.

    Args:
        before: The checked-out revision.
        apps: The apps to serve from it.
        payload: The client's payload, as `benchmarks.apps.unavailable_reason` takes it.

    Returns:
        Why each app that cannot run from that revision cannot (empty when all can).

    Raises:
        RuntimeError: plait was imported from somewhere else, or the probe failed.
    """
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([list(apps), payload])],
        cwd=ROOT,
        env={**os.environ, **before.env},
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"importing benchmarks.apps with plait at {before.short}: {tail[0]}")
    found = json.loads(lines[-1])
    source = (before.path / "src").resolve()
    if not Path(found["plait"]).resolve().is_relative_to(source):
        raise RuntimeError(
            f"with PYTHONPATH={before.env['PYTHONPATH']} plait was imported from "
            f"{found['plait']}, not from {source}"
        )
    return {name: reason for name, reason in found["reasons"].items() if reason}
