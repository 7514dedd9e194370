"""What a newcomer meets first: the version, the license, help(plait), missing extras,
the public names' paths, and a build that needs no index."""

from __future__ import annotations

import email
import importlib
import importlib.metadata
import importlib.util
import pickle
import shutil
import subprocess
import sys
import types
import typing
import zipfile
from pathlib import Path
from typing import Any

import pytest

import plait
import plait.channels
from plait._asyncapi_page import COMPONENT_VERSION
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


PUBLIC_MODULES = ("plait", "plait.channels", "plait.testing", "plait.types", "plait.otel")
# typing.get_type_hints reads a class's string annotations in the module its __module__
# names, and these annotate with names that only their own module has.
KEEP_THEIR_MODULE = {"plait.URL", "plait.Listener"}


def public_objects() -> list[tuple[str, Any]]:
    """``(public name, value)`` for each class and function the public modules export."""
    found = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)  # names exported lazily (RedisBackend) load now
            if isinstance(value, type | types.FunctionType):
                found.append((f"{module_name}.{name}", value))
    return found


@pytest.mark.parametrize(("public_name", "value"), public_objects())
def test_public_names_report_the_module_users_import_them_from(
    public_name: str, value: Any
) -> None:
    home = public_name.rpartition(".")[0]
    if public_name in KEEP_THEIR_MODULE:
        assert value.__module__.startswith(f"{home}._")
        with pytest.raises(NameError):  # what a public __module__ would do to them
            typing.get_type_hints(value, globalns=vars(sys.modules[home]))
        return
    assert not any(part.startswith("_") for part in value.__module__.split("."))
    assert getattr(sys.modules[value.__module__], value.__qualname__) is value
    typing.get_type_hints(value)  # its annotations still resolve


def sample_exceptions() -> list[BaseException]:
    """One instance of each public exception, with arguments where it takes any."""
    arguments: dict[str, tuple[Any, ...]] = {
        "Deny": (401, {"why": "no token"}, {"x-reason": "token"}),
        "WebSocketDisconnect": (1001, "going away"),
        "LifespanError": ("startup failed",),
        "WebSocketDenied": (404, [("content-type", "application/json")], b'{"detail": 1}'),
        "WebSocketClosed": (1006, "", "send 'websocket.send': the peer left"),
    }
    return [
        value(*arguments.get(value.__name__, ("what went wrong",)))
        for _, value in public_objects()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]


@pytest.mark.parametrize("exc", sample_exceptions(), ids=lambda exc: type(exc).__name__)
def test_public_exceptions_pickle_by_their_public_path(exc: BaseException) -> None:
    data = pickle.dumps(exc)
    assert b"plait._" not in data
    again = pickle.loads(data)
    assert type(again) is type(exc)
    assert (str(again), vars(again)) == (str(exc), vars(exc))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """plait's wheel, built from this checkout without build isolation or an index."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    # setuptools>=77 (the license expression) comes with the test extra; a build that
    # uses the environment's own setuptools must work without any index.
    for part in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / part, tmp_path / part)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
               "--no-index", "--wheel-dir", str(tmp_path / "dist"), str(tmp_path)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    (built,) = (tmp_path / "dist").glob("plait-*.whl")
    return built


def test_a_build_without_build_isolation_needs_nothing_downloaded(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(metadata_name))
    assert "plait/py.typed" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"


def test_the_wheel_ships_the_asyncapi_component(wheel: Path) -> None:
    """The AsyncAPI page renders offline only if the installed plait has the component,
    with its license and the record of where it came from (issue 18, point 5)."""
    shipped = ROOT / "src" / "plait" / "static" / "asyncapi"
    files = ["index.js", "index.js.LICENSE.txt", "default.min.css", "LICENSE", "README.md"]
    with zipfile.ZipFile(wheel) as archive:
        for name in files:
            assert archive.read(f"plait/static/asyncapi/{name}") == (shipped / name).read_bytes()
        readme = archive.read("plait/static/asyncapi/README.md").decode()
    assert b"AsyncApiStandalone" in (shipped / "index.js").read_bytes()[:1000]
    assert (shipped / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert f"`@asyncapi/react-component` **{COMPONENT_VERSION}**" in readme
