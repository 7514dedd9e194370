"""What a newcomer meets first: the version, the license, help(plait), missing extras."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import pytest

import plait
import plait.channels
from plait.testing import TestClient, run_hypercorn

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_the_installed_one() -> None:
    assert plait.__version__ == importlib.metadata.version("plait")


def test_the_license_file_matches_the_declared_license() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert importlib.metadata.metadata("plait")["License-Expression"] == "MIT"


def test_help_opens_with_an_example() -> None:
    assert plait.__doc__ is not None
    first_lines = plait.__doc__.split("Every connection")[0]
    assert '@plait.websocket("/echo")' in first_lines
    assert "plait.App(routes=[echo])" in first_lines


def test_a_missing_coredis_names_the_redis_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(vars(plait.channels), "RedisBackend", raising=False)
    monkeypatch.delitem(sys.modules, "plait.channels._redis", raising=False)
    monkeypatch.setitem(sys.modules, "coredis", None)
    with pytest.raises(ImportError, match=r'pip install "plait\[redis\]"'):
        plait.channels.RedisBackend  # noqa: B018 - the lazy import is the point


def test_a_missing_hypercorn_names_the_hypercorn_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hypercorn.config", None)
    with (
        pytest.raises(ImportError, match=r'pip install "plait\[hypercorn\]"'),
        run_hypercorn(plait.App()),
    ):
        pytest.fail("hypercorn ran without hypercorn")


def test_a_missing_trio_names_the_trio_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trio" else real(name, *a)
    )
    with (
        pytest.raises(ImportError, match=r'pip install "plait\[trio\]"'),
        TestClient(plait.App(), backend="trio"),
    ):
        pytest.fail("the trio backend ran without trio")
